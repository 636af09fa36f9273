"""Summarises a `make demo` run: one table per stage and a picture.

Reads what the demo wrote under --demo_dir: the stage timings
(stages.tsv: stage, seconds[, sequences trained]), the teacher's
and the students' checkpoints and eval_results.txt files, the
TensorBoard events of the training runs, and the fine-tuning runs of stage
VIII (with the polarity data of --polarity_dir). Prints the tables and writes
<demo_dir>/summary.txt and <demo_dir>/distillation.svg (training loss,
teacher agreement, fine-tuned dev accuracy).
"""

import collections
import glob
import json
import os
import sys

from absl import flags
from absl import logging
import numpy as np

import svg_chart  # beside this script

# The project's modules are in the repository root, above this folder: the
# script runs as `python scripts/demo_summary.py` with or without PYTHONPATH.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import cli
cli.import_tensorflow_quietly()
import tensorflow as tf
from bert_distill.lib import outputs
from bert_distill.lib import records
from bert_distill.lib import results
from bert_distill.stages import augmentation
import sample_data
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("demo_dir", "demo_output", "Folder the demo wrote to.")
flags.DEFINE_string(
    "polarity_dir", None,
    "The SST-2-format polarity folder the demo fine-tuned on (stage VIII); "
    "default: `python sample_data.py polarity_sst2`.")

# The models of stage VIII (names as scripts/demo.sh gives them to
# demo_finetune.py) -> (column heading, colour), and the pre-training runs of
# stages I, V and VI (names as in stages.tsv) -> output folder.
MODELS = [
    ("teacher", "teacher (adapted)", "green"),
    ("student", "student: soft labels\n+ hidden states", "blue"),
    ("student_soft_labels", "student: soft labels\n(the original's loss)",
     "purple"),
    ("student_mlm", "student: masked-LM,\nno teacher", "orange"),
    ("student_random_init", "student: random\ninit", "gray"),
    ("student_task_distilled", "student + task\ndistillation", "cyan"),
]
RECOMMENDED = "student"
# Fine-tuned with the fine-tuned teacher as its teacher (task-specific
# distillation), from RECOMMENDED's weights.
TASK_DISTILLED = "student_task_distilled"
NO_TEACHER = ("student_mlm", "student_random_init")
TRAIN_DIRS = {
    "I adapt teacher (masked-LM)": "teacher_adapted",
    "V student: masked-LM, no teacher": "student_mlm",
    "V single machine: soft labels": "student_soft_labels",
    "V single machine: soft labels + hidden states": "student",
    "VI Horovod mpirun -np 2": "student_horovod",
}
FINETUNE_RESULTS = "finetune_results.tsv"
FINETUNE_TASK = "sst-2"


def count_model_parameters(checkpoint):
  """Parameters of the model in a Google-format checkpoint (no optimizer).

  The encoder (bert/), the pre-training heads (cls/) and a fine-tuned
  classifier's head (output_weights, output_bias).
  """
  total = 0
  for name, shape in tf.train.list_variables(checkpoint):
    if (name.startswith(("bert/", "cls/", "output_")) and
        "/adam_" not in name):
      total += int(np.prod(shape))
  return total


def polarity_counts(polarity_dir):
  """(training, dev, test sentences) of the SST-2-format folder."""
  counts = []
  for name in ("train.tsv", "dev.tsv", "test.tsv"):
    with open(os.path.join(polarity_dir, name), encoding="utf-8") as f:
      counts.append(sum(1 for _ in f) - 1)
  return tuple(counts)


def scalar_series(event_dir, tag):
  """(steps, values) of a TensorBoard scalar written in `event_dir`."""
  points = results.read_scalars(event_dir, tag)
  steps = sorted(points)
  return steps, [points[s] for s in steps]


def count_text(text_dir):
  """(documents, sentences) in stage-II text files."""
  docs = sentences = 0
  for path in glob.glob(os.path.join(text_dir, "*")):
    in_doc = False
    with open(path, encoding="utf-8") as f:
      for line in f:
        if line.strip():
          sentences += 1
          if not in_doc:
            docs += 1
          in_doc = True
        else:
          in_doc = False
  return docs, sentences


