# coding=utf-8
"""The BERT model ("Bidirectional Encoder Representations from Transformers").

A TensorFlow 2 re-creation of Google's BERT `modeling.py`: the same config
file, the same numerics (tanh-approximated GELU, LayerNorm with epsilon 1e-12,
-10000 attention mask adder, truncated-normal initialisation) and the same
checkpoint variable names, so checkpoints move freely between this code,
Google's TF1 code and the common converters.

The model is plain `tf.Module`s and `tf.Variable`s, each variable created
under Google's name (e.g. `bert/encoder/layer_0/attention/self/query/kernel`,
kernels stored [in, out]). Checkpoint I/O (checkpoints.py) is a name ->
variable map:

  model = BertPretrainingModel(BertConfig.from_json_file("bert_config.json"))
  checkpoints.load_checkpoint(model.variables_by_name(), "bert_model.ckpt")
  outputs = model(input_ids, input_mask, segment_ids, masked_lm_positions)

For mixed precision, pass `compute_dtype=tf.float16` (or tf.bfloat16): the
variables stay float32, matrix multiplications run in the compute dtype, and
LayerNorm, softmax and the returned logits stay float32.
"""

import collections
import copy
import difflib
import json
import math
import typing

import tensorflow as tf

from bert_distill.lib import errors

# The epsilon of Google's LayerNorm (tf.contrib.layers.layer_norm, float32).
LAYER_NORM_EPSILON = 1e-12
# Added to the attention scores of masked (padding) positions.
ATTENTION_MASK_ADDER = -10000.0

_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "intermediate_size", "hidden_act",
                "hidden_dropout_prob", "attention_probs_dropout_prob",
                "max_position_embeddings", "type_vocab_size",
                "initializer_range")

# Keys that real configs carry besides the eleven above and that do not
# change the model this code builds, accepted and ignored:
#   Google's releases: "directionality" and the "pooler_*" keys of the
#     multilingual and Chinese models (pooler_fc_size, pooler_num_attention_
#     heads, pooler_num_fc_layers, pooler_size_per_head, pooler_type);
#   Hugging Face config.json files: bookkeeping ("model_type", "dtype",
#     "architectures", "transformers_version", "_name_or_path", "torch_dtype",
#     "use_cache", "gradient_checkpointing") and token ids and head settings
#     Google's model lacks ("pad_token_id", "bos_token_id", "eos_token_id",
#     "classifier_dropout").
# Hugging Face keys that would change the model ("layer_norm_eps" other than
# 1e-12, "position_embedding_type" other than "absolute") are for
# convert_hf_bert_checkpoint.py, which checks them; here they are accepted
# only with those values.
IGNORED_CONFIG_KEYS = frozenset([
    "directionality", "pooler_fc_size", "pooler_num_attention_heads",
    "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type",
    "model_type", "architectures", "transformers_version", "_name_or_path",
    "torch_dtype", "dtype", "use_cache", "gradient_checkpointing",
    "pad_token_id", "bos_token_id", "eos_token_id", "classifier_dropout"])
_IGNORED_IF_DEFAULT = {"layer_norm_eps": 1e-12,
                       "position_embedding_type": "absolute"}


