"""Tests of convert_hf_bert_checkpoint.py on the real small Hugging Face BERT.

The reference is a NumPy forward pass (hf_reference.py) that reads the
Hugging Face safetensors arrays directly (torch layout, exact erf GELU), so the
conversion (names, transposes, activation mapping, tied decoder) is checked
end to end against the original weights.
"""

import json
import os
import shutil
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file
from safetensors.numpy import save_file
import tensorflow as tf

from conftest import google_variable_shapes, run_script
from hf_reference import HfBert, log_softmax
import convert_hf_bert_checkpoint as convert
from bert_distill.lib import checkpoints
import inprocess
import modeling

GOOGLE_KEYS = ["attention_probs_dropout_prob", "hidden_act",
               "hidden_dropout_prob", "hidden_size", "initializer_range",
               "intermediate_size", "max_position_embeddings",
               "num_attention_heads", "num_hidden_layers", "type_vocab_size",
               "vocab_size"]

def read_checkpoint(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def test_converted_files(teacher_dir, small_bert_hf_dir, vocab_file):
  assert sorted(os.listdir(teacher_dir)) == [
      "bert_config.json", "bert_model.ckpt.data-00000-of-00001",
      "bert_model.ckpt.index", "vocab.txt"]
  with open(os.path.join(teacher_dir, "bert_config.json")) as f:
    config = json.load(f)
  with open(os.path.join(small_bert_hf_dir, "config.json")) as f:
    hf_config = json.load(f)
  assert sorted(config) == GOOGLE_KEYS
  assert config["hidden_act"] == "gelu_exact"  # HF "gelu" is the erf form.
  for key in GOOGLE_KEYS:
    if key != "hidden_act":
      assert config[key] == hf_config[key], key
  prefix = os.path.join(teacher_dir, "bert_model.ckpt")
  assert (dict(tf.train.list_variables(prefix)) ==
          google_variable_shapes(config))
  # vocab.txt is tokenizer.json's WordPiece vocabulary in id order, which
  # is the real uncased BERT vocab.
  with open(os.path.join(small_bert_hf_dir, "tokenizer.json")) as f:
    vocab = json.load(f)["model"]["vocab"]
  with open(os.path.join(teacher_dir, "vocab.txt"), encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert lines == sorted(vocab, key=vocab.get)
  with open(vocab_file, encoding="utf-8") as f:
    assert lines == f.read().splitlines()


def test_mlm_predictions_match_hf_weights(teacher_dir, small_bert_hf_dir):
  with open(os.path.join(small_bert_hf_dir, "config.json")) as f:
    hf_config = json.load(f)
  hf_weights = load_file(os.path.join(small_bert_hf_dir, "model.safetensors"))
  with open(os.path.join(teacher_dir, "vocab.txt"), encoding="utf-8") as f:
    vocab = {t: i for i, t in enumerate(f.read().splitlines())}
  sentences = ["[CLS] paris is the capital of [MASK] . [SEP]",
               "[CLS] he played the [MASK] in a band . [SEP]"]
  ids = np.zeros((2, 10), np.int32)
  for row, sentence in enumerate(sentences):
    tokens = sentence.split()
    ids[row, :len(tokens)] = [vocab[t] for t in tokens]
  mask = (ids > 0).astype(np.int32)
  positions = np.array([[6, 1, 3], [4, 2, 7]], np.int32)
  reference = HfBert(hf_weights, hf_config)
  want_seq = reference.encode(ids, mask)
  want_logp = log_softmax(reference.mlm_logits(want_seq, positions))

  config = modeling.BertConfig.from_json_file(
      os.path.join(teacher_dir, "bert_config.json"))
  model = modeling.BertPretrainingModel(config)
  loaded, missing = checkpoints.load_checkpoint(model.variables_by_name(),
                                             teacher_dir)
  assert missing == [] and len(loaded) == len(model.variables_by_name())
  mlm = model(ids, mask, np.zeros_like(ids), positions).masked_lm_logits
  seq = model.bert(ids, mask).sequence_output
  real = mask.astype(bool)
  np.testing.assert_allclose(seq.numpy()[real], want_seq[real], atol=1e-5)
  got_logp = tf.nn.log_softmax(mlm).numpy()
  np.testing.assert_allclose(got_logp, want_logp, atol=1e-5, rtol=1e-6)
  np.testing.assert_array_equal(got_logp.argmax(-1), want_logp.argmax(-1))
  # With Google's tanh GELU instead, the outputs would be measurably off.
  model.bert._activation = modeling.get_activation("gelu")  # pylint: disable=protected-access
  tanh_logp = tf.nn.log_softmax(model(ids, mask, np.zeros_like(ids),
                                      positions)[0]).numpy()
  assert np.abs(tanh_logp - want_logp).max() > 1e-4


def test_missing_heads_initialised_as_google(teacher_dir, small_bert_hf_dir,
                                            tmp_path):
  arrays = read_checkpoint(os.path.join(teacher_dir, "bert_model.ckpt"))
  for name in ("bert/pooler/dense/kernel",
               "cls/seq_relationship/output_weights"):
    value = arrays[name]
    assert np.abs(value).max() <= 0.04 and 0.014 < value.std() < 0.021
  for name in ("bert/pooler/dense/bias", "cls/seq_relationship/output_bias"):
    assert not arrays[name].any()
  # Seeded: the same seed gives the same checkpoint, another seed another
  # initialisation of the missing heads only.
  _, missing = convert.convert(small_bert_hf_dir, str(tmp_path / "same"),
                               12345)
  assert sorted(missing) == sorted([
      "bert/pooler/dense/kernel", "bert/pooler/dense/bias",
      "cls/seq_relationship/output_weights",
      "cls/seq_relationship/output_bias"])
  same = read_checkpoint(str(tmp_path / "same" / "bert_model.ckpt"))
  convert.convert(small_bert_hf_dir, str(tmp_path / "other"), 7)
  other = read_checkpoint(str(tmp_path / "other" / "bert_model.ckpt"))
  for name, value in arrays.items():
    np.testing.assert_array_equal(same[name], value, err_msg=name)
    if name in ("bert/pooler/dense/kernel",
                "cls/seq_relationship/output_weights"):
      assert not np.array_equal(other[name], value)
    else:
      np.testing.assert_array_equal(other[name], value, err_msg=name)


def hf_variant(small_bert_hf_dir, directory, rename=None, extra=None,
               vocab_lines=None, config_changes=None):
  """A copy of the HF folder with renamed/extra tensors or another vocab."""
  os.makedirs(directory)
  weights = load_file(os.path.join(small_bert_hf_dir, "model.safetensors"))
  if rename:
    weights = {rename(k): v for k, v in weights.items()}
  weights.update(extra or {})
  save_file(weights, os.path.join(directory, "model.safetensors"))
  with open(os.path.join(small_bert_hf_dir, "config.json")) as f:
    config = json.load(f)
  config.update(config_changes or {})
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f)
  if vocab_lines is None:
    shutil.copy(os.path.join(small_bert_hf_dir, "tokenizer.json"), directory)
  else:
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
      f.write("".join(t + "\n" for t in vocab_lines))
  return directory


def test_other_key_spellings(teacher_dir, small_bert_hf_dir, tmp_path):
  """No "bert." prefix, LayerNorm weight/bias, an explicit tied decoder."""

  def rename(key):
    key = key.replace("LayerNorm.gamma", "LayerNorm.weight")
    key = key.replace("LayerNorm.beta", "LayerNorm.bias")
    if key == "cls.predictions.bias":
      return "cls.predictions.decoder.bias"
    return key[len("bert."):] if key.startswith("bert.") else key

  weights = load_file(os.path.join(small_bert_hf_dir, "model.safetensors"))
  hf_dir = hf_variant(
      small_bert_hf_dir, str(tmp_path / "hf"), rename=rename,
      extra={"cls.predictions.decoder.weight":
                 weights["bert.embeddings.word_embeddings.weight"],
             "embeddings.position_ids": np.arange(512)[None]})
  convert.convert(hf_dir, str(tmp_path / "out"))
  got = read_checkpoint(str(tmp_path / "out" / "bert_model.ckpt"))
  want = read_checkpoint(os.path.join(teacher_dir, "bert_model.ckpt"))
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  # The transposes happened: Google kernels are [in, out].
  np.testing.assert_array_equal(
      got["bert/encoder/layer_0/intermediate/dense/kernel"],
      weights["bert.encoder.layer.0.intermediate.dense.weight"].T)


def test_hf_activation_names(small_bert_hf_dir, tmp_path):
  for hf_act, ours in (("gelu_new", "gelu"), ("gelu_pytorch_tanh", "gelu"),
                       ("relu", "relu")):
    directory = str(tmp_path / hf_act)
    os.makedirs(directory)
    with open(os.path.join(small_bert_hf_dir, "config.json")) as f:
      config = json.load(f)
    config["hidden_act"] = hf_act
    with open(os.path.join(directory, "config.json"), "w") as f:
      json.dump(config, f)
    assert convert.read_hf_config(directory).hidden_act == ours
  config["hidden_act"] = "silu"
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f)
  with pytest.raises(convert.cli.UserError, match="hidden_act 'silu'"):
    convert.read_hf_config(directory)


