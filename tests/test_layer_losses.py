"""Tests of the layer-wise distillation losses (hidden states, attention
scores, attention relations) in stages V and VI.

Each loss is recomputed here in NumPy (float64) from the teacher's and the
student's weights and the inputs, through a NumPy BERT encoder
(test_modeling.np_encoder); training runs on the real stage-III records with
the real small BERT as the online teacher.
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from bert_distill.lib import checkpoints
from bert_distill import cli
from bert_distill.stages import distillation
from bert_distill.stages import distillation_objective
from bert_distill.lib import layer_losses
import inprocess
import modeling
import optimization
from bert_distill.stages import teacher
from bert_distill.stages import training
from conftest import MAX_PREDICTIONS
from conftest import MAX_SEQ_LENGTH
from conftest import TRUNCATION_FACTOR
from conftest import check_error_runs
from conftest import google_variable_shapes
from test_modeling import np_encoder
from test_modeling import randomize

SCRIPT = "network_distillation_single_machine_truncated.py"

# A random teacher and two narrower students (one with fewer heads).
TEACHER = dict(vocab_size=97, hidden_size=24, num_hidden_layers=4,
               num_attention_heads=4, intermediate_size=40,
               hidden_act="gelu", hidden_dropout_prob=0.1,
               attention_probs_dropout_prob=0.1, max_position_embeddings=16,
               type_vocab_size=2, initializer_range=0.2)
FEWER_HEADS = dict(TEACHER, hidden_size=16, num_hidden_layers=2,
                   num_attention_heads=2, intermediate_size=24)
SAME_HEADS = dict(TEACHER, hidden_size=16, num_hidden_layers=3,
                  intermediate_size=24)
ALL_LOSSES = dict(hidden_loss_weight=0.5, attention_loss_weight=0.25,
                  attention_relation_loss_weight=2.0)


def np_real(mask):
  return mask.astype(np.float64)


def np_hidden_loss(student, teacher_states, mask, kernel, bias):
  m = np_real(mask)
  total = 0.0
  for s, t in zip(student, teacher_states):
    if kernel is not None:
      s = s @ kernel + bias
    total += (m * ((s - t) ** 2).sum(-1)).sum() / (m.sum() * t.shape[-1])
  return total


def np_attention_loss(student, teacher_scores, mask):
  m = np_real(mask)
  pairs = m[:, None, :, None] * m[:, None, None, :]
  total = 0.0
  for s, t in zip(student, teacher_scores):
    total += (pairs * (s - t) ** 2).sum() / (s.shape[1] * pairs.sum())
  return total


def np_relation_kl(student_x, teacher_x, mask, heads):
  """MiniLMv2's relation KL, looping over sequences: padding left out."""
  total, rows = 0.0, 0
  for b in range(mask.shape[0]):
    n = int(mask[b].sum())  # real tokens come first
    for r in range(heads):
      dist = []
      for x in (teacher_x[b, :n], student_x[b, :n]):
        d = x.shape[-1] // heads
        part = x[:, r * d:(r + 1) * d]
        scores = part @ part.T / np.sqrt(d)
        e = np.exp(scores - scores.max(-1, keepdims=True))
        dist.append(e / e.sum(-1, keepdims=True))
      p_t, p_s = dist
      total += (p_t * (np.log(p_t) - np.log(p_s))).sum()
      rows += n
  return total / rows


def random_inputs(seed, batch=3, seq=10, vocab=97):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, vocab, (batch, seq)).astype(np.int64)
  lengths = np.array([seq, 6, 8])[:batch]
  mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int64)
  ids *= mask
  segments = (np.arange(seq)[None] >= lengths[:, None] // 2).astype(
      np.int64) * mask
  positions = np.stack([rng.choice(np.arange(1, n), 3, replace=False)
                        for n in lengths]).astype(np.int64)
  return {"input_ids": ids, "input_mask": mask, "segment_ids": segments,
          "masked_lm_positions": positions,
          "masked_lm_ids": rng.integers(1, vocab, (batch, 3)),
          "masked_lm_weights": np.ones((batch, 3), np.float32),
          "next_sentence_labels": rng.integers(0, 2, (batch, 1))}


