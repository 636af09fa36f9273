"""Tests of modeling.py against a NumPy BERT written here, on real weights.

The reference forward pass below is written from the description of Google's
BERT (tanh GELU, LayerNorm epsilon 1e-12, -10000 mask adder, scores scaled
by 1/sqrt(head size), MLM head on the tied embeddings) and reads its weights
straight from the checkpoint files with tf.train.load_checkpoint, so it
shares no code with modeling.py.
"""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import google_variable_shapes
from bert_distill.lib import checkpoints
from bert_distill.lib import errors
import modeling

# ---------------------------------------------------------------------------
# The NumPy reference (float64).
# ---------------------------------------------------------------------------


def np_gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) *
                                  (x + 0.044715 * x ** 3)))


_erf = np.vectorize(math.erf)


def np_gelu_erf(x):
  return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


NP_ACTIVATIONS = {"gelu": np_gelu_tanh, "gelu_exact": np_gelu_erf,
                  "relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh}


def np_layer_norm(x, gamma, beta):
  mean = x.mean(axis=-1, keepdims=True)
  var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-12) * gamma + beta


def np_softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _np_dense(w, x, name):
  return x @ w[name + "/kernel"] + w[name + "/bias"]


def _np_norm(w, x, name):
  return np_layer_norm(x, w[name + "/gamma"], w[name + "/beta"])


def np_encoder(w, config, ids, mask, segments):
  """The encoder's insides (float64), as modeling.EncoderInternals.

  Returns:
    dict: hidden_states (L + 1 arrays [B, S, H]: embeddings, then each
    layer), attention_scores (L arrays [B, N, S, S], q.k / sqrt(d) without
    the mask), queries, keys, values (L arrays [B, S, H]).
  """
  act = NP_ACTIVATIONS[config["hidden_act"]]
  h = config["hidden_size"]
  heads = config["num_attention_heads"]
  d = h // heads
  batch, seq = ids.shape
  dense = lambda x, name: _np_dense(w, x, name)
  norm = lambda x, name: _np_norm(w, x, name)

  def split(x):
    return x.reshape(batch, seq, heads, d).transpose(0, 2, 1, 3)

  x = (w["bert/embeddings/word_embeddings"][ids] +
       w["bert/embeddings/token_type_embeddings"][segments] +
       w["bert/embeddings/position_embeddings"][:seq][None])
  x = norm(x, "bert/embeddings/LayerNorm")
  out = {"hidden_states": [x], "attention_scores": [], "queries": [],
         "keys": [], "values": []}
  adder = (1.0 - mask[:, None, None, :].astype(np.float64)) * -10000.0
  for layer in range(config["num_hidden_layers"]):
    p = "bert/encoder/layer_%d/" % layer
    parts = [dense(x, p + "attention/self/" + part)
             for part in ("query", "key", "value")]
    for name, part in zip(("queries", "keys", "values"), parts):
      out[name].append(part)
    q, k, v = (split(part) for part in parts)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    out["attention_scores"].append(scores)
    probs = np_softmax(scores + adder)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, h)
    attention = norm(dense(context, p + "attention/output/dense") + x,
                     p + "attention/output/LayerNorm")
    inner = act(dense(attention, p + "intermediate/dense"))
    x = norm(dense(inner, p + "output/dense") + attention,
             p + "output/LayerNorm")
    out["hidden_states"].append(x)
  return out


def np_bert(w, config, ids, mask, segments, positions):
  """Sequence output, MLM log-probs at `positions`, NSP logits (float64)."""
  act = NP_ACTIVATIONS[config["hidden_act"]]
  batch = ids.shape[0]
  dense = lambda x, name: _np_dense(w, x, name)
  norm = lambda x, name: _np_norm(w, x, name)
  x = np_encoder(w, config, ids, mask, segments)["hidden_states"][-1]
  pooled = np.tanh(dense(x[:, 0], "bert/pooler/dense"))
  gathered = x[np.arange(batch)[:, None], positions]
  t = norm(act(dense(gathered, "cls/predictions/transform/dense")),
           "cls/predictions/transform/LayerNorm")
  logits = (t @ w["bert/embeddings/word_embeddings"].T +
            w["cls/predictions/output_bias"])
  log_probs = logits - logits.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  nsp = (pooled @ w["cls/seq_relationship/output_weights"].T +
         w["cls/seq_relationship/output_bias"])
  return x, log_probs, nsp


