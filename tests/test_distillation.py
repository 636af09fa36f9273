"""Tests of stage V: distillation.py and the single-machine script.

Real records (the Wikipedia sample through stages II-IV with the real small
BERT as the teacher), a tiny student, real TensorFlow. The losses are checked
against NumPy written here; the training runs as a user runs it
(subprocess, flags) where exit codes, kills and files on disk matter.
"""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from bert_distill.lib import checkpoints
from bert_distill import cli
from bert_distill.stages import distillation
from bert_distill.stages import distillation_objective
import inprocess
import modeling
from bert_distill.lib import record_format
from bert_distill.lib import records
from bert_distill.lib import results
from bert_distill.stages import teacher
from bert_distill.stages import training
from conftest import MAX_PREDICTIONS
from conftest import MAX_SEQ_LENGTH
from conftest import REPO
from conftest import check_error_runs
from conftest import check_main_errors
from conftest import forked_python
from conftest import google_variable_shapes
from conftest import TRUNCATION_FACTOR
from conftest import run_main
from conftest import script_env

SCRIPT = "network_distillation_single_machine_truncated.py"
REQUIRED_EVAL_KEYS = ("masked_lm_accuracy", "masked_lm_loss",
                      "next_sentence_accuracy", "next_sentence_loss",
                      "global_step", "teacher_top1_agreement")


def student_config_dict(**overrides):
  """A tiny student with the teacher's vocabulary."""
  config = {
      "vocab_size": 30522, "hidden_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 2, "intermediate_size": 256,
      "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
      "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 128,
      "type_vocab_size": 2, "initializer_range": 0.02}
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def student_config_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("student") / "bert_config.json"
  path.write_text(json.dumps(student_config_dict()))
  return str(path)


def common_flags(config_file, input_file, output_dir):
  return ["--bert_config_file", config_file, "--input_file", input_file,
          "--output_dir", output_dir,
          "--truncation_factor", TRUNCATION_FACTOR,
          "--max_seq_length", MAX_SEQ_LENGTH,
          "--max_predictions_per_seq", MAX_PREDICTIONS]


def checkpoint_values(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()}


# ---------------------------------------------------------------------------
# The loss against NumPy.
# ---------------------------------------------------------------------------


def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_soft_loss(logits, probs, weights, indices, temperature, renormalize):
  """The distillation loss written out in NumPy (float64)."""
  logits = logits.astype(np.float64) / temperature
  log_probs = np_log_softmax(logits)
  b, p = weights.shape
  per_position = np.zeros((b, p))
  for i in range(b):
    for j in range(p):
      target = probs[i, j].astype(np.float64)
      if temperature != 1.0:
        target = target ** (1.0 / temperature)
      if temperature != 1.0 or renormalize:
        target = target / target.sum()
      lp = log_probs[i, j] if indices is None else log_probs[i, j,
                                                            indices[i, j]]
      per_position[i, j] = -(target * lp).sum() * temperature ** 2
  return (weights * per_position).sum() / (weights.sum() + 1e-5)


@pytest.mark.parametrize("k,temperature,renormalize", [
    (5, 1.0, False), (5, 1.0, True), (5, 2.0, False), (0, 1.0, False),
    (0, 3.0, False)])
def test_soft_cross_entropy_matches_numpy(k, temperature, renormalize):
  rng = np.random.default_rng(k + int(temperature * 10) + renormalize)
  b, p, v = 3, 4, 50
  logits = rng.normal(0, 3, (b, p, v)).astype(np.float32)
  weights = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], np.float32)
  if k:
    indices = np.stack([[rng.choice(v, k, replace=False) for _ in range(p)]
                        for _ in range(b)])
    probs = (rng.dirichlet(np.ones(k), (b, p)) * 0.8).astype(np.float32)
  else:
    indices = None
    probs = rng.dirichlet(np.ones(v), (b, p)).astype(np.float32)
  loss, per_position = distillation_objective.soft_cross_entropy(
      tf.constant(logits), tf.constant(probs), tf.constant(weights),
      None if indices is None else tf.constant(indices),
      temperature=temperature, renormalize=renormalize)
  expected = np_soft_loss(logits, probs, weights, indices, temperature,
                          renormalize)
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
  assert per_position.shape == (b, p)


