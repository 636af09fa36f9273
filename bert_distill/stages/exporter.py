# coding=utf-8
"""Exports a Google-format BERT checkpoint for use outside the pipeline.

Reads a checkpoint under Google's variable names (a student from stages
V/VI, a teacher, or a model fine-tuned with Google's run_classifier.py or
run_squad.py variable names) and writes either

  * a Hugging Face folder (`write_hf`): config.json naming the architecture
    the checkpoint's head supports, model.safetensors under Hugging Face's
    names and layouts (hf_bert.py), vocab.txt and tokenizer_config.json; or
  * a TensorFlow SavedModel (`write_saved_model`) whose serving signatures
    take input_ids, input_mask and segment_ids (int32, or int64 in
    "serving_int64") and return the head's outputs plus pooled_output and
    sequence_output.

The heads, by Google's variable names, and the architectures they give:

  cls/predictions/* and cls/seq_relationship/*  BertForPreTraining
  cls/predictions/* only                        BertForMaskedLM
  cls/seq_relationship/* only                   BertForNextSentencePrediction
  output_weights [num_labels, H], output_bias   BertForSequenceClassification
  cls/squad/output_weights [2, H], .../bias     BertForQuestionAnswering
  none                                          BertModel

Optimizer slots (`*/adam_m`, `*/adam_v`), global_step, loss scales and any
other variable that is not part of BERT or of the exported head are left
out.
"""

import collections
import contextlib
import json
import os
import shutil

from absl import logging
import numpy as np
import tensorflow as tf

from bert_distill.lib import checkpoints
from bert_distill.lib import errors
from bert_distill.lib import hf_bert
import modeling
from bert_distill.lib import outputs
import tokenization

AUTO = "auto"
FORMATS = ("hf", "saved_model")

# Architecture -> (its head's variables, whether it has the pooler), as
# Hugging Face's classes of the same names.
ARCHITECTURES = collections.OrderedDict([
    ("BertForPreTraining",
     (hf_bert.MASKED_LM_HEAD + hf_bert.NEXT_SENTENCE_HEAD, True)),
    ("BertForMaskedLM", (hf_bert.MASKED_LM_HEAD, False)),
    ("BertForNextSentencePrediction", (hf_bert.NEXT_SENTENCE_HEAD, True)),
    ("BertForSequenceClassification", (hf_bert.CLASSIFIER_HEAD, True)),
    ("BertForQuestionAnswering", (hf_bert.SQUAD_HEAD, False)),
    ("BertModel", ((), True)),
])

_HEAD_DESCRIPTIONS = (
    (hf_bert.MASKED_LM_HEAD, "masked-LM head"),
    (hf_bert.NEXT_SENTENCE_HEAD, "next-sentence head"),
    (hf_bert.CLASSIFIER_HEAD, "classifier head (run_classifier.py)"),
    (hf_bert.SQUAD_HEAD, "SQuAD head (run_squad.py)"),
)
_SPECIAL_TOKENS = collections.OrderedDict([
    ("unk_token", "[UNK]"), ("sep_token", "[SEP]"), ("pad_token", "[PAD]"),
    ("cls_token", "[CLS]"), ("mask_token", "[MASK]")])


class ExportError(errors.Error, ValueError):
  """The checkpoint, vocabulary or output cannot give the asked export.

  Attributes:
    argument: the `export` argument at fault (e.g. "vocab_file"), or None.
  """

  def __init__(self, message, argument=None):
    super(ExportError, self).__init__(message)
    self.argument = argument


@contextlib.contextmanager
def _blame(argument):
  """Re-raises a library error of the block as an ExportError of `argument`."""
  try:
    yield
  except ExportError as exc:
    if exc.argument is None:
      exc.argument = argument
    raise
  except errors.Error as exc:
    raise ExportError(str(exc), argument)


class BertWeights(object):
  """The BERT variables of one checkpoint, float32 NumPy, Google's names.

  Attributes:
    prefix: the checkpoint read.
    arrays: OrderedDict name -> array: the encoder, the pooler and every
      complete head the checkpoint holds.
    dropped: the checkpoint's other variable names (optimizer slots,
      global_step, ...), not exported.
    num_labels: the classifier head's number of classes, or None.
  """

  def __init__(self, prefix, arrays, dropped, num_labels):
    self.prefix = prefix
    self.arrays = arrays
    self.dropped = dropped
    self.num_labels = num_labels

  def has(self, names):
    return all(name in self.arrays for name in names)


def _is_training_only(name):
  return (name.endswith(("/adam_m", "/adam_v")) or name == "global_step" or
          name.startswith("loss_scale"))


