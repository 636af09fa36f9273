# coding=utf-8
"""Stage I helper: converts a Hugging Face BERT into Google's BERT format.

Reads a Hugging Face `BertForMaskedLM` or `BertForPreTraining` folder
(config.json; model.safetensors, a sharded model.safetensors.index.json, or
pytorch_model.bin; vocab.txt or tokenizer.json) and writes what Google's BERT
release ships and the stage scripts read:

  OUTPUT_DIR/bert_config.json      Google's config keys
  OUTPUT_DIR/vocab.txt             the WordPiece vocabulary, one token a line
  OUTPUT_DIR/bert_model.ckpt.*     a TF checkpoint under Google's names

Linear weights are transposed to Google's [in, out] kernels; the tied MLM
decoder becomes the word embedding table, its bias `cls/predictions/
output_bias`. Heads the model lacks (the pooler, the next-sentence head) are
initialised as Google's code does (truncated normal with the config's
initializer_range, zero biases; seeded by --random_seed), with a warning.

Hugging Face's "gelu" is the exact erf GELU and Google's "gelu" is the tanh
approximation, so the activation is carried over as "gelu_exact" (resp.
"gelu") to keep the converted model's outputs equal to the original's.

Example:
  python convert_hf_bert_checkpoint.py --hf_dir=bert-base-uncased \\
      --output_dir=uncased_L-12_H-768_A-12
"""

import collections
import json
import os
import re

from absl import flags
from absl import logging
import numpy as np

from bert_distill import cli
from bert_distill.lib import hf_bert
from bert_distill.lib import outputs

FLAGS = flags.FLAGS

flags.DEFINE_string("hf_dir", None,
                    "A Hugging Face BERT folder: config.json, model weights "
                    "(model.safetensors or pytorch_model.bin) and vocab.txt "
                    "or tokenizer.json.")
flags.DEFINE_string("output_dir", None,
                    "Where bert_config.json, vocab.txt and bert_model.ckpt.* "
                    "are written.")
flags.DEFINE_integer("random_seed", 12345,
                     "Seed of the initialisation of heads the model lacks "
                     "(pooler, next-sentence head).")

CHECKPOINT_NAME = "bert_model.ckpt"

# Buffers and heads of other tasks that have no place in Google's format.
_IGNORED = re.compile(r"(^|\.)position_ids$|^classifier\.|^qa_outputs\.")
_TASK_HEADS = hf_bert.CLASSIFIER_HEAD + hf_bert.SQUAD_HEAD


def read_hf_config(hf_dir):
  """Reads config.json; returns a `modeling.BertConfig` (Google's keys).

  Raises:
    cli.UserError: missing file, not JSON, not a BERT config, or an
      activation or position embedding type Google's BERT cannot express.
  """
  import modeling  # pylint: disable=g-import-not-at-top
  path = os.path.join(hf_dir, "config.json")
  cli.require_file(path, "--hf_dir", "config.json")
  try:
    with open(path, encoding="utf-8") as f:
      hf = json.load(f)
  except ValueError as exc:
    raise cli.UserError("%s: not valid JSON: %s" % (path, exc))
  if not isinstance(hf, dict):
    raise cli.UserError("%s: expected a JSON object" % path)
  model_type = hf.get("model_type", "bert")
  if model_type != "bert":
    raise cli.UserError("%s: model_type is %r, expected 'bert'" %
                        (path, model_type))
  position_type = hf.get("position_embedding_type", "absolute")
  if position_type != "absolute":
    raise cli.UserError("%s: position_embedding_type is %r; Google's BERT "
                        "has only 'absolute'" % (path, position_type))
  eps = hf.get("layer_norm_eps", 1e-12)
  if eps != 1e-12:
    logging.warning("%s: layer_norm_eps is %g; Google's BERT uses 1e-12, so "
                    "outputs will differ slightly", path, eps)
  hf_act = hf.get("hidden_act", "gelu")
  if hf_act not in hf_bert.HF_ACTIVATIONS:
    raise cli.UserError("%s: hidden_act %r has no equivalent here (known: "
                        "%s)" % (path, hf_act,
                                 ", ".join(sorted(hf_bert.HF_ACTIVATIONS))))
  values = {}
  for key in ("vocab_size", "hidden_size", "num_hidden_layers",
              "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size"):
    if key not in hf:
      raise cli.UserError("%s: no %s" % (path, key))
    values[key] = hf[key]
  values["hidden_act"] = hf_bert.HF_ACTIVATIONS[hf_act]
  for key, default in (("hidden_dropout_prob", 0.1),
                       ("attention_probs_dropout_prob", 0.1),
                       ("initializer_range", 0.02)):
    values[key] = hf.get(key, default)
  try:
    return modeling.BertConfig.from_dict(values)
  except ValueError as exc:
    raise cli.UserError("%s: %s" % (path, exc))


