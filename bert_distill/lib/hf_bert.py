# coding=utf-8
"""Hugging Face's BERT format next to Google's: one table, both directions.

`convert_hf_bert_checkpoint.py` reads Hugging Face BERT folders and
`export_bert_checkpoint.py` writes them; both take the parameter names,
array layouts, activation names and config keys from here.

Parameters. Google's variable name -> Hugging Face's PyTorch state-dict
name, e.g.

  bert/encoder/layer_3/attention/self/query/kernel  [in, out]
  bert.encoder.layer.3.attention.self.query.weight  [out, in]  (transposed)

Kernels of dense layers are [in, out] in Google's checkpoints and [out, in]
in a torch `Linear`; the next-sentence, classifier and SQuAD weights are
already [out, in] in Google's code (`output_weights` [num_labels, hidden]),
so they keep their layout. The masked-LM decoder is the word embedding
table in both (tied); Hugging Face files store it once, as the embeddings,
with the decoder's bias as `cls.predictions.bias`.

Activations. Google's "gelu" is the tanh approximation, which Hugging Face
calls "gelu_new"; Hugging Face's "gelu" is the exact erf form, which this
project calls "gelu_exact".
"""

import re

from bert_distill.lib import errors

# Hugging Face hidden_act -> this project's (Google's) name. For each of
# ours, the first Hugging Face name listed is the one an export writes.
_ACTIVATION_PAIRS = (
    ("gelu", "gelu_exact"),
    ("gelu_new", "gelu"),
    ("gelu_pytorch_tanh", "gelu"),
    ("gelu_fast", "gelu"),
    ("relu", "relu"),
    ("tanh", "tanh"),
    ("linear", "linear"),
)
HF_ACTIVATIONS = dict(_ACTIVATION_PAIRS)

# The keys of Google's bert_config.json that Hugging Face's config.json has
# under the same name and meaning (hidden_act differs in meaning: above).
SHARED_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers",
                      "num_attention_heads", "intermediate_size",
                      "max_position_embeddings", "type_vocab_size",
                      "hidden_dropout_prob", "attention_probs_dropout_prob",
                      "initializer_range")

# (Google name, Hugging Face name, transpose?). "{layer}" stands for an
# encoder layer's number.
_LAYER = "bert/encoder/layer_{layer}/"
_HF_LAYER = "bert.encoder.layer.{layer}."
_LAYER_DENSES = (("attention/self/query", "attention.self.query"),
                 ("attention/self/key", "attention.self.key"),
                 ("attention/self/value", "attention.self.value"),
                 ("attention/output/dense", "attention.output.dense"),
                 ("intermediate/dense", "intermediate.dense"),
                 ("output/dense", "output.dense"))
_LAYER_NORMS = (("attention/output", "attention.output"),
                ("output", "output"))
_PARAMETERS = (
    ("bert/embeddings/word_embeddings",
     "bert.embeddings.word_embeddings.weight", False),
    ("bert/embeddings/position_embeddings",
     "bert.embeddings.position_embeddings.weight", False),
    ("bert/embeddings/token_type_embeddings",
     "bert.embeddings.token_type_embeddings.weight", False),
    ("bert/embeddings/LayerNorm/gamma", "bert.embeddings.LayerNorm.weight",
     False),
    ("bert/embeddings/LayerNorm/beta", "bert.embeddings.LayerNorm.bias",
     False),
) + tuple(
    (_LAYER + google + g_part, _HF_LAYER + hf + hf_part, transpose)
    for google, hf in _LAYER_DENSES
    for g_part, hf_part, transpose in (("/kernel", ".weight", True),
                                       ("/bias", ".bias", False))
) + tuple(
    (_LAYER + google + "/LayerNorm/" + g_part,
     _HF_LAYER + hf + ".LayerNorm." + hf_part, False)
    for google, hf in _LAYER_NORMS
    for g_part, hf_part in (("gamma", "weight"), ("beta", "bias"))
) + (
    ("bert/pooler/dense/kernel", "bert.pooler.dense.weight", True),
    ("bert/pooler/dense/bias", "bert.pooler.dense.bias", False),
    ("cls/predictions/transform/dense/kernel",
     "cls.predictions.transform.dense.weight", True),
    ("cls/predictions/transform/dense/bias",
     "cls.predictions.transform.dense.bias", False),
    ("cls/predictions/transform/LayerNorm/gamma",
     "cls.predictions.transform.LayerNorm.weight", False),
    ("cls/predictions/transform/LayerNorm/beta",
     "cls.predictions.transform.LayerNorm.bias", False),
    ("cls/predictions/output_bias", "cls.predictions.bias", False),
    ("cls/seq_relationship/output_weights", "cls.seq_relationship.weight",
     False),
    ("cls/seq_relationship/output_bias", "cls.seq_relationship.bias", False),
    # Google's run_classifier.py head: logits = pooled @ output_weights^T.
    ("output_weights", "classifier.weight", False),
    ("output_bias", "classifier.bias", False),
    # Google's run_squad.py head: [start, end] = sequence @ output_weights^T.
    ("cls/squad/output_weights", "qa_outputs.weight", False),
    ("cls/squad/output_bias", "qa_outputs.bias", False),
)

