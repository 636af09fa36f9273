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

`LayerLosses` is what a training objective holds (stage V's Distiller, a
task-distilling fine-tuning run): the losses that `LayerLossSettings` turn
on, checked against both models' configs (`layer_loss_plan`), with the
projection they need.
"""

import collections
import dataclasses
import math

import tensorflow as tf

from bert_distill.lib import errors

# The scope of the variables that distillation adds to the student.
VARIABLE_SCOPE = "distillation"
# Added to the relation scores of padding positions (as BERT's attention).
_MASK_ADDER = -10000.0
# The layer-wise losses: weight option -> name of the loss (in a training
# objective's outputs and in eval_results.txt).
LAYER_LOSS_WEIGHTS = collections.OrderedDict([
    ("hidden_loss_weight", "hidden_loss"),
    ("attention_loss_weight", "attention_loss"),
    ("attention_relation_loss_weight", "attention_relation_loss")])


@dataclasses.dataclass
class LayerLossSettings(object):
  """The layer-wise losses' settings: fields as the flags of the same names
  (bert_distill/flags/layer_loss_flags.py)."""
  hidden_loss_weight: float
  attention_loss_weight: float
  attention_relation_loss_weight: float
  teacher_layer_map: str
  attention_relation_teacher_layer: int
  attention_relation_heads: int

  @property
  def layer_loss_weights(self):
    """Flag name -> weight of each layer-wise loss that is on."""
    return collections.OrderedDict(
        ("--%s" % name, getattr(self, name)) for name in LAYER_LOSS_WEIGHTS
        if getattr(self, name))


def split_extra_state(named_variables):
  """(model state, extra state): two OrderedDicts of (name, variable).

  The extra state holds the variables under VARIABLE_SCOPE (projections)
  and their optimizer slots, saved in a companion checkpoint
  (checkpoints.CheckpointSaver), so that model.ckpt-<step> stays a BERT
  checkpoint; the model state holds all others.
  """
  scope = VARIABLE_SCOPE + "/"
  model, extra = collections.OrderedDict(), collections.OrderedDict()
  for name, var in named_variables:
    (extra if name.startswith(scope) else model)[name] = var
  return model, extra


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


@dataclasses.dataclass
class LayerLossPlan(object):
  """Which student and teacher layers the layer-wise losses compare.

  layer_map: teacher layer index for each student layer (hidden and
    attention losses).
  relation_teacher_layer: the teacher layer of the attention-relation loss
    (0-based, non-negative).
  relation_heads: its number of relation heads.
  project_hidden: whether the hidden loss needs a projection (the widths
    differ).
  """
  layer_map: list
  relation_teacher_layer: int
  relation_heads: int
  project_hidden: bool


def layer_loss_plan(settings, student_config, teacher_config):
  """Checks the layer-loss settings against both models; returns a plan.

  Args:
    settings: LayerLossSettings.
    student_config, teacher_config: modeling.BertConfig.

  Raises:
    errors.UserError: one line naming the flag: a layer map of the wrong
      length or naming layers that do not exist, attention loss with
      different head counts, relation heads that do not divide a hidden
      size, a relation layer the teacher lacks.
  """
  num_student = student_config.num_hidden_layers
  num_teacher = teacher_config.num_hidden_layers
  spec = settings.teacher_layer_map
  if spec:
    flag = "--teacher_layer_map=%s" % spec
    layer_map = parse_layer_indices(spec, num_student, "--teacher_layer_map")
  else:
    flag = "--teacher_layer_map (default: uniform)"
    layer_map = uniform_layer_map(num_student, num_teacher)
  bad = [i for i in layer_map if not 0 <= i < num_teacher]
  if bad and (settings.hidden_loss_weight or settings.attention_loss_weight):
    raise errors.UserError(
        "%s: teacher layer %d does not exist (the teacher has %d layers, "
        "0 to %d; the student %d)" % (flag, bad[0], num_teacher,
                                      num_teacher - 1, num_student))
  if (settings.attention_loss_weight and student_config.num_attention_heads
      != teacher_config.num_attention_heads):
    raise errors.UserError(
        "--attention_loss_weight: the student has %d attention heads, the "
        "teacher %d; this loss compares head by head (use "
        "--attention_relation_loss_weight, which works with any head count)"
        % (student_config.num_attention_heads,
           teacher_config.num_attention_heads))
  relation_layer = settings.attention_relation_teacher_layer
  if relation_layer < 0:
    relation_layer += num_teacher
  relation_heads = (settings.attention_relation_heads or
                    teacher_config.num_attention_heads)
  if settings.attention_relation_loss_weight:
    if not 0 <= relation_layer < num_teacher:
      raise errors.UserError(
          "--attention_relation_teacher_layer=%d: the teacher has %d layers"
          % (settings.attention_relation_teacher_layer, num_teacher))
    if not num_student:
      raise errors.UserError("--attention_relation_loss_weight: the student "
                             "has no Transformer layer")
    widths = (student_config.hidden_size, teacher_config.hidden_size)
    if any(w % relation_heads for w in widths):
      raise errors.UserError(
          "--attention_relation_heads=%d must divide both hidden sizes "
          "(student %d, teacher %d)" % ((relation_heads,) + widths))
  return LayerLossPlan(
      layer_map=layer_map, relation_teacher_layer=relation_layer,
      relation_heads=relation_heads,
      project_hidden=bool(settings.hidden_loss_weight) and (
          student_config.hidden_size != teacher_config.hidden_size))


def parse_layer_indices(spec, num_student_layers,
                        flag_name="--init_from_teacher_layers"):
  """Parses a flag's comma list into one teacher layer index per layer."""
  try:
    indices = [int(x) for x in spec.split(",") if x.strip()]
  except ValueError:
    raise errors.UserError("%s=%s: expected comma-separated layer indices" %
                           (flag_name, spec))
  if len(indices) != num_student_layers:
    raise errors.UserError(
        "%s=%s: %d indices given, the student has %d layers (one teacher "
        "layer index per student layer)" % (flag_name, spec, len(indices),
                                            num_student_layers))
  if indices and min(indices) < 0:
    raise errors.UserError("%s=%s: negative layer index" % (flag_name, spec))
  return indices