def stage_table(demo_dir, num_sentences):
  """Rows of the per-stage table: time, what went in, what came out, rate.

  Times (and, for training stages, the number of sequences trained on) come
  from stages.tsv written by scripts/demo.sh; counts are read from the files.
  """
  timings = collections.OrderedDict()
  with open(os.path.join(demo_dir, "stages.tsv")) as f:
    for line in f:
      parts = line.rstrip("\n").split("\t")
      timings[parts[0]] = (float(parts[1]), parts[2] if len(parts) > 2 else "")
  docs, sentences = count_text(os.path.join(demo_dir, "text"))
  stage3 = sorted(glob.glob(os.path.join(demo_dir, "pretraining_data",
                                         "*.tfrecord")))
  n_stage3 = records.count_records(stage3)
  n_heldout = records.count_records(stage3[-1:])
  labelled = lambda name: records.count_records(
      [os.path.join(demo_dir, "teacher_labels", name)])
  counts = {
      "I convert teacher": ("1 HF model", "1 Google checkpoint", None),
      "II wiki_to_text": ("1 dump", "%d docs, %d sentences" % (docs, sentences),
                          (docs, "docs")),
      "III create_pretraining_data": ("%d docs" % docs, "%d records" % n_stage3,
                                      (n_stage3, "records")),
      "IV produce_teacher_labels: files 0-2": (
          "%d records" % (n_stage3 - n_heldout),
          "%d records" % labelled("train_k10.tfrecord"),
          (n_stage3 - n_heldout, "records")),
      "IV produce_teacher_labels: file 3": (
          "%d records" % n_heldout,
          "%d records" % labelled("heldout_k10.tfrecord"),
          (n_heldout, "records")),
  }
  augmented = os.path.join(demo_dir, "polarity_augmented",
                           augmentation.SETTINGS_FILE)
  if os.path.exists(augmented):
    with open(augmented) as f:
      made = json.load(f)
    counts["VIII augment polarity (teacher's guesses)"] = (
        "%d sentences" % made["rows_read"],
        "%d sentences" % made["rows_written"],
        (made["rows_read"], "sentences"))
  rows = []
  for stage, (seconds, trained) in timings.items():
    rate = None
    if stage in counts:
      n_in, n_out, rate = counts[stage]
    elif stage.startswith("VIII"):
      n_in = "%d sentences" % num_sentences
      n_out = "%s sequences trained" % trained
    elif trained:
      n_in = "%d records" % (n_stage3 - n_heldout)
      n_out = "%s sequences trained" % trained
      # The training loop's own rate (the stage time includes start-up and
      # evaluation): the median of the logged examples/s, leaving out the
      # first interval (it includes tracing the step).
      _, rates = scalar_series(os.path.join(demo_dir, TRAIN_DIRS[stage]),
                               "examples_per_sec")
      rates = rates[1:] or rates
      if rates:
        rows.append((stage, "%.1f s" % seconds, n_in, n_out,
                     "%.1f seq/s training" % float(np.median(rates))))
        continue
    else:
      n_in, n_out = "%d records" % n_heldout, "eval only"
    rows.append((stage, "%.1f s" % seconds, n_in, n_out,
                 "%.1f %s/s" % (rate[0] / seconds, rate[1]) if rate else ""))
  return rows


def read_finetune_results(path):
  """The rows of demo_finetune.py's TSV: a list of dicts (value a float)."""
  with open(path, encoding="utf-8") as f:
    lines = [line.rstrip("\n").split("\t") for line in f if line.strip()]
  header = lines[0]
  rows = [dict(zip(header, line)) for line in lines[1:]]
  for row in rows:
    row["value"] = float(row["value"])
  return rows


def model_results(rows, chosen):
  """Per model: its chosen learning rate and the dev and test values of the
  seeds at that rate.

  Returns:
    OrderedDict model -> {"learning_rate", "dev": {seed: value},
    "test": {seed: value}}.
  """
  out = collections.OrderedDict()
  for model, learning_rate in chosen.items():
    entry = {"learning_rate": learning_rate, "dev": {}, "test": {}}
    for row in rows:
      if row["model"] == model and row["learning_rate"] == learning_rate:
        entry[row["split"]][row["seed"]] = row["value"]
    out[model] = entry
  return out


