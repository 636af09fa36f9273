"""The distillation objective: the loss maths and the Distiller module.

The loss, as in the original scripts (which follow `get_masked_lm_output` of
Google's run_pretraining.py, with the one-hot labels replaced by the
teacher's probabilities):

  at each masked position i with weight w_i (1 real, 0 padding)
    l_i = -sum_k p_teacher[i, k] * log_softmax(student_logits[i])[index[i, k]]
  (k over the teacher's top-K indices, or over the whole vocabulary for K = 0)
  masked_lm_loss     = sum_i w_i * l_i / (sum_i w_i + 1e-5)
  next_sentence_loss = mean over examples of the cross-entropy on the labels
  loss = masked_lm_loss + next_sentence_loss

Beyond the original, masked_lm_loss = soft_label_weight * (the above) +
hard_label_weight * (cross-entropy on the true ids); soft_label_weight 0
and no layer loss is plain masked-LM pre-training, with no teacher.

With an online teacher, layer-wise losses (layer_losses.py: TinyBERT hidden
states and attention scores, MiniLMv2 attention relations) can be added,
each with its own weight:

  loss += hidden_loss_weight * hidden_loss
        + attention_loss_weight * attention_loss
        + attention_relation_loss_weight * attention_relation_loss

`Distiller` holds the student (and the online teacher, and the layer losses'
projections) and computes the loss and the metrics of a batch; the training
loop (distillation.py, training.py) and the benchmarks drive it.
"""

import collections
import dataclasses

import tensorflow as tf

from bert_distill import cli
from bert_distill.lib import layer_losses
import modeling
from bert_distill.lib import record_format
from bert_distill.stages import teacher


# Added to the sum of the weights in the masked-LM loss, as Google's
# get_masked_lm_output does (it keeps an all-padding batch finite).
LOSS_DENOMINATOR_EPSILON = 1e-5

@dataclasses.dataclass
class LossSettings(layer_losses.LayerLossSettings):
  """What the training objective (`Distiller`) reads: the loss settings.

  Fields as the flags of the same names (distillation_flags.py; the layer
  losses' in layer_loss_flags.py).
  """
  truncation_factor: int
  max_predictions_per_seq: int
  temperature: float
  soft_label_weight: float
  hard_label_weight: float
  renormalize_top_k: bool

  @property
  def uses_teacher(self):
    """False for plain masked-LM training: no soft labels, no layer loss."""
    return bool(self.soft_label_weight or self.layer_loss_weights)


# ---------------------------------------------------------------------------
# Losses and metrics.
# ---------------------------------------------------------------------------


def teacher_distribution(probs, temperature=1.0, renormalize=False):
  """The teacher's probabilities used as soft targets.

  Args:
    probs: float32 [..., N], the stored probabilities (N = K top entries, or
      the vocabulary when K = 0).
    temperature: T; for T != 1, probs ** (1/T) renormalised over the N
      entries (softening the teacher as a softmax at temperature T would).
    renormalize: rescale the entries to sum to 1 (implied by T != 1).

  Returns:
    float32 [..., N].
  """
  probs = tf.cast(probs, tf.float32)
  if temperature != 1.0:
    probs = tf.pow(tf.maximum(probs, 0.0), 1.0 / temperature)
    renormalize = True
  if renormalize:
    probs = tf.math.divide_no_nan(
        probs, tf.reduce_sum(probs, axis=-1, keepdims=True))
  return probs


def soft_cross_entropy(logits, teacher_probs, weights, teacher_indices=None,
                       temperature=1.0, renormalize=False):
  """The distillation loss at masked positions, as the original.

  Args:
    logits: float [B, P, V], the student's masked-LM logits.
    teacher_probs: float [B, P, K] (with teacher_indices) or [B, P, V].
    weights: float [B, P], masked_lm_weights.
    teacher_indices: int [B, P, K], vocabulary ids of teacher_probs, or None
      for full distributions.
    temperature: see `teacher_distribution`; the loss is multiplied by T^2.
    renormalize: see `teacher_distribution`.

  Returns:
    (loss, per_position_loss [B, P]): loss = sum(w * l) / (sum(w) + 1e-5).
  """
  logits = tf.cast(logits, tf.float32)
  if temperature != 1.0:
    logits = logits / temperature
  log_probs = tf.nn.log_softmax(logits, axis=-1)
  if teacher_indices is not None:
    log_probs = tf.gather(log_probs, teacher_indices, batch_dims=2)
  targets = teacher_distribution(teacher_probs, temperature, renormalize)
  per_position = -tf.reduce_sum(targets * log_probs, axis=-1)
  if temperature != 1.0:
    per_position *= temperature * temperature
  return weighted_mean(per_position, weights), per_position


