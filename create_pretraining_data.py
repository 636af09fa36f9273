# coding=utf-8
"""Stage III: sentence-per-line text files -> masked-LM / next-sentence
TFRecords for BERT pre-training and distillation.

Reads every (non-hidden) file of --input_dir in sorted order and writes one
file of tf.train.Example records per input file,
<output_dir>/<output_base_name>_<i>.tfrecord, with the features input_ids,
input_mask, segment_ids (max_seq_length each), masked_lm_positions,
masked_lm_ids, masked_lm_weights (max_predictions_per_seq each) and
next_sentence_labels (1 = B is a random span).

The algorithm is that of Google's BERT create_pretraining_data.py (see
pretraining_data.py). Each input file is processed on its own, with the
random seed random_seed + i, so files are converted in parallel
(--num_workers) and the output does not depend on the number of workers;
"random next" segments come from the same input file. Outputs appear under
their final names only when all files are done.

Example:
  python create_pretraining_data.py --input_dir wiki_text \\
      --output_dir data/record --output_base_name wiki \\
      --vocab_file uncased_L-12_H-768_A-12/vocab.txt --do_lower_case=true \\
      --max_seq_length 128 --max_predictions_per_seq 20 --dupe_factor 5
"""

import os
import re

from absl import flags
from absl import logging

from bert_distill import cli
from bert_distill.lib import errors
from bert_distill.lib import outputs
from bert_distill.stages import pretraining_data
import tokenization

FLAGS = flags.FLAGS

flags.DEFINE_string("input_dir", None,
                    "Folder of input text files: one sentence per line, a "
                    "blank line between documents (the output of "
                    "wikiextractor/wiki_to_text.py). All its files are read, "
                    "in sorted order (hidden files and subfolders are "
                    "skipped).")
flags.DEFINE_string("output_dir", None,
                    "Folder for the TFRecord files (created if needed).")
flags.DEFINE_string("output_base_name", None,
                    "Output files are <output_dir>/<output_base_name>_<i>"
                    ".tfrecord, i being the index of the input file.")
flags.DEFINE_string("vocab_file", None,
                    "The vocabulary file that the BERT model was trained on.")
flags.DEFINE_bool("do_lower_case", True,
                  "Whether to lower case the input text. Should be True for "
                  "uncased models and False for cased models.")
flags.DEFINE_bool("do_whole_word_mask", False,
                  "Whether to mask all the word pieces of a word together "
                  "rather than each word piece independently.")
flags.DEFINE_integer("max_seq_length", 128, "Maximum sequence length.")
flags.DEFINE_integer("max_predictions_per_seq", 20,
                     "Maximum number of masked LM predictions per sequence.")
flags.DEFINE_integer("random_seed", 12345,
                     "Random seed for data generation (input file i uses "
                     "random_seed + i).")
flags.DEFINE_integer("dupe_factor", 10,
                     "Number of times to duplicate the input data (with "
                     "different masks).")
flags.DEFINE_float("masked_lm_prob", 0.15, "Masked LM probability.")
flags.DEFINE_float("short_seq_prob", 0.1,
                   "Probability of creating sequences which are shorter than "
                   "the maximum length.")
flags.DEFINE_integer("num_workers", os.cpu_count() or 1,
                     "Processes converting files in parallel (default: all "
                     "cores). The output does not depend on it.")


def check_flags():
  """Raises cli.UserError for flag values the generator cannot work with."""
  if FLAGS.max_seq_length < 5:
    raise cli.UserError("--max_seq_length must be at least 5 ([CLS], [SEP], "
                        "[SEP] and a token for each segment), got %d" %
                        FLAGS.max_seq_length)
  if not 1 <= FLAGS.max_predictions_per_seq <= FLAGS.max_seq_length - 3:
    raise cli.UserError(
        "--max_predictions_per_seq must be between 1 and max_seq_length - 3 "
        "= %d (the tokens that can be masked), got %d" %
        (FLAGS.max_seq_length - 3, FLAGS.max_predictions_per_seq))
  if not 0.0 < FLAGS.masked_lm_prob < 1.0:
    raise cli.UserError("--masked_lm_prob must be in (0, 1), got %g" %
                        FLAGS.masked_lm_prob)
  if not 0.0 <= FLAGS.short_seq_prob <= 1.0:
    raise cli.UserError("--short_seq_prob must be in [0, 1], got %g" %
                        FLAGS.short_seq_prob)
  if FLAGS.dupe_factor < 1:
    raise cli.UserError("--dupe_factor must be at least 1, got %d" %
                        FLAGS.dupe_factor)
  if FLAGS.num_workers < 1:
    raise cli.UserError("--num_workers must be at least 1, got %d" %
                        FLAGS.num_workers)
  if not re.match(r"^[\w.-]+$", FLAGS.output_base_name or ""):
    raise cli.UserError("--output_base_name must be a plain file name "
                        "prefix, got %r" % FLAGS.output_base_name)


