"""Stage VIII of the demo: a fair fine-tuning comparison of several models.

Every model is fine-tuned with `run_classifier.py` on one GLUE-format task
the same way (the same flags, learning-rate grid, epochs and seeds):

  1. with the first seed, once per learning rate of the grid; the learning
     rate whose dev metric (the task's first: accuracy, or Pearson for
     STS-B) is highest is the model's;
  2. the other seeds at that learning rate.

A --task_distilled model is then fine-tuned the same way with a teacher
(task-specific distillation, run_classifier.py --teacher_init_checkpoint):
its initial weights are another model's, and the teacher of its run with
seed s is the teacher model's run with seed s at the teacher's chosen
learning rate (a teacher fine-tuned on the same train split; the
distillation flags, e.g. the temperature, are --distill_flags). Its
training split may be another folder's (--distill_data_dir, e.g. the task
augmented by augment_task_data.py), whose dev and test files must be the
same as --data_dir's.

Each run also predicts the task's test split, which holds no labels; its
predictions are scored here against labels that stay outside the data
folder (sample_data.test_labels). No choice looks at the test figures.

Every run's dev and test metrics go to --results_tsv (columns: model, task,
learning_rate, seed, split, metric, value; appended to, so several tasks
share a file), and each model's chosen learning rate (and the seed that
chose it) to <output_dir>/chosen.tsv. Runs go --jobs at a time, each with its share of
the cores (TF_NUM_INTRAOP_THREADS), and print the command they run.

Usage:
  python scripts/demo_finetune.py --output_dir OUT --task_name sst-2 \\
    --data_dir DIR --test_labels polarity_sst2 \\
    --model teacher=CONFIG,CHECKPOINT --model random=CONFIG \\
    --model student=CONFIG,CHECKPOINT \\
    --task_distilled student_task_distilled=student,teacher \\
    --distill_flags "--temperature 2" \\
    --learning_rates 1e-4,3e-4 --seeds 1,2,3 \\
    --classifier_flags "--vocab_file V --max_seq_length 48 ..."
"""

import collections
import filecmp
import os
import shlex
import subprocess
import sys
import time

from absl import flags
from absl import logging
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import cli
cli.import_tensorflow_quietly()
from bert_distill.lib import glue
from bert_distill.lib import results
import sample_data
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Folder of the runs (one per "
                    "model, learning rate and seed).")
flags.DEFINE_string("task_name", None, "run_classifier.py --task_name.")
flags.DEFINE_string("data_dir", None, "run_classifier.py --data_dir.")
flags.DEFINE_string("test_labels", None,
                    "The sample_data name whose test labels score the test "
                    "predictions (polarity_sst2, stsb_glue).")
flags.DEFINE_multi_string(
    "model", [],
    "NAME=BERT_CONFIG[,INIT_CHECKPOINT], once per model (no checkpoint: "
    "random initial weights).")
flags.DEFINE_multi_string(
    "task_distilled", [],
    "NAME=MODEL,TEACHER: a model fine-tuned from MODEL's initial weights "
    "with the fine-tuned TEACHER (both --model names) as its teacher, once "
    "per such model.")
flags.DEFINE_string("distill_flags", "",
                    "The run_classifier.py distillation flags of every "
                    "--task_distilled run, one string (split as a shell "
                    "would).")
flags.DEFINE_string("distill_data_dir", None,
                    "The --data_dir of the --task_distilled runs (default: "
                    "--data_dir), e.g. an augment_task_data.py folder; its "
                    "dev and test files must equal --data_dir's.")
flags.DEFINE_list("learning_rates", ["1e-4", "3e-4"],
                  "The learning-rate grid, chosen from on the dev split.")
flags.DEFINE_list("seeds", ["1", "2", "3"],
                  "Fine-tuning seeds (--random_seed); the first chooses the "
                  "learning rate.")
flags.DEFINE_string("classifier_flags", "",
                    "The other run_classifier.py flags of every run, one "
                    "string (split as a shell would).")
flags.DEFINE_integer("jobs", 2, "Runs at a time.")
flags.DEFINE_string("results_tsv", None, "TSV the metrics are appended to.")
flags.DEFINE_string("python", sys.executable, "Python that runs the runs.")

