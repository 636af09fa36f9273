"""Stage VIII with Horovod: fine-tunes BERT on SQuAD, one process per GPU.

The same flags, training and outputs as run_squad.py (they share
question_answering.py, squad.py and finetuning.py); Horovod adds, as stage VI
(network_distillation_distributed_truncated.py):

  - one GPU per process, chosen by the local rank (CPU without GPUs);
  - each process trains on its own share of the training windows (window i
    goes to rank i mod size; the shares are disjoint and together are all);
  - the gradients of each step are averaged over all processes before
    clipping and the update;
  - rank 0's starting point (--init_checkpoint, or the newest checkpoint in
    --output_dir) is broadcast to all ranks;
  - --train_batch_size is per process, --learning_rate is multiplied by the
    number of processes, and each process runs
    int(windows / (train_batch_size * processes) * num_train_epochs) steps
    (global_step counts these);
  - only rank 0 writes under --output_dir (checkpoints, TensorBoard events,
    predictions, eval_results.txt) and logs; prediction and scoring run on
    rank 0 alone.

Launch with mpirun (one node, 8 GPUs):
  mpirun -np 8 -H localhost:8 -bind-to none -map-by slot \\
    -x NCCL_DEBUG=INFO -x PATH \\
    -mca pml ob1 -mca btl ^openib \\
    python run_squad_distributed.py \\
      --vocab_file=uncased_L-12_H-768_A-12/vocab.txt \\
      --bert_config_file=uncased_L-12_H-768_A-12/bert_config.json \\
      --init_checkpoint=uncased_L-12_H-768_A-12/bert_model.ckpt \\
      --do_train=true --train_file=train-v1.1.json \\
      --do_predict=true --predict_file=dev-v1.1.json --output_dir=squad_output
"""

from absl import flags

from bert_distill import cli
cli.import_tensorflow_quietly()
# pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill.flags import finetuning_flags
from bert_distill.stages import question_answering
from bert_distill.flags import squad_flags
# pylint: enable=g-import-not-at-top,wrong-import-position

flags.adopt_module_key_flags(squad_flags)  # list them in --help
finetuning_flags.note_horovod_flags(unit="windows")
main = finetuning_flags.horovod_main(question_answering.SquadOptions,
                                     question_answering.run)


if __name__ == "__main__":
  cli.run(main)
