"""Stage IV: adds a BERT teacher's soft labels to masked-LM records.

Runs the teacher (Google's BERT-Base release, or a model converted with
convert_hf_bert_checkpoint.py) over stage-III records (from
create_pretraining_data.py) and writes one TFRecord file holding every input
record, in input order, with all its features unchanged plus the teacher's
softmax at each masked position (padding positions included, so every record
has fixed lengths):

  --truncation_factor K > 0   truncated_masked_lm_probs  float [P * K]
                              top_k_indices              int64 [P * K]
                              (the K most probable words, descending)
  --truncation_factor 0       masked_lm_probs            float [P * vocab_size]

Values are position-major (the K values of masked position 0 first). The file
appears under --output_file only when complete.

Example:
  python produce_teacher_labels.py \\
    --bert_config_file=uncased_L-12_H-768_A-12/bert_config.json \\
    --init_checkpoint=uncased_L-12_H-768_A-12/bert_model.ckpt \\
    --input_file='data/record/wiki_*.tfrecord' \\
    --output_file=data/record_distill/wiki_k10.tfrecord \\
    --truncation_factor=10 --max_seq_length=128 --max_predictions_per_seq=20
"""

import os

from absl import flags
from absl import logging

import cli
cli.import_tensorflow_quietly()
# pylint: disable=g-import-not-at-top,wrong-import-position
import errors
import outputs
import record_flags
import records
import teacher
import tensorflow as tf
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "bert_config_file", None,
    "The config json file corresponding to the pre-trained BERT teacher. "
    "This specifies the model architecture.")
flags.DEFINE_string(
    "input_file", None,
    "Input stage-III TFRecord files (a glob or comma-separated list).")
flags.DEFINE_string(
    "output_file", None,
    "The TFRecord file to write: the input records plus the teacher's "
    "labels (its folder is created if needed).")
flags.DEFINE_integer(
    "truncation_factor", 10,
    "K: number of the teacher's most probable words to keep per masked "
    "position (truncated_masked_lm_probs, top_k_indices). 0 keeps the whole "
    "distribution (masked_lm_probs, vocab_size floats per position).")
flags.DEFINE_string(
    "init_checkpoint", None,
    "The teacher's checkpoint (usually from a pre-trained BERT model), a "
    "prefix such as .../bert_model.ckpt or a directory. Required.")
flags.adopt_module_key_flags(record_flags)  # list them in --help
flags.DEFINE_integer("batch_size", 32,
                     "Records per teacher batch (inference only).")
flags.DEFINE_bool(
    "overwrite", False,
    "Label again even if --output_file already holds every input record "
    "with the teacher's labels (by default such a complete, valid output is "
    "kept and the run skipped, so a loop over shards can be rerun after an "
    "interruption).")
flags.DEFINE_bool(
    "use_xla", False,
    "Compile the teacher's forward pass with XLA (jit_compile). Usually "
    "faster on GPUs; on CPUs TensorFlow's own kernels were faster for "
    "BERT-Base (bench/bench_teacher_labels.py).")

flags.DEFINE_enum(
    "compute_dtype", "float32", ["float32", "bfloat16"],
    "The teacher's compute type. bfloat16 runs the encoder and the "
    "vocabulary projection in bfloat16 (softmax and top-K in float32; the "
    "labels are written as float32 either way): faster on hardware with "
    "bfloat16 units (CPUs with AVX512-BF16 or AMX, NVIDIA GPUs since A100), "
    "slower elsewhere. Its labels match float32's closely (README, stage IV).")


def check_flags():
  """Checks the flags that need no file; raises cli.UserError."""
  teacher.require_checkpoint(FLAGS.init_checkpoint, "--init_checkpoint")
  for name in ("max_seq_length", "max_predictions_per_seq", "batch_size"):
    if getattr(FLAGS, name) <= 0:
      raise cli.UserError("--%s must be positive, got %d" %
                          (name, getattr(FLAGS, name)))
  if FLAGS.max_predictions_per_seq > FLAGS.max_seq_length:
    raise cli.UserError(
        "--max_predictions_per_seq=%d is larger than --max_seq_length=%d" %
        (FLAGS.max_predictions_per_seq, FLAGS.max_seq_length))


