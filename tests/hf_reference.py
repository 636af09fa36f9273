"""A NumPy BERT forward pass over Hugging Face's arrays (names and layout).

The reference of the converter's and the exporter's tests: it reads the
state-dict names of Hugging Face's BERT classes (torch Linear weights
[out, in], the MLM decoder tied to the word embeddings) and Hugging Face's
activation names ("gelu" = erf, "gelu_new" = tanh approximation), so it
checks names, transposes and activations independently of the code under
test. Computes in float64.
"""

import math

import numpy as np

_erf = np.vectorize(math.erf)

HF_ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "gelu_new": lambda x: 0.5 * x * (1.0 + np.tanh(
        math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
    "relu": lambda x: np.maximum(x, 0.0),
}


def _float64(weights):
  """float64 arrays; LayerNorm gamma/beta spelled weight/bias."""
  out = {}
  for name, value in weights.items():
    name = name.replace("LayerNorm.gamma", "LayerNorm.weight")
    name = name.replace("LayerNorm.beta", "LayerNorm.bias")
    out[name] = np.asarray(value, np.float64)
  return out


class HfBert(object):
  """BERT over a Hugging Face state dict `weights` and its config.json."""

  def __init__(self, weights, hf_config):
    self.w = _float64(weights)
    self.config = hf_config
    self.act = HF_ACTIVATIONS[hf_config["hidden_act"]]

  def linear(self, x, name):  # torch Linear: weight is [out, in].
    return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

  def norm(self, x, name):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + self.config["layer_norm_eps"]) *
            self.w[name + ".weight"] + self.w[name + ".bias"])

  def encode(self, ids, mask, segments=None):
    """Sequence output [B, S, H] (BertModel's last_hidden_state)."""
    w = self.w
    h = self.config["hidden_size"]
    heads = self.config["num_attention_heads"]
    d = h // heads
    batch, seq = ids.shape
    segments = np.zeros_like(ids) if segments is None else segments

    def heads_first(x):
      return x.reshape(batch, seq, heads, d).transpose(0, 2, 1, 3)

    x = (w["bert.embeddings.word_embeddings.weight"][ids] +
         w["bert.embeddings.position_embeddings.weight"][:seq][None] +
         w["bert.embeddings.token_type_embeddings.weight"][segments])
    x = self.norm(x, "bert.embeddings.LayerNorm")
    bias = np.where(mask[:, None, None, :] > 0, 0.0, -10000.0)
    for i in range(self.config["num_hidden_layers"]):
      p = "bert.encoder.layer.%d." % i
      q = heads_first(self.linear(x, p + "attention.self.query"))
      k = heads_first(self.linear(x, p + "attention.self.key"))
      v = heads_first(self.linear(x, p + "attention.self.value"))
      s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias
      s = np.exp(s - s.max(-1, keepdims=True))
      s /= s.sum(-1, keepdims=True)
      ctx = (s @ v).transpose(0, 2, 1, 3).reshape(batch, seq, h)
      a = self.norm(self.linear(ctx, p + "attention.output.dense") + x,
                    p + "attention.output.LayerNorm")
      x = self.norm(
          self.linear(self.act(self.linear(a, p + "intermediate.dense")),
                      p + "output.dense") + a, p + "output.LayerNorm")
    return x

  def pooled(self, sequence):
    """Pooled output [B, H]: tanh(dense(first token))."""
    return np.tanh(self.linear(sequence[:, 0], "bert.pooler.dense"))

  def mlm_logits(self, sequence, positions):
    """Vocabulary logits [B, P, V] at `positions` (tied decoder)."""
    t = sequence[np.arange(sequence.shape[0])[:, None], positions]
    t = self.norm(self.act(self.linear(t, "cls.predictions.transform.dense")),
                  "cls.predictions.transform.LayerNorm")
    return (t @ self.w["bert.embeddings.word_embeddings.weight"].T +
            self.w["cls.predictions.bias"])


def log_softmax(logits):
  logits = logits - logits.max(-1, keepdims=True)
  return logits - np.log(np.exp(logits).sum(-1, keepdims=True))