class BertConfig(object):
  """Configuration for `BertModel` (the keys of Google's `bert_config.json`)."""

  def __init__(self,
               vocab_size,
               hidden_size=768,
               num_hidden_layers=12,
               num_attention_heads=12,
               intermediate_size=3072,
               hidden_act="gelu",
               hidden_dropout_prob=0.1,
               attention_probs_dropout_prob=0.1,
               max_position_embeddings=512,
               type_vocab_size=16,
               initializer_range=0.02):
    """Constructs BertConfig.

    Args:
      vocab_size: Vocabulary size of `input_ids`.
      hidden_size: Size of the encoder layers and the pooler layer.
      num_hidden_layers: Number of hidden layers in the Transformer encoder.
      num_attention_heads: Number of attention heads for each attention layer.
      intermediate_size: The size of the "intermediate" (feed-forward) layer.
      hidden_act: The non-linear activation of the encoder's feed-forward
        layers and the masked-LM head: "gelu" (tanh approximation, as
        Google's code), "gelu_exact" (erf form; what Hugging Face calls
        "gelu"), "relu", "tanh" or "linear".
      hidden_dropout_prob: The dropout probability for all fully connected
        layers in the embeddings, encoder, and pooler.
      attention_probs_dropout_prob: The dropout ratio for the attention
        probabilities.
      max_position_embeddings: The maximum sequence length that this model
        might ever be used with.
      type_vocab_size: The vocabulary size of the `token_type_ids`.
      initializer_range: The stdev of the truncated normal initializer for
        all weight matrices.
    """
    self.vocab_size = vocab_size
    self.hidden_size = hidden_size
    self.num_hidden_layers = num_hidden_layers
    self.num_attention_heads = num_attention_heads
    self.hidden_act = hidden_act
    self.intermediate_size = intermediate_size
    self.hidden_dropout_prob = hidden_dropout_prob
    self.attention_probs_dropout_prob = attention_probs_dropout_prob
    self.max_position_embeddings = max_position_embeddings
    self.type_vocab_size = type_vocab_size
    self.initializer_range = initializer_range

  @classmethod
  def from_dict(cls, json_object):
    """Constructs a `BertConfig` from a Python dictionary of parameters.

    Every one of the eleven keys of Google's bert_config.json is required
    (Google's and converted configs always carry all of them; a default
    would turn a typo into a 12-layer model). Keys in IGNORED_CONFIG_KEYS
    are accepted and ignored.

    Raises:
      errors.ConfigError: a key is missing, a key is unknown (the message
        suggests the nearest known key), a value has the wrong type or
        range, or the activation is unknown.
    """
    if not isinstance(json_object, dict):
      raise errors.ConfigError(
          "a BERT config must be a JSON object, found %s" %
          type(json_object).__name__)
    for key in sorted(json_object):
      if key in _CONFIG_KEYS or key in IGNORED_CONFIG_KEYS:
        continue
      if key in _IGNORED_IF_DEFAULT:
        if json_object[key] != _IGNORED_IF_DEFAULT[key]:
          raise errors.ConfigError(
              "%s is %r; Google's BERT has only %r (convert a Hugging Face "
              "model with convert_hf_bert_checkpoint.py)" %
              (key, json_object[key], _IGNORED_IF_DEFAULT[key]))
        continue
      near = difflib.get_close_matches(key, _CONFIG_KEYS, n=1, cutoff=0.6)
      raise errors.ConfigError(
          "unknown key %r%s (the keys of Google's bert_config.json: %s)" %
          (key, "; did you mean %r?" % near[0] if near else "",
           ", ".join(_CONFIG_KEYS)))
    missing = [key for key in _CONFIG_KEYS if key not in json_object]
    if missing:
      raise errors.ConfigError(
          "the BERT config has no %s (all eleven keys of Google's "
          "bert_config.json are required)" % ", ".join(missing))
    config = cls(vocab_size=None)
    for key in _CONFIG_KEYS:
      setattr(config, key, json_object[key])
    config.validate()
    return config

  @classmethod
  def from_json_file(cls, json_file):
    """Constructs a `BertConfig` from a json file of parameters.

    Raises:
      errors.ConfigError: naming the file, when it is missing, unreadable,
        not JSON or not a valid BERT config.
    """
    try:
      with tf.io.gfile.GFile(json_file, "r") as reader:
        text = reader.read()
    except (tf.errors.OpError, OSError) as exc:
      if not tf.io.gfile.exists(json_file):
        raise errors.ConfigError("BERT config file not found: %s" %
                                 json_file)
      raise errors.ConfigError("cannot read BERT config file %s: %s" %
                               (json_file, getattr(exc, "message", exc)))
    try:
      data = json.loads(text)
    except ValueError as exc:
      raise errors.ConfigError("%s: not a valid JSON BERT config: %s" %
                               (json_file, exc))
    try:
      return cls.from_dict(data)
    except ValueError as exc:
      raise errors.ConfigError("%s: %s" % (json_file, exc))

  def validate(self):
    """Raises errors.ConfigError unless every field has a sensible value."""
    for key in ("vocab_size", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size"):
      value = getattr(self, key)
      # A model without Transformer layers (embeddings only) is allowed.
      least = 0 if key == "num_hidden_layers" else 1
      if (isinstance(value, bool) or not isinstance(value, int) or
          value < least):
        raise errors.ConfigError("%s must be an integer >= %d, found %r" %
                                 (key, least, value))
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
      value = getattr(self, key)
      if (isinstance(value, bool) or not isinstance(value, (int, float)) or
          not 0.0 <= value < 1.0):
        raise errors.ConfigError("%s must be a number in [0, 1), found %r" %
                                 (key, value))
    value = self.initializer_range
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or
        value <= 0):
      raise errors.ConfigError("initializer_range must be a positive "
                               "number, found %r" % (value,))
    if self.hidden_size % self.num_attention_heads:
      raise errors.ConfigError(
          "hidden_size (%d) is not a multiple of num_attention_heads (%d)" %
          (self.hidden_size, self.num_attention_heads))
    get_activation(self.hidden_act)

  def to_dict(self):
    """Serializes this instance to a Python dictionary (Google's keys)."""
    return collections.OrderedDict(
        (key, copy.deepcopy(getattr(self, key))) for key in _CONFIG_KEYS)

  def to_json_string(self):
    """Serializes this instance to a JSON string."""
    return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

  def __eq__(self, other):
    return isinstance(other, BertConfig) and self.to_dict() == other.to_dict()

  def __repr__(self):
    return "BertConfig(%s)" % ", ".join(
        "%s=%r" % item for item in self.to_dict().items())


