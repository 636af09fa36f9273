"""Tests of optimization.py against a NumPy computation written here and
against Google's original optimization.py (run in a TF1 graph)."""

import collections
import importlib.util
import os

import numpy as np
import pytest
import tensorflow as tf

from bert_distill.lib import checkpoints
import modeling
import optimization
import sample_data

INIT_LR = 0.1
TRAIN_STEPS = 5
WARMUP_STEPS = 2
NUM_STEPS = 7  # Two steps past the end of the decay.

SHAPES = collections.OrderedDict([
    ("layer/kernel", (3, 2)),
    ("layer/bias", (2,)),
    ("layer/LayerNorm/gamma", (2,)),
    ("embeddings/table", (4, 2)),
])


def initial_values():
  rng = np.random.RandomState(0)
  return collections.OrderedDict(
      (name, rng.normal(size=shape).astype(np.float32))
      for name, shape in SHAPES.items())


def step_gradients():
  """Per step, gradients whose global norm is sometimes above 1, sometimes
  below (so clipping is engaged on some steps only)."""
  rng = np.random.RandomState(1)
  scales = [3.0, 0.1, 2.0, 0.05, 1.5, 0.2, 4.0]
  steps = []
  for scale in scales:
    grads = [rng.normal(size=shape).astype(np.float32) for shape in
             SHAPES.values()]
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    steps.append([g * np.float32(scale / norm * 1.0) for g in grads])
  return steps


def numpy_adam_weight_decay(values, all_grads):
  """Google's update rule, by hand, in float64."""
  params = {n: v.astype(np.float64) for n, v in values.items()}
  m = {n: np.zeros(v.shape) for n, v in values.items()}
  v = {n: np.zeros(val.shape) for n, val in values.items()}
  norms = []
  for step, grads in enumerate(all_grads):
    grads = [g.astype(np.float64) for g in grads]
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))
    norms.append(norm)
    if norm > 1.0:
      grads = [g / norm for g in grads]
    if step < WARMUP_STEPS:
      lr = INIT_LR * step / WARMUP_STEPS
    else:
      lr = INIT_LR * (1.0 - min(step, TRAIN_STEPS) / TRAIN_STEPS)
    for name, g in zip(values, grads):
      m[name] = 0.9 * m[name] + 0.1 * g
      v[name] = 0.999 * v[name] + 0.001 * g * g
      update = m[name] / (np.sqrt(v[name]) + 1e-6)
      if "bias" not in name and "LayerNorm" not in name:
        update += 0.01 * params[name]
      params[name] = params[name] - lr * update
  return params, m, v, norms


