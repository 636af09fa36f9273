"""Summarises a `make demo` run: one table per stage and a picture.

Reads what the demo wrote under --demo_dir: the stage timings
(stages.tsv: stage, seconds[, sequences trained]), the teacher's
and the students' checkpoints and eval_results.txt files, the
TensorBoard events of the training runs, and the fine-tuning runs of stage
VIII (with the polarity data of --polarity_dir). Prints the tables and writes
<demo_dir>/summary.txt and <demo_dir>/distillation.svg (training loss,
teacher agreement, fine-tuned dev accuracy).
"""

import glob
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
import cli
cli.import_tensorflow_quietly()
import tensorflow as tf
import outputs
import records
import results
import sample_data
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("demo_dir", "demo_output", "Folder the demo wrote to.")
flags.DEFINE_string(
    "polarity_dir", None,
    "The SST-2-format polarity folder the demo fine-tuned on (stage VIII); "
    "default: `python sample_data.py polarity_sst2`.")

# Fine-tuning stages of scripts/demo.sh (names as in stages.tsv) -> output
# dir and the column heading of the fine-tuning table.
FINETUNE_RUNS = [
    ("VIII fine-tune teacher", "finetune_teacher", "teacher"),
    ("VIII fine-tune distilled student", "finetune_student",
     "distilled student"),
    ("VIII fine-tune random-init student", "finetune_random",
     "student, random init (not distilled)"),
]
# Training stages of scripts/demo.sh (names as in stages.tsv) -> output dir.
TRAIN_DIRS = dict([("V single machine", "student"),
                   ("VI Horovod mpirun -np 2", "student_horovod")] +
                  [(stage, folder) for stage, folder, _ in FINETUNE_RUNS])


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
  """(training sentences, dev labels list) of the SST-2-format folder."""
  with open(os.path.join(polarity_dir, "train.tsv"), encoding="utf-8") as f:
    train = sum(1 for _ in f) - 1
  with open(os.path.join(polarity_dir, "dev.tsv"), encoding="utf-8") as f:
    dev = [int(line.rstrip("\n").split("\t")[1]) for line in list(f)[1:]]
  return train, dev


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
  timings = {}
  with open(os.path.join(demo_dir, "stages.tsv")) as f:
    for line in f:
      parts = line.rstrip("\n").split("\t")
      timings[parts[0]] = (float(parts[1]), parts[2] if len(parts) > 2 else "")
  docs, sentences = count_text(os.path.join(demo_dir, "text"))
  stage3 = sorted(glob.glob(os.path.join(demo_dir, "pretraining_data",
                                         "*.tfrecord")))
  n_stage3 = records.count_records(stage3)
  stage4 = sorted(glob.glob(os.path.join(demo_dir, "teacher_labels",
                                         "*.tfrecord")))
  n_stage4 = records.count_records(stage4)
  n_train = records.count_records(
      [os.path.join(demo_dir, "teacher_labels", "train_k10.tfrecord")])
  n_heldout = n_stage4 - n_train
  counts = {
      "I convert teacher": ("1 HF model", "1 Google checkpoint", None),
      "II wiki_to_text": ("1 dump", "%d docs, %d sentences" % (docs, sentences),
                          (docs, "docs")),
      "III create_pretraining_data": ("%d docs" % docs, "%d records" % n_stage3,
                                      (n_stage3, "records")),
      "IV produce_teacher_labels": ("%d records" % n_stage3,
                                    "%d records" % n_stage4,
                                    (n_stage4, "records")),
  }
  rows = []
  for stage, (seconds, trained) in timings.items():
    if stage in counts:
      n_in, n_out, rate = counts[stage]
    else:
      if stage.startswith("VIII"):
        n_in = "%d sentences" % num_sentences
      else:
        n_in = "%d records" % (n_train if trained else n_heldout)
      n_out = "%s sequences trained" % trained if trained else "eval only"
      rate = None
      if trained:
        # The training loop's own rate (the stage time includes start-up
        # and evaluation): the median of the logged examples/s, leaving
        # out the first interval (it includes tracing the step).
        _, rates = scalar_series(os.path.join(demo_dir, TRAIN_DIRS[stage]),
                                "examples_per_sec")
        if len(rates) > 1:
          rates = rates[1:]
        rows.append((stage, "%.1f s" % seconds, n_in, n_out,
                     "%.1f seq/s training" % float(np.median(rates))
                     if rates else ""))
        continue
    rows.append((stage, "%.1f s" % seconds, n_in, n_out,
                 "%.1f %s/s" % (rate[0] / seconds, rate[1]) if rate else ""))
  return rows