def finetune_table(demo_dir, counts):
  """The stage-VIII table and the per-model results it shows.

  Returns:
    (per-model results (see `model_results`), table text); ({}, "") when
    the demo did not get as far.
  """
  path = os.path.join(demo_dir, FINETUNE_RESULTS)
  if not os.path.exists(path):
    return {}, ""
  chosen = collections.OrderedDict()
  with open(os.path.join(demo_dir, "finetune", "chosen.tsv")) as f:
    for line in list(f)[1:]:
      model, learning_rate, first_seed = line.rstrip("\n").split("\t")
      chosen[model] = learning_rate
  # The demo's task (other tasks' rows may follow, README section "What
  # distillation buys").
  rows = [row for row in read_finetune_results(path)
          if row["task"] == FINETUNE_TASK]
  per_model = model_results(rows, chosen)
  models = [m for m, _, _ in MODELS if m in per_model]
  grid = sorted({row["learning_rate"] for row in rows}, key=float)
  value = {(row["model"], row["learning_rate"], row["seed"], row["split"]):
           row["value"] for row in rows}
  params = {}
  for model in models:
    run_dir = os.path.join(demo_dir, "finetune", model, "lr%s-seed%s" % (
        per_model[model]["learning_rate"], first_seed))
    params[model] = (count_model_parameters(tf.train.latest_checkpoint(
        run_dir)), results.read_eval_results(run_dir))
  base = params[models[0]][0]
  headings = dict((m, h.replace("\n", " ")) for m, h, _ in MODELS)
  table = [("parameters",) + tuple(
      "%d (%.0f%%)" % (params[m][0], 100.0 * params[m][0] / base)
      for m in models)]
  for lr in grid:
    table.append(("dev accuracy, lr %s, seed %s" % (lr, first_seed),) + tuple(
        "%.3f" % value[(m, lr, first_seed, "dev")]
        if (m, lr, first_seed, "dev") in value else "-" for m in models))
  table.append(("learning rate chosen on dev",) + tuple(
      per_model[m]["learning_rate"] for m in models))
  seeds = sorted(per_model[models[0]]["test"], key=int)
  for seed in seeds:
    table.append(("test accuracy, seed %s" % seed,) + tuple(
        "%.3f" % per_model[m]["test"].get(seed, float("nan"))
        for m in models))
  table.append(("TEST ACCURACY, MEAN",) + tuple(
      "%.3f" % np.mean(list(per_model[m]["test"].values())) for m in models))
  table.append(("inference sequences/s (dev)",) + tuple(
      "%.0f" % params[m][1]["eval_sequences_per_sec"] for m in models))
  title = ("Fine-tuned on sentence polarity (stage VIII; SST-2 format: %d "
           "training, %d dev, %d test sentences, test majority class 0.5; "
           "every "
           "model the same epochs, learning-rate grid %s and seeds %s; the "
           "test labels are never seen by a run or a choice)" % (
               counts[0], counts[1], counts[2], ", ".join(grid),
               ", ".join(seeds)))
  text = title + "\n" + format_table(("",) + tuple(headings[m]
                                                   for m in models), table)
  for verdict in (recommended_verdict(per_model),
                  task_distilled_verdict(per_model)):
    if verdict:
      text += "\n" + verdict
  return per_model, text


def task_distilled_verdict(per_model):
  """One line: the task-distilled student's mean test accuracy against the
  same student fine-tuned alone and against the teacher."""
  if not all(m in per_model for m in (TASK_DISTILLED, RECOMMENDED,
                                      "teacher")):
    return ""
  mean = lambda m: float(np.mean(list(per_model[m]["test"].values())))
  return ("Task-distilled student (%s, mean %.3f): %+.3f against the same "
          "student fine-tuned alone (%s, %.3f), %+.3f against the teacher "
          "(%.3f)" % (TASK_DISTILLED, mean(TASK_DISTILLED),
                      mean(TASK_DISTILLED) - mean(RECOMMENDED), RECOMMENDED,
                      mean(RECOMMENDED), mean(TASK_DISTILLED) -
                      mean("teacher"), mean("teacher")))


def recommended_verdict(per_model):
  """One line: the recommended student's mean test accuracy against the
  baselines without a teacher, and whether each of its seeds beats them."""
  if RECOMMENDED not in per_model or not all(
      m in per_model for m in NO_TEACHER):
    return ""
  mean = lambda m: float(np.mean(list(per_model[m]["test"].values())))
  ours = per_model[RECOMMENDED]["test"]
  parts = []
  for model in NO_TEACHER:
    parts.append("%+.3f against %s (%.3f)" % (mean(RECOMMENDED) - mean(model),
                                               model, mean(model)))
  beats = sum(v > mean("student_random_init") for v in ours.values())
  return ("Recommended student (%s, mean %.3f): %s; %d of its %d seeds "
          "above the random-init mean" % (RECOMMENDED, mean(RECOMMENDED),
                                          ", ".join(parts), beats,
                                          len(ours)))


def _bar_label(heading):
  """A column heading broken into short lines under a bar."""
  return (heading.replace(": ", ":\n").replace(", ", ",\n")
          .replace(" + ", "\n+ "))


def finetuning_panel(per_model):
  """Bars of the mean test accuracies, whiskers from the lowest to the
  highest seed, with the majority-class line."""
  panel = svg_chart.Panel("Fine-tuned on sentence polarity",
                          ylabel="test accuracy (mean, seed range)")
  models = [m for m in MODELS if m[0] in per_model]
  tests = [list(per_model[m]["test"].values()) for m, _, _ in models]
  panel.bars([heading for _, heading, _ in models],
             [np.mean(t) for t in tests], [color for _, _, color in models],
             ranges=[(min(t), max(t)) for t in tests])
  panel.reference_line(0.5, "majority class")
  panel.set_ylim(0.4, 1.0)
  return panel


