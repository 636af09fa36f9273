"""Layer-wise distillation losses: what the teacher computes inside.

Losses between a student's and a teacher's `modeling.EncoderInternals`, for
training the student on more than the teacher's output distribution:

  hidden_state_loss        TinyBERT (Jiao et al., 2020): mean squared error
                           between student hidden states (the embeddings'
                           output and each layer's output) and the mapped
                           teacher ones, through a learned linear projection
                           (`HiddenProjection`) when the widths differ.
  attention_score_loss     TinyBERT: mean squared error between the student's
                           and the mapped teacher layer's attention scores
                           (before the softmax), head by head.
  attention_relation_loss  MiniLMv2 (Wang et al., 2021): for queries, keys
                           and values in turn, the scaled dot-product
                           relation between positions, split into a number of
                           relation heads and softmax-normalised; the KL
                           divergence from the teacher's relation to the
                           student's. Works for any widths and head counts.

Padding is excluded everywhere: a position counts only where input_mask is
1 (for attention scores and relations, both the attending and the attended
position must be real). Each loss is a mean per compared layer (per relation
for MiniLMv2) and the layers' means are summed, as TinyBERT and MiniLMv2 do.

The projection's variables are named under VARIABLE_SCOPE
("distillation/hidden_projection/..."), apart from the BERT variables.
"""

import collections
import math

import tensorflow as tf

# The scope of the variables that distillation adds to the student.
VARIABLE_SCOPE = "distillation"
# Added to the relation scores of padding positions (as BERT's attention).
_MASK_ADDER = -10000.0


def uniform_layer_map(num_student_layers, num_teacher_layers):
  """Student layer i <- teacher layer (i + 1) * L_t / L_s - 1 (0-based).

  E.g. 6 student, 12 teacher layers: [1, 3, 5, 7, 9, 11]. With more student
  than teacher layers some entries are negative (no uniform map exists).

  Returns:
    A list of num_student_layers teacher layer indices.
  """
  return [(i + 1) * num_teacher_layers // num_student_layers - 1
          for i in range(num_student_layers)]


class HiddenProjection(tf.Module):
  """A learned linear map from the student's width to the teacher's.

  Variables: VARIABLE_SCOPE/hidden_projection/kernel [student_width,
  teacher_width] (truncated normal, as BERT's kernels) and .../bias
  [teacher_width] (zeros). One projection serves every compared layer, as in
  TinyBERT.
  """

  def __init__(self, student_width, teacher_width, initializer_range=0.02):
    super(HiddenProjection, self).__init__(name="hidden_projection")
    prefix = VARIABLE_SCOPE + "/hidden_projection/"
    self.kernel = tf.Variable(
        tf.random.truncated_normal([student_width, teacher_width],
                                   stddev=initializer_range),
        name=prefix + "kernel")
    self.bias = tf.Variable(tf.zeros([teacher_width]), name=prefix + "bias")
    self._names = (prefix + "kernel", prefix + "bias")

  def variables_by_name(self):
    """OrderedDict: variable name -> tf.Variable."""
    return collections.OrderedDict(zip(self._names, (self.kernel, self.bias)))

  def __call__(self, x):
    """float32 [..., student_width] -> float32 [..., teacher_width]."""
    return tf.tensordot(tf.cast(x, tf.float32), self.kernel, 1) + self.bias


def _real_positions(input_mask):
  """float32 [B, S] (1 real token, 0 padding) and its sum (at least 1)."""
  mask = tf.cast(input_mask, tf.float32)
  return mask, tf.maximum(tf.reduce_sum(mask), 1.0)


def hidden_state_loss(student_states, teacher_states, input_mask,
                      projection=None):
  """Sum over compared pairs of the mean squared error at real tokens.

  Args:
    student_states: list of float [B, S, H_s].
    teacher_states: list of the same length, float [B, S, H_t].
    input_mask: int or float [B, S], 1 for real tokens.
    projection: a callable [..., H_s] -> [..., H_t] (e.g. HiddenProjection)
      applied to the student's states; None when H_s == H_t.

  Returns:
    float32 scalar: sum over pairs of
      sum_{b,s} mask[b,s] * sum_h (student' - teacher)^2 / (sum(mask) * H_t).
  """
  mask, count = _real_positions(input_mask)
  total = tf.constant(0.0)
  for student, teacher in zip(student_states, teacher_states):
    student = tf.cast(student, tf.float32)
    if projection is not None:
      student = projection(student)
    teacher = tf.cast(teacher, tf.float32)
    width = tf.cast(tf.shape(teacher)[-1], tf.float32)
    squared = tf.reduce_sum(tf.square(student - teacher), axis=-1)
    total += tf.reduce_sum(squared * mask) / (count * width)
  return total