def test_steps_match_numpy():
  values = initial_values()
  variables = collections.OrderedDict(
      (n, tf.Variable(v, name=n)) for n, v in values.items())
  optimizer = optimization.create_optimizer(INIT_LR, TRAIN_STEPS,
                                            WARMUP_STEPS)
  optimizer.build(variables)

  @tf.function
  def train_step(grads):
    return optimizer.apply_gradients(grads, variables)

  all_grads = step_gradients()
  rates = []
  for grads in all_grads:
    rates.append(float(train_step([tf.constant(g) for g in grads])))
  params, m, v, norms = numpy_adam_weight_decay(values, all_grads)
  # The check covers clipped and unclipped steps, warmup, decay and the end.
  assert max(norms) > 1.5 and min(norms) < 0.5
  np.testing.assert_allclose(rates, [0.0, 0.05, 0.06, 0.04, 0.02, 0.0, 0.0],
                             rtol=1e-6, atol=1e-8)
  assert int(optimizer.global_step.numpy()) == NUM_STEPS
  slots = optimizer.variables_by_name()
  for name in SHAPES:
    np.testing.assert_allclose(variables[name].numpy(), params[name],
                               rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(slots[name + "/adam_m"].numpy(), m[name],
                               rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(slots[name + "/adam_v"].numpy(), v[name],
                               rtol=1e-5, atol=1e-9, err_msg=name)
    assert np.abs(variables[name].numpy() - values[name]).max() > 1e-3


def _original_optimization():
  """Google's optimization.py, imported from the bert_reference sample."""
  path = os.path.join(sample_data.fetch("bert_reference"), "optimization.py")
  spec = importlib.util.spec_from_file_location("original_optimization", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_original(values, all_grads):
  """Runs the original create_optimizer in a TF1 graph; returns all vars."""
  original = _original_optimization()
  v1 = tf.compat.v1
  with tf.Graph().as_default():
    params = [v1.get_variable(n, initializer=val) for n, val in
              values.items()]
    feeds = [v1.placeholder(tf.float32, shape) for shape in SHAPES.values()]
    # d(loss)/d(param) is exactly the fed gradient.
    loss = tf.add_n([tf.reduce_sum(p * g) for p, g in zip(params, feeds)])
    train_op = original.create_optimizer(loss, INIT_LR, TRAIN_STEPS,
                                         WARMUP_STEPS, use_tpu=False)
    # The original groups the update with `global_step += 1` and puts no
    # order between them: the learning rate reads global_step, and when the
    # increment runs first (it did once on a loaded machine) the step uses
    # the next step's rate. Run the two in the order the original means.
    increment = [op for op in train_op.control_inputs
                 if op.type == "AssignVariableOp"]
    update = [op for op in train_op.control_inputs if op not in increment]
    assert len(increment) == 1 and len(update) == 1, train_op.control_inputs
    with v1.Session() as session:
      session.run(v1.global_variables_initializer())
      for grads in all_grads:
        session.run(update, dict(zip(feeds, grads)))
        session.run(increment)
      return {var.op.name: value for var, value in zip(
          v1.global_variables(), session.run(v1.global_variables()))}


def test_matches_original_optimizer():
  values = initial_values()
  all_grads = step_gradients()
  want = run_original(values, all_grads)
  variables = collections.OrderedDict(
      (n, tf.Variable(v)) for n, v in values.items())
  optimizer = optimization.create_optimizer(INIT_LR, TRAIN_STEPS,
                                            WARMUP_STEPS)
  optimizer.build(variables)
  for grads in all_grads:
    optimizer.apply_gradients([tf.constant(g) for g in grads], variables)
  got = dict(variables)
  got.update(optimizer.variables_by_name())
  # The same variables under the same names (slots and global_step too).
  assert sorted(got) == sorted(want)
  for name, value in want.items():
    np.testing.assert_allclose(got[name].numpy(), value, rtol=1e-5,
                               atol=1e-7, err_msg=name)


def test_learning_rate_schedule():
  opt = optimization.create_optimizer(2.0, 10, 4)
  rates = [float(opt.learning_rate_at(s)) for s in (0, 1, 3, 4, 5, 9, 10, 15)]
  np.testing.assert_allclose(rates, [0.0, 0.5, 1.5, 1.2, 1.0, 0.2, 0.0, 0.0],
                             rtol=1e-6, atol=1e-7)
  no_warmup = optimization.create_optimizer(2.0, 10, 0)
  assert float(no_warmup.learning_rate_at(0)) == 2.0
  assert abs(float(no_warmup.learning_rate_at(tf.constant(5, tf.int64))) -
             1.0) < 1e-6
  with pytest.raises(ValueError, match="num_warmup_steps"):
    optimization.create_optimizer(1e-4, 10, -1)


def test_none_gradient_skipped():
  values = initial_values()
  variables = collections.OrderedDict(
      (n, tf.Variable(v)) for n, v in values.items())
  optimizer = optimization.create_optimizer(INIT_LR, TRAIN_STEPS, 0)
  optimizer.build(variables)
  grads = [tf.ones(shape) for shape in SHAPES.values()]
  grads[1] = None
  optimizer.apply_gradients(grads, variables)
  np.testing.assert_array_equal(variables["layer/bias"].numpy(),
                                values["layer/bias"])
  assert not optimizer.variables_by_name()["layer/bias/adam_m"].numpy().any()
  assert variables["layer/kernel"].numpy()[0, 0] != values["layer/kernel"][0,
                                                                           0]


def test_weight_decay_exclusion_and_checkpoint_names_on_bert(tmp_path):
  config = modeling.BertConfig(vocab_size=30, hidden_size=8,
                               num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=16,
                               max_position_embeddings=12, type_vocab_size=2)
  model = modeling.BertPretrainingModel(config)
  variables = model.variables_by_name()
  before = {n: v.numpy() for n, v in variables.items()}
  optimizer = optimization.create_optimizer(0.5, 10, 0)
  optimizer.build(variables)
  # Zero gradients: only the weight decay moves a variable.
  optimizer.apply_gradients([tf.zeros_like(v) for v in variables.values()],
                            variables)
  decayed = []
  for name, var in variables.items():
    if np.array_equal(var.numpy(), before[name]):
      continue
    np.testing.assert_allclose(var.numpy(), before[name] * (1 - 0.5 * 0.01),
                               rtol=1e-6, err_msg=name)
    decayed.append(name)
  assert sorted(decayed) == sorted(
      n for n in variables if not n.endswith(("bias", "beta", "gamma")))
  assert "cls/predictions/output_bias" not in decayed
  assert "cls/seq_relationship/output_weights" in decayed

  everything = collections.OrderedDict(variables)
  everything.update(optimizer.variables_by_name())
  prefix = checkpoints.save_checkpoint(everything,
                                       str(tmp_path / "model.ckpt-1"))
  reader = tf.train.load_checkpoint(prefix)
  names = set(reader.get_variable_to_shape_map())
  assert names == ({"global_step"} | set(variables) |
                   {n + "/adam_m" for n in variables} |
                   {n + "/adam_v" for n in variables})
  assert reader.get_variable_to_dtype_map()["global_step"] == tf.int64
  assert reader.get_tensor("global_step") == 1
  assert (reader.get_variable_to_shape_map()[
      "bert/embeddings/word_embeddings/adam_v"] == [30, 8])
  # A resumed optimizer picks up its step and slots from the checkpoint.
  again = optimization.create_optimizer(0.5, 10, 0)
  again.build(variables)
  loaded, missing = checkpoints.load_checkpoint(again.variables_by_name(),
                                             prefix)
  assert missing == [] and int(again.global_step.numpy()) == 1
  with pytest.raises(ValueError, match="other variables"):
    again.build({"x": tf.Variable(1.0)})