def checkpoint_arrays(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name).astype(np.float64)
          for name in reader.get_variable_to_shape_map()}


def log_softmax(logits):
  return tf.nn.log_softmax(logits, axis=-1).numpy()


# ---------------------------------------------------------------------------
# A random small model.
# ---------------------------------------------------------------------------

SMALL = dict(vocab_size=97, hidden_size=24, num_hidden_layers=2,
             num_attention_heads=3, intermediate_size=40,
             hidden_act="gelu", hidden_dropout_prob=0.1,
             attention_probs_dropout_prob=0.1, max_position_embeddings=16,
             type_vocab_size=3, initializer_range=0.2)


def randomize(model, seed):
  """Gives every variable random values (no zero biases, no unit gammas)."""
  rng = np.random.RandomState(seed)
  for name, var in model.variables_by_name().items():
    value = rng.normal(scale=0.2, size=var.shape)
    if name.endswith("gamma"):
      value += 1.0
    var.assign(value.astype(np.float32))


def small_inputs():
  ids = np.array([[2, 45, 17, 88, 3, 9, 60, 71, 5, 1],
                  [2, 33, 96, 12, 40, 3, 0, 0, 0, 0],
                  [2, 7, 7, 50, 3, 81, 26, 4, 0, 0]], np.int32)
  mask = (np.arange(10)[None] < np.array([[10], [6], [8]])).astype(np.int32)
  segments = np.array([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
                       [0, 0, 0, 1, 1, 1, 0, 0, 0, 0],
                       [0, 1, 2, 2, 1, 0, 2, 1, 0, 0]], np.int32)
  positions = np.array([[1, 4, 9], [2, 2, 0], [5, 3, 7]], np.int32)
  return ids, mask, segments, positions


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
  """(config dict, checkpoint prefix) of a random small model."""
  config = modeling.BertConfig.from_dict(SMALL)
  model = modeling.BertPretrainingModel(config)
  randomize(model, 0)
  prefix = str(tmp_path_factory.mktemp("small") / "model.ckpt-7")
  assert checkpoints.save_checkpoint(model.variables_by_name(),
                                     prefix) == prefix
  return dict(SMALL), prefix


def load_model(config_dict, prefix, **kwargs):
  model = modeling.BertPretrainingModel(
      modeling.BertConfig.from_dict(config_dict), **kwargs)
  loaded, missing = checkpoints.load_checkpoint(model.variables_by_name(),
                                             prefix)
  assert missing == [] and len(loaded) == len(model.variables_by_name())
  return model


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_exact", "relu"])
def test_forward_matches_numpy_on_random_model(small_checkpoint, hidden_act):
  config, prefix = small_checkpoint
  config = dict(config, hidden_act=hidden_act)
  model = load_model(config, prefix)
  ids, mask, segments, positions = small_inputs()
  want_seq, want_logp, want_nsp = np_bert(checkpoint_arrays(prefix), config,
                                          ids, mask, segments, positions)
  mlm, nsp, internals = model(ids, mask, segments, positions)
  assert internals is None  # kept only when asked
  encoder = model.bert(ids, mask, segments)
  seq, pooled = encoder.sequence_output, encoder.pooled_output
  assert len(encoder.all_encoder_layers) == config["num_hidden_layers"]
  assert encoder.all_encoder_layers[-1] is seq
  assert mlm.dtype == tf.float32 and mlm.shape == (3, 3, 97)
  assert nsp.shape == (3, 2) and pooled.shape == (3, 24)
  np.testing.assert_allclose(seq.numpy(), want_seq, atol=1e-5, rtol=0)
  np.testing.assert_allclose(log_softmax(mlm), want_logp, atol=1e-5, rtol=0)
  np.testing.assert_allclose(nsp.numpy(), want_nsp, atol=1e-5, rtol=0)
  # A teacher's path: the last layer at the masked positions only.
  only = model(ids, mask, segments, positions, masked_lm_only=True)
  assert only.next_sentence_logits is None and only.internals is None
  np.testing.assert_allclose(log_softmax(only.masked_lm_logits), want_logp,
                             atol=1e-5, rtol=0)
  # The check is not trivial: padding changes what real tokens see.
  _, no_mask_logp, _ = np_bert(checkpoint_arrays(prefix), config, ids,
                               np.ones_like(mask), segments, positions)
  assert np.abs(no_mask_logp - want_logp).max() > 1e-2