# ---------------------------------------------------------------------------
# Activations and small numeric helpers.
# ---------------------------------------------------------------------------


def gelu(x):
  """GELU, tanh approximation (Google's BERT `gelu`), as `tf.nn.gelu`
  writes it: the form TensorFlow's graph optimiser fuses with a matmul and
  bias on oneDNN CPUs."""
  return tf.nn.gelu(x, approximate=True)


def gelu_exact(x):
  """GELU, exact erf form (Hugging Face's and PyTorch's default `gelu`)."""
  return tf.nn.gelu(x, approximate=False)


def _linear(x):
  return x


_ACTIVATIONS = {
    "gelu": gelu,
    "gelu_exact": gelu_exact,
    "relu": tf.nn.relu,
    "tanh": tf.tanh,
    "linear": _linear,
}


def get_activation(activation_string):
  """Maps an activation name to its function.

  Args:
    activation_string: "gelu" (tanh approximation), "gelu_exact" (erf),
      "relu", "tanh" or "linear" (case-insensitive); None or "" mean linear;
      a callable is returned as it is.

  Returns:
    The activation function.

  Raises:
    errors.ConfigError: the name is unknown.
  """
  if callable(activation_string):
    return activation_string
  if activation_string is None or activation_string == "":
    return _linear
  if not isinstance(activation_string, str):
    raise errors.ConfigError("hidden_act must be a string, found %r" %
                             (activation_string,))
  act = activation_string.lower()
  if act not in _ACTIVATIONS:
    raise errors.ConfigError(
        "unsupported activation %r (expected one of: %s)" %
        (activation_string, ", ".join(sorted(_ACTIVATIONS))))
  return _ACTIVATIONS[act]


def layer_norm(x, gamma, beta):
  """LayerNorm over the last axis in float32 (epsilon 1e-12, as Google's)."""
  x = tf.cast(x, tf.float32)
  mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
  return tf.nn.batch_normalization(x, mean, variance, offset=beta,
                                   scale=gamma,
                                   variance_epsilon=LAYER_NORM_EPSILON)


def _dense(x, kernel, bias, dtype):
  """x @ kernel + bias in `dtype` (x is 2-D)."""
  y = tf.matmul(tf.cast(x, dtype), tf.cast(kernel, dtype))
  return tf.nn.bias_add(y, tf.cast(bias, dtype))


def _truncated_normal(shape, stddev):
  """Google's `create_initializer`: truncated normal (2 stddev), float32."""
  return tf.random.truncated_normal(shape, stddev=stddev, dtype=tf.float32)


class _Dropout(object):
  """Applies dropout during training; stateless when given a seed.

  With a seed (int [2]), every dropout site of one call gets its own seed
  folded from it in call order, so the masks of a step are reproducible
  (e.g. across a resumed run or on every Horovod rank).
  """

  def __init__(self, training, seed=None):
    self.training = bool(training)
    self.seed = seed
    self.count = 0

  def __call__(self, x, rate):
    if not self.training or not rate:
      return x
    if self.seed is None:
      return tf.nn.dropout(x, rate=rate)
    site_seed = tf.random.experimental.stateless_fold_in(
        tf.cast(self.seed, tf.int64), self.count)
    self.count += 1
    return tf.nn.experimental.stateless_dropout(
        x, rate=rate, seed=site_seed, rng_alg=tf.random.Algorithm.PHILOX)


class _VariableSet(object):
  """Creates variables under Google's names and remembers their order.

  With random_init=False the kernels start at zero instead of drawn values:
  for a model whose weights a checkpoint replaces at once (drawing BERT-Base's
  110 M values took seconds of every stage-IV process's start).
  """

  def __init__(self, random_init=True):
    self.random_init = random_init
    self.names = []
    self.variables = []

  def zeros(self, name, shape):
    return self._add(name, tf.zeros(shape, tf.float32))

  def ones(self, name, shape):
    return self._add(name, tf.ones(shape, tf.float32))

  def normal(self, name, shape, stddev):
    if not self.random_init:
      return self.zeros(name, shape)
    return self._add(name, _truncated_normal(shape, stddev))

  def _add(self, name, value):
    if name in self.names:
      raise ValueError("duplicate variable name %s" % name)
    var = tf.Variable(value, name=name, trainable=True, dtype=tf.float32)
    self.names.append(name)
    self.variables.append(var)
    return var