def _expected_shapes(config, shapes_in_checkpoint):
  """Google name -> shape of every variable an export may take."""
  with tf.device("CPU:0"):
    model = modeling.BertPretrainingModel(config)
  expected = collections.OrderedDict(
      (name, var.shape.as_list())
      for name, var in model.variables_by_name().items())
  h = config.hidden_size
  num_labels = shapes_in_checkpoint.get("output_bias", [None])
  num_labels = num_labels[0] if len(num_labels) == 1 else None
  expected["output_weights"] = [num_labels, h]
  expected["output_bias"] = [num_labels]
  expected["cls/squad/output_weights"] = [2, h]
  expected["cls/squad/output_bias"] = [2]
  return expected, num_labels


def read_bert_checkpoint(checkpoint, config):
  """Reads BERT's variables from a checkpoint, leaving training state out.

  Args:
    checkpoint: a checkpoint prefix (".../model.ckpt-1000"), or a folder:
      its newest checkpoint (a stage V/VI --output_dir).
    config: the `modeling.BertConfig` the checkpoint was trained with.

  Returns:
    A `BertWeights`.

  Raises:
    errors.CheckpointError: no checkpoint, or an unreadable one.
    ExportError: an encoder variable missing, a shape that disagrees with
      `config`, or a head present only in part.
  """
  prefix, reader = checkpoints.open_checkpoint(checkpoint)
  shapes = reader.get_variable_to_shape_map()
  expected, num_labels = _expected_shapes(config, shapes)
  encoder = [n for n in expected
             if n.startswith("bert/") and n not in hf_bert.POOLER]
  missing = [n for n in encoder if n not in shapes]
  if missing:
    raise ExportError(
        "%s lacks %d of BERT's variables, e.g. %s (is it a BERT checkpoint "
        "under Google's names?)" % (prefix, len(missing), missing[0]))
  for head, what in ((hf_bert.POOLER, "pooler"),) + _HEAD_DESCRIPTIONS:
    present = [n for n in head if n in shapes]
    if present and len(present) < len(head):
      raise ExportError("%s holds an incomplete %s: %s but not %s" % (
          prefix, what, present[0],
          [n for n in head if n not in shapes][0]))
  arrays = collections.OrderedDict()
  for name, shape in expected.items():
    if name not in shapes:
      continue
    if list(shapes[name]) != list(shape):
      raise ExportError(
          "%s: variable %s has shape %s, the BERT config implies %s" % (
              prefix, name, list(shapes[name]), shape))
    try:
      value = checkpoints.read_tensor(reader, prefix, name)
    except errors.CheckpointError as exc:
      raise ExportError(str(exc))
    arrays[name] = np.asarray(value, dtype=np.float32)
  dropped = sorted(n for n in shapes if n not in arrays)
  others = [n for n in dropped if not _is_training_only(n)]
  logging.info("Read %d BERT variables from %s; left out %d training-only "
               "variables (optimizer slots, global_step, loss scale)",
               len(arrays), prefix, len(dropped) - len(others))
  if others:
    logging.warning("Left out %d variables that are neither BERT's nor a "
                    "known head's: %s", len(others), ", ".join(others))
  if "output_weights" not in arrays:
    num_labels = None
  return BertWeights(prefix, arrays, dropped, num_labels)


def _heads_held(weights):
  return [what for head, what in _HEAD_DESCRIPTIONS if weights.has(head)]