def test_hard_and_next_sentence_losses_match_numpy():
  rng = np.random.default_rng(7)
  logits = rng.normal(0, 2, (2, 3, 11)).astype(np.float32)
  ids = rng.integers(0, 11, (2, 3))
  weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  loss, _ = distillation_objective.hard_cross_entropy(
      tf.constant(logits), tf.constant(ids, tf.int32), tf.constant(weights))
  lp = np_log_softmax(logits.astype(np.float64))
  picked = np.take_along_axis(lp, ids[..., None], -1)[..., 0]
  np.testing.assert_allclose(loss.numpy(),
                             -(weights * picked).sum() / (weights.sum() +
                                                          1e-5), rtol=1e-5)
  nsp_logits = rng.normal(0, 2, (4, 2)).astype(np.float32)
  labels = np.array([[0], [1], [1], [0]])
  nsp, _ = distillation_objective.next_sentence_cross_entropy(
      tf.constant(nsp_logits), tf.constant(labels, tf.int32))
  lp = np_log_softmax(nsp_logits.astype(np.float64))
  np.testing.assert_allclose(
      nsp.numpy(), -np.mean(lp[np.arange(4), labels[:, 0]]), rtol=1e-5)


def np_hard_and_next_sentence_losses(features, mlm_logits, nsp_logits):
  """(masked-LM cross-entropy on the true ids, next-sentence loss) of a
  batch, in NumPy (float64), normalised as the original."""
  lp = np_log_softmax(np.asarray(mlm_logits).astype(np.float64))
  weights = features["masked_lm_weights"].numpy()
  ids = features["masked_lm_ids"].numpy()
  hard = -(weights * np.take_along_axis(lp, ids[..., None], -1)[..., 0]
           ).sum() / (weights.sum() + 1e-5)
  nsp_lp = np_log_softmax(np.asarray(nsp_logits).astype(np.float64))
  labels = features["next_sentence_labels"].numpy()[:, 0]
  return hard, -np.mean(nsp_lp[np.arange(len(labels)), labels])


def test_distiller_loss_on_real_records_matches_numpy(stage4_file):
  """The whole objective on a real stage-IV batch, recomputed in NumPy."""
  lengths = records.stage4_lengths(MAX_SEQ_LENGTH, MAX_PREDICTIONS,
                                   TRUNCATION_FACTOR)
  features = next(iter(records.make_dataset([stage4_file], lengths, 4,
                                            is_training=False)))
  opts = inprocess.options("distillation_flags",
                           truncation_factor=TRUNCATION_FACTOR,
                           max_seq_length=MAX_SEQ_LENGTH,
                           max_predictions_per_seq=MAX_PREDICTIONS,
                           hard_label_weight=0.5)
  tf.random.set_seed(1)
  config = modeling.BertConfig.from_dict(student_config_dict())
  distiller = distillation_objective.Distiller(opts, config)
  outputs = distiller(features, distiller.teacher_targets(features))
  student = distiller.student(
      features["input_ids"], features["input_mask"], features["segment_ids"],
      features["masked_lm_positions"], training=False)
  mlm_logits = student.masked_lm_logits
  nsp_logits = student.next_sentence_logits
  p, k = MAX_PREDICTIONS, TRUNCATION_FACTOR
  probs = features[record_format.TRUNCATED_PROBS].numpy().reshape(-1, p, k)
  indices = features[record_format.TOP_K_INDICES].numpy().reshape(-1, p, k)
  weights = features["masked_lm_weights"].numpy()
  logits = mlm_logits.numpy()
  soft = np_soft_loss(logits, probs, weights, indices, 1.0, False)
  hard, nsp = np_hard_and_next_sentence_losses(features, logits, nsp_logits)
  np.testing.assert_allclose(outputs["loss"].numpy(), soft + 0.5 * hard + nsp,
                             rtol=1e-5)
  # The teacher's top word: the stored index with the largest probability.
  top = np.take_along_axis(indices, probs.argmax(-1)[..., None], -1)[..., 0]
  np.testing.assert_array_equal(outputs["teacher_top1"].numpy(), top)