# ---------------------------------------------------------------------------
# The encoder.
# ---------------------------------------------------------------------------


class _TransformerLayer(object):
  """The variables of one encoder layer (Google's names, [in, out] kernels)."""

  KERNELS = ("query_kernel", "key_kernel", "value_kernel",
             "attention_output_kernel", "intermediate_kernel",
             "output_kernel")

  def __init__(self, varset, prefix, config):
    h = config.hidden_size
    i = config.intermediate_size
    std = config.initializer_range
    p = prefix + "/attention/self/"
    self.query_kernel = varset.normal(p + "query/kernel", [h, h], std)
    self.query_bias = varset.zeros(p + "query/bias", [h])
    self.key_kernel = varset.normal(p + "key/kernel", [h, h], std)
    self.key_bias = varset.zeros(p + "key/bias", [h])
    self.value_kernel = varset.normal(p + "value/kernel", [h, h], std)
    self.value_bias = varset.zeros(p + "value/bias", [h])
    p = prefix + "/attention/output/"
    self.attention_output_kernel = varset.normal(p + "dense/kernel", [h, h],
                                                 std)
    self.attention_output_bias = varset.zeros(p + "dense/bias", [h])
    self.attention_ln_beta = varset.zeros(p + "LayerNorm/beta", [h])
    self.attention_ln_gamma = varset.ones(p + "LayerNorm/gamma", [h])
    p = prefix + "/intermediate/"
    self.intermediate_kernel = varset.normal(p + "dense/kernel", [h, i], std)
    self.intermediate_bias = varset.zeros(p + "dense/bias", [i])
    p = prefix + "/output/"
    self.output_kernel = varset.normal(p + "dense/kernel", [i, h], std)
    self.output_bias = varset.zeros(p + "dense/bias", [h])
    self.output_ln_beta = varset.zeros(p + "LayerNorm/beta", [h])
    self.output_ln_gamma = varset.ones(p + "LayerNorm/gamma", [h])


class LayerInternals(typing.NamedTuple):
  """What one layer's attention computes inside (all float32), for
  layer-wise distillation losses; N heads, H hidden size, S the sequence
  length.

    attention_scores  [B, N, S, S]: q.k / sqrt(H / N) per head, before the
                      padding mask is added and before the softmax.
    queries, keys, values
                      [B, S, H] each: the query, key and value projections
                      (x W + b), heads side by side.
  """
  attention_scores: tf.Tensor
  queries: tf.Tensor
  keys: tf.Tensor
  values: tf.Tensor


class EncoderInternals(typing.NamedTuple):
  """What the encoder computes inside (all float32), for layer-wise
  distillation losses; L layers, H hidden size, S the sequence length.

    hidden_states     L + 1 tensors [B, S, H]: the embeddings' output (after
                      LayerNorm and dropout), then each layer's output.
    attention_scores, queries, keys, values
                      L tensors each, one per layer: see `LayerInternals`.
  """
  hidden_states: tuple
  attention_scores: tuple
  queries: tuple
  keys: tuple
  values: tuple

  @classmethod
  def of_layers(cls, embeddings, layer_outputs, layers):
    """From the embeddings' output, each layer's output and each layer's
    `LayerInternals`."""
    return cls((embeddings,) + tuple(layer_outputs),
               *[tuple(getattr(layer, field) for layer in layers)
                 for field in LayerInternals._fields])


class EncoderOutputs(typing.NamedTuple):
  """What `BertModel` returns (all float32).

    sequence_output     [B, S, H]: the last layer's output.
    pooled_output       [B, H]: tanh(dense(the first token's output)).
    all_encoder_layers  L tensors [B, S, H]: each layer's output.
    internals           an `EncoderInternals` with return_internals=True,
                        else None.
  (With output_positions, the last layer's output and sequence_output are
  [B, P, H] at those positions and pooled_output is None.)
  """
  sequence_output: tf.Tensor
  pooled_output: tf.Tensor
  all_encoder_layers: tuple
  internals: typing.Optional[EncoderInternals]


class PretrainingOutputs(typing.NamedTuple):
  """What `BertPretrainingModel` returns (all float32).

    masked_lm_logits      [B, P, vocab_size] at the P masked positions.
    next_sentence_logits  [B, 2] (None with masked_lm_only=True).
    internals             the encoder's `EncoderInternals` with
                          return_internals=True, else None.
  """
  masked_lm_logits: tf.Tensor
  next_sentence_logits: tf.Tensor
  internals: typing.Optional[EncoderInternals]