def choose_architecture(weights, requested=AUTO, export_format="hf"):
  """The architecture to export: `requested`, or the checkpoint's own.

  With AUTO: a task head (classifier or SQuAD) wins over the pre-training
  heads; the masked-LM and next-sentence heads give BertForPreTraining,
  one of them BertForMaskedLM or BertForNextSentencePrediction; no head
  gives BertModel.

  Raises:
    ExportError: an unknown name, a head or the pooler the architecture (or
      the SavedModel's pooled_output) needs and the checkpoint lacks, or both
      task heads with AUTO.
  """
  held = _heads_held(weights)
  if requested == AUTO:
    has = weights.has
    if has(hf_bert.CLASSIFIER_HEAD) and has(hf_bert.SQUAD_HEAD):
      raise ExportError(
          "%s holds both a classifier and a SQuAD head: choose one "
          "architecture (BertForSequenceClassification or "
          "BertForQuestionAnswering)" % weights.prefix)
    if has(hf_bert.SQUAD_HEAD):
      requested = "BertForQuestionAnswering"
    elif has(hf_bert.CLASSIFIER_HEAD):
      requested = "BertForSequenceClassification"
    elif has(hf_bert.MASKED_LM_HEAD) and has(hf_bert.NEXT_SENTENCE_HEAD):
      requested = "BertForPreTraining"
    elif has(hf_bert.MASKED_LM_HEAD):
      requested = "BertForMaskedLM"
    elif has(hf_bert.NEXT_SENTENCE_HEAD):
      requested = "BertForNextSentencePrediction"
    else:
      requested = "BertModel"
  if requested not in ARCHITECTURES:
    raise ExportError("unknown architecture %r (expected %s or one of: %s)" %
                      (requested, AUTO, ", ".join(ARCHITECTURES)))
  head, pooler = ARCHITECTURES[requested]
  for part, what in _HEAD_DESCRIPTIONS:
    if set(part) & set(head) and not weights.has(part):
      raise ExportError(
          "%s needs a %s (%s), which %s lacks; it holds %s" % (
              requested, what, part[0], weights.prefix,
              " and ".join(held) or "no head"))
  if (pooler or export_format == "saved_model") and not weights.has(
      hf_bert.POOLER):
    raise ExportError("%s has no pooler (%s), which %s needs" % (
        weights.prefix, hf_bert.POOLER[0],
        requested if pooler else "the SavedModel's pooled_output"))
  logging.info("Exporting as %s (the checkpoint holds %s)", requested,
               ", ".join(held) or "no head")
  return requested


def exported_names(weights, architecture):
  """Google names of the variables `architecture` takes from `weights`."""
  head, pooler = ARCHITECTURES[architecture]
  return [n for n in weights.arrays
          if (n.startswith("bert/") and (pooler or n not in hf_bert.POOLER))
          or n in head]


def read_vocab(vocab_file, config):
  """The vocabulary (token -> id); its size must be the config's.

  Raises:
    ExportError: a size mismatch.
  """
  vocab = tokenization.load_vocab(vocab_file)
  if len(vocab) != config.vocab_size:
    raise ExportError(
        "%s has %d tokens, the BERT config's vocab_size is %d" %
        (vocab_file, len(vocab), config.vocab_size))
  absent = [t for t in _SPECIAL_TOKENS.values() if t not in vocab]
  if absent:
    logging.warning("%s has no %s token: tokenizers will not find it",
                    vocab_file, ", ".join(absent))
  return vocab


# What the two formats write: a folder that holds these names alone is an
# earlier export, which --overwrite may replace.
EXPORT_NAMES = frozenset([
    "config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
    "saved_model.pb", "fingerprint.pb", "variables", "assets"])


def check_output_dir(output_dir, overwrite):
  """Raises ExportError unless `output_dir` may be written.

  It may when it is absent or empty, or, with `overwrite`, when it holds an
  earlier export (EXPORT_NAMES alone): --overwrite never deletes files that
  no export writes.
  """
  if not output_dir:
    raise ExportError("an output folder is required")
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ExportError("%s exists and is not a folder" % output_dir)
  names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
  if names and not overwrite:
    raise ExportError("%s exists and is not empty (choose another folder, "
                      "or --overwrite to replace an earlier export there)" %
                      output_dir)
  foreign = sorted(set(names) - EXPORT_NAMES)
  if foreign:
    raise ExportError(
        "%s holds %s, which no export writes: --overwrite replaces only a "
        "folder that holds an earlier export (choose another folder, or "
        "empty this one yourself)" % (output_dir, ", ".join(foreign[:3]) +
                                      (", ..." if len(foreign) > 3 else "")))


def _check_inputs_outside(output_dir, paths):
  """Raises ExportError if one of `paths` lies in `output_dir`.

  The export replaces `output_dir` whole (with --overwrite): it must not
  take the checkpoint or vocabulary being exported with it.
  """
  root = os.path.realpath(output_dir)
  for path in paths:
    where = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    if where == root or where.startswith(root + os.sep):
      raise ExportError("%s holds %s, an input of this export; write the "
                        "export to another folder" % (output_dir, path))


def hf_config(config, architecture, vocab, num_labels=None):
  """Hugging Face's config.json (a dict) for `config` and `architecture`."""
  hf = collections.OrderedDict([("architectures", [architecture]),
                                ("model_type", "bert")])
  for key in hf_bert.SHARED_CONFIG_KEYS:
    hf[key] = getattr(config, key)
  hf["hidden_act"] = hf_bert.hf_activation(config.hidden_act)
  hf["layer_norm_eps"] = modeling.LAYER_NORM_EPSILON
  hf["pad_token_id"] = vocab.get(_SPECIAL_TOKENS["pad_token"], 0)
  hf["position_embedding_type"] = "absolute"
  hf["tie_word_embeddings"] = True
  if architecture == "BertForSequenceClassification":
    labels = ["LABEL_%d" % i for i in range(num_labels)]
    hf["id2label"] = {str(i): label for i, label in enumerate(labels)}
    hf["label2id"] = {label: i for i, label in enumerate(labels)}
  return hf