def hard_cross_entropy(logits, label_ids, weights):
  """The ordinary masked-LM loss on the true ids (Google's pre-training).

  Returns:
    (loss, per_position_loss [B, P]).
  """
  log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
  per_position = -tf.gather(log_probs, label_ids[..., tf.newaxis],
                            batch_dims=2)[..., 0]
  return weighted_mean(per_position, weights), per_position


def weighted_mean(values, weights):
  """sum(w * v) / (sum(w) + 1e-5), the original's normalisation."""
  weights = tf.cast(weights, tf.float32)
  return (tf.reduce_sum(weights * values) /
          (tf.reduce_sum(weights) + LOSS_DENOMINATOR_EPSILON))


def next_sentence_cross_entropy(logits, labels):
  """Mean cross-entropy of the next-sentence logits [B, 2] on labels [B, 1].

  Returns:
    (loss, per_example_loss [B]).
  """
  labels = tf.reshape(labels, [-1])
  per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=tf.cast(logits, tf.float32))
  return tf.reduce_mean(per_example), per_example


def teacher_top1(teacher_probs, teacher_indices=None):
  """The teacher's most probable word id at each position, int32 [B, P]."""
  best = tf.argmax(teacher_probs, axis=-1, output_type=tf.int32)
  if teacher_indices is None:
    return best
  return tf.gather(teacher_indices, best[..., tf.newaxis],
                   batch_dims=2)[..., 0]


# ---------------------------------------------------------------------------
# Distillation model: student (+ optional online teacher) and losses.
# ---------------------------------------------------------------------------