# The variables of each head, Google's names.
MASKED_LM_HEAD = ("cls/predictions/transform/dense/kernel",
                  "cls/predictions/transform/dense/bias",
                  "cls/predictions/transform/LayerNorm/gamma",
                  "cls/predictions/transform/LayerNorm/beta",
                  "cls/predictions/output_bias")
NEXT_SENTENCE_HEAD = ("cls/seq_relationship/output_weights",
                      "cls/seq_relationship/output_bias")
CLASSIFIER_HEAD = ("output_weights", "output_bias")
SQUAD_HEAD = ("cls/squad/output_weights", "cls/squad/output_bias")
POOLER = ("bert/pooler/dense/kernel", "bert/pooler/dense/bias")

# The name a Hugging Face file may give the tied MLM decoder matrix; it must
# equal the word embeddings.
DECODER = "cls/predictions/decoder"


def _regex(template):
  return re.compile(re.escape(template).replace(re.escape("{layer}"),
                                                r"(\d+)") + "$")


_COMPILED = tuple((_regex(g), g, _regex(h), h, t)
                  for g, h, t in _PARAMETERS)


def hf_name(google_name):
  """(Hugging Face name, transpose?) of a Google variable name.

  Returns:
    (None, False) for a name outside BERT and its known heads (optimizer
    slots, global_step, ...).
  """
  for google_re, _, _, hf_template, transpose in _COMPILED:
    m = google_re.match(google_name)
    if m:
      return hf_template.format(layer=m.group(1) if m.groups() else ""), (
          transpose)
  return None, False


def _normalise_hf_name(name):
  """Hugging Face's other spellings of a BERT parameter -> the table's."""
  if name.startswith(("embeddings.", "encoder.", "pooler.")):
    name = "bert." + name  # A bare BertModel's state dict.
  name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
  name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
  if name == "cls.predictions.decoder.bias":
    name = "cls.predictions.bias"  # The same tensor, tied.
  return name


def google_name(hf_parameter_name):
  """(Google variable name, transpose?) of a Hugging Face parameter name.

  Accepts the spellings found in Hugging Face files: with or without the
  "bert." prefix, LayerNorm weight/bias or gamma/beta, the decoder's bias as
  `cls.predictions.decoder.bias`. The decoder matrix maps to `DECODER`.

  Returns:
    (None, False) for names that are not BERT parameters (e.g.
    `embeddings.position_ids` buffers).
  """
  name = _normalise_hf_name(hf_parameter_name)
  if name == "cls.predictions.decoder.weight":
    return DECODER, False
  for _, google_template, hf_re, _, transpose in _COMPILED:
    m = hf_re.match(name)
    if m:
      return google_template.format(
          layer=m.group(1) if m.groups() else ""), transpose
  return None, False


def hf_activation(hidden_act):
  """The Hugging Face hidden_act of one of this project's activations.

  Raises:
    errors.ConfigError: the activation has no Hugging Face equivalent.
  """
  ours = (hidden_act or "linear").lower()
  for hf, mine in _ACTIVATION_PAIRS:
    if mine == ours:
      return hf
  raise errors.ConfigError(
      "hidden_act %r has no Hugging Face equivalent (known: %s)" %
      (hidden_act, ", ".join(sorted(set(HF_ACTIVATIONS.values())))))