def test_plain_masked_lm_objective_needs_no_teacher(stage3_dir):
  """--soft_label_weight 0: stage-III records, loss = w * hard CE + NSP."""
  lengths = records.stage3_lengths(MAX_SEQ_LENGTH, MAX_PREDICTIONS)
  features = next(iter(records.make_dataset(
      [os.path.join(stage3_dir, "wiki_0.tfrecord")], lengths, 4,
      is_training=False)))
  opts = inprocess.options("distillation_flags",
                           max_seq_length=MAX_SEQ_LENGTH,
                           max_predictions_per_seq=MAX_PREDICTIONS,
                           soft_label_weight=0.0, hard_label_weight=2.0)
  assert not opts.uses_teacher
  assert distillation.record_lengths(opts, 30522) == lengths
  config = modeling.BertConfig.from_dict(student_config_dict())
  distiller = distillation_objective.Distiller(opts, config)
  targets, internals = distiller.teacher_outputs(features)
  assert targets == (None, None) and internals is None
  outputs = distiller(features, targets)
  student = distiller.student(
      features["input_ids"], features["input_mask"], features["segment_ids"],
      features["masked_lm_positions"], training=False)
  mlm_logits = student.masked_lm_logits
  nsp_logits = student.next_sentence_logits
  hard, nsp = np_hard_and_next_sentence_losses(
      features, mlm_logits.numpy(), nsp_logits)
  np.testing.assert_allclose(outputs["loss"].numpy(), 2.0 * hard + nsp,
                             rtol=1e-5)
  assert float(outputs["soft_loss"]) == 0.0
  assert outputs["teacher_top1"] is None


def test_plain_masked_lm_training_learns_the_words(tmp_path, stage3_dir,
                                                   student_config_file):
  """A student trained on the true ids of stage-III records, no teacher:
  held-out masked-LM accuracy rises from chance; no agreement is reported.
  """
  stage3 = os.path.join(stage3_dir, "wiki_*.tfrecord")
  out = str(tmp_path / "mlm")
  run_main([SCRIPT] + [str(a) for a in common_flags(
      student_config_file, stage3, out)] + [
          "--soft_label_weight", "0", "--hard_label_weight", "1",
          "--do_train", "--do_eval", "--train_batch_size", "32",
          "--learning_rate", "5e-3", "--num_train_steps", "60",
          "--num_warmup_steps", "6", "--eval_batch_size", "64",
          "--max_eval_steps", "10", "--random_seed", "3"])
  metrics = results.read_eval_results(out)
  print(metrics)
  assert "teacher_top1_agreement" not in metrics
  # Chance is 1 / 30522; the most frequent words alone give a few percent.
  assert metrics["masked_lm_accuracy"] > 0.02
  assert metrics["masked_lm_loss"] == metrics["masked_lm_hard_label_loss"]
  assert metrics["masked_lm_hard_label_loss"] < 9.0  # log(30522) = 10.3


# ---------------------------------------------------------------------------
# Bad input: one line, non-zero exit, nothing written.
# ---------------------------------------------------------------------------


