"""Stage VI: trains a smaller BERT student with Horovod, one process per GPU.

The same flags and training as network_distillation_single_machine_truncated.py
(they share distillation.py); Horovod adds:

  - one GPU per process, chosen by the process's local rank (CPU when the
    machine has no GPU);
  - each process reads its own share of the training records: with at least
    as many (non-empty) files as processes, whole files of its own, balanced
    by size, so reading does not grow with the number of processes; with
    fewer files, record i of all files goes to rank i mod size (every process
    then reads every file). The shares are disjoint and together are all
    records;
  - the gradients of each step are averaged over all processes before
    clipping and the update (hvd.grouped_allreduce, op=Average);
  - the initial state (random, from --init_checkpoint, or resumed from the
    newest checkpoint in --output_dir: model, optimizer slots, global_step)
    is broadcast from rank 0, so every rank starts from rank 0's checkpoint;
  - as the original: --learning_rate is multiplied by the number of processes,
    --num_train_steps and --num_warmup_steps are divided by it (integer
    division), --train_batch_size is per process;
  - only rank 0 writes under --output_dir (checkpoints, TensorBoard events,
    eval_results.txt) and logs at INFO level; evaluation runs on rank 0 alone.

Launch with mpirun (one node, 8 GPUs, as the original README):
  mpirun -np 8 -H localhost:8 -bind-to none -map-by slot \\
    -x NCCL_DEBUG=INFO -x PATH \\
    -mca pml ob1 -mca btl ^openib \\
    python network_distillation_distributed_truncated.py \\
      --bert_config_file=student/bert_config.json \\
      --input_file='data/record_distill/*.tfrecord' --output_dir=output_dir \\
      --truncation_factor=10 --do_train=true --do_eval=true
or with `horovodrun -np 8 python network_distillation_distributed_truncated.py
...`, or across nodes with multinode_train.sh.

A frozen or lost process would otherwise hang the job for good (the others
wait in the next allreduce): see horovod_distribution.py for the two bounds
(HOROVOD_STALL_CHECK_TIME_SECONDS, HOROVOD_STALL_SHUTDOWN_TIME_SECONDS) and
the watchdog that names a stopped rank.
"""

from absl import flags
from absl import logging

from bert_distill import cli
cli.import_tensorflow_quietly()
# pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill.stages import distillation
from bert_distill.flags import distillation_flags
from bert_distill.stages import horovod_distribution
from bert_distill.flags import stage_flags
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(distillation_flags)  # list them in --help

# Flags whose meaning changes under Horovod, as in the original script.
FLAGS["learning_rate"].help += (
    " Multiplied by the number of Horovod processes (hvd.size()), as the "
    "original.")
FLAGS["num_train_steps"].help += (
    " Total over all processes: each process runs num_train_steps // "
    "hvd.size() steps (global_step counts these), as the original.")
FLAGS["num_warmup_steps"].help += (
    " Divided by hvd.size() (integer division), as the original.")
FLAGS["train_batch_size"].help += (
    " Per process: a step trains on train_batch_size * hvd.size() examples.")


def scale_for_processes(options, size):
  """Learning rate times size, step counts divided by size (the original's).

  Raises:
    cli.UserError: training would have no step.
  """
  if size == 1:
    return options
  if options.do_train and 0 < options.num_train_steps < size:
    raise cli.UserError(
        "--num_train_steps=%d is the total over all processes and is divided "
        "by the %d processes: give at least %d" %
        (options.num_train_steps, size, size))
  options.learning_rate *= size
  options.num_train_steps //= size
  options.num_warmup_steps //= size
  return options


def main(argv):
  del argv
  distribution, device = horovod_distribution.start()
  options = scale_for_processes(
      stage_flags.options_from_flags(distillation.Options, FLAGS),
      distribution.size)
  logging.info(
      "Horovod: %d processes, rank %d on %s; per process: %d steps, batch "
      "%d; learning rate %g (x%d)", distribution.size, distribution.rank,
      device, options.num_train_steps, options.train_batch_size,
      options.learning_rate, distribution.size)
  distillation.run(options, distribution)


if __name__ == "__main__":
  cli.run(main)
