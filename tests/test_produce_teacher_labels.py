"""Tests of stage IV: produce_teacher_labels.py and teacher.py.

Real records (the Wikipedia sample through stages II and III), the real small
BERT converted to Google's format as the teacher, real TensorFlow. The
written labels are checked against a forward pass written here in NumPy from
the checkpoint's arrays; the script runs as a user runs it (subprocess,
flags).
"""

import glob
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from bert_distill.lib import checkpoints
from bert_distill import cli
import example_records
from bert_distill.lib import hardware
import modeling
from bert_distill.lib import record_format
from bert_distill.lib import records
from bert_distill.stages import teacher
from conftest import MAX_PREDICTIONS
from conftest import MAX_SEQ_LENGTH
from conftest import STAGE4_INPUTS
from conftest import TRUNCATION_FACTOR
from conftest import check_error_runs
from conftest import check_main_errors
from conftest import run_main

SCRIPT = "produce_teacher_labels.py"

# What the original distillation scripts parse from a teacher-label record
# (written out literally: a user's old training script reads our files).
S, P, K = MAX_SEQ_LENGTH, MAX_PREDICTIONS, TRUNCATION_FACTOR
ORIGINAL_DISTILLATION_SPEC = {
    "input_ids": tf.io.FixedLenFeature([S], tf.int64),
    "input_mask": tf.io.FixedLenFeature([S], tf.int64),
    "segment_ids": tf.io.FixedLenFeature([S], tf.int64),
    "masked_lm_positions": tf.io.FixedLenFeature([P], tf.int64),
    "masked_lm_ids": tf.io.FixedLenFeature([P], tf.int64),
    "masked_lm_weights": tf.io.FixedLenFeature([P], tf.float32),
    "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    "truncated_masked_lm_probs": tf.io.FixedLenFeature([P * K], tf.float32),
    "top_k_indices": tf.io.FixedLenFeature([P * K], tf.int64),
}

# Records checked against the NumPy teacher (first and last ones: the last
# batch of the run is a padded partial batch).
NUM_CHECKED = 16


# ---------------------------------------------------------------------------
# Reading records.
# ---------------------------------------------------------------------------


def read_raw(paths):
  """Serialized records of the files, in order."""
  return [r.numpy() for r in tf.data.TFRecordDataset(list(paths))]


def feature_values(serialized):
  """name -> (kind, values as a NumPy array) of a serialized Example."""
  example = tf.train.Example.FromString(serialized)
  out = {}
  for name, feat in example.features.feature.items():
    kind = feat.WhichOneof("kind")
    values = getattr(feat, kind).value
    out[name] = (kind, np.array(values, np.float32 if kind == "float_list"
                                else np.int64))
  return out


def stage3_inputs(raws):
  """The teacher's inputs of stage-III records, as int64 arrays [n, ...]."""
  feats = [feature_values(r) for r in raws]
  return {name: np.stack([f[name][1] for f in feats])
          for name in teacher.TEACHER_INPUTS}


def stage3_files(stage3_dir):
  return sorted(
      os.path.join(stage3_dir, f) for f in os.listdir(stage3_dir)
      if f.startswith("wiki_") and f.endswith(".tfrecord"))


def write_records(path, raws):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for raw in raws:
      writer.write(raw)
  return str(path)


