"""Stage VIII: fine-tunes and evaluates BERT on a GLUE-format task.

One machine (CPU or one GPU). Google's run_classifier.py flags and outputs:
reads the task's TSV files from --data_dir (tasks: cola, sst-2, mrpc, sts-b,
qqp, mnli, qnli, rte, wnli, xnli), starts from --init_checkpoint (Google's
release, a converted Hugging Face BERT or a distilled student), and writes
checkpoints, eval_results.txt (--do_eval) and test_results.tsv (--do_predict)
to --output_dir. A stopped run resumes from its newest checkpoint there.

Example:
  python run_classifier.py --task_name=sst-2 --data_dir=glue_data/SST-2 \\
    --vocab_file=uncased_L-12_H-768_A-12/vocab.txt \\
    --bert_config_file=uncased_L-12_H-768_A-12/bert_config.json \\
    --init_checkpoint=uncased_L-12_H-768_A-12/bert_model.ckpt \\
    --do_train=true --do_eval=true --max_seq_length=128 \\
    --train_batch_size=32 --learning_rate=2e-5 --num_train_epochs=3.0 \\
    --output_dir=sst2_output
"""

from absl import flags

from bert_distill import cli
cli.import_tensorflow_quietly()
# pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill.stages import classifier
from bert_distill.flags import classifier_flags
from bert_distill.flags import stage_flags
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(classifier_flags)  # list them in --help


def main(argv):
  del argv
  classifier.run(stage_flags.options_from_flags(classifier.ClassifierOptions,
                                                FLAGS))


if __name__ == "__main__":
  cli.run(main)
