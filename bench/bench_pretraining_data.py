"""Stage III benchmark: create_pretraining_data.py, ours vs Google's original.

Both convert the same real Wikipedia text (stage II output of the real dump,
about 2.6 MB; repeated as extra files if --target_bytes asks for more) with
the same flags (max_seq_length 128, max_predictions_per_seq 20, dupe_factor
5, do_lower_case):

  ours  create_pretraining_data.py --input_dir DIR --num_workers N
        (default 2: the cores of the machine the target was set for);
  peer  Google's original create_pretraining_data.py (TF1 script, run as is
        on TensorFlow 2.21's tf.compat.v1; see tests/original_bert.py), one
        process, all files as its comma-separated --input_file.

Each run is a whole process, timed from start to exit (start-up, TensorFlow
import where there is one, reading, generation, writing). Rounds alternate
ours / peer and the best of the rounds is reported, as instances/s and
bytes of input text/s.

Usage (about a minute; keep it to one run on shared machines):
  PYTHONPATH=. .venv/bin/python bench/bench_pretraining_data.py
"""

import os
import shutil
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from bench import common
from tests import helpers
from tests import original_bert
from bert_distill.lib import records
import sample_data
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_string("text_dir", None,
                    "Existing stage-II text folder to use; by default stage "
                    "II is run on the real Wikipedia sample.")
flags.DEFINE_integer("num_files", 4, "Stage-II files to make.")
flags.DEFINE_integer("target_bytes", 2600000,
                     "Least bytes of text; the text files are repeated "
                     "(as extra files) until there are this many.")
flags.DEFINE_integer("num_workers", 2, "--num_workers of our script.")
flags.DEFINE_integer("rounds", 3, "Timed rounds of each (best is reported).")
flags.DEFINE_integer("max_seq_length", 128, "As the original's default.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "As the original's.")
flags.DEFINE_integer("dupe_factor", 5, "Passes over the text.")


def make_text(work):
  """The input text folder: stage II output, repeated to target_bytes."""
  text_dir = os.path.join(work, "text")
  if FLAGS.text_dir:
    source = FLAGS.text_dir
  else:
    source = os.path.join(work, "stage2")
    subprocess.run([sys.executable, "wikiextractor/wiki_to_text.py",
                    "--input", sample_data.fetch("wikipedia"),
                    "--output_dir", source, "--num_files",
                    str(FLAGS.num_files), "--processes", "2"],
                   cwd=REPO, env=helpers.script_env(), check=True,
                   capture_output=True)
  files = sorted(os.path.join(source, n) for n in os.listdir(source)
                 if not n.startswith("."))
  os.makedirs(text_dir)
  total = 0
  copy = 0
  while total < FLAGS.target_bytes:
    for path in files:
      target = os.path.join(text_dir, "%02d_%s" % (copy,
                                                   os.path.basename(path)))
      shutil.copy(path, target)
      total += os.path.getsize(target)
    copy += 1
  return text_dir, total


def main(argv):
  """Makes the text, times both scripts, prints the table."""
  del argv
  vocab = sample_data.fetch("vocab")
  work = tempfile.mkdtemp(prefix="bench_pretraining_data_")
  try:
    text_dir, text_bytes = make_text(work)
    inputs = sorted(os.path.join(text_dir, n) for n in os.listdir(text_dir))
    common_flags = dict(max_seq_length=FLAGS.max_seq_length,
                        max_predictions_per_seq=FLAGS.max_predictions_per_seq,
                        dupe_factor=FLAGS.dupe_factor, random_seed=12345,
                        do_lower_case="true")
    ours_dir = os.path.join(work, "ours")
    ours_cmd = [sys.executable, "create_pretraining_data.py",
                "--input_dir", text_dir, "--output_dir", ours_dir,
                "--output_base_name", "wiki", "--vocab_file", vocab,
                "--num_workers", str(FLAGS.num_workers)]
    ours_cmd += ["--%s=%s" % kv for kv in sorted(common_flags.items())]
    peer_file = os.path.join(work, "original.tfrecord")
    peer_cmd = [sys.executable] + original_bert.create_pretraining_data_args(
        inputs, peer_file, vocab, **common_flags)
    print("text: %d files, %d bytes; flags: %s" %
          (len(inputs), text_bytes, common_flags))
    ours_times, peer_times = [], []
    for r in range(FLAGS.rounds):
      ours_env = helpers.script_env()
      ours_times.append(common.timed_command(ours_cmd, ours_env, REPO))
      peer_times.append(common.timed_command(
          peer_cmd, original_bert.reference_env(ours_env), REPO))
      print("round %d: ours %.2f s, original %.2f s" %
            (r + 1, ours_times[-1], peer_times[-1]))
      sys.stdout.flush()
    ours_instances = records.count_records(
        [os.path.join(ours_dir, n) for n in os.listdir(ours_dir)])
    peer_instances = records.count_records([peer_file])
    ours_s, peer_s = min(ours_times), min(peer_times)
    print()
    print("%-44s %10s %8s %12s %12s" % ("", "instances", "wall s",
                                        "instances/s", "text MB/s"))
    ours_name = "ours (%d workers)" % FLAGS.num_workers
    peer_name = "original create_pretraining_data.py (1 proc)"
    for name, n, s in ((ours_name, ours_instances, ours_s),
                       (peer_name, peer_instances, peer_s)):
      print("%-44s %10d %8.2f %12.1f %12.3f" % (name, n, s, n / s,
                                               text_bytes / s / 1e6))
    print()
    note = ("whole process wall time, best of %d; %d bytes of real "
            "Wikipedia text, seq %d, %d preds, dupe_factor %d" %
            (FLAGS.rounds, text_bytes, FLAGS.max_seq_length,
             FLAGS.max_predictions_per_seq, FLAGS.dupe_factor))
    common.report("III create_pretraining_data", "instances/s",
                  ours_instances / ours_s, peer_instances / peer_s,
                  "original BERT script, 1 process", note)
    common.report("III create_pretraining_data", "text bytes/s",
                  text_bytes / ours_s, text_bytes / peer_s,
                  "original BERT script, 1 process", note)
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