def test_bad_inputs_fail_with_one_clear_line(tmp_path, stage3_dir, stage4_file,
                                              student_config_file):
  stage3 = os.path.join(stage3_dir, "wiki_*.tfrecord")
  train = ["--do_train", "--num_train_steps", 2]
  cases = {
      "neither": (common_flags(student_config_file, stage4_file, "{out}"),
                  "At least one of `do_train` or `do_eval` must be True."),
      "tpu": (common_flags(student_config_file, stage4_file, "{out}") + train
              + ["--use_tpu"], "--use_tpu"),
      "stage3": (common_flags(student_config_file, stage3, "{out}") + train,
                 "found stage-III records"),
      "wrong_k": (common_flags(student_config_file, stage4_file, "{out}") +
                  train + ["--truncation_factor", 5],
                  "--truncation_factor=5"),
      "wrong_seq": (common_flags(student_config_file, stage4_file, "{out}") +
                    train + ["--max_seq_length", 128],
                    "input_ids has length 64, expected 128"),
      "online_without_checkpoint": (
          common_flags(student_config_file, stage3, "{out}") + train +
          ["--teacher_bert_config_file", student_config_file],
          "--teacher_init_checkpoint"),
      "no_loss": (common_flags(student_config_file, stage3, "{out}") + train
                  + ["--soft_label_weight", 0],
                  "--soft_label_weight=0 with --hard_label_weight=0"),
      "unused_online_teacher": (
          common_flags(student_config_file, stage3, "{out}") + train +
          ["--soft_label_weight", 0, "--hard_label_weight", 1,
           "--teacher_bert_config_file", student_config_file,
           "--teacher_init_checkpoint", "x"],
          "the online teacher (--teacher_bert_config_file) would be unused"),
      "negative_soft": (common_flags(student_config_file, stage4_file,
                                     "{out}") + train +
                        ["--soft_label_weight", -1],
                        "--soft_label_weight must not be negative"),
      "teacher_dtype_without_online_teacher": (
          common_flags(student_config_file, stage4_file, "{out}") + train +
          ["--teacher_compute_dtype", "bfloat16"],
          "--teacher_compute_dtype applies to the online teacher only"),
  }
  commands = {name: ([str(a).replace("{out}", str(tmp_path / name))
                      for a in args], text)
              for name, (args, text) in cases.items()}
  # The process (exit 1, one line, no traceback) once; the messages through
  # the script's main in this process.
  errors = check_error_runs({"tpu": ([SCRIPT] + commands["tpu"][0],
                                     commands["tpu"][1])})
  del commands["tpu"]
  errors.update(check_main_errors(SCRIPT[:-3], commands))
  for name in cases:
    out = tmp_path / name
    assert not out.exists() or not os.listdir(out), (name, os.listdir(out))
    if name in ("stage3", "wrong_k", "wrong_seq"):
      assert ".tfrecord:" in errors[name], errors[name]  # names the file