def random_distiller(tmp_path, student_dict, seed=0, **options):
  """(a Distiller of a random student with a random online teacher, the
  distillation.Options it was made from)."""
  teacher_config = modeling.BertConfig.from_dict(TEACHER)
  teacher_model = modeling.BertPretrainingModel(teacher_config)
  randomize(teacher_model, seed)
  prefix = str(tmp_path / "teacher.ckpt")
  checkpoints.save_checkpoint(teacher_model.variables_by_name(), prefix)
  labeler = teacher.TeacherLabeler(teacher_config, prefix, 5)
  opts = inprocess.options(
      "distillation_flags", truncation_factor=5, max_seq_length=10,
      max_predictions_per_seq=3, teacher_bert_config_file="teacher.json",
      teacher_init_checkpoint=prefix, **options)
  distiller = distillation_objective.Distiller(
      opts, modeling.BertConfig.from_dict(student_dict),
      labeler)
  randomize(distiller.student, seed + 1)
  for var in distiller.extra_variables().values():
    var.assign(np.random.default_rng(seed + 2).normal(
        0, 0.3, var.shape).astype(np.float32))
  return distiller, opts


def weights_of(model):
  return {n: v.numpy().astype(np.float64)
          for n, v in model.variables_by_name().items()}


@pytest.mark.parametrize("student_dict,options", [
    (FEWER_HEADS, dict(hidden_loss_weight=0.5,
                       attention_relation_loss_weight=2.0,
                       attention_relation_teacher_layer=2)),
    (SAME_HEADS, dict(ALL_LOSSES, teacher_layer_map="0,2,3",
                      attention_relation_heads=2)),
], ids=["narrower_fewer_heads", "narrower_same_heads"])
def test_each_loss_matches_numpy(tmp_path, student_dict, options):
  distiller, _ = random_distiller(tmp_path, student_dict, **options)
  plan = distiller.plan
  features = random_inputs(1)
  targets, internals = distiller.teacher_outputs(features)
  outputs = distiller(features, targets, teacher_internals=internals)

  mask = features["input_mask"]
  args = (features["input_ids"], mask, features["segment_ids"])
  t = np_encoder(weights_of(distiller.teacher.model), TEACHER, *args)
  s = np_encoder(weights_of(distiller.student), student_dict, *args)
  layer_map = ([int(i) for i in options["teacher_layer_map"].split(",")]
               if "teacher_layer_map" in options else
               [1, 3] if student_dict["num_hidden_layers"] == 2 else None)
  assert plan.layer_map == layer_map
  extra = {n: v.numpy().astype(np.float64)
           for n, v in distiller.extra_variables().items()}
  assert sorted(extra) == ["distillation/hidden_projection/bias",
                           "distillation/hidden_projection/kernel"]
  expected = {}
  expected["hidden_loss"] = np_hidden_loss(
      s["hidden_states"],
      [t["hidden_states"][0]] + [t["hidden_states"][i + 1]
                                 for i in layer_map],
      mask, extra["distillation/hidden_projection/kernel"],
      extra["distillation/hidden_projection/bias"])
  if options.get("attention_loss_weight"):
    expected["attention_loss"] = np_attention_loss(
        s["attention_scores"], [t["attention_scores"][i] for i in layer_map],
        mask)
  layer = options.get("attention_relation_teacher_layer", 3)
  heads = options.get("attention_relation_heads", 4)
  expected["attention_relation_loss"] = sum(
      np_relation_kl(s[part][-1], t[part][layer], mask, heads)
      for part in ("queries", "keys", "values"))
  for name, value in expected.items():
    assert value > 1e-3, name  # not a vacuous comparison
    np.testing.assert_allclose(outputs[name].numpy(), value, rtol=1e-5,
                               err_msg=name)
  base = (outputs["masked_lm_loss"] + outputs["next_sentence_loss"]).numpy()
  weighted = sum(
      options[option] * expected[name] for option, name in
      layer_losses.LAYER_LOSS_WEIGHTS.items() if option in options)
  np.testing.assert_allclose(outputs["loss"].numpy(), base + weighted,
                             rtol=1e-5)

  # Padding is left out: changing what padded positions hold changes none.
  changed = dict(features, input_ids=np.where(
      mask == 1, features["input_ids"], 7), segment_ids=np.where(
          mask == 1, features["segment_ids"], 1))
  targets, internals = distiller.teacher_outputs(changed)
  again = distiller(changed, targets, teacher_internals=internals)
  for name in expected:
    np.testing.assert_allclose(again[name].numpy(), outputs[name].numpy(),
                               rtol=1e-5, err_msg=name)