def test_internals_match_numpy(small_checkpoint):
  """With return_internals, the encoder's outputs carry every layer's
  hidden states, attention scores, queries, keys and values, each equal to
  the NumPy forward pass; without, nothing is kept."""
  config, prefix = small_checkpoint
  model = load_model(config, prefix)
  ids, mask, segments, _ = small_inputs()
  want = np_encoder(checkpoint_arrays(prefix), config, ids, mask, segments)
  encoder = model.bert(ids, mask, segments, return_internals=True)
  internals = encoder.internals
  assert set(modeling.EncoderInternals._fields) == set(want)
  layers = config["num_hidden_layers"]
  assert len(internals.hidden_states) == layers + 1
  for name in modeling.EncoderInternals._fields:
    got = getattr(internals, name)
    assert len(got) == len(want[name]), name
    for got_one, want_one in zip(got, want[name]):
      assert got_one.dtype == tf.float32
      np.testing.assert_allclose(got_one.numpy(), want_one, atol=1e-5,
                                 err_msg=name)
  assert internals.hidden_states[1:] == encoder.all_encoder_layers
  assert model.bert(ids, mask, segments).internals is None


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_output_positions_equal_the_gathered_output(small_checkpoint, layers):
  """output_positions computes the last layer at those positions only: the
  whole output gathered there, [B, P, H], and every earlier layer whole."""
  config, prefix = small_checkpoint
  config = dict(config, num_hidden_layers=layers)
  model = modeling.BertModel(modeling.BertConfig.from_dict(config))
  ids, mask, segments, positions = small_inputs()
  whole = model(ids, mask, segments)
  part = model(ids, mask, segments, output_positions=positions)
  want = tf.gather(whole.sequence_output, positions, batch_dims=1)
  assert part.sequence_output.shape == want.shape
  assert part.pooled_output is None
  np.testing.assert_allclose(part.sequence_output.numpy(), want.numpy(),
                             atol=1e-6)
  for got, full in zip(part.all_encoder_layers[:-1],
                       whole.all_encoder_layers[:-1]):
    np.testing.assert_array_equal(got.numpy(), full.numpy())
  assert len(part.all_encoder_layers) == layers
  with pytest.raises(ValueError, match="exclude each other"):
    model(ids, mask, segments, output_positions=positions,
          return_internals=True)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"beyond|not in \[0"):
    model(ids, mask, segments, output_positions=positions + ids.shape[1])


def test_freeze_kernels_keeps_outputs(small_checkpoint):
  """A bfloat16 model's kernels become bfloat16 copies: the same outputs
  (the casts moved, not changed), and the copies no longer follow the
  float32 variables; a float32 model is left as it is."""
  config, prefix = small_checkpoint
  inputs = small_inputs()
  half = load_model(config, prefix, compute_dtype=tf.bfloat16)
  before = half(*inputs).masked_lm_logits.numpy()
  half.bert.freeze_kernels()
  layer = half.bert._layers[0]  # pylint: disable=protected-access
  assert layer.query_kernel.dtype == tf.bfloat16
  assert not layer.query_kernel.trainable
  np.testing.assert_array_equal(half(*inputs).masked_lm_logits.numpy(),
                                before)
  name = "bert/encoder/layer_0/attention/self/query/kernel"
  half.variables_by_name()[name].assign_add(tf.ones_like(
      half.variables_by_name()[name]))
  np.testing.assert_array_equal(half(*inputs).masked_lm_logits.numpy(),
                                before)
  full = load_model(config, prefix)
  kernel = full.bert._layers[0].query_kernel  # pylint: disable=protected-access
  full.bert.freeze_kernels()
  assert full.bert._layers[0].query_kernel is kernel  # pylint: disable=protected-access