def load_config():
  """The teacher's BertConfig, checked against the flags."""
  config = cli.load_bert_config(FLAGS.bert_config_file, "--bert_config_file",
                                FLAGS.max_seq_length)
  teacher.check_truncation_factor(FLAGS.truncation_factor, config.vocab_size)
  return config


def output_path(input_files):
  """--output_file, checked: a file name, no input, its folder writable."""
  path = cli.check_output_file(FLAGS.output_file, "--output_file")
  for input_file in input_files:
    if cli.same_file(path, input_file):
      raise cli.UserError("--output_file %s is the input file %s" %
                          (path, input_file))
  return path


def complete_output(path, total, config):
  """True if `path` holds `total` whole records with the teacher's labels.

  A rerun keeps such an output (unless --overwrite): stage IV runs for days
  on a real corpus, shard by shard.
  """
  if not os.path.isfile(path):
    return False
  lengths = records.stage4_lengths(FLAGS.max_seq_length,
                                   FLAGS.max_predictions_per_seq,
                                   FLAGS.truncation_factor, config.vocab_size)
  try:
    records.validate_file(path, lengths)
    count = records.check_records(path)
  except (errors.RecordMismatchError, errors.DamagedFileError) as exc:
    logging.warning("%s exists but is not a complete output of this run "
                    "(%s): labelling again", path, exc)
    return False
  if count != total:
    logging.warning("%s exists but holds %d records, the input %d: "
                    "labelling again", path, count, total)
    return False
  return True


def main(argv):
  del argv
  check_flags()
  config = load_config()
  input_files = cli.resolve_input_files(FLAGS.input_file)
  path = output_path(input_files)
  lengths = records.stage3_lengths(FLAGS.max_seq_length,
                                   FLAGS.max_predictions_per_seq)
  input_files = records.validate_files(
      input_files, lengths,
      {"max_seq_length": FLAGS.max_seq_length,
       "max_predictions_per_seq": FLAGS.max_predictions_per_seq})
  # The teacher's checkpoint is loaded (and checked) before the records are
  # read further: on a whole corpus, counting them takes minutes.
  labeler = teacher.TeacherLabeler(config, FLAGS.init_checkpoint,
                                   FLAGS.truncation_factor,
                                   use_xla=FLAGS.use_xla,
                                   compute_dtype=FLAGS.compute_dtype)
  records.check_word_ids(input_files, config.vocab_size,
                         "the teacher, --bert_config_file",
                         names=("input_ids", "masked_lm_ids"))
  total = records.count_records(input_files)
  manifest = teacher.labels_manifest(
      input_files, FLAGS.init_checkpoint, FLAGS.bert_config_file,
      FLAGS.truncation_factor, FLAGS.compute_dtype, FLAGS.max_seq_length,
      FLAGS.max_predictions_per_seq)
  if not FLAGS.overwrite and complete_output(path, total, config):
    differences = teacher.manifest_differences(path, manifest)
    if not differences:
      logging.info("%s is complete (%d records with the teacher's labels, "
                   "K=%d) and was made by these inputs and this teacher: "
                   "skipped; --overwrite labels again", path, total,
                   FLAGS.truncation_factor)
      return
    logging.warning("%s is complete but was not made by this run's "
                    "settings (it differs in: %s): labelling again", path,
                    ", ".join(differences))
  logging.info("Labelling %d records from %d files with K=%d", total,
               len(input_files), FLAGS.truncation_factor)
  # The records first, then the record of what made them: an output without
  # its manifest is labelled again (so an older manifest goes first).
  if tf.io.gfile.exists(teacher.manifest_path(path)):
    tf.io.gfile.remove(teacher.manifest_path(path))
  with outputs.atomic_outputs([path, teacher.manifest_path(path)]) as (
      tmp, tmp_manifest):
    written = teacher.label_records(labeler, input_files, tmp,
                                    FLAGS.max_seq_length,
                                    FLAGS.max_predictions_per_seq,
                                    FLAGS.batch_size, total=total)
    if written != total:
      raise cli.UserError("wrote %d records but the input holds %d" %
                          (written, total))
    teacher.write_manifest(tmp_manifest, manifest)
  logging.info("Wrote %d records with the teacher's labels to %s", written,
               path)


if __name__ == "__main__":
  cli.run(main)
