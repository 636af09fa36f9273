"""The main job: scripts/demo.sh (what `make demo` runs) at a smaller size.

Every stage runs as the demo runs it (a quarter of the articles of the real
Wikipedia excerpt through DEMO_WIKI_DUMP, real small BERT teacher adapted by
masked-LM training, mpirun -np 2 for stage VI, real polarity sentences for
stage VIII; its PYTHON is tests/python_fork.py's, which saves a TensorFlow
import per stage); the test then reads every output back: the teacher
checkpoints, the text files, every record of stages III and IV (parsed with
the feature names and lengths written out here), the students' checkpoints
and eval results, every fine-tuning run (its learning-rate choice and its
test accuracy recomputed from its predictions and the source file's
labels), the summary and its picture.
"""

import collections
import csv
import glob
import json
import os
import re
import subprocess
import sys
import time
from xml.etree import ElementTree

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, forked_python, sample, script_env
from helpers import polarity_test_labels, write_dump_pages
from bert_distill.lib import results

SEQ = 64
PRED = 10
K = 10
STEPS = 30
ADAPT_STEPS = 10
HVD_STEPS = 4
# Fine-tuning on the first 700 training sentences: int(700 / 32 * 0.5) = 10
# steps per run, int(700 * 3 / 32 * 0.5) = 32 for the task-distilled
# student (the sentences and 2 variants of each); per model a run at each
# learning rate with seed 1, then seed 2 at the chosen one.
FT_TRAIN_ROWS = 700
FT_EPOCHS = 0.5
FT_STEPS = 10
FT_DISTILLED_STEPS = 32
FT_LRS = ("1e-4", "3e-4")
FT_SEEDS = ("1", "2")
MODELS = {"teacher": 128, "student": 64, "student_soft_labels": 64,
          "student_mlm": 64, "student_random_init": 64,
          "student_task_distilled": 64}
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, wiki_dump):
  out = tmp_path_factory.mktemp("demo") / "demo_output"
  # A quarter of the real excerpt's articles (every fourth): about 2,500
  # records at seq 64, a quarter of the teacher's labelling work.
  dump = write_dump_pages(wiki_dump, out.parent / "quarter.xml",
                          lambda pages: pages[::4])
  env = script_env()
  env.update(DEMO_OUTPUT=str(out), DEMO_WIKI_DUMP=dump, DEMO_STEPS=str(STEPS),
             DEMO_HOROVOD_STEPS=str(HVD_STEPS), DEMO_MAX_SEQ_LENGTH=str(SEQ),
             DEMO_MAX_PREDICTIONS=str(PRED), DEMO_DUPE_FACTOR="1",
             DEMO_ADAPT_STEPS=str(ADAPT_STEPS), DEMO_EVAL_STEPS="5",
             DEMO_FINETUNE_EPOCHS=str(FT_EPOCHS),
             DEMO_FINETUNE_TRAIN_ROWS=str(FT_TRAIN_ROWS),
             DEMO_FINETUNE_LEARNING_RATES=",".join(FT_LRS),
             DEMO_FINETUNE_SEEDS=",".join(FT_SEEDS),
             PYTHON=forked_python())
  result = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1500,
                          check=False)
  if result.returncode != 0:
    pytest.fail("scripts/demo.sh exited %d:\n%s\n%s" % (
        result.returncode, result.stdout[-3000:], result.stderr[-3000:]))
  return str(out), result.stdout


def _parse_all(paths, spec):
  """Every record of `paths` parsed with `spec`; fails on any bad record.

  Records are parsed in batches (one parse_example call per 512 records:
  the same parser and checks as one record at a time, far fewer eager
  calls).
  """
  rows = []
  for path in paths:
    for raw in tf.data.TFRecordDataset(path).batch(512):
      batch = {k: v.numpy() for k, v in
               tf.io.parse_example(raw, spec).items()}
      rows.extend({k: v[i] for k, v in batch.items()}
                  for i in range(len(raw)))
  return rows