def test_compiled_forward_matches_eager(small_checkpoint):
  config, prefix = small_checkpoint
  model = load_model(config, prefix)
  ids, mask, segments, positions = small_inputs()
  eager = model(ids, mask, segments, positions)
  spec = tf.TensorSpec([None, None], tf.int32)
  for jit in (False, True):
    fn = tf.function(model.__call__, jit_compile=jit,
                     input_signature=[spec] * 4)
    got = fn(ids, mask, segments, positions)
    for name in ("masked_lm_logits", "next_sentence_logits"):
      np.testing.assert_allclose(getattr(got, name).numpy(),
                                 getattr(eager, name).numpy(), atol=1e-5)
  # int64 inputs, as parsed from TFRecords, give the same result.
  got = model(*[x.astype(np.int64) for x in small_inputs()])
  np.testing.assert_allclose(got[0].numpy(), eager[0].numpy(), atol=1e-6)


def test_default_mask_and_segments(small_checkpoint):
  config, prefix = small_checkpoint
  model = load_model(config, prefix)
  ids = small_inputs()[0]
  seq, pooled = model.bert(ids)[:2]
  want_seq = model.bert(ids, np.ones_like(ids),
                        np.zeros_like(ids)).sequence_output
  np.testing.assert_allclose(seq.numpy(), want_seq.numpy(), atol=1e-6)
  assert pooled.shape == (3, 24)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_close_to_float32(small_checkpoint, dtype):
  config, prefix = small_checkpoint
  full = load_model(config, prefix)
  half = load_model(config, prefix, compute_dtype=dtype)
  inputs = small_inputs()
  for var in half.variables_by_name().values():
    assert var.dtype == tf.float32
  got_mlm, got_nsp, _ = half(*inputs)
  want_mlm, want_nsp, _ = full(*inputs)
  assert got_mlm.dtype == tf.float32 and got_nsp.dtype == tf.float32
  tol = 0.05 if dtype == tf.float16 else 0.3
  np.testing.assert_allclose(log_softmax(got_mlm), log_softmax(want_mlm),
                             atol=tol)
  assert np.abs(got_mlm.numpy() - want_mlm.numpy()).max() > 0


def test_dropout_only_when_training(small_checkpoint):
  config, prefix = small_checkpoint
  model = load_model(config, prefix)
  inputs = small_inputs()
  eval_a = model(*inputs)[0].numpy()
  eval_b = model(*inputs, training=False)[0].numpy()
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a = model(*inputs, training=True)[0].numpy()
  train_b = model(*inputs, training=True)[0].numpy()
  assert np.abs(train_a - eval_a).max() > 1e-3
  assert np.abs(train_a - train_b).max() > 1e-3
  # A dropout seed makes the masks reproducible; another seed changes them.
  seed = tf.constant([3, 4], tf.int64)
  seeded_a = model(*inputs, training=True, dropout_seed=seed)[0].numpy()
  seeded_b = model(*inputs, training=True, dropout_seed=seed)[0].numpy()
  other = model(*inputs, training=True,
                dropout_seed=tf.constant([3, 5], tf.int64))[0].numpy()
  np.testing.assert_array_equal(seeded_a, seeded_b)
  assert np.abs(seeded_a - other).max() > 1e-3
  # The seed is ignored without training.
  np.testing.assert_array_equal(
      model(*inputs, dropout_seed=seed)[0].numpy(), eval_a)