def format_table(header, rows):
  """A plain-text table with aligned columns."""
  widths = [max(len(str(r[i])) for r in [header] + rows)
            for i in range(len(header))]
  line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))
  return "\n".join([line(header), line(["-" * w for w in widths])] +
                   [line(r) for r in rows])


def main(argv):
  del argv
  d = FLAGS.demo_dir
  if not os.path.isdir(d):
    raise cli.UserError("--demo_dir: not a folder: %s" % d)
  polarity_dir = FLAGS.polarity_dir or sample_data.fetch("polarity_sst2")
  counts = polarity_counts(polarity_dir)
  out = ["Stages", format_table(
      ("stage", "time", "records in", "records out", "throughput"),
      stage_table(d, counts[0]))]

  evals = collections.OrderedDict()
  for name in ("teacher_before_adaptation", "teacher_adapted", "student",
               "student_soft_labels", "student_mlm", "student_horovod"):
    if os.path.exists(os.path.join(d, name, results.EVAL_RESULTS_FILE)):
      evals[name] = results.read_eval_results(os.path.join(d, name))
  teacher_params = count_model_parameters(
      os.path.join(d, "teacher", "bert_model.ckpt"))
  student_params = count_model_parameters(
      tf.train.latest_checkpoint(os.path.join(d, "student")))
  columns = [
      ("teacher_before_adaptation", "teacher, converted"),
      ("teacher_adapted", "teacher, adapted"),
      ("student", "student: soft labels + hidden states"),
      ("student_soft_labels", "student: soft labels"),
      ("student_mlm", "student: masked-LM, no teacher"),
      ("student_horovod", "soft labels, mpirun -np 2"),
  ]
  columns = [(name, heading) for name, heading in columns if name in evals]
  cell = lambda name, key: ("%.4f" % evals[name][key]
                            if key in evals[name] else "-")
  rows = [("parameters",) + tuple(
      "%d" % (teacher_params if name.startswith("teacher") else
              student_params) for name, _ in columns)]
  rows.append(("training steps",) + tuple(
      "%d" % evals[name]["global_step"] for name, _ in columns))
  for key in ("masked_lm_accuracy", "masked_lm_hard_label_loss",
              "teacher_top1_agreement", "next_sentence_accuracy"):
    rows.append((key,) + tuple(cell(name, key) for name, _ in columns))
  out += ["", "Masked-LM on held-out records (Wikipedia file 3; the teacher "
          "adapted by masked-LM training, the students of one size trained "
          "the same steps; teacher_top1_agreement: against the adapted "
          "teacher)", format_table(("",) + tuple(h for _, h in columns),
                                   rows)]

  per_model, table = finetune_table(d, counts)
  if per_model:
    out += ["", table]
  tsv = os.path.join(d, FINETUNE_RESULTS)
  if os.path.exists(tsv):
    out += ["", "Every fine-tuning run's dev and test figures: %s" % tsv]

  accuracy = svg_chart.Panel("Masked-LM accuracy (held-out records)",
                             ylabel="top-1 = the masked word")
  colors = {"teacher_before_adaptation": "gray", "teacher_adapted": "green",
            "student": "blue", "student_soft_labels": "purple",
            "student_mlm": "orange", "student_horovod": "red"}
  shown = [(name, heading) for name, heading in columns
           if name != "student_horovod"]
  accuracy.bars([_bar_label(h) for _, h in shown],
                [evals[n]["masked_lm_accuracy"] for n, _ in shown],
                [colors[n] for n, _ in shown])
  panels = [accuracy]
  agreeing = [(name, heading) for name, heading in columns
              if "teacher_top1_agreement" in evals[name] and
              not name.startswith("teacher")]
  if agreeing:
    agreement = svg_chart.Panel(
        "Agreement with the teacher (held-out records)",
        ylabel="student top-1 = teacher top-1")
    agreement.bars([_bar_label(h) for _, h in agreeing],
                   [evals[n]["teacher_top1_agreement"] for n, _ in agreeing],
                   [colors[n] for n, _ in agreeing])
    panels.append(agreement)
  if per_model:
    panels.append(finetuning_panel(per_model))
  picture = os.path.join(d, "distillation.svg")
  with outputs.atomic_output(picture) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(svg_chart.figure_svg(panels))
  out += ["", "Picture: %s" % picture]

  text = "\n".join(out)
  print(text)
  with open(os.path.join(d, "summary.txt"), "w") as f:
    f.write(text + "\n")
  logging.info("summary written to %s", os.path.join(d, "summary.txt"))


if __name__ == "__main__":
  cli.run(main)
