"""The main job: scripts/demo.sh (what `make demo` runs) at a smaller size.

Every stage runs as the demo runs it (a quarter of the articles of the real
Wikipedia excerpt through DEMO_WIKI_DUMP, real small BERT teacher, mpirun -np 2
for stage VI, real polarity sentences for stage VIII; its PYTHON is
tests/python_fork.py's, which saves a TensorFlow import per stage); the
test then reads every output back: the teacher checkpoint, the text files,
every record of stages III and IV (parsed with the feature names and
lengths written out here), the students' checkpoints and eval results, the
three fine-tuned models, the summary and its picture.
"""

import glob
import os
import re
import subprocess
import sys
from xml.etree import ElementTree

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, forked_python, script_env
from helpers import write_dump_pages
import results

SEQ = 64
PRED = 10
K = 10
STEPS = 30
HVD_STEPS = 4
# Fine-tuning: int(7030 / 32 * 0.05) = 10 steps per model.
FT_EPOCHS = 0.05
FT_STEPS = 10
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
             DEMO_FINETUNE_EPOCHS=str(FT_EPOCHS),
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

  # Stage V and VI: final checkpoints at the expected steps, eval results.
  for name, step in (("student", STEPS), ("student_horovod", HVD_STEPS)):
    ckpt = tf.train.latest_checkpoint(os.path.join(out, name))
    assert ckpt and ckpt.endswith("model.ckpt-%d" % step), (name, ckpt)
    names = dict(tf.train.list_variables(ckpt))
    assert names["bert/embeddings/word_embeddings"] == [vocab_size, 64]
    metrics = results.read_eval_results(os.path.join(out, name))
    assert int(metrics["global_step"]) == step
    for key in ("masked_lm_accuracy", "masked_lm_loss",
                "next_sentence_accuracy", "next_sentence_loss",
                "teacher_top1_agreement"):
      assert np.isfinite(metrics[key]), (name, key)
  # The teacher agrees with itself: the eval metric is computed right.
  assert results.read_eval_results(os.path.join(out, "teacher_eval"))[
      "teacher_top1_agreement"] > 0.999

  # Stage VIII: the teacher, the distilled student and the random-init
  # student, each fine-tuned FT_STEPS steps and evaluated on the 1,000 dev
  # sentences; the fine-tuned checkpoints hold the classifier head.
  student = tf.train.latest_checkpoint(os.path.join(out, "student"))
  for name, hidden in (("finetune_teacher", 128), ("finetune_student", 64),
                       ("finetune_random", 64)):
    metrics = results.read_eval_results(os.path.join(out, name))
    assert int(metrics["global_step"]) == FT_STEPS, name
    assert metrics["eval_examples"] == 1000
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert metrics["eval_sequences_per_sec"] > 0
    ckpt = tf.train.latest_checkpoint(os.path.join(out, name))
    names = dict(tf.train.list_variables(ckpt))
    assert names["output_weights"] == [2, hidden], name
    assert not any(n.startswith("cls/") for n in names), name
  # The distilled student started from stage V's weights, the other not.
  reader = lambda path: tf.train.load_checkpoint(path).get_tensor(
      "bert/encoder/layer_1/output/dense/kernel")
  start = reader(student)
  tuned = reader(tf.train.latest_checkpoint(os.path.join(
      out, "finetune_student")))
  random_init = reader(tf.train.latest_checkpoint(os.path.join(
      out, "finetune_random")))
  assert np.abs(tuned - start).max() < 0.01 < np.abs(random_init - start).max()

  # The summary: every stage timed.
  summary = open(os.path.join(out, "summary.txt")).read()
  for stage in ("I convert", "II wiki_to_text", "III create_pretraining_data",
                "IV produce_teacher_labels", "V single machine",
                "VI Horovod", "VIII fine-tune teacher",
                "VIII fine-tune distilled student",
                "VIII fine-tune random-init student"):
    assert stage in summary and stage in stdout
  assert "Fine-tuned on sentence polarity" in summary
  assert re.search(r"dev accuracy \(majority class 0\.5\d\d\)", summary)
  # The picture (SVG): a loss curve per training run, the three agreement
  # bars (untrained, V, VI) and the three fine-tuned accuracies.
  svg = ElementTree.parse(os.path.join(out, "distillation.svg")).getroot()
  assert svg.tag == SVG + "svg"
  assert len(svg.findall(".//%spolyline" % SVG)) == 2
  assert len(svg.findall(".//%srect[@class='bar']" % SVG)) == 6
  titles = {t.text for t in svg.iter(SVG + "text")}
  assert {"Student training loss", "Fine-tuned on sentence polarity",
          "Agreement with the teacher (held-out records)"} <= titles