def test_gradients_reach_projection_and_student_never_the_teacher(tmp_path):
  distiller, opts = random_distiller(tmp_path, SAME_HEADS, **ALL_LOSSES)
  features = random_inputs(2)
  trained = distiller.trainable_variables_by_name()
  targets, internals = distiller.teacher_outputs(features)
  with tf.GradientTape() as tape:
    outputs = distiller(features, targets, teacher_internals=internals)
    layer_total = tf.add_n([outputs[name] for name in
                            layer_losses.LAYER_LOSS_WEIGHTS.values()])
  grads = dict(zip(trained, tape.gradient(layer_total,
                                          list(trained.values()))))
  # The layer losses alone reach the projection and every encoder variable.
  reached = [n for n in grads if n.startswith(("bert/encoder",
                                               "distillation/"))]
  assert len(reached) == 2 + 16 * SAME_HEADS["num_hidden_layers"]
  for name in reached + ["bert/embeddings/LayerNorm/gamma"]:
    assert grads[name] is not None and np.abs(
        tf.convert_to_tensor(grads[name]).numpy()).max() > 0, name

  # Training steps: the student and projection move, the teacher does not.
  optimizer = optimization.create_optimizer(1e-2, 10, 0)
  optimizer.build(trained)
  loop = distillation.step_loop(distiller, optimizer, training.Distribution(),
                                opts)
  teacher_before = weights_of(distiller.teacher.model)
  trained_before = {n: v.numpy() for n, v in trained.items()}
  dataset = tf.data.Dataset.from_tensors(
      {k: tf.constant(v) for k, v in features.items()}).repeat()
  tf.config.run_functions_eagerly(True)  # the same steps, without tracing
  try:
    loop.run(iter(dataset), 2)
  finally:
    tf.config.run_functions_eagerly(False)
  assert int(optimizer.global_step.numpy()) == 2
  for name, value in weights_of(distiller.teacher.model).items():
    np.testing.assert_array_equal(value, teacher_before[name], err_msg=name)
  for name in reached:
    assert not np.array_equal(trained[name].numpy(), trained_before[name])
  trained_ids = {id(v) for v in trained.values()}
  assert not any(id(v) in trained_ids for v in
                 distiller.teacher.model.variables_by_name().values())


def layer_options(student_config, stage3, out, teacher_dir, **overrides):
  values = dict(
      bert_config_file=student_config, input_file=stage3, output_dir=out,
      truncation_factor=TRUNCATION_FACTOR, max_seq_length=MAX_SEQ_LENGTH,
      max_predictions_per_seq=MAX_PREDICTIONS, do_train=True,
      train_batch_size=8, learning_rate=1e-3, num_train_steps=6,
      num_warmup_steps=2, save_checkpoints_steps=3, log_every_n_steps=3,
      iterations_per_loop=3, random_seed=5,
      teacher_bert_config_file=os.path.join(teacher_dir, "bert_config.json"),
      teacher_init_checkpoint=os.path.join(teacher_dir, "bert_model.ckpt"),
      hidden_loss_weight=1.0, attention_loss_weight=1.0,
      attention_relation_loss_weight=1.0)
  values.update(overrides)
  return inprocess.options("distillation_flags", **values)


def student_file(tmp_path, **overrides):
  config = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                num_attention_heads=2, intermediate_size=128,
                hidden_act="gelu", hidden_dropout_prob=0.1,
                attention_probs_dropout_prob=0.1,
                max_position_embeddings=MAX_SEQ_LENGTH, type_vocab_size=2,
                initializer_range=0.02)
  config.update(overrides)
  path = tmp_path / ("student_%d.json" % len(os.listdir(tmp_path)))
  path.write_text(json.dumps(config))
  return str(path), config


def checkpoint_values(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()}