class LayerLosses(tf.Module):
  """The layer-wise losses that the settings turn on, for one student and
  one teacher: the plan (`layer_loss_plan`) and the hidden-state projection
  when the widths differ.

  Call it with both models' `modeling.EncoderInternals` (the teacher's
  without gradient) and the batch's input_mask: the enabled losses,
  unweighted, name -> float32 scalar; `add_weighted` adds them to a loss
  with the settings' weights.
  """

  def __init__(self, settings, student_config, teacher_config):
    """Raises errors.UserError on settings that do not fit the models."""
    super(LayerLosses, self).__init__(name="layer_losses")
    self.settings = settings
    self.plan = layer_loss_plan(settings, student_config, teacher_config)
    self.projection = None
    if self.plan.project_hidden:
      self.projection = HiddenProjection(student_config.hidden_size,
                                         teacher_config.hidden_size,
                                         student_config.initializer_range)

  def variables_by_name(self):
    """The projection's variables (empty without one)."""
    if self.projection is None:
      return collections.OrderedDict()
    return self.projection.variables_by_name()

  def __call__(self, student_internals, teacher_internals, input_mask):
    settings, plan = self.settings, self.plan
    losses = collections.OrderedDict()
    if settings.hidden_loss_weight:
      # The embeddings' output with the teacher's, then the mapped layers.
      teacher_states = [teacher_internals.hidden_states[0]] + [
          teacher_internals.hidden_states[i + 1] for i in plan.layer_map]
      losses["hidden_loss"] = hidden_state_loss(
          student_internals.hidden_states, teacher_states, input_mask,
          self.projection)
    if settings.attention_loss_weight:
      losses["attention_loss"] = attention_score_loss(
          student_internals.attention_scores,
          [teacher_internals.attention_scores[i] for i in plan.layer_map],
          input_mask)
    if settings.attention_relation_loss_weight:
      t = plan.relation_teacher_layer
      losses["attention_relation_loss"] = attention_relation_loss(
          (student_internals.queries[-1], student_internals.keys[-1],
           student_internals.values[-1]),
          (teacher_internals.queries[t], teacher_internals.keys[t],
           teacher_internals.values[t]),
          input_mask, plan.relation_heads)
    return losses

  def add_weighted(self, loss, losses):
    """loss + weight * each loss of `losses` (a dict from `__call__`),
    added one at a time in LAYER_LOSS_WEIGHTS' order."""
    for option, name in LAYER_LOSS_WEIGHTS.items():
      if name in losses:
        loss += getattr(self.settings, option) * losses[name]
    return loss