def test_dropout_rate_on_embeddings():
  config = modeling.BertConfig.from_dict(dict(
      SMALL, num_hidden_layers=0, hidden_dropout_prob=0.4))
  model = modeling.BertModel(config)
  ids = np.random.RandomState(1).randint(0, 97, size=(8, 16))
  seq = model(ids, training=True,
              dropout_seed=tf.constant([1, 2])).sequence_output
  eval_seq = model(ids).sequence_output
  dropped = (seq.numpy() == 0).mean()
  assert 0.35 < dropped < 0.45
  kept = seq.numpy() != 0
  np.testing.assert_allclose(seq.numpy()[kept],
                             eval_seq.numpy()[kept] / 0.6, rtol=1e-5)


def test_checkpoint_has_google_names_and_shapes(small_checkpoint):
  config, prefix = small_checkpoint
  listed = dict(tf.train.list_variables(prefix))
  assert listed == google_variable_shapes(config)
  model = modeling.BertPretrainingModel(modeling.BertConfig.from_dict(config))
  got = {n: v.shape.as_list() for n, v in model.variables_by_name().items()}
  assert got == google_variable_shapes(config)
  # The encoder's own map holds exactly the bert/ names, embedding table
  # included.
  assert all(n.startswith("bert/") for n in model.bert.variables_by_name())
  assert model.bert.embedding_table is model.variables_by_name()[
      "bert/embeddings/word_embeddings"]


def test_initialization_as_google(small_checkpoint):
  config = modeling.BertConfig.from_dict(dict(SMALL, vocab_size=4000,
                                              initializer_range=0.05))
  variables = modeling.BertPretrainingModel(config).variables_by_name()
  table = variables["bert/embeddings/word_embeddings"].numpy()
  # Truncated normal: within 2 stddev, stddev about 0.88 * 0.05.
  assert np.abs(table).max() <= 0.1
  assert abs(table.std() - 0.05 * 0.8796) < 0.002
  for name, var in variables.items():
    value = var.numpy()
    if name.endswith(("bias", "beta")):
      assert not value.any(), name
    elif name.endswith("gamma"):
      assert (value == 1).all(), name


def test_save_load_round_trip(tmp_path, small_checkpoint):
  config, prefix = small_checkpoint
  model = load_model(config, prefix)
  other = modeling.BertPretrainingModel(modeling.BertConfig.from_dict(config))
  saved = checkpoints.save_checkpoint(model.variables_by_name(),
                                   str(tmp_path / "out" / "model.ckpt-3"))
  # Nothing but the checkpoint files (no temporary names) is left.
  assert sorted(os.listdir(tmp_path / "out")) == [
      "model.ckpt-3.data-00000-of-00001", "model.ckpt-3.index"]
  loaded, missing = checkpoints.load_checkpoint(other.variables_by_name(),
                                                saved)
  assert sorted(loaded) == sorted(google_variable_shapes(config))
  assert missing == []
  for (name, a), b in zip(model.variables_by_name().items(),
                          other.variables_by_name().values()):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
  inputs = small_inputs()
  np.testing.assert_array_equal(model(*inputs)[0].numpy(),
                                other(*inputs)[0].numpy())


def test_load_subset_and_superset(small_checkpoint):
  config, prefix = small_checkpoint
  one_layer = modeling.BertPretrainingModel(modeling.BertConfig.from_dict(
      dict(config, num_hidden_layers=1)))
  loaded, missing = checkpoints.load_checkpoint(one_layer.variables_by_name(),
                                             prefix)
  assert missing == [] and not any("layer_1" in n for n in loaded)
  three = modeling.BertPretrainingModel(modeling.BertConfig.from_dict(
      dict(config, num_hidden_layers=3)))
  before = three.variables_by_name()[
      "bert/encoder/layer_2/output/dense/kernel"].numpy()
  loaded, missing = checkpoints.load_checkpoint(three.variables_by_name(),
                                                prefix)
  assert missing and all(n.startswith("bert/encoder/layer_2/")
                         for n in missing)
  assert len(missing) == 16
  np.testing.assert_array_equal(
      three.variables_by_name()[
          "bert/encoder/layer_2/output/dense/kernel"].numpy(), before)