def test_resume_with_layer_losses_is_exact(tmp_path, stage3_dir,
                                           teacher_dir):
  """A run stopped at its step-3 checkpoint and restarted ends with the same
  weights (student, projection, optimizer slots) as an uninterrupted one."""
  config_file, config = student_file(tmp_path)
  stage3 = os.path.join(stage3_dir, "wiki_*.tfrecord")
  whole, broken = str(tmp_path / "whole"), str(tmp_path / "broken")
  results = distillation.run(layer_options(
      config_file, stage3, whole, teacher_dir, do_eval=True,
      eval_batch_size=8, max_eval_steps=2))
  for name in ("hidden_loss", "attention_loss", "attention_relation_loss"):
    assert results[name] > 0, name
  with open(os.path.join(whole, "eval_results.txt")) as f:
    written = f.read()
  assert "attention_relation_loss = " in written

  # The student checkpoint holds Google's names (and slots) only; the
  # projection and its slots are in the companion checkpoint.
  final = os.path.join(whole, "model.ckpt-6")
  google = google_variable_shapes(config)
  expected = {n for name in google for n in (name, name + "/adam_m",
                                             name + "/adam_v")}
  assert set(checkpoint_values(final)) == expected | {"global_step"}
  extra = set(checkpoint_values(final + ".distillation"))
  assert extra == {n + s for n in ("distillation/hidden_projection/kernel",
                                   "distillation/hidden_projection/bias")
                   for s in ("", "/adam_m", "/adam_v")}
  model = modeling.BertPretrainingModel(modeling.BertConfig.from_dict(config))
  _, missing = checkpoints.load_checkpoint(model.variables_by_name(), final)
  assert not missing

  # "Killed" after step 3: only the step-3 checkpoint is left, then resumed.
  os.makedirs(broken)
  for path in tf.io.gfile.glob(os.path.join(whole, "model.ckpt-3.*")):
    shutil.copy(path, broken)
  checkpoints.write_checkpoint_index(broken, os.path.join(broken,
                                                       "model.ckpt-3"))
  distillation.run(layer_options(config_file, stage3, broken, teacher_dir))
  for suffix in ("", ".distillation"):
    a = checkpoint_values(final + suffix)
    b = checkpoint_values(os.path.join(broken, "model.ckpt-6" + suffix))
    assert sorted(a) == sorted(b)
    different = [n for n in a if not np.array_equal(a[n], b[n])]
    assert not different, different[:5]
  start = checkpoint_values(os.path.join(whole, "model.ckpt-3.distillation"))
  assert not np.array_equal(start["distillation/hidden_projection/kernel"],
                            a["distillation/hidden_projection/kernel"])


def test_bad_layer_loss_flags_fail_with_one_line(tmp_path, stage3_dir,
                                                 stage4_file, teacher_dir):
  config_file, _ = student_file(tmp_path)
  four_heads, _ = student_file(tmp_path, num_attention_heads=4)
  stage3 = os.path.join(stage3_dir, "wiki_*.tfrecord")
  out = str(tmp_path / "out")
  cases = [
      (dict(hidden_loss_weight=-1.0),
       "--hidden_loss_weight must not be negative, got -1.0"),
      (dict(teacher_bert_config_file=None, teacher_init_checkpoint=None,
            input_file=stage4_file, attention_loss_weight=0.0),
       "--hidden_loss_weight needs the online teacher"),
      (dict(teacher_layer_map="0,2"),
       "--teacher_layer_map=0,2: teacher layer 2 does not exist (the "
       "teacher has 2 layers"),
      (dict(teacher_layer_map="1"),
       "--teacher_layer_map=1: 1 indices given, the student has 2 layers"),
      (dict(bert_config_file=four_heads),
       "--attention_loss_weight: the student has 4 attention heads, the "
       "teacher 2"),
      (dict(attention_relation_heads=3),
       "--attention_relation_heads=3 must divide both hidden sizes"),
      (dict(attention_relation_teacher_layer=5),
       "--attention_relation_teacher_layer=5: the teacher has 2 layers"),
  ]
  for overrides, message in cases:
    with pytest.raises(cli.UserError) as info:
      distillation.run(layer_options(config_file, stage3, out, teacher_dir,
                                     **overrides))
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert not os.path.exists(out)
  # As a user sees it: one error line, exit status 1.
  check_error_runs({"map": (
      [SCRIPT, "--bert_config_file", config_file, "--input_file", stage3,
       "--output_dir", out, "--do_train", "--max_seq_length",
       MAX_SEQ_LENGTH, "--max_predictions_per_seq", MAX_PREDICTIONS,
       "--teacher_bert_config_file",
       os.path.join(teacher_dir, "bert_config.json"),
       "--teacher_init_checkpoint",
       os.path.join(teacher_dir, "bert_model.ckpt"),
       "--hidden_loss_weight", 1, "--teacher_layer_map", "0,9"],
      "--teacher_layer_map=0,9: teacher layer 9 does not exist")})
  assert not os.path.exists(out)
