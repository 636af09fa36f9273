# coding=utf-8
"""Exports a BERT checkpoint (Google's format) to Hugging Face or a SavedModel.

The mirror of convert_hf_bert_checkpoint.py: takes a checkpoint under
Google's variable names (a distilled student from stages V/VI, a teacher, a
model fine-tuned by run_classifier.py or run_squad.py) with its
bert_config.json and vocab.txt, and writes

  --format=hf           OUTPUT_DIR/config.json, model.safetensors, vocab.txt,
                        tokenizer_config.json: a folder Hugging Face
                        `transformers` loads (BertForPreTraining,
                        BertForMaskedLM, BertForSequenceClassification,
                        BertForQuestionAnswering, ... after the checkpoint's
                        head);
  --format=saved_model  OUTPUT_DIR as a TensorFlow SavedModel whose serving
                        signatures take input_ids, input_mask and
                        segment_ids and return the head's outputs plus
                        pooled_output and sequence_output.

Optimizer slots, global_step and other training-only variables are left
out. The folder appears under OUTPUT_DIR only when complete.

Example:
  python export_bert_checkpoint.py \\
    --bert_config_file=student/bert_config.json --init_checkpoint=output_dir \\
    --vocab_file=uncased_L-12_H-768_A-12/vocab.txt --output_dir=student_hf \\
    --format=hf
"""

from absl import flags

from bert_distill import cli
cli.import_tensorflow_quietly()
# pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill.stages import exporter
import tokenization
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "bert_config_file", None,
    "The bert_config.json the checkpoint's model was trained with.")
flags.DEFINE_string(
    "init_checkpoint", None,
    "The checkpoint to export: a prefix (e.g. output_dir/model.ckpt-1000, "
    "uncased_L-12_H-768_A-12/bert_model.ckpt) or a folder, whose newest "
    "checkpoint is taken (e.g. the --output_dir of stage V or VI).")
flags.DEFINE_string(
    "vocab_file", None,
    "The model's vocab.txt (a student's is its teacher's); its number of "
    "tokens must be the config's vocab_size.")
flags.DEFINE_string(
    "output_dir", None,
    "The folder to write. It must not exist or be empty, unless "
    "--overwrite.")
flags.DEFINE_enum(
    "format", "hf", list(exporter.FORMATS),
    "hf: a Hugging Face folder (config.json, model.safetensors, vocab.txt, "
    "tokenizer_config.json); saved_model: a TensorFlow SavedModel.")
flags.DEFINE_bool(
    "do_lower_case", True,
    "Whether the model's tokenizer lower-cases its input (true for uncased "
    "models); written to tokenizer_config.json or the SavedModel.")
flags.DEFINE_string(
    "architecture", exporter.AUTO,
    "auto: after the checkpoint's head (a task head first, then the masked-"
    "LM and next-sentence heads); or one of: %s, to export less (e.g. "
    "BertModel: the encoder alone)." % ", ".join(exporter.ARCHITECTURES))
flags.DEFINE_bool(
    "overwrite", False,
    "Replace --output_dir if it exists and is not empty (only once the new "
    "export is complete).")


def main(argv):
  del argv  # cli.run rejects leftover words
  config = cli.load_bert_config(FLAGS.bert_config_file, "--bert_config_file")
  for name in ("init_checkpoint", "vocab_file", "output_dir"):
    if not FLAGS[name].value:
      raise cli.UserError("--%s is required" % name)
  tokenization.validate_case_matches_checkpoint(FLAGS.do_lower_case,
                                                FLAGS.init_checkpoint)
  try:
    exporter.export(config, FLAGS.init_checkpoint, FLAGS.vocab_file,
                    FLAGS.output_dir, FLAGS.format, FLAGS.do_lower_case,
                    FLAGS.architecture, FLAGS.overwrite)
  except exporter.ExportError as exc:
    # The arguments of export() are named as the flags.
    if exc.argument:
      raise cli.UserError("--%s: %s" % (exc.argument, exc))
    raise


if __name__ == "__main__":
  cli.run(main)