def test_load_wrong_shape_is_one_clear_line(small_checkpoint):
  config, prefix = small_checkpoint
  model = modeling.BertPretrainingModel(modeling.BertConfig.from_dict(
      dict(config, intermediate_size=41)))
  before = {n: v.numpy() for n, v in model.variables_by_name().items()}
  with pytest.raises(errors.CheckpointError) as info:
    checkpoints.load_checkpoint(model.variables_by_name(), prefix)
  message = str(info.value)
  assert "\n" not in message
  assert message == (
      "%s: variable bert/encoder/layer_0/intermediate/dense/kernel has "
      "shape [24, 40] in the checkpoint, the model expects [24, 41]" %
      prefix)
  assert isinstance(info.value, ValueError)
  # Nothing was assigned before the mismatch was found.
  for name, var in model.variables_by_name().items():
    np.testing.assert_array_equal(var.numpy(), before[name], err_msg=name)


def test_load_missing_checkpoint(tmp_path):
  model = modeling.BertModel(modeling.BertConfig.from_dict(SMALL))
  missing = str(tmp_path / "nope" / "model.ckpt-1")
  with pytest.raises(errors.CheckpointError, match="nope/model.ckpt-1"):
    checkpoints.load_checkpoint(model.variables_by_name(), missing)
  with pytest.raises(errors.CheckpointError, match="no checkpoint"):
    checkpoints.load_checkpoint(model.variables_by_name(), str(tmp_path))


def test_checkpoint_index_file(tmp_path):
  directory = str(tmp_path)
  assert checkpoints.latest_checkpoint(directory) is None
  variables = {"w": tf.Variable([1.0, 2.0]),
               "global_step": tf.Variable(5, dtype=tf.int64)}
  for step in (10, 20, 30):
    prefix = os.path.join(directory, "model.ckpt-%d" % step)
    checkpoints.save_checkpoint(variables, prefix)
    checkpoints.write_checkpoint_index(directory, prefix)
    assert checkpoints.latest_checkpoint(directory) == prefix
  with open(os.path.join(directory, "checkpoint")) as f:
    assert f.read().splitlines() == [
        'model_checkpoint_path: "model.ckpt-30"',
        'all_model_checkpoint_paths: "model.ckpt-10"',
        'all_model_checkpoint_paths: "model.ckpt-20"',
        'all_model_checkpoint_paths: "model.ckpt-30"']
  # TensorFlow's own reader understands the file.
  state = tf.train.get_checkpoint_state(directory)
  assert state.model_checkpoint_path == os.path.join(directory,
                                                     "model.ckpt-30")
  assert tf.train.latest_checkpoint(directory) == os.path.join(
      directory, "model.ckpt-30")
  # Removed checkpoints drop out; a vanished newest one falls back.
  for path in tf.io.gfile.glob(os.path.join(directory, "model.ckpt-10.*")):
    os.remove(path)
  prefix = os.path.join(directory, "model.ckpt-40")
  checkpoints.save_checkpoint(variables, prefix)
  checkpoints.write_checkpoint_index(directory, prefix)
  assert [p for _, p in (l.split(": ") for l in open(
      os.path.join(directory, "checkpoint")).read().splitlines())] == [
          '"model.ckpt-40"', '"model.ckpt-20"', '"model.ckpt-30"',
          '"model.ckpt-40"']
  for path in tf.io.gfile.glob(prefix + ".*"):
    os.remove(path)
  assert checkpoints.latest_checkpoint(directory) == os.path.join(
      directory, "model.ckpt-30")
  # Loading from the directory takes that newest checkpoint.
  target = {"w": tf.Variable([0.0, 0.0]),
            "global_step": tf.Variable(0, dtype=tf.int64)}
  loaded, _ = checkpoints.load_checkpoint(target, directory)
  assert sorted(loaded) == ["global_step", "w"]
  assert int(target["global_step"].numpy()) == 5
  assert dict(tf.train.list_variables(os.path.join(
      directory, "model.ckpt-30"))) == {"w": [2], "global_step": []}