def write_hf(weights, architecture, config, vocab_file, vocab,
             do_lower_case, directory):
  """Writes a Hugging Face BERT folder into `directory`.

  Files: config.json, model.safetensors (float32, Hugging Face's names,
  torch Linear weights [out, in]; the MLM decoder is tied to the word
  embeddings and not stored again), vocab.txt (a copy of `vocab_file`),
  tokenizer_config.json (BertTokenizer, do_lower_case).
  """
  from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
  tensors = collections.OrderedDict()
  for name in exported_names(weights, architecture):
    hf_name, transpose = hf_bert.hf_name(name)
    array = weights.arrays[name]
    tensors[hf_name] = np.ascontiguousarray(array.T if transpose else array)
  # Serialised here and written with open(), as the other files: the file
  # gets their mode (safetensors' own writer makes it 0600) and a full disk
  # gives an ordinary OSError(ENOSPC), one error line.
  with open(os.path.join(directory, "model.safetensors"), "wb") as f:
    f.write(save(tensors, metadata={"format": "pt"}))
  _write_json(os.path.join(directory, "config.json"),
              hf_config(config, architecture, vocab, weights.num_labels))
  tokenizer = collections.OrderedDict([
      ("tokenizer_class", "BertTokenizer"),
      ("do_lower_case", bool(do_lower_case)),
      ("model_max_length", config.max_position_embeddings)])
  tokenizer.update(_SPECIAL_TOKENS)
  _write_json(os.path.join(directory, "tokenizer_config.json"), tokenizer)
  shutil.copyfile(vocab_file, os.path.join(directory, "vocab.txt"))
  logging.info("Wrote %s (%d tensors, hidden_act %s), vocab.txt and "
               "tokenizer_config.json (do_lower_case %s)", architecture,
               len(tensors), hf_bert.hf_activation(config.hidden_act),
               bool(do_lower_case))


def _write_json(path, value):
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
    f.write("\n")


class ServingModel(tf.Module):
  """BERT and the head of `architecture`, for a SavedModel (float32)."""

  def __init__(self, weights, architecture, config, vocab_file,
               do_lower_case):
    super(ServingModel, self).__init__(name="serving_model")
    head, pooler = ARCHITECTURES[architecture]
    self.masked_lm = set(hf_bert.MASKED_LM_HEAD) <= set(head)
    self.next_sentence = set(hf_bert.NEXT_SENTENCE_HEAD) <= set(head)
    if self.masked_lm or self.next_sentence:
      self.model = modeling.BertPretrainingModel(config)
      self.bert = self.model.bert
    else:
      self.model = self.bert = modeling.BertModel(config)
    variables = self.model.variables_by_name()
    self.head_variables = {}
    # The pooler always: pooled_output is always an output.
    for name in exported_names(weights, architecture) + (
        [] if pooler else list(hf_bert.POOLER)):
      if name in variables:
        variables[name].assign(weights.arrays[name])
      else:
        self.head_variables[name] = tf.Variable(weights.arrays[name],
                                                name=name.replace("/", "_"))
    self.vocab_file = tf.saved_model.Asset(vocab_file)
    self.do_lower_case = tf.Variable(bool(do_lower_case), trainable=False,
                                     name="do_lower_case")

  def outputs(self, input_ids, input_mask, segment_ids,
              masked_lm_positions=None):
    """The signatures' outputs by name (shapes in `write_saved_model`)."""
    cast = lambda x: tf.cast(x, tf.int32)
    encoder = self.bert(cast(input_ids), cast(input_mask), cast(segment_ids))
    sequence_output, pooled_output = (encoder.sequence_output,
                                      encoder.pooled_output)
    result = {"sequence_output": sequence_output,
              "pooled_output": pooled_output}
    if self.masked_lm:
      result["masked_lm_log_probs"] = tf.nn.log_softmax(
          self.model.masked_lm_logits(sequence_output,
                                      cast(masked_lm_positions)))
    if self.next_sentence:
      result["next_sentence_probs"] = tf.nn.softmax(
          self.model.next_sentence_logits(pooled_output))
    head = self.head_variables
    if "output_weights" in head:  # run_classifier: on the pooled output.
      logits = tf.nn.bias_add(tf.matmul(pooled_output, head["output_weights"],
                                        transpose_b=True), head["output_bias"])
      result["logits"] = logits
      result["probabilities"] = tf.nn.softmax(logits)
    if "cls/squad/output_weights" in head:  # run_squad: at every position.
      logits = tf.einsum("bsh,kh->bsk", sequence_output,
                         head["cls/squad/output_weights"])
      logits += head["cls/squad/output_bias"]
      result["start_logits"] = logits[:, :, 0]
      result["end_logits"] = logits[:, :, 1]
    return result

  def serving_function(self, dtype):
    """`outputs` as a tf.function of named [batch, seq] `dtype` inputs."""
    names = ["input_ids", "input_mask", "segment_ids"]
    if self.masked_lm:
      names.append("masked_lm_positions")
    return tf.function(
        lambda *args: self.outputs(*args),  # pylint: disable=unnecessary-lambda
        input_signature=[tf.TensorSpec([None, None], dtype, name=name)
                         for name in names], autograph=False)