def _pair_mask(input_mask):
  """float32 [B, 1, S, S]: 1 where both positions are real tokens."""
  mask = tf.cast(input_mask, tf.float32)
  return mask[:, tf.newaxis, :, tf.newaxis] * mask[:, tf.newaxis,
                                                   tf.newaxis, :]


def attention_score_loss(student_scores, teacher_scores, input_mask):
  """Sum over compared layers of the per-head mean squared error of scores.

  Args:
    student_scores: list of float [B, N, S, S], pre-softmax scores without
      the padding mask (`EncoderInternals.attention_scores`).
    teacher_scores: list of the same length and shapes (same N).
    input_mask: [B, S], 1 for real tokens.

  Returns:
    float32 scalar: sum over layers of
      sum_{b,n,i,j} m[b,i] m[b,j] (s - t)^2 / (N * sum_{b,i,j} m[b,i] m[b,j]).
  """
  pairs = _pair_mask(input_mask)
  total = tf.constant(0.0)
  for student, teacher in zip(student_scores, teacher_scores):
    heads = tf.cast(tf.shape(student)[1], tf.float32)
    squared = tf.square(tf.cast(student, tf.float32) -
                        tf.cast(teacher, tf.float32))
    total += tf.reduce_sum(squared * pairs) / (
        heads * tf.maximum(tf.reduce_sum(pairs), 1.0))
  return total


def relation_log_probs(x, input_mask, num_relation_heads):
  """MiniLMv2's self-attention relation of one of Q, K or V, as log-probs.

  Args:
    x: float [B, S, H], the queries (or keys or values) of a layer, heads
      side by side; H must be a multiple of num_relation_heads.
    input_mask: [B, S], 1 for real tokens.
    num_relation_heads: R.

  Returns:
    float32 [B, R, S, S]: log_softmax_j(x_r[i] . x_r[j] / sqrt(H / R)) over
    the real positions j (padding gets a -10000 score), x_r the r-th of R
    equal slices of the last axis.
  """
  x = tf.cast(x, tf.float32)
  shape = tf.shape(x)
  batch_size, seq_length = shape[0], shape[1]
  head_size = x.shape[-1] // num_relation_heads
  x = tf.transpose(tf.reshape(x, [batch_size, seq_length, num_relation_heads,
                                  head_size]), [0, 2, 1, 3])
  scores = tf.matmul(x, x, transpose_b=True) / math.sqrt(float(head_size))
  key_mask = tf.cast(input_mask, tf.float32)[:, tf.newaxis, tf.newaxis, :]
  scores += (1.0 - key_mask) * _MASK_ADDER
  return tf.nn.log_softmax(scores, axis=-1)


def relation_kl(student_x, teacher_x, input_mask, num_relation_heads):
  """KL(teacher relation || student relation), mean over real rows and heads.

  Args:
    student_x: float [B, S, H_s]; teacher_x: float [B, S, H_t] (both
      multiples of num_relation_heads).
    input_mask: [B, S].
    num_relation_heads: R.

  Returns:
    float32 scalar: sum_{b,r,i} m[b,i] sum_j m[b,j] p_t (log p_t - log p_s)
    / (R * sum(m)).
  """
  mask, count = _real_positions(input_mask)
  log_student = relation_log_probs(student_x, input_mask, num_relation_heads)
  log_teacher = relation_log_probs(teacher_x, input_mask, num_relation_heads)
  key_mask = mask[:, tf.newaxis, tf.newaxis, :]
  per_row = tf.reduce_sum(
      tf.exp(log_teacher) * (log_teacher - log_student) * key_mask, axis=-1)
  return tf.reduce_sum(per_row * mask[:, tf.newaxis, :]) / (
      num_relation_heads * count)


def attention_relation_loss(student_qkv, teacher_qkv, input_mask,
                            num_relation_heads):
  """MiniLMv2: the query-query, key-key and value-value relation KLs, summed.

  Args:
    student_qkv: (queries, keys, values) of one student layer, each float
      [B, S, H_s].
    teacher_qkv: the same of one teacher layer, each float [B, S, H_t].
    input_mask: [B, S].
    num_relation_heads: R, dividing H_s and H_t.

  Returns:
    float32 scalar: the sum of the three `relation_kl`.
  """
  return tf.add_n([relation_kl(s, t, input_mask, num_relation_heads)
                   for s, t in zip(student_qkv, teacher_qkv)])