def test_word_ids_beyond_the_student_vocabulary_stop_the_run_at_once(
    tmp_path, stage4_file):
  """Ids are checked against the student's vocab_size before training."""
  small_vocab = tmp_path / "small_vocab.json"
  small_vocab.write_text(json.dumps(student_config_dict(vocab_size=20000)))
  full_vocab = tmp_path / "full_vocab.json"
  full_vocab.write_text(json.dumps(student_config_dict()))
  # A teacher label beyond the vocabulary in record 7 of a copy.
  raws = [r.numpy() for r in tf.data.TFRecordDataset(stage4_file).take(50)]
  example = tf.train.Example.FromString(raws[7])
  example.features.feature["top_k_indices"].int64_list.value[3] = 30600
  raws[7] = example.SerializeToString()
  bad_labels = str(tmp_path / "bad_labels.tfrecord")
  with tf.io.TFRecordWriter(bad_labels) as writer:
    for raw in raws:
      writer.write(raw)
  train = ["--do_train", "--do_eval", "--num_train_steps", 2]
  # Through the script's main in this process (its exit status and one
  # line are checked on a process in test_bad_inputs_fail_with_one_clear_line).
  errors = check_main_errors(SCRIPT[:-3], {
      "small_vocab": (common_flags(small_vocab, stage4_file,
                                   tmp_path / "a") + train,
                      "outside [0, 20000) (vocab_size of the student, "
                      "--bert_config_file)"),
      "bad_labels": (common_flags(full_vocab, bad_labels,
                                  tmp_path / "b") + train,
                     "bad_labels.tfrecord: record 7 (counting from 0): "
                     "top_k_indices holds id 30600, outside [0, 30522)"),
  })
  assert not os.path.exists(tmp_path / "a") and not os.path.exists(
      tmp_path / "b")
  # The id named is in the record named, and no earlier record of that
  # feature holds one as large.
  m = re.search(r"record (\d+) \(counting from 0\): (\w+) holds id (\d+)",
                errors["small_vocab"])
  index, name, value = int(m.group(1)), m.group(2), int(m.group(3))
  assert value >= 20000
  rows = [np.array(tf.train.Example.FromString(r.numpy()).features
                   .feature[name].int64_list.value)
          for r in tf.data.TFRecordDataset(stage4_file).take(index + 1)]
  assert value in rows[index]
  assert all(row.max() < 20000 for row in rows[:index])


# ---------------------------------------------------------------------------
# Real distillation: the student learns the teacher and can be a teacher.
# ---------------------------------------------------------------------------


def test_distillation_learns_the_teacher(tmp_path, stage3_dir, stage4_file,
                                         student_config_file):
  steps = 100
  before_dir, out = str(tmp_path / "before"), str(tmp_path / "student")
  common = common_flags(student_config_file, stage4_file, "{out}") + [
      "--eval_batch_size", 64, "--max_eval_steps", 20, "--random_seed", 3]
  fill = lambda args, d: [str(a).replace("{out}", d) for a in args]
  run_main([SCRIPT] + fill(common, before_dir) +
             ["--do_eval", "--eval_untrained"])
  start = time.time()
  run_main([SCRIPT] + fill(common, out) + [
      "--do_train", "--do_eval", "--train_batch_size", 32,
      "--learning_rate", 5e-3, "--num_train_steps", steps,
      "--num_warmup_steps", 10, "--save_checkpoints_steps", 25,
      "--log_every_n_steps", 25, "--keep_checkpoint_max", 2])
  print("trained %d steps in %.1f s" % (steps, time.time() - start))

  before = results.read_eval_results(before_dir)
  after = results.read_eval_results(out)
  for key in REQUIRED_EVAL_KEYS:
    assert key in after and key in before
  assert after["global_step"] == steps and before["global_step"] == 0
  print("before", before, "\nafter", after)
  # The student learns the teacher. (This teacher, an MLM head tuned for
  # retrieval, spreads its mass thinly: its top 10 words hold about a tenth
  # of it, so the soft loss starts near 1.0 and agreement stays modest.)
  assert before["teacher_top1_agreement"] < 0.005
  assert after["teacher_top1_agreement"] > 0.05
  assert after["teacher_top1_agreement"] > 10 * before[
      "teacher_top1_agreement"]
  assert after["masked_lm_loss"] < 0.85 * before["masked_lm_loss"]
  losses = results.read_scalars(out, "loss")
  assert sorted(losses) == list(range(25, steps + 1, 25))
  assert losses[steps] < losses[25]
  assert set(results.read_scalars(out, "learning_rate")) == set(losses)
  assert results.read_scalars(out, "examples_per_sec")

  # Checkpoints: Google's names and shapes, optimizer slots, global_step;
  # the newest two kept; the index names the final one.
  config = student_config_dict()
  final = checkpoints.latest_checkpoint(out)
  assert os.path.basename(final) == "model.ckpt-%d" % steps
  kept = sorted(f for f in os.listdir(out) if f.endswith(".index"))
  assert kept == ["model.ckpt-100.index", "model.ckpt-75.index"]
  shapes = dict(tf.train.list_variables(final))
  google = google_variable_shapes(config)
  expected = dict(google)
  for name, shape in google.items():
    expected[name + "/adam_m"] = shape
    expected[name + "/adam_v"] = shape
  expected["global_step"] = []
  assert {n: list(s) for n, s in shapes.items()} == expected

  # The student loads into modeling as a whole model ...
  model = modeling.BertPretrainingModel(modeling.BertConfig.from_dict(config))
  loaded, missing = checkpoints.load_checkpoint(model.variables_by_name(),
                                                final)
  assert not missing and len(loaded) == len(google)
  # ... and works as a teacher in stage IV: labels from the student, then
  # the student evaluated against them agrees with itself.
  labels = str(tmp_path / "student_labels.tfrecord")
  run_main(["produce_teacher_labels.py", "--bert_config_file",
              student_config_file, "--init_checkpoint", final,
              "--input_file", os.path.join(stage3_dir, "wiki_0.tfrecord"),
              "--output_file", labels, "--truncation_factor",
              TRUNCATION_FACTOR, "--max_seq_length", MAX_SEQ_LENGTH,
              "--max_predictions_per_seq", MAX_PREDICTIONS,
              "--batch_size", 32])
  self_dir = str(tmp_path / "self_eval")
  run_main([SCRIPT] + fill(common_flags(student_config_file, labels,
                                          self_dir), self_dir) +
             ["--do_eval", "--init_checkpoint", final,
              "--eval_batch_size", 64])
  assert results.read_eval_results(self_dir)["teacher_top1_agreement"] > 0.99