def read_hf_weights(hf_dir):
  """The model's arrays by Hugging Face name (float32 NumPy).

  Reads model.safetensors, a sharded model.safetensors.index.json, or
  pytorch_model.bin (PyTorch is imported only then).
  """
  single = os.path.join(hf_dir, "model.safetensors")
  sharded = os.path.join(hf_dir, "model.safetensors.index.json")
  torch_file = os.path.join(hf_dir, "pytorch_model.bin")
  if os.path.isfile(single):
    files = [single]
  elif os.path.isfile(sharded):
    try:
      with open(sharded, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
    except (ValueError, KeyError, TypeError) as exc:
      raise cli.UserError("%s: not a safetensors index: %s" % (sharded, exc))
    files = [os.path.join(hf_dir, name)
             for name in sorted(set(weight_map.values()))]
  elif os.path.isfile(torch_file):
    return _read_torch(torch_file)
  else:
    raise cli.UserError(
        "--hf_dir: no model weights in %s (expected model.safetensors, "
        "model.safetensors.index.json or pytorch_model.bin)" % hf_dir)
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  arrays = collections.OrderedDict()
  for path in files:
    cli.require_file(path, "--hf_dir", "safetensors file")
    try:
      loaded = load_file(path)
    except Exception as exc:  # pylint: disable=broad-except
      raise cli.UserError("%s: cannot read safetensors: %s" % (path, exc))
    for name in sorted(loaded):
      arrays[name] = _as_float32(path, name, loaded[name])
  return arrays


def _as_float32(path, name, array):
  array = np.asarray(array)
  if array.dtype.kind != "f" and not name.endswith("position_ids"):
    raise cli.UserError("%s: tensor %s has dtype %s, expected floating "
                        "point" % (path, name, array.dtype))
  return array.astype(np.float32) if array.dtype.kind == "f" else array


def _read_torch(path):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise cli.UserError(
        "%s: reading pytorch_model.bin needs PyTorch, which is not installed "
        "(pip install torch, or give a folder with model.safetensors)" % path)
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as exc:  # pylint: disable=broad-except
    raise cli.UserError("%s: cannot read PyTorch weights: %s" % (path, exc))
  if isinstance(state, dict) and "state_dict" in state:
    state = state["state_dict"]
  arrays = collections.OrderedDict()
  for name in sorted(state):
    tensor = state[name]
    if tensor.is_floating_point():
      tensor = tensor.float()
    arrays[name] = _as_float32(path, name, tensor.numpy())
  return arrays


def read_vocab(hf_dir):
  """(tokens in id order, source path) from vocab.txt or tokenizer.json."""
  vocab_txt = os.path.join(hf_dir, "vocab.txt")
  tokenizer_json = os.path.join(hf_dir, "tokenizer.json")
  if os.path.isfile(vocab_txt):
    try:
      with open(vocab_txt, encoding="utf-8") as f:
        tokens = [line.rstrip("\n").rstrip("\r") for line in f]
    except UnicodeDecodeError:
      raise cli.UserError("%s: not UTF-8 text: expected a WordPiece "
                          "vocabulary, one token a line" % vocab_txt)
    while tokens and not tokens[-1]:
      tokens.pop()
    return tokens, vocab_txt
  if not os.path.isfile(tokenizer_json):
    raise cli.UserError("--hf_dir: no vocabulary in %s (expected vocab.txt "
                        "or tokenizer.json)" % hf_dir)
  try:
    with open(tokenizer_json, encoding="utf-8") as f:
      model = json.load(f)["model"]
    vocab = model["vocab"]
  except (ValueError, KeyError, TypeError) as exc:
    raise cli.UserError("%s: not a tokenizers file with a model vocab: %s" %
                        (tokenizer_json, exc))
  if model.get("type") != "WordPiece" or not isinstance(vocab, dict):
    raise cli.UserError("%s: tokenizer model is %r, expected a WordPiece "
                        "vocabulary" % (tokenizer_json, model.get("type")))
  by_id = {}
  for token, index in vocab.items():
    if "\n" in token or "\r" in token:
      raise cli.UserError("%s: token %r contains a line break" %
                          (tokenizer_json, token))
    if index in by_id:
      raise cli.UserError("%s: id %d is given to %r and %r" %
                          (tokenizer_json, index, by_id[index], token))
    by_id[index] = token
  if sorted(by_id) != list(range(len(by_id))):
    raise cli.UserError("%s: vocabulary ids are not 0..%d" %
                        (tokenizer_json, len(by_id) - 1))
  return [by_id[i] for i in range(len(by_id))], tokenizer_json


def _do_lower_case(hf_dir):
  path = os.path.join(hf_dir, "tokenizer_config.json")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f).get("do_lower_case")
  except (OSError, ValueError, AttributeError):
    return None


