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

Values are position-major (the K values of masked position 0 first);
--compact_labels stores them as float16 and the ids as uint16 (bytes values).

With --output_file, one file holds every input record, in input order. With
--output_dir, each input file gets its own labelled file of the same base
name; under mpirun the files are dealt to the processes by size (one GPU
each) and a rerun labels only the files not yet complete, so a killed job
resumes. Every file appears under its final name only when complete, with a
record of what made it beside it (.NAME.made-by.json: the inputs, the
teacher's fingerprint and the settings): a rerun with other inputs, another
teacher or other settings labels again. Paths may be local or remote
(gs://, s3://, hdfs://: anything tf.io.gfile opens).

Examples:
  python produce_teacher_labels.py \\
    --bert_config_file=uncased_L-12_H-768_A-12/bert_config.json \\
    --init_checkpoint=uncased_L-12_H-768_A-12/bert_model.ckpt \\
    --input_file='data/record/wiki_*.tfrecord' \\
    --output_file=data/record_distill/wiki_k10.tfrecord \\
    --truncation_factor=10 --max_seq_length=128 --max_predictions_per_seq=20

  # every GPU of a node (as stage VI); the nodes of ./hosts:
  # STAGE=labels BERT_CONFIG=... INIT_CHECKPOINT=... bash multinode_train.sh 16
  mpirun -np 8 -H localhost:8 -bind-to none -map-by slot \\
    python produce_teacher_labels.py ... --output_dir=data/record_distill
"""

import os

from absl import flags
from absl import logging

from bert_distill import cli
cli.import_tensorflow_quietly()
# pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill.lib import errors
from bert_distill.flags import record_flags
from bert_distill.lib import record_format
from bert_distill.lib import records
from bert_distill.stages import teacher
import tensorflow as tf
from bert_distill.stages import training
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
    "labels (its folder is created if needed). Give this or --output_dir.")
flags.DEFINE_string(
    "output_dir", None,
    "Instead of --output_file: the folder to write one labelled file per "
    "input file into, under the input's base name. Under mpirun the files "
    "are dealt to the processes, balanced by size; files already complete "
    "and made by the same inputs, teacher and settings are skipped.")
flags.DEFINE_bool(
    "compact_labels", False,
    "Store the labels as float16 probabilities and uint16 word ids (one "
    "bytes value per feature): the labels of a record take about 0.87 KB "
    "at K=10 instead of 1.27 KB (whole records 1.7 KB instead of 2.1). "
    "Stages V and VI read either form (README, stage IV).")
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
    "Label again even if --output_file (or a file in --output_dir) "
    "already holds every input record with this teacher's labels (by "
    "default such a complete output is kept and its labelling skipped, so a "
    "job can be rerun after an interruption).")
flags.DEFINE_bool(
    "use_xla", False,
    "Compile the teacher's forward pass with XLA (jit_compile). Usually "
    "faster on GPUs; on CPUs TensorFlow's own kernels were faster for "
    "BERT-Base (bench/bench_teacher_labels.py).")

flags.DEFINE_enum(
    "compute_dtype", "float32", ["float32", "bfloat16"],
    "The teacher's compute type. bfloat16 runs the encoder (and, with "
    "K > 0, the search of the vocabulary) in bfloat16 (the best words' "
    "logits, softmax and top-K in float32; the labels are written as "
    "float32 either way): "
    "faster on hardware with "
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
  if bool(FLAGS.output_file) == bool(FLAGS.output_dir):
    raise cli.UserError("give one of --output_file (one labelled file) and "
                        "--output_dir (one per input file)")
  processes = cli.launched_processes()
  if FLAGS.output_file and processes > 1:
    raise cli.UserError(
        "--output_file is written by one process, but mpirun started %d: "
        "give --output_dir to deal the input files to them" % processes)


def load_config():
  """The teacher's BertConfig, checked against the flags."""
  config = cli.load_bert_config(FLAGS.bert_config_file, "--bert_config_file",
                                FLAGS.max_seq_length)
  teacher.check_truncation_factor(FLAGS.truncation_factor, config.vocab_size)
  if (FLAGS.compact_labels and FLAGS.truncation_factor and
      config.vocab_size > record_format.COMPACT_MAX_VOCAB_SIZE):
    raise cli.UserError(
        "--compact_labels stores word ids in 16 bits, but the teacher's "
        "vocab_size is %d (at most %d)" %
        (config.vocab_size, record_format.COMPACT_MAX_VOCAB_SIZE))
  return config


def make_manifest(input_files, fingerprint):
  """The manifest of an output made of `input_files` (teacher.labels_manifest
  with this run's settings)."""
  return teacher.labels_manifest(
      input_files, fingerprint, FLAGS.truncation_factor, FLAGS.compute_dtype,
      FLAGS.max_seq_length, FLAGS.max_predictions_per_seq,
      FLAGS.compact_labels)


def validate_inputs(input_files, allow_empty=False):
  """The input files that hold records, their first records checked.

  Raises errors.RecordMismatchError when none holds any (unless
  `allow_empty`).
  """
  lengths = records.stage3_lengths(FLAGS.max_seq_length,
                                   FLAGS.max_predictions_per_seq)
  named = {"max_seq_length": FLAGS.max_seq_length,
           "max_predictions_per_seq": FLAGS.max_predictions_per_seq}
  if allow_empty:
    return [p for p in input_files if records.validate_file(p, lengths,
                                                            named)]
  return records.validate_files(input_files, lengths, named)


def make_labeler(config, input_files):
  """The teacher, loaded; then the inputs' word ids checked against it.

  The checkpoint is loaded (and checked) before the records are read
  further: on a whole corpus, reading them takes minutes.
  """
  labeler = teacher.TeacherLabeler(config, FLAGS.init_checkpoint,
                                   FLAGS.truncation_factor,
                                   use_xla=FLAGS.use_xla,
                                   compute_dtype=FLAGS.compute_dtype)
  records.check_word_ids(input_files, config.vocab_size,
                         "the teacher, --bert_config_file",
                         names=("input_ids", "masked_lm_ids"))
  return labeler


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
  if not tf.io.gfile.exists(path):
    return False
  lengths = records.stage4_lengths(FLAGS.max_seq_length,
                                   FLAGS.max_predictions_per_seq,
                                   FLAGS.truncation_factor, config.vocab_size,
                                   compact=FLAGS.compact_labels)
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


def label_into_file(config, input_files):
  """--output_file: every input record, in order, into one file."""
  path = output_path(input_files)
  input_files = validate_inputs(input_files)
  labeler = make_labeler(config, input_files)
  total = records.count_records(input_files)
  manifest = make_manifest(
      input_files, teacher.teacher_fingerprint(FLAGS.init_checkpoint,
                                               FLAGS.bert_config_file))
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
  written = teacher.write_labelled_file(
      labeler, input_files, path, manifest, FLAGS.max_seq_length,
      FLAGS.max_predictions_per_seq, FLAGS.batch_size, total,
      FLAGS.compact_labels)
  logging.info("Wrote %d records with the teacher's labels to %s", written,
               path)


def output_paths(input_files):
  """input file -> its labelled file in --output_dir (same base name)."""
  paths = {}
  by_name = {}
  for input_file in input_files:
    name = os.path.basename(input_file)
    if name in by_name:
      raise cli.UserError(
          "--input_file: %s and %s have the same name; --output_dir holds "
          "one file per name (give files of distinct names)" %
          (by_name[name], input_file))
    by_name[name] = input_file
    paths[input_file] = os.path.join(FLAGS.output_dir, name)
    if cli.same_file(paths[input_file], input_file):
      raise cli.UserError("--output_dir %s holds the input file %s: its "
                          "labelled file would replace it" %
                          (FLAGS.output_dir, input_file))
  return paths


def start_job():
  """This process's place in the job: alone, or a Horovod rank (mpirun)."""
  if cli.launched_processes() == 1:
    return training.Distribution()
  from bert_distill.stages import horovod_distribution  # pylint: disable=g-import-not-at-top
  distribution, device = horovod_distribution.start()
  logging.info("%d processes label the files, one %s each",
               distribution.size, device)
  return distribution


def label_into_dir(config, input_files):
  """--output_dir: each input file into its own labelled file.

  Rank 0 finds the files not yet complete (`teacher.why_relabel`), deals
  them out in shares balanced by size and sends every process its share;
  the processes then label their files one by one, without communicating.
  """
  job = start_job()
  paths = output_paths(input_files)
  fingerprint = teacher.teacher_fingerprint(FLAGS.init_checkpoint,
                                            FLAGS.bert_config_file)
  shares = None
  if job.is_chief:
    cli.ensure_writable_dir(FLAGS.output_dir)
    todo, kept = [], 0
    for input_file in input_files:
      reason = "--overwrite" if FLAGS.overwrite else teacher.why_relabel(
          paths[input_file], make_manifest([input_file], fingerprint))
      if reason:
        todo.append(input_file)
        if reason != "missing":
          logging.info("%s: labelling again (%s)", paths[input_file], reason)
      else:
        kept += 1
    logging.info("%d of %d files to label (%d complete, kept), %d "
                 "process(es)", len(todo), len(input_files), kept, job.size)
    shares = records.deal_files_by_size(todo, job.size)
  # Rank 0's deal (the others would stat every file again), then each
  # process works alone.
  mine = job.broadcast_object(shares)[job.rank]
  job.shutdown()
  if not mine:
    logging.info("Rank %d: no file to label", job.rank)
    return
  # (An empty input file gets an empty labelled file.)
  labeler = make_labeler(config, validate_inputs(mine, allow_empty=True))
  for n, input_file in enumerate(mine):
    total = records.check_records(input_file)
    logging.info("File %d/%d of rank %d: %s, %d records", n + 1, len(mine),
                 job.rank, input_file, total)
    teacher.write_labelled_file(
        labeler, [input_file], paths[input_file],
        make_manifest([input_file], fingerprint), FLAGS.max_seq_length,
        FLAGS.max_predictions_per_seq, FLAGS.batch_size, total,
        FLAGS.compact_labels)
  logging.info("Rank %d labelled its %d file(s) into %s", job.rank, len(mine),
               FLAGS.output_dir)


def main(argv):
  del argv
  check_flags()
  config = load_config()
  input_files = cli.resolve_input_files(FLAGS.input_file)
  if FLAGS.output_dir:
    label_into_dir(config, input_files)
  else:
    label_into_file(config, input_files)


if __name__ == "__main__":
  cli.run(main)