class BertModel(tf.Module):
  """BERT encoder: embeddings, Transformer layers and pooler.

  Example:
    config = BertConfig(vocab_size=32000, hidden_size=512,
                        num_hidden_layers=8, num_attention_heads=8,
                        intermediate_size=1024)
    model = BertModel(config)
    outputs = model(input_ids, input_mask, token_type_ids)
    outputs.sequence_output, outputs.pooled_output  # an EncoderOutputs
  """

  def __init__(self, config, compute_dtype=tf.float32, name="bert",
               random_init=True):
    """Creates the variables (truncated normal kernels, zero biases).

    Args:
      config: a `BertConfig`.
      compute_dtype: dtype of the matrix multiplications (tf.float32,
        tf.float16 or tf.bfloat16); variables are always float32.
      name: the scope of the variable names ("bert" as Google's).
      random_init: False starts the kernels at zero, for a model that a
        checkpoint fills at once (a teacher).
    """
    super(BertModel, self).__init__(name=name)
    config.validate()
    self.config = copy.deepcopy(config)
    self.compute_dtype = tf.as_dtype(compute_dtype)
    if self.compute_dtype not in (tf.float32, tf.float16, tf.bfloat16):
      raise ValueError("compute_dtype must be float32, float16 or bfloat16, "
                       "found %s" % self.compute_dtype.name)
    self._activation = get_activation(config.hidden_act)
    h = config.hidden_size
    std = config.initializer_range
    varset = _VariableSet(random_init)
    p = name + "/embeddings/"
    self.embedding_table = varset.normal(p + "word_embeddings",
                                         [config.vocab_size, h], std)
    self.token_type_table = varset.normal(
        p + "token_type_embeddings", [config.type_vocab_size, h], std)
    self.position_table = varset.normal(
        p + "position_embeddings", [config.max_position_embeddings, h], std)
    self.embedding_ln_beta = varset.zeros(p + "LayerNorm/beta", [h])
    self.embedding_ln_gamma = varset.ones(p + "LayerNorm/gamma", [h])
    self._layers = [
        _TransformerLayer(varset, "%s/encoder/layer_%d" % (name, n), config)
        for n in range(config.num_hidden_layers)]
    self.pooler_kernel = varset.normal(name + "/pooler/dense/kernel", [h, h],
                                       std)
    self.pooler_bias = varset.zeros(name + "/pooler/dense/bias", [h])
    self._variable_names = tuple(varset.names)
    self._variable_list = list(varset.variables)

  def variables_by_name(self):
    """OrderedDict: Google's variable name -> tf.Variable, creation order."""
    return collections.OrderedDict(zip(self._variable_names,
                                       self._variable_list))

  def freeze_kernels(self):
    """For inference: the layers' matmul kernels kept in compute_dtype
    (a bfloat16 model otherwise casts BERT-Base's 85 M values every call).
    The copies are taken now and the float32 variables no longer feed the
    layers: call it after loading, on a model not trained (a teacher)."""
    if self.compute_dtype == tf.float32:
      return
    for layer in self._layers:
      for name in _TransformerLayer.KERNELS:
        setattr(layer, name, tf.Variable(
            tf.cast(getattr(layer, name), self.compute_dtype),
            trainable=False, name=name + "_" + self.compute_dtype.name))

  def __call__(self, input_ids, input_mask=None, token_type_ids=None,
               training=False, dropout_seed=None, dropout=None,
               return_internals=False, output_positions=None):
    """Runs the encoder.

    The steps, each a method below: `embeddings`, `attention_mask_adder`,
    then `transformer_layer` for each layer (`attention_layer`, then
    `feed_forward`), then `pooler`.

    Args:
      input_ids: int Tensor [batch_size, seq_length].
      input_mask: (optional) int or float Tensor [batch_size, seq_length],
        1 for real tokens, 0 for padding. Default: all ones.
      token_type_ids: (optional) int Tensor [batch_size, seq_length].
        Default: all zeros.
      training: applies dropout when True.
      dropout_seed: (optional) int Tensor [2]: makes the dropout masks a
        deterministic function of this seed (stateless dropout).
      dropout: (optional) a `_Dropout` to share with a caller's heads
        (instead of training and dropout_seed).
      return_internals: also keep an `EncoderInternals` (what layer-wise
        distillation losses compare). Off by default: nothing more is kept.
      output_positions: (optional) int Tensor [batch_size, P]: the last
        layer runs its queries and feed-forward at these positions only
        (keys and values at all): the output gathered there, for 6% less
        work at BERT-Base's 128 tokens and 20 positions. The last layer's
        outputs are then [batch_size, P, hidden_size], pooled_output None.
        Not with return_internals.

    Returns:
      An `EncoderOutputs`.
    """
    if output_positions is not None and return_internals:
      raise ValueError("output_positions and return_internals exclude each "
                       "other: the internals are kept for every position")
    if dropout is None:
      dropout = _Dropout(training, dropout_seed)
    input_ids = tf.convert_to_tensor(input_ids)
    shape = tf.shape(input_ids)
    batch_size, seq_length = shape[0], shape[1]
    if input_mask is None:
      input_mask = tf.ones([batch_size, seq_length], tf.float32)
    if token_type_ids is None:
      token_type_ids = tf.zeros([batch_size, seq_length], tf.int32)
    h = self.config.hidden_size

    embeddings = self.embeddings(input_ids, token_type_ids, dropout)
    adder = attention_mask_adder(input_mask)
    # The residual stream is kept 2-D [B*S, H] and float32.
    layer_output = tf.reshape(embeddings, [-1, h])
    all_layers, layer_internals = [], []
    for n, layer in enumerate(self._layers):
      query_rows = None
      if output_positions is not None and n == len(self._layers) - 1:
        # Example b's position p is row b * seq_length + p.
        positions = tf.cast(output_positions, tf.int32)
        tf.debugging.assert_less(positions, seq_length,
                                 "output_positions beyond seq_length")
        tf.debugging.assert_non_negative(positions, "negative output_positions")
        query_rows = tf.reshape(positions + seq_length * tf.range(
            batch_size)[:, tf.newaxis], [-1])
      layer_output, kept = self.transformer_layer(
          layer, layer_output, adder, batch_size, seq_length, dropout,
          return_internals, query_rows)
      all_layers.append(tf.reshape(layer_output, [batch_size, -1, h]))
      layer_internals.append(kept)
    if output_positions is not None:
      last = all_layers[-1] if all_layers else tf.gather(
          embeddings, output_positions, batch_dims=1)
      return EncoderOutputs(last, None, tuple(all_layers), None)
    sequence_output = all_layers[-1] if all_layers else embeddings
    internals = EncoderInternals.of_layers(
        embeddings, all_layers, layer_internals) if return_internals else None
    return EncoderOutputs(sequence_output, self.pooler(sequence_output),
                          tuple(all_layers), internals)

  def activation(self, x):
    """The config's hidden_act applied to `x` (the masked-LM head uses it)."""
    return self._activation(x)

  def embeddings(self, input_ids, token_type_ids, dropout):
    """Word + token-type + position embeddings, LayerNorm, dropout.

    Args:
      input_ids: int Tensor [batch_size, seq_length].
      token_type_ids: int Tensor [batch_size, seq_length].
      dropout: a `_Dropout` (hidden_dropout_prob).

    Returns:
      float32 Tensor [batch_size, seq_length, hidden_size].
    """
    seq_length = tf.shape(input_ids)[1]
    embeddings = tf.gather(self.embedding_table, input_ids)
    embeddings += tf.gather(self.token_type_table, token_type_ids)
    embeddings += tf.expand_dims(self.position_table[:seq_length], 0)
    embeddings = layer_norm(embeddings, self.embedding_ln_gamma,
                            self.embedding_ln_beta)
    return dropout(embeddings, self.config.hidden_dropout_prob)

  def attention_layer(self, layer, layer_input, adder, batch_size,
                      seq_length, dropout, return_internals=False,
                      query_rows=None):
    """Multi-headed self-attention of one layer (Google's `attention_layer`).

    The input is projected to queries, keys and values of
    num_attention_heads heads of size head_size = hidden_size /
    num_attention_heads; each head's probabilities
    softmax(Q K^T / sqrt(head_size) + adder) (in float32) weight its values;
    the heads' contexts are concatenated.

    Args:
      layer: the `_TransformerLayer` holding the variables.
      layer_input: float32 Tensor [batch_size * seq_length, hidden_size].
      adder: float32 Tensor [batch_size, 1, 1, seq_length] from
        `attention_mask_adder`.
      batch_size, seq_length: scalars.
      dropout: a `_Dropout` (attention_probs_dropout_prob on the
        probabilities).
      return_internals: also return this layer's `LayerInternals`.
      query_rows: (optional) int Tensor [batch_size * P], rows of
        layer_input: only these attend (keys and values are every row's).

    Returns:
      (context, internals): the context, compute dtype [batch_size *
      seq_length, hidden_size] (before the attention output projection),
      [batch_size * P, hidden_size] with query_rows; the `LayerInternals`
      with return_internals, else None.
    """
    dtype = self.compute_dtype
    h = self.config.hidden_size
    num_heads = self.config.num_attention_heads
    head_size = h // num_heads

    def split_heads(x):
      # [B*S, H] -> [B, num_heads, S, head_size] (S: the rows per example)
      x = tf.reshape(x, [batch_size, -1, num_heads, head_size])
      return tf.transpose(x, [0, 2, 1, 3])

    x = tf.cast(layer_input, dtype)
    queries = _dense(x if query_rows is None else tf.gather(x, query_rows),
                     layer.query_kernel, layer.query_bias, dtype)
    keys = _dense(x, layer.key_kernel, layer.key_bias, dtype)
    values = _dense(x, layer.value_kernel, layer.value_bias, dtype)
    q, k, v = split_heads(queries), split_heads(keys), split_heads(values)
    scale = 1.0 / math.sqrt(float(head_size))
    scores = tf.cast(tf.matmul(q, k, transpose_b=True), tf.float32) * scale
    internals = LayerInternals(scores, *[
        tf.reshape(tf.cast(part, tf.float32), [batch_size, seq_length, h])
        for part in (queries, keys, values)]) if return_internals else None
    probs = tf.nn.softmax(scores + adder, axis=-1)
    probs = dropout(probs, self.config.attention_probs_dropout_prob)
    context = tf.matmul(tf.cast(probs, dtype), v)
    return (tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, h]),
            internals)

  def feed_forward(self, layer, attention_output):
    """The layer's intermediate projection and activation.

    Args:
      layer: the `_TransformerLayer`.
      attention_output: float32 Tensor [batch_size * seq_length,
        hidden_size].

    Returns:
      Compute dtype Tensor [batch_size * seq_length, intermediate_size].
    """
    return self.activation(_dense(attention_output, layer.intermediate_kernel,
                                  layer.intermediate_bias,
                                  self.compute_dtype))

  def transformer_layer(self, layer, layer_input, adder, batch_size,
                        seq_length, dropout, return_internals=False,
                        query_rows=None):
    """One encoder layer, as the loop body of Google's `transformer_model`.

    attention = LayerNorm(layer_input + dropout(dense(attention_layer)))
    output = LayerNorm(attention + dropout(dense(feed_forward(attention))))

    Args:
      layer: the `_TransformerLayer`.
      layer_input: float32 Tensor [batch_size * seq_length, hidden_size].
      adder, batch_size, seq_length, dropout, return_internals,
        query_rows: as in `attention_layer`.

    Returns:
      (output, internals): float32 Tensor [batch_size * seq_length,
      hidden_size] ([batch_size * P, hidden_size] at query_rows); the
      attention's `LayerInternals` or None, as `attention_layer` returns it.
    """
    dtype = self.compute_dtype
    hidden_dropout = self.config.hidden_dropout_prob
    context, internals = self.attention_layer(
        layer, layer_input, adder, batch_size, seq_length, dropout,
        return_internals, query_rows)
    if query_rows is not None:
      layer_input = tf.gather(layer_input, query_rows)
    attention = _dense(context, layer.attention_output_kernel,
                       layer.attention_output_bias, dtype)
    attention = dropout(attention, hidden_dropout)
    attention = layer_norm(tf.cast(attention, tf.float32) + layer_input,
                           layer.attention_ln_gamma, layer.attention_ln_beta)
    intermediate = self.feed_forward(layer, attention)
    output = _dense(intermediate, layer.output_kernel, layer.output_bias,
                    dtype)
    output = dropout(output, hidden_dropout)
    return layer_norm(tf.cast(output, tf.float32) + attention,
                      layer.output_ln_gamma, layer.output_ln_beta), internals

  def pooler(self, sequence_output):
    """tanh(dense(first token)): float32 [batch_size, hidden_size]."""
    first_token = sequence_output[:, 0, :]
    return tf.tanh(tf.cast(
        _dense(first_token, self.pooler_kernel, self.pooler_bias,
               self.compute_dtype), tf.float32))


