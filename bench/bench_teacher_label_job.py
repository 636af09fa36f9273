"""Stage IV as a job: mpirun -np N against one process, same cores and files.

Writes --num_files synthetic but valid stage-III files (seq 128, 20 masked
positions; bench_teacher_labels.synthetic_examples) and a BERT-Base-sized
teacher with random weights, then times produce_teacher_labels.py
--output_dir as a user runs it, whole process (Python start, TensorFlow
import, checkpoint load, labelling, writing):

  ours  mpirun -np --processes: the files dealt to the processes by size,
        each with cores / processes TensorFlow threads (what the script
        gives a rank on a machine without GPUs);
  peer  one process over the same files, all cores.

Both write every file; the ratio is the job's records/s over one process's.
On a CPU the processes share the same cores, so the ratio shows what the
split costs or gains there (start-up paid per process, smaller matrix
multiplies per thread); on GPUs each process has its own.

Usage (about 2 minutes on 2 cores at the defaults):
  PYTHONPATH=. .venv/bin/python bench/bench_teacher_label_job.py
"""

import os
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench import bench_teacher_labels  # pylint: disable=g-import-not-at-top
from bench import common  # pylint: disable=g-import-not-at-top
from bert_distill.lib import checkpoints  # pylint: disable=g-import-not-at-top
import modeling  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_files", 4, "Stage-III files.")
flags.DEFINE_integer("records_per_file", 48, "Records in each file.")
flags.DEFINE_integer("processes", 2, "mpirun -np.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def label_command(tmp, output_dir):
  """produce_teacher_labels.py's flags for the benchmark's files."""
  return [sys.executable, os.path.join(REPO, "produce_teacher_labels.py"),
          "--bert_config_file", os.path.join(tmp, "bert_config.json"),
          "--init_checkpoint", os.path.join(tmp, "bert_model.ckpt"),
          "--input_file", os.path.join(tmp, "stage3", "*.tfrecord"),
          "--output_dir", output_dir, "--truncation_factor", str(FLAGS.k),
          "--max_seq_length", str(FLAGS.seq_length),
          "--max_predictions_per_seq", str(FLAGS.predictions),
          "--batch_size", str(FLAGS.batch_size)]


def main(argv):
  del argv
  with tempfile.TemporaryDirectory(prefix="bench_teacher_label_job_",
                                   ignore_cleanup_errors=True) as tmp:
    run(tmp)


def run(tmp):
  """Writes the inputs and teacher into `tmp`, times both sides."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(tmp, "stage3"))
  for i in range(FLAGS.num_files):
    bench_teacher_labels.write_records(
        os.path.join(tmp, "stage3", "part_%d.tfrecord" % i),
        bench_teacher_labels.synthetic_examples(FLAGS.records_per_file, rng))
  config = common.bert_config_from_flags("gelu_exact")
  with open(os.path.join(tmp, "bert_config.json"), "w") as f:
    f.write(config.to_json_string())
  checkpoints.save_checkpoint(
      modeling.BertPretrainingModel(config).variables_by_name(),
      os.path.join(tmp, "bert_model.ckpt"))

  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_NUM_INTRAOP_THREADS", None)  # each side sizes its threads
  cores = os.cpu_count() or 1
  mpirun = ["mpirun"] + (["--allow-run-as-root"] if os.getuid() == 0
                         else []) + [
      "-np", str(FLAGS.processes), "-H", "localhost:%d" % FLAGS.processes,
      "-bind-to", "none", "-map-by", "slot", "-x", "PATH", "-x",
      "PYTHONPATH", "-x", "TF_CPP_MIN_LOG_LEVEL"]
  total = FLAGS.num_files * FLAGS.records_per_file
  best = {"job": 0.0, "one": 0.0}
  for round_ in range(2):
    for side in ("one", "job"):
      out = os.path.join(tmp, "out_%s_%d" % (side, round_))
      cmd = label_command(tmp, out)
      seconds = common.timed_command(
          mpirun + cmd if side == "job" else cmd, env, REPO)
      best[side] = max(best[side], total / seconds)
      print("%s, round %d: %d records in %.1f s" % (side, round_ + 1, total,
                                                    seconds))
  common.report(
      "IV teacher labels, mpirun -np %d" % FLAGS.processes,
      "records/s (whole process)", best["job"], best["one"],
      "one process, %d threads" % cores,
      "%d layers, hidden %d, seq %d, %d files of %d records, K=%d; both "
      "include start-up and the checkpoint load" % (
          FLAGS.num_layers, FLAGS.hidden_size, FLAGS.seq_length,
          FLAGS.num_files, FLAGS.records_per_file, FLAGS.k))


if __name__ == "__main__":
  app.run(main)  # the size flags come with bench_teacher_labels