# run_classifier.py flags this script sets for each run.
DRIVER_FLAGS = ("task_name", "data_dir", "bert_config_file", "init_checkpoint",
                "learning_rate", "random_seed", "output_dir", "do_train",
                "do_eval", "do_predict", "teacher_init_checkpoint",
                "teacher_bert_config_file")
RESULT_COLUMNS = ("model", "task", "learning_rate", "seed", "split",
                  "metric", "value")


class Run(object):
  """One fine-tuning run: a model at a learning rate and seed."""

  def __init__(self, model, learning_rate, seed, teacher=None,
               data_dir=None):
    """teacher: the finished Run of this run's teacher, or None; data_dir:
    the run's --data_dir (default: this script's)."""
    self.model, self.learning_rate, self.seed = model, learning_rate, seed
    self.teacher = teacher
    self.data_dir = data_dir or FLAGS.data_dir
    self.output_dir = os.path.join(FLAGS.output_dir, model.name,
                                   "lr%s-seed%s" % (learning_rate, seed))

  def command(self, extra_args):
    """The run_classifier.py command line of this run."""
    args = [FLAGS.python, os.path.join(REPO, "run_classifier.py"),
            "--task_name", FLAGS.task_name, "--data_dir", self.data_dir,
            "--bert_config_file", self.model.config,
            "--learning_rate", self.learning_rate,
            "--random_seed", self.seed, "--output_dir", self.output_dir,
            "--do_train=true", "--do_eval=true", "--do_predict=true"]
    if self.model.checkpoint:
      args += ["--init_checkpoint", self.model.checkpoint]
    if self.teacher is not None:
      args += ["--teacher_init_checkpoint", self.teacher.output_dir,
               "--teacher_bert_config_file", self.teacher.model.config]
    return args + list(extra_args)


Model = collections.namedtuple("Model", "name config checkpoint")


def parse_task_distilled(spec, models):
  """NAME=MODEL,TEACHER -> (Model of NAME with MODEL's weights, the TEACHER
  Model); cli.UserError when malformed or naming no --model."""
  name, sep, rest = spec.partition("=")
  parts = rest.split(",")
  if not sep or not name or len(parts) != 2:
    raise cli.UserError("--task_distilled %r: expected NAME=MODEL,TEACHER"
                        % spec)
  by_name = {m.name: m for m in models}
  if name in by_name:
    raise cli.UserError("--task_distilled %r: %r is already a --model name "
                        "(its runs would share a folder)" % (spec, name))
  for part in parts:
    if part not in by_name:
      raise cli.UserError("--task_distilled %r: %r is not a --model name"
                          % (spec, part))
  base = by_name[parts[0]]
  return Model(name, base.config, base.checkpoint), by_name[parts[1]]


def parse_model(spec):
  """NAME=CONFIG[,CHECKPOINT] -> Model; cli.UserError when malformed."""
  name, sep, rest = spec.partition("=")
  parts = rest.split(",")
  if not sep or not name or not parts[0] or len(parts) > 2:
    raise cli.UserError("--model %r: expected NAME=BERT_CONFIG[,CHECKPOINT]"
                        % spec)
  return Model(name, parts[0], parts[1] if len(parts) == 2 else "")


def fine_tune(models, teacher_of, extra_args, task, test_labels, scores,
              chosen, data_dir=None):
  """The protocol for `models`: each at every learning rate with the first
  seed, the rate with the best dev metric chosen, then the other seeds at
  it. teacher_of(model, seed) is the finished Run of a run's teacher, or
  None; data_dir: the runs' --data_dir (default: --data_dir). Fills
  `scores` (id(run) -> `score`) and `chosen` (model name -> learning rate);
  returns (the grid's runs, the other seeds' runs)."""
  metric = "eval_" + task.metrics[0]
  grid = [Run(m, lr, FLAGS.seeds[0], teacher_of(m, FLAGS.seeds[0]),
              data_dir)
          for m in models for lr in FLAGS.learning_rates]
  run_all(grid, extra_args, FLAGS.jobs)
  scores.update({id(run): score(run, task, test_labels) for run in grid})
  for m in models:
    tried = [run for run in grid if run.model is m]
    best = max(tried, key=lambda run: scores[id(run)]["dev"][metric])
    chosen[m.name] = best.learning_rate
    logging.info("%s: learning rate %s (dev %s %s)", m.name,
                 best.learning_rate, metric[5:], ", ".join(
                     "%.4f at %s" % (scores[id(r)]["dev"][metric],
                                     r.learning_rate) for r in tried))
  rest = [Run(m, chosen[m.name], seed, teacher_of(m, seed), data_dir)
          for m in models for seed in FLAGS.seeds[1:]]
  run_all(rest, extra_args, FLAGS.jobs)
  scores.update({id(run): score(run, task, test_labels) for run in rest})
  return grid, rest