def attention_mask_adder(input_mask):
  """What masking adds to the attention scores: 0 or -10000.

  Args:
    input_mask: int or float Tensor [batch_size, seq_length], 1 for real
      tokens, 0 for padding.

  Returns:
    float32 Tensor [batch_size, 1, 1, seq_length]: 0 where attention is
    allowed, ATTENTION_MASK_ADDER at padding (broadcast over heads and query
    positions).
  """
  mask = tf.cast(input_mask, tf.float32)[:, tf.newaxis, tf.newaxis, :]
  return (1.0 - mask) * ATTENTION_MASK_ADDER


class BertPretrainingModel(tf.Module):
  """BERT with its pre-training heads: masked LM and next sentence.

  The masked-LM head (dense + activation + LayerNorm, then the tied word
  embeddings and an output bias) runs only at the masked positions.
  """

  def __init__(self, config, compute_dtype=tf.float32,
               head_compute_dtype=None, random_init=True):
    """Creates the encoder (`.bert`) and the heads' variables.

    Args:
      config: a `BertConfig`.
      compute_dtype: as in `BertModel`.
      head_compute_dtype: the masked-LM head's matmul dtype (default:
        compute_dtype; a bfloat16 teacher keeps float32 here).
      random_init: as in `BertModel`.
    """
    super(BertPretrainingModel, self).__init__(name="bert_pretraining")
    self.bert = BertModel(config, compute_dtype=compute_dtype, name="bert",
                          random_init=random_init)
    self.config = self.bert.config
    self.compute_dtype = self.bert.compute_dtype
    self.head_compute_dtype = tf.as_dtype(head_compute_dtype or
                                          compute_dtype)
    h = config.hidden_size
    std = config.initializer_range
    varset = _VariableSet(random_init)
    p = "cls/predictions/"
    self.transform_kernel = varset.normal(p + "transform/dense/kernel",
                                          [h, h], std)
    self.transform_bias = varset.zeros(p + "transform/dense/bias", [h])
    self.transform_ln_beta = varset.zeros(p + "transform/LayerNorm/beta", [h])
    self.transform_ln_gamma = varset.ones(p + "transform/LayerNorm/gamma",
                                          [h])
    self.output_bias = varset.zeros(p + "output_bias", [config.vocab_size])
    p = "cls/seq_relationship/"
    self.next_sentence_weights = varset.normal(p + "output_weights", [2, h],
                                               std)
    self.next_sentence_bias = varset.zeros(p + "output_bias", [2])
    self._head_names = tuple(varset.names)
    self._head_variables = list(varset.variables)

  def variables_by_name(self):
    """OrderedDict of all variables under Google's names (trainable order)."""
    result = self.bert.variables_by_name()
    result.update(zip(self._head_names, self._head_variables))
    return result

  def __call__(self, input_ids, input_mask, segment_ids, masked_lm_positions,
               training=False, dropout_seed=None, return_internals=False,
               masked_lm_only=False):
    """Runs the encoder and both heads.

    Args:
      input_ids: int Tensor [batch_size, seq_length].
      input_mask: int Tensor [batch_size, seq_length].
      segment_ids: int Tensor [batch_size, seq_length].
      masked_lm_positions: int Tensor [batch_size, num_predictions].
      training: applies dropout when True.
      dropout_seed: (optional) int Tensor [2] for stateless dropout.
      return_internals: also keep the encoder's `EncoderInternals`.
      masked_lm_only: only what the masked-LM logits need (a teacher's
        labels): the last layer at the masked positions (`BertModel`'s
        output_positions), next_sentence_logits None.

    Returns:
      A `PretrainingOutputs`.
    """
    if masked_lm_only:
      encoder = self.bert(input_ids, input_mask, segment_ids,
                          training=training, dropout_seed=dropout_seed,
                          return_internals=return_internals,
                          output_positions=masked_lm_positions)
      return PretrainingOutputs(
          self.masked_lm_head(encoder.sequence_output), None, None)
    encoder = self.bert(
        input_ids, input_mask, segment_ids, training=training,
        dropout_seed=dropout_seed, return_internals=return_internals)
    return PretrainingOutputs(
        self.masked_lm_logits(encoder.sequence_output, masked_lm_positions),
        self.next_sentence_logits(encoder.pooled_output), encoder.internals)

  def masked_lm_logits(self, sequence_output, masked_lm_positions):
    """Vocabulary logits (float32) at the masked positions only."""
    return self.masked_lm_head(tf.gather(sequence_output, masked_lm_positions,
                                         batch_dims=1))

  def masked_lm_transform(self, hidden):
    """The masked-LM head's transform (dense, activation, LayerNorm), float32
    [B * P, H], of the encoder's output at the masked positions, [B, P, H]."""
    x = self.bert.activation(_dense(
        tf.reshape(hidden, [-1, self.config.hidden_size]),
        self.transform_kernel, self.transform_bias, self.head_compute_dtype))
    return layer_norm(x, self.transform_ln_gamma, self.transform_ln_beta)

  def masked_lm_head(self, hidden):
    """Vocabulary logits (float32) [B, P, V] of the masked-LM head on the
    encoder's output at the masked positions, [B, P, H]."""
    dtype = self.head_compute_dtype
    shape = tf.shape(hidden)
    logits = tf.matmul(tf.cast(self.masked_lm_transform(hidden), dtype),
                       tf.cast(self.bert.embedding_table, dtype),
                       transpose_b=True)
    logits = tf.nn.bias_add(tf.cast(logits, tf.float32), self.output_bias)
    return tf.reshape(logits, [shape[0], shape[1], self.config.vocab_size])

  def next_sentence_logits(self, pooled_output):
    """Next-sentence logits (float32) [batch_size, 2] from the pooled output."""
    dtype = self.compute_dtype
    logits = tf.matmul(tf.cast(pooled_output, dtype),
                       tf.cast(self.next_sentence_weights, dtype),
                       transpose_b=True)
    return tf.nn.bias_add(tf.cast(logits, tf.float32),
                          self.next_sentence_bias)