def test_untied_decoder_and_missing_mlm_head_are_errors(small_bert_hf_dir,
                                                        tmp_path):
  weights = load_file(os.path.join(small_bert_hf_dir, "model.safetensors"))
  untied = weights["bert.embeddings.word_embeddings.weight"] + 1.0
  hf_dir = hf_variant(small_bert_hf_dir, str(tmp_path / "untied"),
                      extra={"cls.predictions.decoder.weight": untied})
  with pytest.raises(convert.cli.UserError, match="ties"):
    convert.convert(hf_dir, str(tmp_path / "out1"))
  no_head = hf_variant(
      small_bert_hf_dir, str(tmp_path / "nohead"),
      rename=lambda k: k.replace("cls.predictions.transform", "other.x"))
  with pytest.raises(convert.cli.UserError,
                     match="cls/predictions/transform"):
    convert.convert(no_head, str(tmp_path / "out2"))
  assert not os.path.exists(tmp_path / "out1" / "bert_model.ckpt.index")
  assert not os.path.exists(tmp_path / "out2" / "bert_model.ckpt.index")


def test_pytorch_weights_without_torch(small_bert_hf_dir, tmp_path,
                                       monkeypatch):
  directory = tmp_path / "torch"
  directory.mkdir()
  shutil.copy(os.path.join(small_bert_hf_dir, "config.json"), directory)
  (directory / "pytorch_model.bin").write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails.
  with pytest.raises(convert.cli.UserError, match="needs PyTorch"):
    convert.read_hf_weights(str(directory))