def convert(hf_dir, output_dir, random_seed=12345):
  """Converts the Hugging Face BERT in `hf_dir`; writes `output_dir`.

  Everything is read and checked before anything is written; all files are
  written under temporary names and replace an older conversion only when
  complete, so a failed run leaves the folder as it was.

  Returns:
    (config, names of the initialised-not-converted variables).

  Raises:
    cli.UserError: a missing or inconsistent input, one line.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bert_distill.lib import checkpoints  # pylint: disable=g-import-not-at-top
  import modeling  # pylint: disable=g-import-not-at-top

  if not hf_dir:
    raise cli.UserError("--hf_dir is required")
  if not os.path.isdir(hf_dir):
    raise cli.UserError("--hf_dir: not a directory: %s" % hf_dir)
  if not output_dir:
    raise cli.UserError("--output_dir is required")
  config = read_hf_config(hf_dir)
  tokens, vocab_source = read_vocab(hf_dir)
  arrays = read_hf_weights(hf_dir)

  converted = collections.OrderedDict()
  decoder = None
  ignored = []
  for hf_name, array in arrays.items():
    name, transpose = hf_bert.google_name(hf_name)
    if name is None or name in _TASK_HEADS:
      ignored.append(hf_name)
      continue
    if name == hf_bert.DECODER:
      decoder = (hf_name, array)
      continue
    if name in converted:
      raise cli.UserError("--hf_dir: two tensors map to %s (one is %s)" %
                          (name, hf_name))
    converted[name] = array.T if transpose else array
  if ignored:
    real = [n for n in ignored if not _IGNORED.search(n)]
    if real:
      logging.warning("Ignoring %d tensors that are not part of BERT "
                      "pre-training: %s", len(real), ", ".join(real))

  embedding = converted.get("bert/embeddings/word_embeddings")
  rows = None if embedding is None else embedding.shape[0]
  if not (len(tokens) == config.vocab_size == rows):
    raise cli.UserError(
        "vocabulary size mismatch: %s has %d tokens, config.json vocab_size "
        "is %d, the word embeddings have %s rows" %
        (vocab_source, len(tokens), config.vocab_size,
         "no" if rows is None else rows))
  if decoder is not None and not np.array_equal(decoder[1], embedding):
    raise cli.UserError(
        "--hf_dir: %s differs from the word embeddings; Google's BERT ties "
        "the MLM output matrix to them" % decoder[0])

  tf.random.set_seed(random_seed)
  with tf.device("CPU:0"):
    model = modeling.BertPretrainingModel(config)
  variables = model.variables_by_name()
  unknown = [n for n in converted if n not in variables]
  if unknown:
    raise cli.UserError("--hf_dir: %s does not fit config.json (e.g. %s)" %
                        (", ".join(unknown[:3]), unknown[0]))
  missing = [n for n in variables if n not in converted]
  required = [n for n in missing
              if not n.startswith(("bert/pooler/", "cls/seq_relationship/"))]
  if required:
    raise cli.UserError(
        "--hf_dir: the model lacks %d tensors Google's BERT pre-training "
        "model needs, e.g. %s (is it a BertForMaskedLM or "
        "BertForPreTraining?)" % (len(required), required[0]))
  for name, array in converted.items():
    expected = variables[name].shape.as_list()
    if list(array.shape) != expected:
      raise cli.UserError(
          "--hf_dir: %s has shape %s, config.json implies %s" %
          (name, list(array.shape), expected))
  if missing:
    logging.warning(
        "The model has no %s: initialised as Google's code does "
        "(truncated normal, stddev %g, zero biases, seed %d)",
        ", ".join(missing), config.initializer_range, random_seed)
  to_save = collections.OrderedDict()
  for name, var in variables.items():
    to_save[name] = converted[name] if name in converted else var.numpy()

  cli.ensure_writable_dir(output_dir)
  prefix = os.path.join(output_dir, CHECKPOINT_NAME)
  # Every file is written under a temporary name first; an older conversion
  # in output_dir is replaced only when all are complete (a full disk
  # leaves it as it was).
  with outputs.atomic_outputs([os.path.join(output_dir, "bert_config.json"),
                           os.path.join(output_dir, "vocab.txt")]) as tmps:
    with open(tmps[0], "w", encoding="utf-8") as f:
      f.write(config.to_json_string())
    with open(tmps[1], "w", encoding="utf-8") as f:
      f.write("".join(token + "\n" for token in tokens))
    checkpoints.save_checkpoint(to_save, prefix)

  lower = _do_lower_case(hf_dir)
  logging.info("Wrote %s, bert_config.json (hidden_act %s) and vocab.txt "
               "(%d tokens) to %s", CHECKPOINT_NAME, config.hidden_act,
               len(tokens), output_dir)
  if lower is not None:
    logging.info("The tokenizer %s lower case: use --do_lower_case=%s",
                 "uses" if lower else "does not use",
                 "true" if lower else "false")
  return config, missing


def main(argv):
  del argv  # cli.run rejects leftover words
  cli.import_tensorflow_quietly()
  convert(FLAGS.hf_dir, FLAGS.output_dir, FLAGS.random_seed)


if __name__ == "__main__":
  cli.run(main)