def check_same_evaluation_splits(task, data_dir, other, flag_name):
  """cli.UserError unless folder `other` holds the task's training file and
  the same dev and test files as `data_dir`: runs scored on other splits
  would not compare."""
  if not os.path.isdir(other):
    raise cli.UserError("%s %s: no such folder" % (flag_name, other))
  if not os.path.isfile(os.path.join(other, task.train.file_name)):
    raise cli.UserError("%s %s: no %s" % (flag_name, other,
                                          task.train.file_name))
  for fmt in glue.all_formats(task)[1:]:
    ours = os.path.join(data_dir, fmt.file_name)
    theirs = os.path.join(other, fmt.file_name)
    if os.path.isfile(ours) and not (
        os.path.isfile(theirs) and filecmp.cmp(ours, theirs, shallow=False)):
      raise cli.UserError(
          "%s %s: its %s is not --data_dir's (the runs are compared on the "
          "same dev and test splits)" % (flag_name, other, fmt.file_name))


def split_flags(text, flag_name):
  """The words of `text` (the value of `flag_name`), split as a shell
  would; cli.UserError when it does not split or sets a flag this script
  sets for each run."""
  try:
    words = shlex.split(text)
  except ValueError as exc:
    raise cli.UserError("%s: %s" % (flag_name, exc))
  for arg in words:
    name = arg.lstrip("-").split("=")[0]
    if arg.startswith("-") and name in DRIVER_FLAGS:
      raise cli.UserError(
          "%s: %s is set by this script for each run (give "
          "--learning_rates, --seeds, --output_dir or --task_distilled "
          "instead)" % (flag_name, arg))
  return words