def _stage3_spec():
  ints = lambda n: tf.io.FixedLenFeature([n], tf.int64)
  return {
      "input_ids": ints(SEQ), "input_mask": ints(SEQ),
      "segment_ids": ints(SEQ), "masked_lm_positions": ints(PRED),
      "masked_lm_ids": ints(PRED),
      "masked_lm_weights": tf.io.FixedLenFeature([PRED], tf.float32),
      "next_sentence_labels": ints(1)}


def test_stage_outputs_exist_and_parse(demo_dir):
  out, stdout = demo_dir
  # Stage I: the teacher in Google's format.
  teacher = dict(tf.train.list_variables(
      os.path.join(out, "teacher", "bert_model.ckpt")))
  assert "bert/embeddings/word_embeddings" in teacher
  assert "cls/predictions/output_bias" in teacher
  vocab_size = teacher["bert/embeddings/word_embeddings"][0]

  # Stage II: four non-empty text files, documents separated by blank lines.
  texts = sorted(glob.glob(os.path.join(out, "text", "*")))
  assert len(texts) == 4
  for path in texts:
    lines = open(path, encoding="utf-8").read().split("\n")
    assert sum(1 for line in lines if line.strip()) > 100
    assert "" in lines

  # Stage III: one file per text file, every record parses.
  stage3 = sorted(glob.glob(os.path.join(out, "pretraining_data", "*")))
  assert [os.path.basename(p) for p in stage3] == [
      "wiki_%d.tfrecord" % i for i in range(4)]
  per_file3 = [_parse_all([p], _stage3_spec()) for p in stage3]
  rows3 = [row for rows in per_file3 for row in rows]
  assert len(rows3) > 500
  assert all(r["input_ids"][0] == 101 for r in rows3)  # [CLS]

  # Stage IV: train (files 0-2) and held-out (file 3) labels, same records
  # plus the teacher's top-K, sorted, indices inside the vocabulary.
  spec4 = _stage3_spec()
  spec4["truncated_masked_lm_probs"] = tf.io.FixedLenFeature([PRED * K],
                                                             tf.float32)
  spec4["top_k_indices"] = tf.io.FixedLenFeature([PRED * K], tf.int64)
  train = _parse_all([os.path.join(out, "teacher_labels",
                                   "train_k10.tfrecord")], spec4)
  held = _parse_all([os.path.join(out, "teacher_labels",
                                  "heldout_k10.tfrecord")], spec4)
  n3 = [len(rows) for rows in per_file3]
  assert len(train) == sum(n3[:3]) and len(held) == n3[3]
  for r in train[:50] + held[:50]:
    probs = r["truncated_masked_lm_probs"].reshape(PRED, K)
    real = r["masked_lm_weights"] > 0
    assert np.all(np.diff(probs[real], axis=1) <= 1e-7)
    assert np.all(probs[real].sum(axis=1) <= 1 + 1e-5)
    assert np.all((r["top_k_indices"] >= 0) & (r["top_k_indices"] <
                                                vocab_size))

  # Stage I, continued: the teacher adapted by masked-LM training (no
  # teacher labels: no agreement figure), evaluated before and after.
  adapted = os.path.join(out, "teacher_adapted")
  assert tf.train.latest_checkpoint(adapted).endswith(
      "model.ckpt-%d" % ADAPT_STEPS)
  before = results.read_eval_results(os.path.join(
      out, "teacher_before_adaptation"))
  after = results.read_eval_results(adapted)
  for metrics in (before, after):
    assert 0 <= metrics["masked_lm_accuracy"] <= 1
    assert np.isfinite(metrics["masked_lm_hard_label_loss"])
    assert "teacher_top1_agreement" not in metrics
  assert int(after["global_step"]) == ADAPT_STEPS
  # Adapting changed the weights stage IV then used.
  weight = "bert/encoder/layer_0/output/dense/kernel"
  assert np.abs(tf.train.load_checkpoint(os.path.join(
      out, "teacher", "bert_model.ckpt")).get_tensor(weight) -
                tf.train.load_checkpoint(tf.train.latest_checkpoint(
                    adapted)).get_tensor(weight)).max() > 1e-4

  # Stage V and VI: final checkpoints at the expected steps, eval results;
  # the masked-LM student alone has no teacher to agree with.
  for name, step in (("student", STEPS), ("student_soft_labels", STEPS),
                     ("student_mlm", STEPS), ("student_horovod", HVD_STEPS)):
    ckpt = tf.train.latest_checkpoint(os.path.join(out, name))
    assert ckpt and ckpt.endswith("model.ckpt-%d" % step), (name, ckpt)
    names = dict(tf.train.list_variables(ckpt))
    assert names["bert/embeddings/word_embeddings"] == [vocab_size, 64]
    metrics = results.read_eval_results(os.path.join(out, name))
    assert int(metrics["global_step"]) == step
    for key in ("masked_lm_accuracy", "masked_lm_loss",
                "next_sentence_accuracy", "next_sentence_loss"):
      assert np.isfinite(metrics[key]), (name, key)
    assert ("teacher_top1_agreement" in metrics) == (name != "student_mlm")
  # The hidden-state loss ran (online teacher); the others had none.
  assert np.isfinite(results.read_eval_results(os.path.join(
      out, "student"))["hidden_loss"])

  # Stage VIII: every run's dev and test accuracy in the TSV; the learning
  # rate each model kept is its best on dev with the first seed; test
  # accuracy recomputed here from the predictions and the labels of the
  # source CSV (looked up by sentence).
  _check_finetuning(out)

  # The summary: every stage timed.
  summary = open(os.path.join(out, "summary.txt")).read()
  for stage in ("I convert", "I teacher before adaptation (eval)",
                "I adapt teacher (masked-LM)", "II wiki_to_text",
                "III create_pretraining_data",
                "IV produce_teacher_labels: files 0-2",
                "IV produce_teacher_labels: file 3",
                "V student: masked-LM, no teacher",
                "V single machine: soft labels",
                "V single machine: soft labels + hidden states",
                "VI Horovod", "VIII augment polarity (teacher's guesses)",
                "VIII fine-tune 6 models (polarity)"):
    assert stage in summary and stage in stdout, stage
  assert "Fine-tuned on sentence polarity" in summary
  assert "TEST ACCURACY, MEAN" in summary
  assert re.search(r"Recommended student \(student, mean 0\.\d{3}\): "
                   r"[+-]0\.\d{3} against student_mlm", summary)
  assert re.search(r"Task-distilled student \(student_task_distilled, mean "
                   r"0\.\d{3}\): [+-]0\.\d{3} against the same student "
                   r"fine-tuned alone", summary)
  # The picture (SVG): masked-LM accuracy of the two teachers and three
  # students, agreement of the two distilled students and the Horovod one,
  # the six fine-tuned means each with a seed range.
  svg = ElementTree.parse(os.path.join(out, "distillation.svg")).getroot()
  assert svg.tag == SVG + "svg"
  assert len(svg.findall(".//%srect[@class='bar']" % SVG)) == 5 + 3 + 6
  assert len(svg.findall(".//%sline[@class='range']" % SVG)) == 6
  titles = {t.text for t in svg.iter(SVG + "text")}
  assert {"Masked-LM accuracy (held-out records)",
          "Fine-tuned on sentence polarity",
          "Agreement with the teacher (held-out records)"} <= titles