# ---------------------------------------------------------------------------
# Kill and restart: exactly the same weights.
# ---------------------------------------------------------------------------


def test_killed_run_resumes_to_the_same_weights(tmp_path, stage4_file,
                                                student_config_file):
  steps, every = 45, 15

  def command(out):
    return [sys.executable, SCRIPT] + [str(a) for a in common_flags(
        student_config_file, stage4_file, out)] + [
            "--do_train", "--train_batch_size", "16", "--learning_rate",
            "1e-3", "--num_train_steps", str(steps), "--num_warmup_steps",
            "10", "--save_checkpoints_steps", str(every),
            "--log_every_n_steps", "10", "--random_seed", "7"]

  whole, broken = str(tmp_path / "whole"), str(tmp_path / "broken")
  # The uninterrupted run: in this process (its process is not what is
  # tested); the interrupted one (a real interpreter, killed) and its
  # resumption are processes.
  run_main(command(whole)[1:])
  proc = subprocess.Popen(command(broken), cwd=REPO, env=script_env(),
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  index = os.path.join(broken, "checkpoint")
  deadline = time.time() + 300
  while not os.path.exists(index) and proc.poll() is None:
    assert time.time() < deadline
    time.sleep(0.01)
  proc.kill()
  proc.wait()
  interrupted_at = checkpoints.latest_checkpoint(broken)
  assert interrupted_at and not interrupted_at.endswith("-%d" % steps)
  # The resumption's process is not what is tested: forked_python.
  result = subprocess.run([forked_python()] + command(broken)[1:], cwd=REPO,
                          env=script_env(), capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  resumed = re.search(r"Resuming from \S+-(\d+) \(global_step (\d+)\)",
                      result.stderr)
  assert resumed and resumed.group(1) == resumed.group(2)
  assert 0 < int(resumed.group(1)) < steps
  a = checkpoint_values(os.path.join(whole, "model.ckpt-%d" % steps))
  b = checkpoint_values(os.path.join(broken, "model.ckpt-%d" % steps))
  assert sorted(a) == sorted(b)
  different = [n for n in a if not np.array_equal(a[n], b[n])]
  assert not different, different[:5]
  # Dropout was on and the run really trained (the test is not vacuous).
  assert student_config_dict()["hidden_dropout_prob"] > 0
  assert int(a["global_step"]) == steps


# ---------------------------------------------------------------------------
# Online teacher and initialisation from teacher layers.
# ---------------------------------------------------------------------------


def test_online_teacher_matches_stored_labels(tmp_path, stage3_dir,
                                              stage4_file, teacher_dir,
                                              student_config_file, caplog):
  teacher_config = os.path.join(teacher_dir, "bert_config.json")
  teacher_ckpt = os.path.join(teacher_dir, "bert_model.ckpt")
  opts = inprocess.options(
      "distillation_flags", truncation_factor=TRUNCATION_FACTOR,
      max_seq_length=MAX_SEQ_LENGTH, max_predictions_per_seq=MAX_PREDICTIONS,
      teacher_bert_config_file=teacher_config,
      teacher_init_checkpoint=teacher_ckpt)
  labeler = teacher.TeacherLabeler(
      modeling.BertConfig.from_json_file(teacher_config), teacher_ckpt,
      TRUNCATION_FACTOR)
  distiller = distillation_objective.Distiller(
      opts,
      modeling.BertConfig.from_dict(student_config_dict()), labeler)
  lengths = records.stage4_lengths(MAX_SEQ_LENGTH, MAX_PREDICTIONS,
                                   TRUNCATION_FACTOR)
  features = next(iter(records.make_dataset([stage4_file], lengths, 16,
                                            is_training=False)))
  probs, indices = distiller.teacher_targets(features)
  k = TRUNCATION_FACTOR
  stored_probs = features[record_format.TRUNCATED_PROBS].numpy().reshape(
      16, MAX_PREDICTIONS, k)
  stored_indices = features[record_format.TOP_K_INDICES].numpy().reshape(
      16, MAX_PREDICTIONS, k)
  order = np.argsort(-stored_probs, axis=-1, kind="stable")
  np.testing.assert_allclose(probs.numpy(),
                             np.take_along_axis(stored_probs, order, -1),
                             atol=2e-5)
  agree = (indices.numpy() ==
           np.take_along_axis(stored_indices, order, -1)).mean()
  assert agree > 0.99

  # The script trains with the teacher online on stage-III records (here in
  # bfloat16: its labels are checked in test_produce_teacher_labels.py).
  out = str(tmp_path / "online")
  caplog.set_level("INFO", logger="absl")
  run_main([SCRIPT] + [str(a) for a in common_flags(
      student_config_file, os.path.join(stage3_dir, "wiki_*.tfrecord"),
      out)] + ["--teacher_bert_config_file", teacher_config,
               "--teacher_init_checkpoint", teacher_ckpt, "--do_train",
               "--do_eval", "--num_train_steps", 5, "--train_batch_size", 8,
               "--max_eval_steps", 2, "--use_xla",
               "--teacher_compute_dtype", "bfloat16"])
  assert "The teacher computes in bfloat16" in caplog.text
  metrics = results.read_eval_results(out)
  assert metrics["global_step"] == 5
  assert 0.0 <= metrics["teacher_top1_agreement"] <= 1.0


def test_init_from_teacher_layers(teacher_dir, caplog):
  teacher_ckpt = os.path.join(teacher_dir, "bert_model.ckpt")
  with open(os.path.join(teacher_dir, "bert_config.json")) as f:
    teacher = json.load(f)
  one_layer = modeling.BertConfig.from_dict(dict(teacher,
                                                 num_hidden_layers=1))
  student = modeling.BertPretrainingModel(one_layer)
  variables = student.variables_by_name()
  caplog.set_level("INFO", logger="absl")  # whatever level an earlier test left
  distillation.init_from_teacher_layers(variables, "1", teacher_ckpt, 1)
  # Counts and a few names, no empty list of what the teacher lacked.
  line, = [r.getMessage() for r in caplog.records
           if r.getMessage().startswith("Initialised")]
  assert line.startswith("Initialised %d student variables from teacher "
                         "layers [1] of %s" % (len(variables), teacher_ckpt))
  assert "random values" not in line
  caplog.clear()
  extra = {"extra/%d" % i: tf.Variable(0.0) for i in range(5)}
  distillation.init_from_teacher_layers(dict(variables, **extra), "1",
                                        teacher_ckpt, 1)
  line, = [r.getMessage() for r in caplog.records
           if r.getMessage().startswith("Initialised")]
  assert line.endswith("; 5 kept their random values: extra/0, extra/1, "
                       "extra/2 and 2 more"), line
  reader = tf.train.load_checkpoint(teacher_ckpt)
  for name, var in variables.items():
    source = name.replace("layer_0/", "layer_1/")
    if reader.has_tensor(source):
      np.testing.assert_array_equal(var.numpy(), reader.get_tensor(source))
    else:
      assert not name.startswith(("bert/encoder", "bert/embeddings",
                                  "cls/predictions")), name

  with pytest.raises(cli.UserError, match="has no layer 5"):
    distillation.init_from_teacher_layers(variables, "5", teacher_ckpt, 1)
  with pytest.raises(cli.UserError, match="2 indices given, the student has"):
    distillation.init_from_teacher_layers(variables, "0,1", teacher_ckpt, 1)
  small = modeling.BertPretrainingModel(modeling.BertConfig.from_dict(
      student_config_dict(num_hidden_layers=1)))
  with pytest.raises(cli.UserError, match="sizes differ.*shape"):
    distillation.init_from_teacher_layers(small.variables_by_name(), "0",
                                          teacher_ckpt, 1)


# ---------------------------------------------------------------------------
# Mixed precision.
# ---------------------------------------------------------------------------


def test_float16_loss_scale_skips_overflowing_steps(stage4_file):
  """An overflowing float16 step changes no weight, halves the scale, and
  still counts (so data and dropout stay aligned with global_step)."""
  opts = inprocess.options(
      "distillation_flags", truncation_factor=TRUNCATION_FACTOR,
      max_seq_length=MAX_SEQ_LENGTH, max_predictions_per_seq=MAX_PREDICTIONS,
      train_batch_size=4,
      use_mixed_precision=True, mixed_precision_dtype="float16",
      num_train_steps=10, num_warmup_steps=0, learning_rate=1e-3)
  config = modeling.BertConfig.from_dict(student_config_dict(
      num_hidden_layers=1))
  distiller = distillation_objective.Distiller(
      opts, config, compute_dtype=tf.float16)
  import optimization  # pylint: disable=g-import-not-at-top
  optimizer = optimization.create_optimizer(1e-3, 10, 0)
  optimizer.build(distiller.student_variables())
  loss_scale = training.DynamicLossScale(initial_scale=2.0**60)
  loop = distillation.step_loop(distiller, optimizer, training.Distribution(),
                                opts, loss_scale)
  lengths = records.stage4_lengths(MAX_SEQ_LENGTH, MAX_PREDICTIONS,
                                   TRUNCATION_FACTOR)
  iterator = iter(records.make_dataset([stage4_file], lengths, 4,
                                       is_training=True, seed=1))
  before = [v.numpy() for v in distiller.student_variables().values()]
  loop.run(iterator, 1)
  assert int(optimizer.global_step.numpy()) == 1
  assert loss_scale.scale.numpy() == 2.0**59
  for old, var in zip(before, distiller.student_variables().values()):
    np.testing.assert_array_equal(old, var.numpy())
  loss_scale.scale.assign(2.0**10)
  assert np.isfinite(loop.run(iterator, 1))
  assert int(optimizer.global_step.numpy()) == 2
  changed = [not np.array_equal(old, var.numpy()) for old, var in
             zip(before, distiller.student_variables().values())]
  assert sum(changed) > 0.9 * len(changed)