class Distiller(tf.Module):
  """The student, the optional online teacher, and the training objective.

  With layer-wise losses on (LossSettings.layer_loss_weights; they need the
  online teacher), the objective adds each weighted loss of `layer_losses`,
  and the hidden-state loss between models of different widths trains a
  projection
  (`extra_variables`) along with the student.

  Args:
    settings: LossSettings (a run's distillation.Options are).
    student_config: the student's modeling.BertConfig.
    teacher_labeler: a loaded teacher.TeacherLabeler to run the teacher
      online (in its compute dtype, inference mode), or None to read
      stage-IV labels.
    compute_dtype: the student's compute dtype.

  Raises:
    cli.UserError: layer-loss options that do not fit the two models (see
      `layer_loss_plan`).
  """

  def __init__(self, settings, student_config, teacher_labeler=None,
               compute_dtype=tf.float32):
    super(Distiller, self).__init__(name="distiller")
    self.settings = settings
    self.student = modeling.BertPretrainingModel(student_config,
                                                 compute_dtype=compute_dtype)
    self.teacher = teacher_labeler
    self.layer_losses = None
    if settings.layer_loss_weights:
      if teacher_labeler is None:
        raise cli.UserError("%s needs the online teacher" %
                            next(iter(settings.layer_loss_weights)))
      self.layer_losses = layer_losses.LayerLosses(
          settings, student_config, teacher_labeler.config)

  @property
  def plan(self):
    """The layer losses' `layer_losses.LayerLossPlan`, or None."""
    return self.layer_losses and self.layer_losses.plan

  def student_variables(self):
    """The student's name -> variable map (Google's names)."""
    return self.student.variables_by_name()

  def extra_variables(self):
    """Variables distillation trains besides the student (the projection).

    Returns:
      OrderedDict name -> variable, names under layer_losses.VARIABLE_SCOPE;
      empty unless the hidden-state loss compares different widths.
    """
    if self.layer_losses is None:
      return collections.OrderedDict()
    return self.layer_losses.variables_by_name()

  def trainable_variables_by_name(self):
    """Student variables, then `extra_variables` (what the optimizer trains).
    """
    result = self.student_variables()
    result.update(self.extra_variables())
    return result

  def teacher_targets(self, features):
    """(probs, indices or None): the teacher's soft labels for a batch.

    Read from the stage-IV features, or computed by the online teacher (its
    top-K, or its whole distribution for K = 0), without gradient.
    """
    return self.teacher_outputs(features)[0]

  def teacher_outputs(self, features):
    """The teacher's soft labels and, for layer losses, its internals.

    Returns:
      ((probs, indices or None), internals): see `teacher_targets`;
      internals is the teacher's modeling.EncoderInternals (without
      gradient) when layer-wise losses are on, else None.
    """
    k = self.settings.truncation_factor
    p = self.settings.max_predictions_per_seq
    if not self.settings.uses_teacher:
      return (None, None), None
    if self.teacher is None:
      if k > 0:
        probs = tf.reshape(features[record_format.TRUNCATED_PROBS],
                           [-1, p, k])
        indices = tf.reshape(features[record_format.TOP_K_INDICES],
                             [-1, p, k])
        return (probs, indices), None
      probs = tf.reshape(features[record_format.FULL_PROBS],
                         [-1, p, self.student.config.vocab_size])
      return (probs, None), None
    labels = tf.nest.map_structure(
        lambda t: None if t is None else tf.stop_gradient(t),
        teacher.soft_labels(
            self.teacher.model, features["input_ids"], features["input_mask"],
            features["segment_ids"], features["masked_lm_positions"], k,
            return_internals=self.plan is not None,
            rough_table=self.teacher.rough_table))
    return (labels.probs, labels.indices), labels.internals

  def __call__(self, features, targets, training=False, dropout_seed=None,
               teacher_internals=None):
    """Runs the student on a batch and returns its losses and predictions.

    Args:
      features: a parsed batch (records.parse_fn).
      targets: (probs, indices or None) from `teacher_targets(features)`.
      training: enables dropout.
      dropout_seed: int64 [2], the seed of this step's dropout masks.
      teacher_internals: the teacher's modeling.EncoderInternals from
        `teacher_outputs(features)`; required when layer losses are on.

    Returns:
      dict: loss, masked_lm_loss, soft_loss, hard_loss, next_sentence_loss
      and each enabled layer loss, e.g. hidden_loss (unweighted) (scalars);
      masked_lm_per_position, hard_per_position, mlm_predictions,
      teacher_top1 ([B, P]; None without a teacher); next_sentence_per_example,
      next_sentence_predictions ([B]).
    """
    settings = self.settings
    teacher_probs, teacher_indices = targets
    student_outputs = self.student(
        features["input_ids"], features["input_mask"],
        features["segment_ids"], features["masked_lm_positions"],
        return_internals=self.plan is not None,
        **_dropout_kwargs(training, dropout_seed))
    mlm_logits = student_outputs.masked_lm_logits
    nsp_logits = student_outputs.next_sentence_logits
    weights = features["masked_lm_weights"]
    hard_loss, hard_per_position = hard_cross_entropy(
        mlm_logits, features["masked_lm_ids"], weights)
    if teacher_probs is None:  # plain masked-LM training: no teacher
      soft_loss = tf.zeros([])
      masked_lm_loss = tf.zeros([])
      masked_lm_per_position = tf.zeros_like(hard_per_position)
    else:
      soft_loss, soft_per_position = soft_cross_entropy(
          mlm_logits, teacher_probs, weights, teacher_indices,
          temperature=settings.temperature,
          renormalize=settings.renormalize_top_k)
      # The original's loss for the default weight 1 (x * 1.0 is exact).
      masked_lm_loss = settings.soft_label_weight * soft_loss
      masked_lm_per_position = settings.soft_label_weight * soft_per_position
    if settings.hard_label_weight:
      masked_lm_loss += settings.hard_label_weight * hard_loss
      masked_lm_per_position += (settings.hard_label_weight *
                                 hard_per_position)
    nsp_loss, nsp_per_example = next_sentence_cross_entropy(
        nsp_logits, features["next_sentence_labels"])
    loss = masked_lm_loss + nsp_loss
    extra_losses = {}
    if self.plan is not None:
      if teacher_internals is None:
        raise ValueError("layer-wise losses need the teacher's internals "
                         "(Distiller.teacher_outputs)")
      extra_losses = self.layer_losses(
          student_outputs.internals, teacher_internals, features["input_mask"])
      loss = self.layer_losses.add_weighted(loss, extra_losses)
    return dict(extra_losses, **{
        "loss": loss,
        "masked_lm_loss": masked_lm_loss,
        "soft_loss": soft_loss,
        "hard_loss": hard_loss,
        "next_sentence_loss": nsp_loss,
        "masked_lm_per_position": masked_lm_per_position,
        "hard_per_position": hard_per_position,
        "mlm_predictions": tf.argmax(mlm_logits, axis=-1,
                                     output_type=tf.int32),
        "teacher_top1": (None if teacher_probs is None else
                         teacher_top1(teacher_probs, teacher_indices)),
        "next_sentence_per_example": nsp_per_example,
        "next_sentence_predictions": tf.argmax(nsp_logits, axis=-1,
                                               output_type=tf.int32),
    })


def _dropout_kwargs(training, dropout_seed):
  kwargs = {"training": training}
  if training and dropout_seed is not None:
    kwargs["dropout_seed"] = dropout_seed
  return kwargs