def _check_finetuning(out):
  """Stage VIII's runs, choices and figures (see the test above)."""
  test_labels = np.array(polarity_test_labels(sample("polarity_sst2"),
                                              sample("movie_reviews")))
  assert len(test_labels) == 500
  with open(os.path.join(out, "finetune_results.tsv")) as f:
    rows = list(csv.DictReader(f, delimiter="\t"))
  assert list(rows[0]) == ["model", "task", "learning_rate", "seed", "split",
                           "metric", "value"]
  with open(os.path.join(out, "finetune", "chosen.tsv")) as f:
    table = list(csv.DictReader(f, delimiter="\t"))
  chosen = {row["model"]: row["learning_rate"] for row in table}
  assert {row["chosen_with_seed"] for row in table} == {FT_SEEDS[0]}
  assert set(chosen) == set(MODELS)
  value = collections.defaultdict(dict)
  for row in rows:
    assert row["task"] == "sst-2" and row["metric"] == "accuracy"
    value[(row["model"], row["learning_rate"], row["seed"])][
        row["split"]] = float(row["value"])
  expected = {(m, lr, FT_SEEDS[0]) for m in MODELS for lr in FT_LRS} | {
      (m, chosen[m], seed) for m in MODELS for seed in FT_SEEDS[1:]}
  assert set(value) == expected
  assert len(rows) == 2 * len(expected)
  for model in MODELS:
    dev = [value[(model, lr, FT_SEEDS[0])]["dev"] for lr in FT_LRS]
    assert chosen[model] == FT_LRS[int(np.argmax(dev))], model
  student = tf.train.latest_checkpoint(os.path.join(out, "student"))
  kernel = "bert/encoder/layer_1/output/dense/kernel"
  start = tf.train.load_checkpoint(student).get_tensor(kernel)
  for (model, lr, seed), figures in value.items():
    run_dir = os.path.join(out, "finetune", model, "lr%s-seed%s" % (lr, seed))
    metrics = results.read_eval_results(run_dir)
    assert int(metrics["global_step"]) == (
        FT_DISTILLED_STEPS if model == "student_task_distilled" else FT_STEPS)
    assert metrics["eval_examples"] == 1000
    assert figures["dev"] == pytest.approx(metrics["eval_accuracy"], abs=1e-6)
    probabilities = np.loadtxt(os.path.join(run_dir, "test_results.tsv"))
    assert probabilities.shape == (500, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert figures["test"] == pytest.approx(
        np.mean(probabilities.argmax(axis=1) == test_labels), abs=1e-6)
    ckpt = tf.train.latest_checkpoint(run_dir)
    names = dict(tf.train.list_variables(ckpt))
    assert names["output_weights"] == [2, MODELS[model]], model
    assert not any(n.startswith("cls/") for n in names), model
    if model == "student_task_distilled":
      # Its training sentences: the augmented folder's (700 and 2 variants
      # each, as its steps say), its teacher: the fine-tuned teacher of the
      # same seed, at the teacher's chosen learning rate.
      with open(os.path.join(out, "polarity_augmented",
                             "augmentation.json")) as f:
        made = json.load(f)
      assert (made["rows_read"], made["rows_written"]) == (700, 2100)
      with open(os.path.join(run_dir, "run_settings.json")) as f:
        teacher_checkpoint = json.load(f)["teacher_checkpoint"]
      assert os.path.dirname(teacher_checkpoint) == os.path.join(
          out, "finetune", "teacher", "lr%s-seed%s" % (chosen["teacher"],
                                                       seed))
    if MODELS[model] == 64:
      # The recommended student started from stage V's weights, the
      # random-init one not.
      tuned = tf.train.load_checkpoint(ckpt).get_tensor(kernel)
      # (Adam moves a weight about a learning rate per step at most.)
      if model in ("student", "student_task_distilled"):
        steps = int(metrics["global_step"])
        assert np.abs(tuned - start).max() < 0.01 * steps / FT_STEPS
      if model == "student_random_init":
        assert np.abs(tuned - start).max() > 0.01


@pytest.mark.parametrize("extra,message", [
    (["--model", "teacher"],
     "--model 'teacher': expected NAME=BERT_CONFIG[,CHECKPOINT]"),
    (["--model", "a=c.json", "--classifier_flags", "--learning_rate=1e-4"],
     "--classifier_flags: --learning_rate=1e-4 is set by this script for "
     "each run"),
    (["--model", "a=c.json", "--output_dir", "{used}"],
     "is not empty: give a new folder"),
    (["--model", "a=c.json", "--task_distilled", "b=a"],
     "--task_distilled 'b=a': expected NAME=MODEL,TEACHER"),
    (["--model", "a=c.json", "--task_distilled", "b=a,t"],
     "--task_distilled 'b=a,t': 't' is not a --model name"),
    (["--model", "a=c.json", "--distill_data_dir", "{used}"],
     "--distill_data_dir is for --task_distilled runs"),
    (["--model", "a=c.json", "--task_distilled", "b=a,a",
      "--distill_data_dir", "{used}"],
     "--distill_data_dir {used}: no train.tsv"),
    (["--model", "a=c.json", "--task_distilled", "b=a,a",
      "--distill_data_dir", "{other}"],
     "--distill_data_dir {other}: its dev.tsv is not --data_dir's"),
])
def test_finetune_driver_refuses_bad_input_in_one_line(tmp_path, extra,
                                                       message):
  out = tmp_path / "runs"
  used = tmp_path / "used"
  (used / "a").mkdir(parents=True)
  (tmp_path / "dev.tsv").write_text("sentence\tlabel\nfine .\t1\n")
  other = tmp_path / "other"  # a training file, another dev split
  other.mkdir()
  (other / "train.tsv").write_text("sentence\tlabel\nfine .\t1\n")
  (other / "dev.tsv").write_text("sentence\tlabel\nbad .\t0\n")
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "demo_finetune.py"),
       "--output_dir", str(out), "--task_name", "sst-2",
       "--data_dir", str(tmp_path), "--test_labels", "polarity_sst2",
       "--results_tsv", str(tmp_path / "r.tsv")] +
      [a.replace("{used}", str(used)).replace("{other}", str(other))
       for a in extra],
      env=script_env(), capture_output=True, text=True, check=False)
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  message = message.replace("{used}", str(used)).replace("{other}",
                                                          str(other))
  assert last.startswith("error: ") and message in last, result.stderr
  assert "Traceback" not in result.stderr
  assert not out.exists() and not (tmp_path / "r.tsv").exists()
  assert os.listdir(used) == ["a"]