def finetune_table(demo_dir, num_sentences, dev_labels):
  """The stage-VIII table: each fine-tuned model's size, accuracy, speed.

  Returns:
    ([(heading, eval results, parameters)] of the runs found, table text).
  """
  runs = []
  for stage, folder, heading in FINETUNE_RUNS:
    run_dir = os.path.join(demo_dir, folder)
    if not os.path.exists(os.path.join(run_dir, results.EVAL_RESULTS_FILE)):
      continue
    _, rates = scalar_series(run_dir, "examples_per_sec")
    metrics = results.read_eval_results(run_dir)
    metrics["training_rate"] = float(np.median(rates[1:] or rates))
    runs.append((heading, metrics, count_model_parameters(
        tf.train.latest_checkpoint(run_dir))))
  if not runs:
    return runs, ""
  majority = max(np.mean(dev_labels), 1.0 - np.mean(dev_labels))
  base = runs[0][2]
  rows = [("parameters",) + tuple(
      "%d" % p if i == 0 else "%d (%.0f%%)" % (p, 100.0 * p / base)
      for i, (_, _, p) in enumerate(runs))]
  rows.append(("dev accuracy (majority class %.3f)" % majority,) + tuple(
      "%.3f" % r["eval_accuracy"] for _, r, _ in runs))
  rows.append(("inference sequences/s",) + tuple(
      "%.0f" % r["eval_sequences_per_sec"] for _, r, _ in runs))
  rows.append(("training sequences/s",) + tuple(
      "%.0f" % r["training_rate"] for _, r, _ in runs))
  title = ("Fine-tuned on sentence polarity (stage VIII; SST-2 format, %d "
           "training and %d dev sentences, the same steps for each model)" %
           (num_sentences, len(dev_labels)))
  return runs, title + "\n" + format_table(
      ("",) + tuple(heading for heading, _, _ in runs), rows)


def finetuning_panel(runs, dev_labels):
  """Bars of the fine-tuned dev accuracies, with the majority-class line."""
  panel = svg_chart.Panel("Fine-tuned on sentence polarity",
                          ylabel="dev accuracy")
  panel.bars([heading.replace(", ", "\n") for heading, _, _ in runs],
             [r["eval_accuracy"] for _, r, _ in runs],
             ["green", "blue", "gray"][:len(runs)])
  panel.reference_line(max(np.mean(dev_labels), 1.0 - np.mean(dev_labels)),
                       "majority class")
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
  num_sentences, dev_labels = polarity_counts(polarity_dir)
  out = ["Stages", format_table(
      ("stage", "time", "records in", "records out", "throughput"),
      stage_table(d, num_sentences))]

  teacher_params = count_model_parameters(
      os.path.join(d, "teacher", "bert_model.ckpt"))
  student_dir = os.path.join(d, "student")
  student_ckpt = tf.train.latest_checkpoint(student_dir)
  student_params = count_model_parameters(student_ckpt)
  before = results.read_eval_results(os.path.join(d, "student_before"))
  after = results.read_eval_results(student_dir)
  rows = [("parameters", "%d" % teacher_params, "%d (%.0f%% of the teacher)" %
           (student_params, 100.0 * student_params / teacher_params), "")]
  teacher = results.read_eval_results(os.path.join(d, "teacher_eval"))
  for key in ("masked_lm_accuracy", "teacher_top1_agreement",
              "masked_lm_loss", "next_sentence_accuracy"):
    rows.append((key, "%.4f" % teacher[key], "%.4f" % after[key],
                 "%.4f" % before[key]))
  hvd_dir = os.path.join(d, "student_horovod")
  if os.path.exists(os.path.join(hvd_dir, results.EVAL_RESULTS_FILE)):
    hvd = results.read_eval_results(hvd_dir)
    rows.append(("teacher_top1_agreement (mpirun -np 2)", "",
                 "%.4f" % hvd["teacher_top1_agreement"], ""))
  out += ["", "Student (held-out records; the demo's teacher is a small BERT "
          "whose MLM head was tuned for retrieval, so its own "
          "masked_lm_accuracy is low: the student learns its distribution)",
          format_table(
      ("", "teacher", "student after training", "student before"), rows)]

  finetuned, table = finetune_table(d, num_sentences, dev_labels)
  if finetuned:
    out += ["", table]

  loss = svg_chart.Panel("Student training loss",
                         xlabel="step (32 sequences each)",
                         ylabel="soft cross-entropy + NSP loss")
  for label, run_dir, color in (("V single machine", student_dir, "blue"),
                                ("VI mpirun -np 2", hvd_dir, "orange")):
    loss.line(*scalar_series(run_dir, "loss"), color=color, label=label)

  bars = [("untrained", before["teacher_top1_agreement"], "gray"),
          ("V: %d steps" % after["global_step"],
           after["teacher_top1_agreement"], "blue")]
  if os.path.exists(os.path.join(hvd_dir, results.EVAL_RESULTS_FILE)):
    bars.append(("VI: %d steps" % hvd["global_step"],
                 hvd["teacher_top1_agreement"], "orange"))
  agreement = svg_chart.Panel("Agreement with the teacher (held-out records)",
                              ylabel="student top-1 = teacher top-1")
  agreement.bars(*zip(*bars))
  agreement.set_ylim(0, max(0.05, 1.25 * max(b[1] for b in bars)))
  panels = [loss, agreement]
  if finetuned:
    panels.append(finetuning_panel(finetuned, dev_labels))
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