def run_all(runs, extra_args, jobs):
  """Runs `runs`, `jobs` at a time; raises cli.UserError on a failure."""
  env = dict(os.environ)
  threads = str(max(1, (os.cpu_count() or 1) // jobs))
  env.setdefault("TF_NUM_INTRAOP_THREADS", threads)
  env.setdefault("OMP_NUM_THREADS", threads)
  pending = list(runs)
  running = []
  while pending or running:
    while pending and len(running) < jobs:
      run = pending.pop(0)
      os.makedirs(os.path.dirname(run.output_dir), exist_ok=True)
      command = run.command(extra_args)
      print("+ " + " ".join(shlex.quote(a) for a in command), flush=True)
      log = open(run.output_dir + ".log", "w")
      running.append((run, subprocess.Popen(command, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            env=env), log, time.time()))
    time.sleep(0.2)
    for item in list(running):
      run, process, log, start = item
      if process.poll() is None:
        continue
      running.remove(item)
      log.close()
      if process.returncode:
        for other in running:
          other[1].terminate()
          other[1].wait()
        with open(run.output_dir + ".log", errors="replace") as f:
          tail = f.read().splitlines()[-15:]
        print("\n".join(tail))
        raise cli.UserError("fine-tuning %s (learning rate %s, seed %s) "
                            "failed: see %s.log" % (
                                run.model.name, run.learning_rate,
                                run.seed, run.output_dir))
      logging.info("%s lr %s seed %s: %.1f s", run.model.name,
                   run.learning_rate, run.seed, time.time() - start)


def score(run, task, test_labels):
  """{split: metrics} of a finished run: its dev results, its test score."""
  dev = results.read_eval_results(run.output_dir)
  path = os.path.join(run.output_dir, "test_results.tsv")
  predictions = np.loadtxt(path, ndmin=2)
  if len(predictions) != len(test_labels):
    raise cli.UserError("%s: %d predictions for %d test labels" %
                        (path, len(predictions), len(test_labels)))
  test = glue.compute_metrics(task, predictions, np.asarray(test_labels))
  return {"dev": dev, "test": test}


def main(argv):
  del argv
  for name in ("output_dir", "task_name", "data_dir", "test_labels",
               "results_tsv"):
    if not getattr(FLAGS, name):
      raise cli.UserError("--%s is required" % name)
  extra_args = split_flags(FLAGS.classifier_flags, "--classifier_flags")
  models = [parse_model(spec) for spec in FLAGS.model]
  if not models:
    raise cli.UserError("--model: give at least one")
  distilled = [parse_task_distilled(spec, models)
               for spec in FLAGS.task_distilled]
  names = [m.name for m, _ in distilled]
  if len(set(names)) < len(names):
    raise cli.UserError("--task_distilled: a NAME given twice")
  distill_args = split_flags(FLAGS.distill_flags, "--distill_flags")
  if not FLAGS.learning_rates or not FLAGS.seeds:
    raise cli.UserError("--learning_rates and --seeds need at least one "
                        "value each")
  if FLAGS.jobs < 1:
    raise cli.UserError("--jobs must be at least 1, got %d" % FLAGS.jobs)
  if os.path.isdir(FLAGS.output_dir) and os.listdir(FLAGS.output_dir):
    raise cli.UserError(
        "--output_dir %s is not empty: give a new folder (a run there "
        "would resume its old checkpoint, not start over)" % FLAGS.output_dir)
  results_folder = os.path.dirname(os.path.abspath(FLAGS.results_tsv))
  if not os.path.isdir(results_folder):
    raise cli.UserError("--results_tsv: no folder %s" % results_folder)
  task = glue.get_task(FLAGS.task_name)
  metric = "eval_" + task.metrics[0]
  if FLAGS.distill_data_dir:
    if not distilled:
      raise cli.UserError("--distill_data_dir is for --task_distilled runs: "
                          "give one")
    check_same_evaluation_splits(task, FLAGS.data_dir, FLAGS.distill_data_dir,
                                 "--distill_data_dir")
  try:
    test_labels = sample_data.test_labels(FLAGS.test_labels)
  except ValueError as exc:
    raise cli.UserError("--test_labels: %s" % exc)

  scores, chosen = {}, {}
  grid, rest = fine_tune(models, lambda m, seed: None, extra_args, task,
                         test_labels, scores, chosen)
  if distilled:
    # The teachers: each teacher model's runs at its chosen learning rate.
    teacher_run = {(r.model.name, r.seed): r for r in grid + rest
                   if r.learning_rate == chosen[r.model.name]}
    teacher_of = {m.name: t.name for m, t in distilled}
    more_grid, more_rest = fine_tune(
        [m for m, _ in distilled],
        lambda m, seed: teacher_run[(teacher_of[m.name], seed)],
        distill_args + extra_args, task, test_labels, scores, chosen,
        FLAGS.distill_data_dir)
    grid += more_grid
    rest += more_rest
    models += [m for m, _ in distilled]

  new_file = not os.path.exists(FLAGS.results_tsv)
  with open(FLAGS.results_tsv, "a") as f:
    if new_file:
      f.write("\t".join(RESULT_COLUMNS) + "\n")
    for run in grid + rest:
      for split in ("dev", "test"):
        value = scores[id(run)][split][metric]
        f.write("\t".join([run.model.name, FLAGS.task_name,
                           run.learning_rate, run.seed, split, metric[5:],
                           "%.6f" % value]) + "\n")
  with open(os.path.join(FLAGS.output_dir, "chosen.tsv"), "w") as f:
    f.write("model\tlearning_rate\tchosen_with_seed\n")
    for m in models:
      f.write("%s\t%s\t%s\n" % (m.name, chosen[m.name], FLAGS.seeds[0]))
  for m in models:
    test = [scores[id(r)]["test"][metric] for r in grid + rest
            if r.model is m and r.learning_rate == chosen[m.name]]
    print("%-28s lr %-6s test %s mean %.4f (%.4f-%.4f over %d seeds)" % (
        m.name, chosen[m.name], metric[5:], np.mean(test), min(test),
        max(test), len(test)), flush=True)


if __name__ == "__main__":
  cli.run(main)