def write_saved_model(weights, architecture, config, vocab_file,
                      do_lower_case, directory):
  """Writes a TensorFlow SavedModel of the checkpoint into `directory`.

  Signatures ("serving_default" takes int32 inputs, "serving_int64" int64),
  B = batch size, S = sequence length, P = masked positions:
    inputs  input_ids, input_mask, segment_ids [B, S]; with a masked-LM head
            also masked_lm_positions [B, P];
    outputs sequence_output [B, S, H], pooled_output [B, H], and by head:
            masked_lm_log_probs [B, P, vocab_size]; next_sentence_probs
            [B, 2] (0: B follows A); probabilities and logits
            [B, num_labels]; start_logits and end_logits [B, S].
  The vocabulary is the asset `vocab_file` (assets/vocab.txt) and
  `do_lower_case` a boolean variable of the loaded object.
  """
  module = ServingModel(weights, architecture, config, vocab_file,
                        do_lower_case)
  module.serve_int32 = module.serving_function(tf.int32)
  module.serve_int64 = module.serving_function(tf.int64)
  tf.saved_model.save(module, directory, signatures={
      "serving_default": module.serve_int32,
      "serving_int64": module.serve_int64})
  logging.info("Wrote a SavedModel of %s (signatures serving_default: "
               "int32, serving_int64: int64)", architecture)


def export(config, init_checkpoint, vocab_file, output_dir,
           export_format="hf", do_lower_case=True, architecture=AUTO,
           overwrite=False):
  """Exports a checkpoint; see the module docstring.

  Everything is read and checked before anything is written; the export is
  written into a temporary folder next to `output_dir` and renamed to it
  when complete.

  Args:
    config: the model's `modeling.BertConfig`.
    init_checkpoint: a checkpoint prefix or a folder (its newest checkpoint).
    vocab_file: the model's vocab.txt.
    output_dir: the folder to write; must be absent or empty unless
      `overwrite`.
    export_format: "hf" or "saved_model".
    do_lower_case: the tokenizer's setting, written with the model.
    architecture: AUTO or a name of ARCHITECTURES.
    overwrite: replace a non-empty `output_dir`.

  Returns:
    The architecture exported.

  Raises:
    ExportError: with `argument` naming the argument at fault.
  """
  if export_format not in FORMATS:
    raise ExportError("unknown format %r (expected one of: %s)" % (
        export_format, ", ".join(FORMATS)), "format")
  if output_dir and os.path.islink(output_dir.rstrip(os.sep) or os.sep):
    # The export goes where the link points; the link stays.
    output_dir = os.path.realpath(output_dir)
  with _blame("output_dir"):
    check_output_dir(output_dir, overwrite)
  with _blame("vocab_file"):
    if not vocab_file or not os.path.isfile(vocab_file):
      raise ExportError("vocabulary file not found: %s" % vocab_file)
    vocab = read_vocab(vocab_file, config)
  with _blame("init_checkpoint"):
    weights = read_bert_checkpoint(init_checkpoint, config)
  with _blame("architecture"):
    architecture = choose_architecture(weights, architecture, export_format)
  with _blame("output_dir"):
    _check_inputs_outside(output_dir, [weights.prefix, vocab_file])
  with outputs.atomic_output_dir(output_dir) as tmp:
    if export_format == "hf":
      write_hf(weights, architecture, config, vocab_file, vocab,
               do_lower_case, tmp)
    else:
      write_saved_model(weights, architecture, config, vocab_file,
                        do_lower_case, tmp)
  logging.info("Exported %s to %s", weights.prefix, output_dir)
  return architecture