# ---------------------------------------------------------------------------
# The NumPy teacher: BERT's forward pass from the checkpoint arrays.
# ---------------------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def np_activation(name):
  """NumPy activations by bert_config name (gelu = Google's tanh form)."""
  if name == "gelu_exact":
    return lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
  if name == "gelu":
    return lambda x: 0.5 * x * (1.0 + np.tanh(
        math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
  if name == "relu":
    return lambda x: np.maximum(x, 0.0)
  raise AssertionError("activation %s not in the reference" % name)


def np_layer_norm(x, gamma, beta, eps=1e-12):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * gamma + beta


def np_softmax(x):
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


def np_teacher_probs(checkpoint, config, inputs):
  """The teacher's softmax at the masked positions, float64 [n, P, V]."""
  reader = tf.train.load_checkpoint(checkpoint)

  def w(name):
    return reader.get_tensor(name).astype(np.float64)

  act = np_activation(config["hidden_act"])
  ids, mask = inputs["input_ids"], inputs["input_mask"]
  seg, positions = inputs["segment_ids"], inputs["masked_lm_positions"]
  n, s = ids.shape
  h = config["hidden_size"]
  heads = config["num_attention_heads"]
  d = h // heads
  word = w("bert/embeddings/word_embeddings")
  x = (word[ids] + w("bert/embeddings/position_embeddings")[:s][None] +
       w("bert/embeddings/token_type_embeddings")[seg])
  x = np_layer_norm(x, w("bert/embeddings/LayerNorm/gamma"),
                    w("bert/embeddings/LayerNorm/beta"))
  adder = (1.0 - mask[:, None, None, :].astype(np.float64)) * -10000.0
  for layer in range(config["num_hidden_layers"]):
    p = "bert/encoder/layer_%d/" % layer

    def dense(t, name, prefix=p):
      return t @ w(prefix + name + "/kernel") + w(prefix + name + "/bias")

    def split(t):
      return t.reshape(n, s, heads, d).transpose(0, 2, 1, 3)

    q = split(dense(x, "attention/self/query"))
    k = split(dense(x, "attention/self/key"))
    v = split(dense(x, "attention/self/value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + adder
    context = (np_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(n, s, h)
    x = np_layer_norm(dense(context, "attention/output/dense") + x,
                      w(p + "attention/output/LayerNorm/gamma"),
                      w(p + "attention/output/LayerNorm/beta"))
    inner = act(dense(x, "intermediate/dense"))
    x = np_layer_norm(dense(inner, "output/dense") + x,
                      w(p + "output/LayerNorm/gamma"),
                      w(p + "output/LayerNorm/beta"))
  gathered = np.take_along_axis(x, positions[:, :, None], axis=1)
  return np_head_probs(w, act, gathered)


def np_head_probs(w, act, hidden):
  """The masked-LM head's softmax over the vocabulary, float64 [..., V], of
  hidden states [..., H]; `w(name)` gives a checkpoint array."""
  t = act(hidden @ w("cls/predictions/transform/dense/kernel") +
          w("cls/predictions/transform/dense/bias"))
  t = np_layer_norm(t, w("cls/predictions/transform/LayerNorm/gamma"),
                    w("cls/predictions/transform/LayerNorm/beta"))
  logits = (t @ w("bert/embeddings/word_embeddings").T +
            w("cls/predictions/output_bias"))
  return np_softmax(logits)


def assert_top_k_matches(probs, indices, reference, atol=1e-5):
  """Written top-K [n, P, K] vs the reference distribution [n, P, V]."""
  k = probs.shape[-1]
  assert np.all(np.diff(probs, axis=-1) <= 0), "top-K not descending"
  order = np.argsort(-reference, axis=-1, kind="stable")[..., :k]
  np.testing.assert_allclose(probs, np.take_along_axis(reference, order, -1),
                             atol=atol, rtol=0)
  # The written ids point at the written probabilities ...
  np.testing.assert_allclose(np.take_along_axis(reference, indices, -1),
                             probs, atol=atol, rtol=0)
  # ... are distinct, and differ from NumPy's ranking only between words
  # whose probabilities tie to float32 precision.
  assert all(len(set(row)) == k for row in indices.reshape(-1, k))
  differ = indices != order
  ties = np.abs(np.take_along_axis(reference, indices, -1) -
                np.take_along_axis(reference, order, -1))
  assert np.all(ties[differ] < 1e-6), ties[differ].max()
  assert differ.mean() < 0.01


# ---------------------------------------------------------------------------
# Fixtures.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_files(teacher_dir):
  """(config dict, config path, checkpoint prefix) of the real teacher."""
  config_file = os.path.join(teacher_dir, "bert_config.json")
  with open(config_file) as f:
    config = json.load(f)
  return config, config_file, os.path.join(teacher_dir, "bert_model.ckpt")


@pytest.fixture(scope="module")
def small_input(tmp_path_factory, stage3_dir):
  """20 real stage-III records in one file (a partial last batch of 8)."""
  raws = read_raw(stage3_files(stage3_dir))[:20]
  return write_records(tmp_path_factory.mktemp("small") / "small.tfrecord",
                       raws)


def label_flags(config_file, checkpoint, input_file, output_file, k,
                batch_size=32):
  return [SCRIPT, "--bert_config_file", config_file, "--init_checkpoint",
          checkpoint, "--input_file", input_file, "--output_file",
          output_file, "--truncation_factor", k, "--max_seq_length",
          MAX_SEQ_LENGTH, "--max_predictions_per_seq", MAX_PREDICTIONS,
          "--batch_size", batch_size]


# ---------------------------------------------------------------------------
# The labels are the teacher's softmax.
# ---------------------------------------------------------------------------


def test_top_k_labels_equal_numpy_teacher(stage3_dir, stage4_file,
                                          teacher_files):
  config, _, checkpoint = teacher_files
  inputs = read_raw(sorted(glob.glob(os.path.join(stage3_dir,
                                                  STAGE4_INPUTS))))
  outputs = read_raw([stage4_file])
  assert len(outputs) == len(inputs) > 2 * NUM_CHECKED
  assert len(inputs) % 32, "want a partial last batch"

  # Every input feature is copied unchanged, in input order; the teacher
  # features are all that is added.
  added = {record_format.TRUNCATED_PROBS, record_format.TOP_K_INDICES}
  for raw_in, raw_out in zip(inputs, outputs):
    fin, fout = feature_values(raw_in), feature_values(raw_out)
    assert set(fout) == set(fin) | added
    for name, (kind, values) in fin.items():
      assert fout[name][0] == kind, name
      np.testing.assert_array_equal(fout[name][1], values, err_msg=name)

  checked = list(range(NUM_CHECKED)) + list(
      range(len(inputs) - NUM_CHECKED, len(inputs)))
  reference = np_teacher_probs(checkpoint, config,
                               stage3_inputs([inputs[i] for i in checked]))
  written = [feature_values(outputs[i]) for i in checked]
  probs = np.stack([f[record_format.TRUNCATED_PROBS][1] for f in written])
  indices = np.stack([f[record_format.TOP_K_INDICES][1] for f in written])
  assert_top_k_matches(probs.reshape(-1, P, K), indices.reshape(-1, P, K),
                       reference)


def test_full_distribution_equals_numpy_teacher(tmp_path, small_input,
                                                teacher_files):
  config, config_file, checkpoint = teacher_files
  out = str(tmp_path / "full.tfrecord")
  run_main(label_flags(config_file, checkpoint, small_input, out, 0,
                       batch_size=8))
  inputs, outputs = read_raw([small_input]), read_raw([out])
  assert len(outputs) == len(inputs) == 20
  v = config["vocab_size"]
  probs = np.stack([feature_values(r)[record_format.FULL_PROBS][1]
                    for r in outputs]).reshape(-1, P, v)
  for raw_in, raw_out in zip(inputs, outputs):
    fin, fout = feature_values(raw_in), feature_values(raw_out)
    assert set(fout) == set(fin) | {record_format.FULL_PROBS}
    for name, (_, values) in fin.items():
      np.testing.assert_array_equal(fout[name][1], values, err_msg=name)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  reference = np_teacher_probs(checkpoint, config, stage3_inputs(inputs))
  np.testing.assert_allclose(probs, reference, atol=1e-5, rtol=0)


def test_records_parse_as_the_original_distillation_expects(stage4_file):
  raw = read_raw([stage4_file])
  parsed = tf.io.parse_example(raw[:64], ORIGINAL_DISTILLATION_SPEC)
  assert parsed["truncated_masked_lm_probs"].shape == (len(raw[:64]), P * K)
  # Probabilities, position-major: each position's K values are descending
  # and sum to at most 1.
  probs = parsed["truncated_masked_lm_probs"].numpy().reshape(-1, P, K)
  assert np.all(np.diff(probs, axis=-1) <= 0)
  assert np.all(probs.sum(-1) <= 1.0 + 1e-5) and np.all(probs > 0)
  ids = parsed["top_k_indices"].numpy()
  assert ids.min() >= 0 and ids.max() < 30522
  # The feature set is exactly the original's: nothing else is added.
  assert set(feature_values(raw[0])) == set(ORIGINAL_DISTILLATION_SPEC)
  # And records.py, which stage V reads with, agrees.
  assert records.validate_file(stage4_file, records.stage4_lengths(S, P, K))


# ---------------------------------------------------------------------------
# The shared module's API.
# ---------------------------------------------------------------------------


def test_labeler_api_traces_once_and_matches_the_script(tmp_path, small_input,
                                                        teacher_files):
  config, _, checkpoint = teacher_files
  labeler = teacher.TeacherLabeler(modeling.BertConfig.from_dict(config),
                                   checkpoint, truncation_factor=5)
  out = str(tmp_path / "api.tfrecord")
  written = teacher.label_records(labeler, [small_input], out,
                                  MAX_SEQ_LENGTH, MAX_PREDICTIONS,
                                  batch_size=8)
  assert written == 20
  # 3 batches, the last one padded: one trace.
  assert labeler.tracing_count() == 1
  inputs = read_raw([small_input])
  outputs = read_raw([out])
  # The labeler on an unpadded batch of any size gives the same labels.
  probs, indices = labeler({n: v.astype(np.int32) for n, v in
                            stage3_inputs(inputs[:3]).items()})
  assert probs.shape == (3, P, 5) and indices.shape == (3, P, 5)
  for i in range(3):
    f = feature_values(outputs[i])
    np.testing.assert_allclose(f[record_format.TRUNCATED_PROBS][1],
                               probs.numpy()[i].reshape(-1), atol=1e-6)
    np.testing.assert_array_equal(f[record_format.TOP_K_INDICES][1],
                                  indices.numpy()[i].reshape(-1))


def test_checkpoint_without_mlm_head_is_refused(tmp_path, teacher_files):
  config, _, checkpoint = teacher_files
  model = modeling.BertPretrainingModel(modeling.BertConfig.from_dict(config))
  checkpoints.load_checkpoint(model.variables_by_name(), checkpoint)
  encoder_only = {n: v for n, v in model.variables_by_name().items()
                  if n.startswith("bert/")}
  prefix = checkpoints.save_checkpoint(encoder_only,
                                    str(tmp_path / "encoder.ckpt"))
  with pytest.raises(cli.UserError, match="lacks 5 of the teacher's "
                     "variables, e.g. cls/predictions/"):
    teacher.TeacherLabeler(modeling.BertConfig.from_dict(config), prefix, 10)


def test_add_teacher_features_replaces_old_labels():
  first = example_records.make_example({
      "input_ids": [101, 7, 102], record_format.TRUNCATED_PROBS: [0.5, 0.25],
      record_format.TOP_K_INDICES: [3, 4]})
  probs = np.array([[0.75, 0.125]], np.float32)
  again = teacher.add_teacher_features(first, probs, np.array([[9, 8]]))
  f = feature_values(again)
  np.testing.assert_array_equal(f[record_format.TRUNCATED_PROBS][1],
                                [0.75, 0.125])
  np.testing.assert_array_equal(f[record_format.TOP_K_INDICES][1], [9, 8])
  np.testing.assert_array_equal(f["input_ids"][1], [101, 7, 102])


# ---------------------------------------------------------------------------
# The bfloat16 teacher.
# ---------------------------------------------------------------------------

# Records of the sample labelled again in bfloat16 (about 20,000 real masked
# positions; the bounds below were measured on all 97,831 real positions of
# the sample: top-1 equal at 99.41%, top-K overlap 99.37% on average, the
# k-th largest probabilities within 0.011 of float32's).
BF16_RECORDS = 2000
BF16_MAX_PROB_DIFFERENCE = 0.02


def test_bfloat16_labels_agree_with_float32(stage4_file, teacher_files):
  """bfloat16 teacher vs the float32 labels of stage4_file (real records).

  The float32 labels are the script's, which the NumPy teacher checks above.
  At every real masked position (masked_lm_weights 1): the top-1 word is the
  same at >= 99% of positions, the top-K sets overlap >= 95% on average, and
  the sorted top-K probabilities differ by at most BF16_MAX_PROB_DIFFERENCE.
  They do differ: the teacher really computed in bfloat16.
  """
  config, _, checkpoint = teacher_files
  labeler = teacher.TeacherLabeler(modeling.BertConfig.from_dict(config),
                                   checkpoint, K, compute_dtype=tf.bfloat16)
  assert labeler.model.compute_dtype == tf.bfloat16
  lengths = records.stage4_lengths(S, P, K)
  dataset = records.make_dataset([stage4_file], lengths, 500,
                                 is_training=False).take(BF16_RECORDS // 500)
  p32, i32, p16, i16, real = [], [], [], [], []
  for batch in dataset:
    probs, indices = labeler(batch)
    assert probs.dtype == tf.float32
    p16.append(probs.numpy())
    i16.append(indices.numpy())
    p32.append(batch[record_format.TRUNCATED_PROBS].numpy().reshape(-1, P, K))
    i32.append(batch[record_format.TOP_K_INDICES].numpy().reshape(-1, P, K))
    real.append(batch["masked_lm_weights"].numpy() > 0)
  real = np.concatenate(real)
  p32, i32 = np.concatenate(p32)[real], np.concatenate(i32)[real]
  p16, i16 = np.concatenate(p16)[real], np.concatenate(i16)[real]
  assert len(p32) > 15000
  top1 = np.mean(i16[:, 0] == i32[:, 0])
  overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(i16, i32)])
  difference = np.abs(p16 - p32).max()
  print("bfloat16 vs float32 at %d positions: top-1 %.4f, top-%d overlap "
        "%.4f, max probability difference %.4f" % (len(p32), top1, K,
                                                   overlap, difference))
  assert top1 >= 0.99
  assert overlap >= 0.95
  assert 1e-4 < difference <= BF16_MAX_PROB_DIFFERENCE
  assert np.all(np.diff(p16, axis=-1) <= 0)


def test_bfloat16_vocabulary_search_equals_numpy_head(teacher_files):
  """top_k_two_pass (every word's logit from bfloat16 operands, the best
  K + margin again in float32) vs the NumPy head in float64 over the whole
  vocabulary, on the real teacher and hidden states [4, 20, H]: the same
  top K (up to float32 ties), probabilities within 2e-3; with products too
  large for the bfloat16 search, the float32 projection's exact labels. A
  bfloat16 teacher labels this way."""
  config, _, checkpoint = teacher_files
  model = modeling.BertPretrainingModel(modeling.BertConfig.from_dict(config),
                                        random_init=False)
  teacher.load_teacher_checkpoint(model, checkpoint)
  hidden = np.random.default_rng(0).normal(
      size=(4, 20, config["hidden_size"])).astype(np.float32)
  probs, indices = teacher.top_k_two_pass(
      model, tf.constant(hidden), K,
      tf.cast(model.bert.embedding_table, tf.bfloat16))
  reader = tf.train.load_checkpoint(checkpoint)
  reference = np_head_probs(
      lambda name: reader.get_tensor(name).astype(np.float64),
      np_activation(config["hidden_act"]), hidden.astype(np.float64))
  assert probs.shape == indices.shape == (4, 20, K)
  assert_top_k_matches(probs.numpy(), indices.numpy(), reference, atol=2e-3)
  # Products beyond bfloat16's fine range: the float32 projection, exact.
  probs, indices = teacher.top_k_two_pass(
      model, tf.constant(hidden), K,
      tf.cast(100.0 * model.bert.embedding_table, tf.bfloat16))
  assert_top_k_matches(probs.numpy(), indices.numpy(), reference, atol=1e-5)
  vocab_size = config["vocab_size"]
  assert teacher.two_pass_applies(K, vocab_size)
  assert not teacher.two_pass_applies(0, vocab_size)
  assert not teacher.two_pass_applies(vocab_size // 64 - 15, vocab_size)
  labeler = teacher.TeacherLabeler(modeling.BertConfig.from_dict(config),
                                   checkpoint, K, compute_dtype=tf.bfloat16)
  assert labeler.rough_table.dtype == tf.bfloat16


def test_bfloat16_flag_writes_float32_labels(tmp_path, small_input,
                                              teacher_files, caplog,
                                              monkeypatch):
  """--compute_dtype=bfloat16: the same features, float32, close labels."""
  _, config_file, checkpoint = teacher_files
  out = str(tmp_path / "bf16.tfrecord")
  caplog.set_level("INFO", logger="absl")
  # The warning comes once per process: as in a fresh one.
  monkeypatch.setattr(hardware, "_warned", set())
  run_main(label_flags(config_file, checkpoint, small_input, out, K,
                       batch_size=8) + ["--compute_dtype", "bfloat16"])
  slow = "has no bfloat16 units" in caplog.text
  assert slow == (not hardware.bfloat16_support().fast)
  assert records.validate_file(out, records.stage4_lengths(S, P, K))
  inputs, outputs = read_raw([small_input]), read_raw([out])
  assert len(outputs) == len(inputs) == 20
  for raw_in, raw_out in zip(inputs, outputs):
    fin, fout = feature_values(raw_in), feature_values(raw_out)
    assert fout[record_format.TRUNCATED_PROBS][0] == "float_list"
    assert set(fout) == set(fin) | {record_format.TRUNCATED_PROBS,
                                    record_format.TOP_K_INDICES}
    for name, (_, values) in fin.items():
      np.testing.assert_array_equal(fout[name][1], values, err_msg=name)


def test_bfloat16_support_reads_cpu_flags_and_warns_once(tmp_path, caplog):
  """/proc/cpuinfo without bf16 flags: not fast, and one warning only."""
  flags_line = ("flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw "
                "avx512_vnni")
  plain = tmp_path / "cpuinfo_plain"
  plain.write_text("processor\t: 0\nmodel name\t: Old Xeon\n%s\n\n"
                   "processor\t: 1\nmodel name\t: Old Xeon\n%s\n" %
                   (flags_line, flags_line))
  bf16 = tmp_path / "cpuinfo_bf16"
  bf16.write_text("processor\t: 0\nmodel name\t: New Xeon\n%s amx_bf16 "
                  "amx_tile\n" % flags_line)
  slow = hardware.bfloat16_support(str(plain), gpus=[])
  assert slow == (False, "CPU Old Xeon: no bfloat16 units (no avx512_bf16 "
                  "or amx_bf16)")
  assert hardware.bfloat16_support(str(bf16), gpus=[]) == (
      True, "CPU New Xeon: amx_bf16")
  assert hardware.bfloat16_support(str(plain), gpus=[
      ("NVIDIA A100", (8, 0))]).fast
  assert not hardware.bfloat16_support(str(bf16), gpus=[
      ("Tesla V100", (7, 0))]).fast
  with caplog.at_level("WARNING"):
    for _ in range(3):
      hardware.warn_if_bfloat16_is_slow("A test model", slow)
  warnings = [r for r in caplog.records if "A test model" in r.getMessage()]
  assert len(warnings) == 1
  assert "Old Xeon" in warnings[0].getMessage()


# ---------------------------------------------------------------------------
# Bad input: one line, non-zero exit, nothing written.
# ---------------------------------------------------------------------------


def test_bad_inputs_fail_with_one_clear_line(tmp_path, small_input,
                                             teacher_files):
  config, config_file, checkpoint = teacher_files
  mismatched = dict(config, intermediate_size=config["intermediate_size"] * 2)
  mismatched_file = tmp_path / "mismatched_config.json"
  mismatched_file.write_text(json.dumps(mismatched))
  deeper = dict(config, num_hidden_layers=config["num_hidden_layers"] + 1)
  deeper_file = tmp_path / "deeper_config.json"
  deeper_file.write_text(json.dumps(deeper))

  raws = read_raw([small_input])
  example = tf.train.Example.FromString(raws[13])
  example.features.feature["input_ids"].int64_list.value[5] = 40000
  raws[13] = example.SerializeToString()
  bad_ids = write_records(tmp_path / "bad_ids.tfrecord", raws)
  example.features.feature["input_ids"].int64_list.value[5] = 1
  example.features.feature["segment_ids"].int64_list.value[0] = 2
  raws[13] = example.SerializeToString()
  bad_segments = write_records(tmp_path / "bad_segments.tfrecord", raws)
  # Cut inside its last record: only reading every record finds it.
  cut_input = tmp_path / "cut.tfrecord"
  cut_input.write_bytes(open(small_input, "rb").read()[:-20])
  # A teacher whose .data file was cut (an interrupted download).
  cut_teacher = tmp_path / "cut_teacher"
  cut_teacher.mkdir()
  for name in os.listdir(os.path.dirname(checkpoint)):
    data = open(os.path.join(os.path.dirname(checkpoint), name), "rb").read()
    if ".data-" in name:
      data = data[:len(data) // 2]
    (cut_teacher / name).write_bytes(data)

  def flags(out, k=K, config_path=config_file):
    return label_flags(config_path, checkpoint, small_input, out, k)

  def without(args, flag):
    i = args.index(flag)
    return args[:i] + args[i + 2:]

  cases = {
      "no_checkpoint": (lambda out: without(flags(out), "--init_checkpoint"),
                        "--init_checkpoint is required"),
      "wrong_seq": (lambda out: flags(out) + ["--max_seq_length", 128],
                    "small.tfrecord: feature input_ids has length 64, "
                    "expected 128 (--max_seq_length=128)"),
      "k_too_large": (lambda out: flags(out, k=config["vocab_size"] + 1),
                      "--truncation_factor=30523 is larger than the "
                      "teacher's vocabulary (vocab_size 30522)"),
      "shape_mismatch": (
          lambda out: flags(out, config_path=mismatched_file),
          "intermediate/dense/kernel has shape"),
      "missing_layer": (lambda out: flags(out, config_path=deeper_file),
                        "lacks 16 of the teacher's variables, e.g. "
                        "bert/encoder/layer_2/"),
      "id_out_of_range": (
          lambda out: without(flags(out), "--input_file") +
          ["--input_file", bad_ids],
          "bad_ids.tfrecord: record 13 (counting from 0): input_ids holds "
          "id 40000, outside [0, 30522) (vocab_size of the teacher, "
          "--bert_config_file)"),
      "segment_out_of_range": (
          lambda out: without(flags(out), "--input_file") +
          ["--input_file", bad_segments],
          "bad_segments.tfrecord: a record's segment_ids holds a value "
          "outside [0, 2) (type_vocab_size of the teacher)"),
      "cut_input": (
          lambda out: without(flags(out), "--input_file") +
          ["--input_file", cut_input], "cut.tfrecord: record 19"),
      # The checkpoint is checked before the records are counted.
      "cut_teacher_before_counting": (
          lambda out: without(without(flags(out), "--input_file"),
                              "--init_checkpoint") +
          ["--input_file", cut_input, "--init_checkpoint",
           cut_teacher / "bert_model.ckpt"],
          "is damaged (cut short"),
      "missing_input": (
          lambda out: without(flags(out), "--input_file") +
          ["--input_file", str(tmp_path / "nothing_*.tfrecord")],
          "--input_file: no file matches"),
  }
  for name in cases:
    (tmp_path / name).mkdir()
  commands = {
      name: (make_args(str(tmp_path / name / "labels.tfrecord")), text)
      for name, (make_args, text) in cases.items()}
  # The process (exit 1, one line, no traceback) once; the messages through
  # the script's main in this process.
  check_error_runs({"no_checkpoint": commands.pop("no_checkpoint")})
  check_main_errors(SCRIPT[:-3], {name: (args[1:], text) for name, (
      args, text) in commands.items()})
  for name in cases:
    assert not os.listdir(tmp_path / name), (name,
                                             os.listdir(tmp_path / name))
