"""Stage VIII: fine-tunes BERT on SQuAD v1.1 / v2.0 and answers questions.

One machine (CPU or one GPU). Google's run_squad.py flags and outputs: trains
on --train_file (SQuAD JSON) from --init_checkpoint (Google's release, a
converted Hugging Face BERT or a distilled student), answers the questions of
--predict_file, and writes checkpoints, predictions.json,
nbest_predictions.json (and null_odds.json with --version_2_with_negative)
to --output_dir; when --predict_file has answers, exact match and F1 (the
official SQuAD scoring) are printed and written to eval_results.txt. A
stopped run resumes from its newest checkpoint there.

Example:
  python run_squad.py \\
    --vocab_file=uncased_L-12_H-768_A-12/vocab.txt \\
    --bert_config_file=uncased_L-12_H-768_A-12/bert_config.json \\
    --init_checkpoint=uncased_L-12_H-768_A-12/bert_model.ckpt \\
    --do_train=true --train_file=train-v1.1.json \\
    --do_predict=true --predict_file=dev-v1.1.json \\
    --train_batch_size=12 --learning_rate=3e-5 --num_train_epochs=2.0 \\
    --max_seq_length=384 --doc_stride=128 --output_dir=squad_output
"""

from absl import flags

from bert_distill import cli
cli.import_tensorflow_quietly()
# pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill.stages import question_answering
from bert_distill.flags import squad_flags
from bert_distill.flags import stage_flags
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(squad_flags)  # list them in --help


def main(argv):
  del argv
  question_answering.run(stage_flags.options_from_flags(
      question_answering.SquadOptions, FLAGS))


if __name__ == "__main__":
  cli.run(main)