def main(argv):
  """Checks the flags and inputs, converts all files, logs a summary."""
  del argv  # cli.run rejects leftover words
  check_flags()
  if not outputs.isdir(FLAGS.input_dir):
    raise cli.UserError("--input_dir: not a folder: %s" % FLAGS.input_dir)
  input_files = pretraining_data.list_input_files(FLAGS.input_dir)
  if not input_files:
    raise cli.UserError("--input_dir: no input files in %s" %
                        FLAGS.input_dir)
  cli.require_file(FLAGS.vocab_file, "--vocab_file", "vocabulary")
  tokenizer = tokenization.FullTokenizer(FLAGS.vocab_file,
                                         FLAGS.do_lower_case)
  try:
    job = pretraining_data.FileJob(
        tokenizer, FLAGS.max_seq_length, FLAGS.max_predictions_per_seq,
        FLAGS.masked_lm_prob, FLAGS.short_seq_prob, FLAGS.dupe_factor,
        FLAGS.random_seed, FLAGS.do_whole_word_mask)
  except errors.InputError as exc:
    raise cli.UserError("--vocab_file: %s: %s" % (FLAGS.vocab_file, exc))
  if cli.same_file(FLAGS.output_dir, FLAGS.input_dir):
    raise cli.UserError(
        "--output_dir %s is --input_dir %s: a rerun would read this run's "
        "records as text; give another folder" % (FLAGS.output_dir,
                                                  FLAGS.input_dir))
  cli.ensure_writable_dir(FLAGS.output_dir)
  num_workers = min(FLAGS.num_workers, len(input_files))
  logging.info("%d input files in %s, %d workers", len(input_files),
               FLAGS.input_dir, num_workers)

  progress = cli.Progress("create_pretraining_data", unit="files",
                          total=len(input_files))
  written, stats = pretraining_data.create_files(
      job, input_files, FLAGS.output_dir, FLAGS.output_base_name,
      num_workers, progress)
  for name in pretraining_data.remove_stale_outputs(
      FLAGS.output_dir, FLAGS.output_base_name, written):
    logging.warning("removed %s (left by an earlier run)", name)

  total = {key: sum(s[key] for s in stats) for key in stats[0]}
  seconds = max(progress.elapsed, 1e-9)
  for path, file_stats in zip(input_files, stats):
    if not file_stats["instances"]:
      logging.warning("%s holds no text: its output is empty", path)
    elif file_stats["documents"] < pretraining_data.MIN_DOCUMENTS_PER_FILE:
      logging.warning(
          "%s holds %d document(s), fewer than %d: its \"random next\" "
          "segments come from %s, poor negatives for the next-sentence "
          "task; keep many articles per file (stage II: a smaller "
          "--num_files or a larger --max_bytes_per_file)", path,
          file_stats["documents"], pretraining_data.MIN_DOCUMENTS_PER_FILE,
          "the same document" if file_stats["documents"] == 1 else
          "%d other documents only" % (file_stats["documents"] - 1))
  progress.done(extra="%d instances (%.1f/s), %.2f MB of text/s" %
                (total["instances"], total["instances"] / seconds,
                 total["bytes"] / seconds / 1e6))
  logging.info(
      "wrote %d files in %s: %d instances (%.1f%% random next) from %d "
      "documents, %d sentences, %d tokens, %d bytes of text; %d bytes of "
      "records", len(written), FLAGS.output_dir, total["instances"],
      100.0 * total["random_next"] / max(total["instances"], 1),
      total["documents"], total["sentences"], total["tokens"],
      total["bytes"], total["output_bytes"])


if __name__ == "__main__":
  flags.mark_flags_as_required(["input_dir", "output_dir", "output_base_name",
                                "vocab_file"])
  cli.run(main)