def test_a_failing_stage_stops_both_lanes_at_once(tmp_path, wiki_dump):
  """A stage of one lane fails: the demo exits with its error line at once,
  and the other lane's running stage is stopped, not waited for."""
  out = tmp_path / "demo_output"
  dump = write_dump_pages(wiki_dump, tmp_path / "quarter.xml",
                          lambda pages: pages[::4])
  python = tmp_path / "python"
  # The teacher's first eval (the first lane's first stage) fails; every
  # other command runs as usual.
  python.write_text(
      "#!/bin/bash\n"
      "case \"$*\" in *teacher_before_adaptation*) exit 3;; esac\n"
      "exec %s \"$@\"\n" % forked_python())
  python.chmod(0o755)
  env = script_env()
  env.update(DEMO_OUTPUT=str(out), DEMO_WIKI_DUMP=dump, DEMO_STEPS="2000",
             DEMO_MAX_SEQ_LENGTH=str(SEQ), DEMO_MAX_PREDICTIONS=str(PRED),
             DEMO_DUPE_FACTOR="1", PYTHON=str(python))
  start = time.time()
  result = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 1, result.stdout[-2000:]
  assert ("demo: stage I teacher before adaptation (eval) failed" in
          result.stderr), result.stderr[-2000:]
  # The other lane had started its 2,000-step student: stopped, not finished.
  assert time.time() - start < 120
  assert not os.path.exists(os.path.join(out, "student_mlm",
                                         "eval_results.txt"))
  leftover = subprocess.run(["pgrep", "-f", str(out)], capture_output=True,
                            text=True, check=False).stdout
  assert not leftover.strip(), leftover