def _error_line(result):
  lines = result.stderr.strip().splitlines()
  errors = [l for l in lines if l.startswith("error:")]
  assert result.returncode != 0
  assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-2000:]
  return errors[0]


def test_cli_missing_dir(tmp_path):
  result = run_script(["convert_hf_bert_checkpoint.py", "--hf_dir",
                       tmp_path / "absent", "--output_dir", tmp_path / "out"],
                      check=False)
  assert "absent" in _error_line(result)
  assert not os.path.exists(tmp_path / "out")


def test_cli_vocab_size_mismatch(small_bert_hf_dir, tmp_path):
  with open(os.path.join(small_bert_hf_dir, "tokenizer.json")) as f:
    vocab = json.load(f)["model"]["vocab"]
  tokens = sorted(vocab, key=vocab.get)[:-1]
  hf_dir = hf_variant(small_bert_hf_dir, str(tmp_path / "hf"),
                      vocab_lines=tokens)
  out = tmp_path / "out"
  # The message through main in this process (test_cli_missing_dir checks
  # the process: exit status, one last line).
  line = inprocess.error_line("convert_hf_bert_checkpoint",
                              ["--hf_dir", hf_dir, "--output_dir", out])
  assert "vocab.txt has 30521 tokens" in line and "30522" in line
  assert not os.path.exists(out / "bert_model.ckpt.index")