def test_config_json_round_trip(tmp_path):
  config = modeling.BertConfig.from_dict(dict(SMALL, hidden_act="gelu_exact"))
  path = tmp_path / "bert_config.json"
  path.write_text(config.to_json_string())
  again = modeling.BertConfig.from_json_file(str(path))
  assert again == config and again.to_dict() == config.to_dict()
  assert sorted(json.loads(path.read_text())) == sorted(SMALL)
  assert modeling.BertConfig(vocab_size=10).to_dict()["hidden_size"] == 768


@pytest.mark.parametrize("content,expected", [
    (None, "not found"),
    ("{not json", "not a valid JSON"),
    (json.dumps(dict(SMALL, hidden_act="swishy")), "unsupported activation"),
    (json.dumps(dict(SMALL, hidden_size=25)), "not a multiple"),
    (json.dumps(dict(SMALL, num_hidden_layers="2")), "num_hidden_layers"),
    (json.dumps({"hidden_size": 8}), "no vocab_size"),
])
def test_config_file_errors_name_the_file(tmp_path, content, expected):
  path = tmp_path / "bert_config.json"
  if content is not None:
    path.write_text(content)
  with pytest.raises(ValueError) as info:
    modeling.BertConfig.from_json_file(str(path))
  assert str(path) in str(info.value) and expected in str(info.value)


def test_activations():
  x = np.linspace(-5, 5, 41).astype(np.float32)
  for name, ref in NP_ACTIVATIONS.items():
    got = modeling.get_activation(name)(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, ref(x.astype(np.float64)), atol=1e-6)
  assert modeling.get_activation("linear")(3.0) == 3.0
  assert modeling.get_activation(None)(3.0) == 3.0
  # The tanh form and the erf form differ, which the converter relies on.
  assert np.abs(np_gelu_tanh(x) - np_gelu_erf(x)).max() > 1e-4
  with pytest.raises(ValueError, match="unsupported activation"):
    modeling.get_activation("gelu_new")


# ---------------------------------------------------------------------------
# The real small BERT (converted by convert_hf_bert_checkpoint.py).
# ---------------------------------------------------------------------------


def test_forward_matches_numpy_on_real_small_bert(teacher_dir):
  with open(os.path.join(teacher_dir, "bert_config.json")) as f:
    config = json.load(f)
  assert config["hidden_act"] == "gelu_exact"
  with open(os.path.join(teacher_dir, "vocab.txt"), encoding="utf-8") as f:
    vocab = {t.rstrip("\n"): i for i, t in enumerate(f)}
  sentences = [
      "[CLS] the capital of france is [MASK] . [SEP] it is a city . [SEP]",
      "[CLS] he played the [MASK] in a rock band . [SEP]"]
  seq = 16
  ids = np.zeros((2, seq), np.int32)
  segments = np.zeros((2, seq), np.int32)
  for row, sentence in enumerate(sentences):
    tokens = sentence.split()
    ids[row, :len(tokens)] = [vocab[t] for t in tokens]
    first_sep = tokens.index("[SEP]")
    segments[row, first_sep + 1:len(tokens)] = 1
  mask = (ids > 0).astype(np.int32)
  positions = np.array([[6, 2, 10], [4, 1, 13]], np.int32)
  prefix = os.path.join(teacher_dir, "bert_model.ckpt")
  model = load_model(config, prefix)
  want_seq, want_logp, want_nsp = np_bert(checkpoint_arrays(prefix), config,
                                          ids, mask, segments, positions)
  mlm, nsp, _ = tf.function(model.__call__)(ids, mask, segments, positions)
  got_seq = model.bert(ids, mask, segments).sequence_output
  np.testing.assert_allclose(got_seq.numpy(), want_seq, atol=1e-5, rtol=0)
  # Log-probs reach -40 here, where float32 steps are 4e-6: rtol 1e-6.
  np.testing.assert_allclose(log_softmax(mlm), want_logp, atol=1e-5,
                             rtol=1e-6)
  np.testing.assert_allclose(nsp.numpy(), want_nsp, atol=1e-5, rtol=0)
  only = tf.function(model.__call__)(ids, mask, segments, positions,
                                     masked_lm_only=True)
  np.testing.assert_allclose(log_softmax(only.masked_lm_logits), want_logp,
                             atol=1e-5, rtol=1e-6)
