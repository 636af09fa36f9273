"""Training a BERT student on a teacher's soft labels (stages V and VI).

The one training / evaluation loop shared by
`network_distillation_single_machine_truncated.py` (one process) and
`network_distillation_distributed_truncated.py` (Horovod). A script imports
the flags (distillation_flags.py), reads them into an `Options` with
`stage_flags.options_from_flags(Options)`, and calls `run(options,
distribution)`.

The loss, as in the original scripts (which follow `get_masked_lm_output` of
Google's run_pretraining.py, with the one-hot labels replaced by the
teacher's probabilities):

  at each masked position i with weight w_i (1 real, 0 padding)
    l_i = -sum_k p_teacher[i, k] * log_softmax(student_logits[i])[index[i, k]]
  (k over the teacher's top-K indices, or over the whole vocabulary for K = 0)
  masked_lm_loss     = sum_i w_i * l_i / (sum_i w_i + 1e-5)
  next_sentence_loss = mean over examples of the cross-entropy on the labels
  loss = masked_lm_loss + next_sentence_loss

Options beyond the original (temperature, hard labels, renormalised top-K,
an online teacher, initialisation from teacher layers, XLA, mixed precision)
are all off by default. With the online teacher, layer-wise losses
(layer_losses.py: TinyBERT hidden states and attention scores, MiniLMv2
attention relations) can be added, each with its own weight:

  loss += hidden_loss_weight * hidden_loss
        + attention_loss_weight * attention_loss
        + attention_relation_loss_weight * attention_relation_loss

Distribution: `run` takes a `Distribution` describing the process's place in
a job. The single-machine script passes `Distribution()` (one process); the
Horovod script passes a subclass that averages gradients across ranks and
broadcasts the initial variables. Only the chief (rank 0) writes under
output_dir.

Reproducibility: the data order is a function of (--random_seed, rank) and the
dropout masks of step s are a function of (--random_seed, s, rank), so a run
that is killed and restarted from its newest checkpoint ends with the same
weights as a run that was never interrupted.
"""

import collections
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import time

from absl import logging
import tensorflow as tf

import checkpoints
import cli
import errors
import layer_losses
import modeling
import optimization
import outputs
import record_format
import records
import results
import teacher


# The layer-wise losses: weight option -> name of the loss (in the outputs of
# Distiller and in eval_results.txt).
LAYER_LOSS_WEIGHTS = collections.OrderedDict([
    ("hidden_loss_weight", "hidden_loss"),
    ("attention_loss_weight", "attention_loss"),
    ("attention_relation_loss_weight", "attention_relation_loss")])
# Added to the sum of the weights in the masked-LM loss, as Google's
# get_masked_lm_output does (it keeps an all-padding batch finite).
LOSS_DENOMINATOR_EPSILON = 1e-5

@dataclasses.dataclass
class LossSettings(object):
  """What the training objective (`Distiller`) reads: the loss settings.

  Fields as the flags of the same names (distillation_flags.py).
  """
  truncation_factor: int
  max_predictions_per_seq: int
  temperature: float
  hard_label_weight: float
  renormalize_top_k: bool
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


@dataclasses.dataclass
class Options(LossSettings):
  """The settings of a distillation run: one field per flag of the scripts
  (the loss settings, then the others).

  The flags (distillation_flags.py) are the one source of their meaning and
  defaults; this holds their values, for code that does not read flags.
  """
  bert_config_file: str
  input_file: str
  output_dir: str
  init_checkpoint: str
  max_seq_length: int
  do_train: bool
  do_eval: bool
  train_batch_size: int
  eval_batch_size: int
  learning_rate: float
  num_train_steps: int
  num_warmup_steps: int
  save_checkpoints_steps: int
  iterations_per_loop: int
  max_eval_steps: int
  eval_input_file: str
  teacher_bert_config_file: str
  teacher_init_checkpoint: str
  teacher_compute_dtype: str
  init_from_teacher_layers: str
  use_xla: bool
  use_mixed_precision: bool
  mixed_precision_dtype: str
  log_every_n_steps: int
  random_seed: int
  shuffle_buffer: int
  keep_checkpoint_max: int
  eval_untrained: bool
  check_inputs: bool

  @property
  def online_teacher(self):
    """True when the teacher runs inside the training step."""
    return bool(self.teacher_bert_config_file)

  def loss_settings(self):
    """The `LossSettings` of these options (what `Distiller` reads)."""
    return LossSettings(**{field.name: getattr(self, field.name)
                           for field in dataclasses.fields(LossSettings)})


class Distribution(object):
  """Where this process stands in a training job: one process by default.

  The Horovod script subclasses this. `run` calls, in this order:
    - `broadcast_variables(variables)` once, eagerly, after the chief has
      initialised or restored every variable (model, optimizer slots,
      global_step): the other ranks must end up with the chief's values;
    - `allreduce_gradients(grads)` inside the compiled training step, on the
      list of dense gradients (model variable order) of this rank's batch,
      before clipping and the update: return the average over ranks.
    - `watch_training(global_step)`: a context manager around the training
      loop (a hook, e.g. for a watchdog that ends a job whose global_step
      stops advancing).
  It reads `rank`, `size`, `is_chief`, and `num_shards` /
  `shard_index` (passed to records.training_share: each rank reads a
  disjoint share of the training records, whole files of its own when there
  are at least as many files as ranks).
  """

  def __init__(self, rank=0, size=1):
    self.rank = rank
    self.size = size

  @property
  def is_chief(self):
    """True for the process that writes checkpoints, events and results."""
    return self.rank == 0

  @property
  def num_shards(self):
    """Number of disjoint shares the training records are split into."""
    return self.size

  @property
  def shard_index(self):
    """The share of the training records this process reads."""
    return self.rank

  @tf.autograph.experimental.do_not_convert
  def allreduce_gradients(self, grads):
    """Averages gradients over processes (one process: unchanged)."""
    return grads

  def broadcast_variables(self, variables):
    """Sets `variables` to the chief's values (one process: nothing to do)."""
    del variables

  def watch_training(self, global_step):
    """A context manager around the training loop (one process: nothing)."""
    del global_step
    return contextlib.nullcontext()


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
    settings: LossSettings (Options.loss_settings()).
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
    self.plan = None
    self.projection = None
    if settings.layer_loss_weights:
      if teacher_labeler is None:
        raise cli.UserError("%s needs the online teacher" %
                            next(iter(settings.layer_loss_weights)))
      self.plan = layer_loss_plan(settings, student_config,
                                  teacher_labeler.config)
      if self.plan.project_hidden:
        self.projection = layer_losses.HiddenProjection(
            student_config.hidden_size, teacher_labeler.config.hidden_size,
            student_config.initializer_range)

  def student_variables(self):
    """The student's name -> variable map (Google's names)."""
    return self.student.variables_by_name()

  def extra_variables(self):
    """Variables distillation trains besides the student (the projection).

    Returns:
      OrderedDict name -> variable, names under layer_losses.VARIABLE_SCOPE;
      empty unless the hidden-state loss compares different widths.
    """
    if self.projection is None:
      return collections.OrderedDict()
    return self.projection.variables_by_name()

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
    outputs = teacher.soft_labels(
        self.teacher.model, features["input_ids"], features["input_mask"],
        features["segment_ids"], features["masked_lm_positions"], k,
        return_internals=self.plan is not None)
    probs, indices = outputs[:2]
    if indices is not None:
      indices = tf.stop_gradient(indices)
    internals = None
    if self.plan is not None:
      internals = tf.nest.map_structure(tf.stop_gradient, outputs[2])
    return (tf.stop_gradient(probs), indices), internals

  def compute_layer_losses(self, student_internals, teacher_internals,
                           input_mask):
    """The enabled layer-wise losses (unweighted), name -> float32 scalar.

    Args:
      student_internals, teacher_internals: modeling.EncoderInternals.
      input_mask: [B, S].
    """
    settings, plan = self.settings, self.plan
    losses = collections.OrderedDict()
    if settings.hidden_loss_weight:
      # The embeddings' output with the teacher's, then the mapped layers.
      teacher_states = [teacher_internals.hidden_states[0]] + [
          teacher_internals.hidden_states[i + 1] for i in plan.layer_map]
      losses["hidden_loss"] = layer_losses.hidden_state_loss(
          student_internals.hidden_states, teacher_states, input_mask,
          self.projection)
    if settings.attention_loss_weight:
      losses["attention_loss"] = layer_losses.attention_score_loss(
          student_internals.attention_scores,
          [teacher_internals.attention_scores[i] for i in plan.layer_map],
          input_mask)
    if settings.attention_relation_loss_weight:
      t = plan.relation_teacher_layer
      losses["attention_relation_loss"] = (
          layer_losses.attention_relation_loss(
              (student_internals.queries[-1], student_internals.keys[-1],
               student_internals.values[-1]),
              (teacher_internals.queries[t], teacher_internals.keys[t],
               teacher_internals.values[t]),
              input_mask, plan.relation_heads))
    return losses

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
      teacher_top1 ([B, P]); next_sentence_per_example,
      next_sentence_predictions ([B]).
    """
    settings = self.settings
    teacher_probs, teacher_indices = targets
    student_outputs = self.student(
        features["input_ids"], features["input_mask"],
        features["segment_ids"], features["masked_lm_positions"],
        return_internals=self.plan is not None,
        **_dropout_kwargs(training, dropout_seed))
    mlm_logits, nsp_logits = student_outputs[:2]
    weights = features["masked_lm_weights"]
    soft_loss, soft_per_position = soft_cross_entropy(
        mlm_logits, teacher_probs, weights, teacher_indices,
        temperature=settings.temperature,
        renormalize=settings.renormalize_top_k)
    hard_loss, hard_per_position = hard_cross_entropy(
        mlm_logits, features["masked_lm_ids"], weights)
    masked_lm_loss = soft_loss
    masked_lm_per_position = soft_per_position
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
      extra_losses = self.compute_layer_losses(
          student_outputs[2], teacher_internals, features["input_mask"])
      for option, name in LAYER_LOSS_WEIGHTS.items():
        if name in extra_losses:
          loss += getattr(settings, option) * extra_losses[name]
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
        "teacher_top1": teacher_top1(teacher_probs, teacher_indices),
        "next_sentence_per_example": nsp_per_example,
        "next_sentence_predictions": tf.argmax(nsp_logits, axis=-1,
                                               output_type=tf.int32),
    })


def _dropout_kwargs(training, dropout_seed):
  kwargs = {"training": training}
  if training and dropout_seed is not None:
    kwargs["dropout_seed"] = dropout_seed
  return kwargs


# ---------------------------------------------------------------------------
# Checking the options and the inputs.
# ---------------------------------------------------------------------------


def check_options(opts):
  """Raises cli.UserError (one line naming the flag) on bad settings."""
  if not opts.do_train and not opts.do_eval:
    raise cli.UserError(
        "At least one of `do_train` or `do_eval` must be True.")
  for name in ("bert_config_file", "input_file", "output_dir"):
    if not getattr(opts, name):
      raise cli.UserError("--%s is required" % name)
  positive = ["max_seq_length", "max_predictions_per_seq",
              "save_checkpoints_steps", "iterations_per_loop",
              "log_every_n_steps", "keep_checkpoint_max"]
  if opts.do_train:
    positive += ["train_batch_size", "num_train_steps", "shuffle_buffer"]
  if opts.do_eval:
    positive += ["eval_batch_size", "max_eval_steps"]
  for name in positive:
    if getattr(opts, name) <= 0:
      raise cli.UserError("--%s must be positive, got %s" %
                          (name, getattr(opts, name)))
  for name in ("truncation_factor", "num_warmup_steps", "hard_label_weight",
               "hidden_loss_weight", "attention_loss_weight",
               "attention_relation_loss_weight", "attention_relation_heads"):
    if getattr(opts, name) < 0:
      raise cli.UserError("--%s must not be negative, got %s" %
                          (name, getattr(opts, name)))
  if not opts.temperature > 0:
    raise cli.UserError("--temperature must be positive, got %s" %
                        opts.temperature)
  if opts.teacher_bert_config_file and not opts.teacher_init_checkpoint:
    raise cli.UserError("--teacher_bert_config_file (online teacher) needs "
                        "--teacher_init_checkpoint")
  if opts.init_from_teacher_layers and not opts.teacher_init_checkpoint:
    raise cli.UserError("--init_from_teacher_layers needs "
                        "--teacher_init_checkpoint")
  if (opts.teacher_init_checkpoint and not opts.teacher_bert_config_file and
      not opts.init_from_teacher_layers):
    raise cli.UserError(
        "--teacher_init_checkpoint is used only with "
        "--teacher_bert_config_file (online teacher) or "
        "--init_from_teacher_layers")
  if opts.teacher_compute_dtype != "float32" and not opts.online_teacher:
    raise cli.UserError(
        "--teacher_compute_dtype applies to the online teacher only (give "
        "--teacher_bert_config_file); for stored labels, use "
        "produce_teacher_labels.py --compute_dtype")
  if opts.init_from_teacher_layers and opts.init_checkpoint:
    raise cli.UserError("give either --init_checkpoint or "
                        "--init_from_teacher_layers, not both")
  for flag in opts.layer_loss_weights:
    if not opts.online_teacher:
      raise cli.UserError(
          "%s needs the online teacher (--teacher_bert_config_file and "
          "--teacher_init_checkpoint, with stage-III records): stage-IV "
          "records hold only the teacher's output distribution" % flag)
  if opts.teacher_layer_map and not (opts.hidden_loss_weight or
                                     opts.attention_loss_weight):
    raise cli.UserError("--teacher_layer_map is used only with "
                        "--hidden_loss_weight or --attention_loss_weight")

  if opts.do_train and opts.num_warmup_steps > opts.num_train_steps:
    logging.warning(
        "--num_warmup_steps=%d is more than --num_train_steps=%d: the "
        "learning rate never reaches --learning_rate", opts.num_warmup_steps,
        opts.num_train_steps)


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


def layer_loss_plan(opts, student_config, teacher_config):
  """Checks the layer-loss flags against both models; returns a plan.

  Args:
    opts: LossSettings.

  Raises:
    cli.UserError: one line naming the flag: a layer map of the wrong length
      or naming layers that do not exist, attention loss with different
      head counts, relation heads that do not divide a hidden size, a
      relation layer the teacher lacks.
  """
  num_student = student_config.num_hidden_layers
  num_teacher = teacher_config.num_hidden_layers
  spec = opts.teacher_layer_map
  if spec:
    flag = "--teacher_layer_map=%s" % spec
    layer_map = parse_layer_indices(spec, num_student, "--teacher_layer_map")
  else:
    flag = "--teacher_layer_map (default: uniform)"
    layer_map = layer_losses.uniform_layer_map(num_student, num_teacher)
  bad = [i for i in layer_map if not 0 <= i < num_teacher]
  if bad and (opts.hidden_loss_weight or opts.attention_loss_weight):
    raise cli.UserError(
        "%s: teacher layer %d does not exist (the teacher has %d layers, "
        "0 to %d; the student %d)" % (flag, bad[0], num_teacher,
                                      num_teacher - 1, num_student))
  if (opts.attention_loss_weight and student_config.num_attention_heads !=
      teacher_config.num_attention_heads):
    raise cli.UserError(
        "--attention_loss_weight: the student has %d attention heads, the "
        "teacher %d; this loss compares head by head (use "
        "--attention_relation_loss_weight, which works with any head count)"
        % (student_config.num_attention_heads,
           teacher_config.num_attention_heads))
  relation_layer = opts.attention_relation_teacher_layer
  if relation_layer < 0:
    relation_layer += num_teacher
  relation_heads = (opts.attention_relation_heads or
                    teacher_config.num_attention_heads)
  if opts.attention_relation_loss_weight:
    if not 0 <= relation_layer < num_teacher:
      raise cli.UserError(
          "--attention_relation_teacher_layer=%d: the teacher has %d layers"
          % (opts.attention_relation_teacher_layer, num_teacher))
    if not num_student:
      raise cli.UserError("--attention_relation_loss_weight: the student "
                          "has no Transformer layer")
    widths = (student_config.hidden_size, teacher_config.hidden_size)
    if any(w % relation_heads for w in widths):
      raise cli.UserError(
          "--attention_relation_heads=%d must divide both hidden sizes "
          "(student %d, teacher %d)" % ((relation_heads,) + widths))
  return LayerLossPlan(
      layer_map=layer_map, relation_teacher_layer=relation_layer,
      relation_heads=relation_heads,
      project_hidden=bool(opts.hidden_loss_weight) and (
          student_config.hidden_size != teacher_config.hidden_size))


def check_something_to_evaluate(opts):
  """Eval only: output_dir must hold a checkpoint, or a start be given.

  Raises:
    cli.UserError: evaluation would score a randomly initialised model
      (a mistyped --output_dir, most likely).
  """
  if (opts.do_train or opts.init_checkpoint or opts.init_from_teacher_layers
      or opts.eval_untrained):
    return
  if checkpoints.latest_checkpoint(opts.output_dir) is None:
    raise cli.UserError(
        "--do_train=false: nothing to evaluate: --output_dir %s holds no "
        "checkpoint and no --init_checkpoint is given (a mistyped "
        "--output_dir?); --eval_untrained=true evaluates the random "
        "initialisation on purpose" % opts.output_dir)


def record_lengths(opts, vocab_size):
  """Feature name -> length of the records this run reads."""
  if opts.online_teacher:
    return records.stage3_lengths(opts.max_seq_length,
                                  opts.max_predictions_per_seq)
  return records.stage4_lengths(opts.max_seq_length,
                                opts.max_predictions_per_seq,
                                opts.truncation_factor, vocab_size)


def validate_inputs(paths, lengths, opts):
  """records.validate_files with the flags named in errors.

  Stage-III records given without an online teacher get a hint.
  """
  flag_values = {"max_seq_length": opts.max_seq_length,
                 "max_predictions_per_seq": opts.max_predictions_per_seq,
                 "truncation_factor": opts.truncation_factor}
  try:
    return records.validate_files(paths, lengths, flag_values)
  except errors.StageThreeRecordsError as exc:
    raise cli.UserError(
        "%s (or give --teacher_bert_config_file and --teacher_init_checkpoint "
        "to run the teacher online)" % exc)
  except errors.RecordMismatchError as exc:
    raise cli.UserError(str(exc))


def check_eval_files(eval_files):
  """Reads every eval record (records.check_records) before training."""
  start = time.time()
  total = sum(records.check_records(path) for path in eval_files)
  logging.info("Checked the %d records of the eval files in %.1f s "
               "(--check_inputs)", total, time.time() - start)


def parse_layer_indices(spec, num_student_layers,
                        flag_name="--init_from_teacher_layers"):
  """Parses a flag's comma list into one teacher layer index per layer."""
  try:
    indices = [int(x) for x in spec.split(",") if x.strip()]
  except ValueError:
    raise cli.UserError("%s=%s: expected comma-separated layer indices" %
                        (flag_name, spec))
  if len(indices) != num_student_layers:
    raise cli.UserError(
        "%s=%s: %d indices given, the student has %d layers (one teacher "
        "layer index per student layer)" % (flag_name, spec, len(indices),
                                            num_student_layers))
  if indices and min(indices) < 0:
    raise cli.UserError("%s=%s: negative layer index" % (flag_name, spec))
  return indices


# ---------------------------------------------------------------------------
# Initialisation and checkpoints.
# ---------------------------------------------------------------------------


def init_from_teacher_layers(student_variables, spec, checkpoint,
                             num_student_layers):
  """Copies chosen teacher layers, embeddings and heads into the student.

  See `checkpoints.init_from_teacher_layers`; `spec` is the value of
  --init_from_teacher_layers.

  Raises:
    cli.UserError: bad indices, a layer the teacher lacks, or a shape
      mismatch (sizes must match).
  """
  indices = parse_layer_indices(spec, num_student_layers)
  with cli.blame_flag("--teacher_init_checkpoint"):
    checkpoint = checkpoints.resolve_checkpoint(checkpoint)
  with cli.blame_flag("--init_from_teacher_layers=%s" % spec):
    checkpoints.init_from_teacher_layers(student_variables, indices,
                                         checkpoint)


class DynamicLossScale(tf.Module):
  """Loss scaling for float16: halve on overflow, double after 2000 good steps.

  Its two variables are saved in the checkpoints (as `loss_scale` and
  `loss_scale_good_steps`) so that a resumed run continues exactly.
  """

  def __init__(self, initial_scale=2.0**15, growth_interval=2000):
    super(DynamicLossScale, self).__init__(name="loss_scale")
    self.scale = tf.Variable(initial_scale, dtype=tf.float32,
                             trainable=False, name="loss_scale")
    self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                  name="loss_scale_good_steps")
    self.growth_interval = growth_interval

  def variables_by_name(self):
    """Name -> variable, for checkpoints."""
    return collections.OrderedDict([("loss_scale", self.scale),
                                    ("loss_scale_good_steps",
                                     self.good_steps)])

  def update(self, grads_are_finite):
    """Adjusts the scale after a step; returns nothing."""

    def _finite():
      grow = self.good_steps + 1 >= self.growth_interval
      self.scale.assign(tf.where(grow, self.scale * 2.0, self.scale))
      self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64),
                                      self.good_steps + 1))

    def _overflow():
      self.scale.assign(tf.maximum(self.scale / 2.0, 1.0))
      self.good_steps.assign(0)

    tf.cond(grads_are_finite, _finite, _overflow)


# ---------------------------------------------------------------------------
# Training and evaluation.
# ---------------------------------------------------------------------------


def dropout_seed_for_step(random_seed, step, distribution):
  """The stateless seed of the dropout masks of `step` on this rank."""
  step = tf.cast(step, tf.int64)
  return tf.stack([tf.constant(random_seed, tf.int64),
                   step * distribution.size + distribution.rank])


class Trainer(object):
  """Builds the compiled training loop of a Distiller.

  One call of `train_loop(iterator, num_steps)` runs `num_steps` steps in a
  single tf.function (a device loop, like the original's iterations_per_loop
  on TPUs) and returns (mean loss of those steps, loss of the last one).
  """

  def __init__(self, distiller, optimizer, distribution, opts,
               loss_scale=None):
    self.distiller = distiller
    self.optimizer = optimizer
    self.distribution = distribution
    self.opts = opts
    self.loss_scale = loss_scale
    self.model_variables = distiller.trainable_variables_by_name()
    self._variables = list(self.model_variables.values())
    forward_backward = self._forward_backward
    if opts.use_xla:
      forward_backward = tf.function(forward_backward, jit_compile=True)
    self._compiled_forward_backward = forward_backward
    # stop_requested is set (from a signal's helper thread) to end the loop
    # after the current step; `stopped` says that a loop ended so, on every
    # rank. See `train`.
    self.stop_requested = tf.Variable(False, trainable=False,
                                      name="stop_requested")
    self.stopped = tf.Variable(False, trainable=False, name="stopped")
    # AutoGraph turns the loop below into a graph loop; the code it calls
    # (the model, the loss, the optimizer, the gradient averaging) is marked
    # do_not_convert and traced as written: it has no tensor-dependent Python
    # control flow, and converting it cost about 1.5 s at every run's start.
    self.train_loop = tf.function(self._train_loop)

  @tf.autograph.experimental.do_not_convert
  def _forward_backward(self, features, step):
    """Loss and dense gradients of one batch (XLA-compilable: no collectives).
    """
    targets, teacher_internals = self.distiller.teacher_outputs(features)
    seed = dropout_seed_for_step(self.opts.random_seed, step,
                                 self.distribution)
    with tf.GradientTape() as tape:
      outputs = self.distiller(features, targets, training=True,
                               dropout_seed=seed,
                               teacher_internals=teacher_internals)
      loss = outputs["loss"]
      scaled_loss = loss
      if self.loss_scale is not None:
        scaled_loss = loss * self.loss_scale.scale
    grads = tape.gradient(scaled_loss, self._variables)
    # Dense gradients (the word embeddings' one sums a gather's slices and
    # the output projection's matrix anyway), zeros for unused variables.
    grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
             for g, v in zip(grads, self._variables)]
    if self.loss_scale is not None:
      grads = [g / self.loss_scale.scale for g in grads]
    return loss, grads

  @tf.autograph.experimental.do_not_convert
  def _apply(self, grads):
    if self.loss_scale is None:
      self.optimizer.apply_gradients(grads, self.model_variables)
      return
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                            for g in grads])

    def _step():
      self.optimizer.apply_gradients(grads, self.model_variables)
      return tf.constant(True)

    def _skip():
      # The step still counts, so that data and dropout stay aligned with
      # global_step (exact resume).
      self.optimizer.global_step.assign_add(1)
      return tf.constant(False)

    tf.cond(finite, _step, _skip)
    self.loss_scale.update(finite)

  def _train_loop(self, iterator, num_steps):
    loss_sum = tf.constant(0.0)
    loss = tf.constant(0.0)
    done = tf.constant(0)
    for _ in tf.range(num_steps):
      features = next(iterator)
      loss, grads = self._compiled_forward_backward(
          features, self.optimizer.global_step.read_value())
      # The stop request travels with the gradients: every rank ends the
      # loop after the same step when any rank was asked to stop.
      reduced = self.distribution.allreduce_gradients(
          list(grads) + [tf.cast(self.stop_requested, tf.float32)])
      self._apply(reduced[:-1])
      loss_sum += loss
      done += 1
      if reduced[-1] > 0:
        self.stopped.assign(True)
        break
    return loss_sum / tf.cast(tf.maximum(done, 1), tf.float32), loss


def _next_boundary(step, opts):
  """The step at which the current device loop must return to Python."""
  candidates = [opts.num_train_steps]
  for every in (opts.iterations_per_loop, opts.log_every_n_steps,
                opts.save_checkpoints_steps):
    candidates.append((step // every + 1) * every)
  return min(candidates)


def train(distiller, optimizer, distribution, opts, share, lengths,
          saver=None, loss_scale=None, summary_writer=None):
  """Runs training from the optimizer's global_step to num_train_steps.

  Args:
    distiller: the Distiller.
    optimizer: an optimization.AdamWeightDecayOptimizer built for the student.
    distribution: the Distribution.
    opts: Options.
    share: this process's records.TrainingShare of the training files
      (validated).
    lengths: their feature lengths.
    saver: a checkpoints.CheckpointSaver (chief), or None.
    loss_scale: a DynamicLossScale for float16, or None.
    summary_writer: a tf.summary writer (chief), or None.
  """
  step = int(optimizer.global_step.numpy())
  if step >= opts.num_train_steps:
    logging.info("Skipping training: global_step %d >= --num_train_steps %d",
                 step, opts.num_train_steps)
    return
  dataset = records.make_dataset(
      share.files, lengths, opts.train_batch_size, is_training=True,
      num_shards=share.record_shards,
      shard_index=share.record_shard_index,
      shuffle_buffer=opts.shuffle_buffer, seed=opts.random_seed,
      skip_batches=step)
  iterator = iter(dataset)
  trainer = Trainer(distiller, optimizer, distribution, opts, loss_scale)
  examples_per_step = opts.train_batch_size * distribution.size
  logging.info("Training from step %d to %d, %d examples per step%s", step,
               opts.num_train_steps, examples_per_step,
               " (resumed)" if step else "")
  progress = cli.StepProgress(step, opts.num_train_steps, examples_per_step)
  # Ctrl-C or SIGTERM: the current step is finished, a checkpoint written,
  # and the run ends with one line saying where it is.
  stop = cli.StopOnSignal(lambda _: trainer.stop_requested.assign(True))
  stopped = False
  with distribution.watch_training(optimizer.global_step), stop:
    while step < opts.num_train_steps and not stopped:
      boundary = _next_boundary(step, opts)
      loop_start = time.time()
      mean_loss, _ = trainer.train_loop(
          iterator, tf.constant(boundary - step, tf.int32))
      mean_loss = float(mean_loss.numpy())
      if not math.isfinite(mean_loss) and loss_scale is None:
        raise cli.UserError(
            "training loss is %s at step %d; lower --learning_rate" %
            (mean_loss, boundary))
      elapsed = time.time() - loop_start
      stopped = bool(trainer.stopped.numpy())
      new_step = int(optimizer.global_step.numpy())
      loop_steps = new_step - step
      step = new_step
      if not distribution.is_chief:
        continue
      learning_rate = float(optimizer.learning_rate_at(step).numpy())
      examples_per_sec = loop_steps * examples_per_step / max(elapsed, 1e-9)
      if summary_writer is not None:
        results.write_scalars(summary_writer,
                              {"loss": mean_loss,
                               "learning_rate": learning_rate,
                               "examples_per_sec": examples_per_sec}, step)
      if step % opts.log_every_n_steps == 0 or step == opts.num_train_steps:
        progress.log(step, mean_loss, learning_rate)
      if saver is not None and (step % opts.save_checkpoints_steps == 0 or
                                step == opts.num_train_steps or stopped):
        saver.save(step)
  if summary_writer is not None:
    summary_writer.flush()
  if stopped:
    signum = stop.signum or signal.SIGINT  # another rank's signal
    raise cli.Interrupted(
        "stopped by %s after step %d; checkpoint %s-%d saved in %s: run the "
        "same command to resume from it" % (
            signal.Signals(signum).name, step,
            checkpoints.CHECKPOINT_BASENAME, step, opts.output_dir), signum)
  progress.done(step)


def evaluate(distiller, opts, eval_files, lengths):
  """Evaluates the student on up to max_eval_steps batches.

  Returns:
    dict: masked_lm_accuracy, masked_lm_loss (the masked-LM part of the
    training loss), masked_lm_hard_label_loss (cross-entropy on the true ids),
    next_sentence_accuracy, next_sentence_loss, loss,
    teacher_top1_agreement (student argmax == teacher's top word),
    eval_examples; and each enabled layer-wise loss (unweighted, e.g.
    hidden_loss), averaged over the eval examples.
  """
  dataset = records.make_dataset(eval_files, lengths, opts.eval_batch_size,
                                 is_training=False)
  dataset = dataset.take(opts.max_eval_steps)

  layer_loss_names = [LAYER_LOSS_WEIGHTS[option[2:]]
                      for option in opts.layer_loss_weights]

  def _eval_step(features):
    targets, teacher_internals = distiller.teacher_outputs(features)
    outputs = distiller(features, targets, training=False,
                        teacher_internals=teacher_internals)
    weights = tf.cast(features["masked_lm_weights"], tf.float32)
    labels = tf.reshape(features["next_sentence_labels"], [-1])
    examples = tf.cast(tf.shape(labels)[0], tf.float32)

    def wsum(values):
      return tf.reduce_sum(weights * tf.cast(values, tf.float32))

    # Batch means of the layer losses, weighted by the batch's examples.
    layer_sums = {name: outputs[name] * examples for name in layer_loss_names}
    return dict(layer_sums, **{
        "weight": tf.reduce_sum(weights),
        "mlm_correct": wsum(tf.equal(outputs["mlm_predictions"],
                                     features["masked_lm_ids"])),
        "mlm_loss": wsum(outputs["masked_lm_per_position"]),
        "hard_loss": wsum(outputs["hard_per_position"]),
        "agreement": wsum(tf.equal(outputs["mlm_predictions"],
                                   outputs["teacher_top1"])),
        "nsp_correct": tf.reduce_sum(tf.cast(
            tf.equal(outputs["next_sentence_predictions"], labels),
            tf.float32)),
        "nsp_loss": tf.reduce_sum(outputs["next_sentence_per_example"]),
        "examples": examples,
    })

  eval_step = tf.function(_eval_step, jit_compile=opts.use_xla or None,
                          reduce_retracing=True, autograph=False)
  totals = collections.defaultdict(float)
  progress = cli.Progress("eval", unit="examples")
  for features in dataset:
    for key, value in eval_step(features).items():
      totals[key] += float(value.numpy())
    progress.update(int(totals["examples"]) - progress.count)
  progress.done()
  if not totals["examples"]:
    raise cli.UserError("no evaluation records")
  weight = max(totals["weight"], 1e-12)
  results = collections.OrderedDict()
  results["masked_lm_accuracy"] = totals["mlm_correct"] / weight
  results["masked_lm_loss"] = totals["mlm_loss"] / weight
  results["masked_lm_hard_label_loss"] = totals["hard_loss"] / weight
  results["next_sentence_accuracy"] = (totals["nsp_correct"] /
                                       totals["examples"])
  results["next_sentence_loss"] = totals["nsp_loss"] / totals["examples"]
  results["loss"] = results["masked_lm_loss"] + results["next_sentence_loss"]
  results["teacher_top1_agreement"] = totals["agreement"] / weight
  for name in layer_loss_names:
    results[name] = totals[name] / totals["examples"]
  results["eval_examples"] = int(totals["examples"])
  return results


# ---------------------------------------------------------------------------
# The whole run.
# ---------------------------------------------------------------------------


def compute_dtype(opts):
  """The dtype the models compute in."""
  if opts.use_mixed_precision:
    return tf.as_dtype(opts.mixed_precision_dtype)
  return tf.float32


def run(opts, distribution=None):
  """Trains and/or evaluates a student as the options say.

  Args:
    opts: Options (the flags' values: distillation_flags.py).
    distribution: a Distribution (default: one process).

  Returns:
    The eval results dict when opts.do_eval (on the chief), else None.

  Raises:
    cli.UserError: bad flags or inputs (one line).
  """
  distribution = distribution or Distribution()
  check_options(opts)
  student_config = cli.load_bert_config(opts.bert_config_file,
                                        "--bert_config_file",
                                        opts.max_seq_length)
  teacher_config = None
  if opts.online_teacher:
    teacher_config = cli.load_bert_config(opts.teacher_bert_config_file,
                                          "--teacher_bert_config_file",
                                          opts.max_seq_length)
    if teacher_config.vocab_size != student_config.vocab_size:
      raise cli.UserError(
          "--teacher_bert_config_file: vocab_size %d differs from the "
          "student's %d (--bert_config_file)" %
          (teacher_config.vocab_size, student_config.vocab_size))
    teacher.check_truncation_factor(opts.truncation_factor,
                                    teacher_config.vocab_size)
  if opts.init_from_teacher_layers:
    parse_layer_indices(opts.init_from_teacher_layers,
                        student_config.num_hidden_layers)
  if opts.layer_loss_weights:
    layer_loss_plan(opts.loss_settings(), student_config, teacher_config)

  lengths = record_lengths(opts, student_config.vocab_size)
  share = eval_files = None
  if opts.do_train:
    # Only this process's share of the files is opened (all of them when
    # the processes split records instead of files).
    share = records.training_share(
        cli.resolve_input_files(opts.input_file, "--input_file"),
        distribution.num_shards, distribution.shard_index)
    share = share._replace(files=validate_inputs(share.files, lengths, opts))
    if distribution.num_shards > 1:
      logging.info(
          "Rank %d trains on %s", distribution.shard_index,
          "its own %d file(s)" % len(share.files) if share.record_shards == 1
          else "records i %% %d == %d of all %d file(s)" % (
              share.record_shards, share.record_shard_index,
              len(share.files)))
  if opts.do_eval and distribution.is_chief:
    if opts.eval_input_file:
      eval_files = validate_inputs(
          cli.resolve_input_files(opts.eval_input_file, "--eval_input_file"),
          lengths, opts)
    elif (share is not None and
          share.record_shards == distribution.num_shards):
      eval_files = share.files
    else:
      eval_files = validate_inputs(
          cli.resolve_input_files(opts.input_file, "--input_file"), lengths,
          opts)
  # Ids beyond the student's vocabulary would fail only when a batch holds
  # one (and read zeros on a GPU): the first records of each file are
  # checked now, the teacher's top_k_indices included.
  records.check_word_ids(
      sorted(set((share.files if share else []) + (eval_files or []))),
      student_config.vocab_size, "the student, --bert_config_file")
  if distribution.is_chief:
    check_something_to_evaluate(opts)
    if opts.check_inputs and opts.do_train and eval_files:
      check_eval_files(eval_files)
    cli.ensure_writable_dir(opts.output_dir)
  # One training run at a time per output_dir (an eval-only run may read
  # the checkpoints of a training run).
  lock = (cli.DirectoryLock(opts.output_dir)
          if distribution.is_chief and opts.do_train else
          contextlib.nullcontext())
  with lock:
    return _build_and_run(opts, distribution, student_config,
                          teacher_config, lengths, share, eval_files)


def _build_and_run(opts, distribution, student_config, teacher_config,
                   lengths, share, eval_files):
  """The second half of `run`: build the models, train, evaluate."""
  dtype = compute_dtype(opts)
  labeler = None
  if opts.online_teacher:
    labeler = teacher.TeacherLabeler(teacher_config,
                                     opts.teacher_init_checkpoint,
                                     opts.truncation_factor,
                                     flag_name="--teacher_init_checkpoint",
                                     compute_dtype=opts.teacher_compute_dtype)
  # The student's initialisation depends on the seed alone.
  tf.random.set_seed(opts.random_seed)
  distiller = Distiller(opts.loss_settings(), student_config, labeler, dtype)
  optimizer = optimization.create_optimizer(
      opts.learning_rate, opts.num_train_steps, opts.num_warmup_steps)
  model_variables = distiller.student_variables()
  optimizer.build(distiller.trainable_variables_by_name())
  loss_scale = None
  if opts.use_mixed_precision and dtype == tf.float16:
    loss_scale = DynamicLossScale()
  # The student's training state (model.ckpt-<step>: Google's names, slots,
  # global_step) and what distillation adds (projections and their slots,
  # in the companion checkpoint model.ckpt-<step>.distillation).
  all_variables, extra_state = split_extra_state(
      list(model_variables.items()) +
      list(distiller.extra_variables().items()) +
      list(optimizer.variables_by_name().items()) +
      (list(loss_scale.variables_by_name().items()) if loss_scale else []))

  if distribution.is_chief:
    resuming = initialize(opts, student_config, model_variables,
                          all_variables, optimizer, extra_state)
    if opts.do_train:
      check_run_settings(opts, distribution, resuming)
  distribution.broadcast_variables(list(all_variables.values()) +
                                   list(extra_state.values()))

  summary_writer = saver = None
  if distribution.is_chief:
    summary_writer = tf.summary.create_file_writer(opts.output_dir)
    saver = checkpoints.CheckpointSaver(opts.output_dir, all_variables,
                                        opts.keep_checkpoint_max, extra_state)
  if opts.do_train:
    try:
      train(distiller, optimizer, distribution, opts, share, lengths,
            saver=saver, loss_scale=loss_scale,
            summary_writer=summary_writer)
    except tf.errors.DataLossError as exc:
      logging.info("A training file is damaged; looking for it")
      raise records.find_damaged_file(share.files, exc)
  if not (opts.do_eval and distribution.is_chief):
    return None
  try:
    metrics = evaluate(distiller, opts, eval_files, lengths)
  except tf.errors.DataLossError as exc:
    raise records.find_damaged_file(eval_files, exc)
  metrics["global_step"] = int(optimizer.global_step.numpy())
  results.write_eval_results(opts.output_dir, metrics)
  eval_writer = tf.summary.create_file_writer(
      os.path.join(opts.output_dir, "eval"))
  results.write_scalars(eval_writer,
                        {k: v for k, v in metrics.items()
                         if k not in ("global_step", "eval_examples")},
                        metrics["global_step"])
  eval_writer.flush()
  return metrics


def split_extra_state(named_variables):
  """(student state, extra state): two OrderedDicts of (name, variable).

  The extra state holds the variables under layer_losses.VARIABLE_SCOPE
  (projections) and their optimizer slots; the student state all others.
  """
  scope = layer_losses.VARIABLE_SCOPE + "/"
  student, extra = collections.OrderedDict(), collections.OrderedDict()
  for name, var in named_variables:
    (extra if name.startswith(scope) else student)[name] = var
  return student, extra


# Checkpoint variables that are not the model's: optimizer slots and state.
_TRAINING_STATE = re.compile(r"(/adam_[mv]$|^global_step$|^loss_scale)")


def check_same_model(checkpoint, model_variables):
  """Raises unless `checkpoint` holds exactly the student's variables.

  Resuming into a model with fewer layers would load a subset and write a
  different model into the same series of checkpoints; with more layers,
  some variables would be missing.

  Raises:
    cli.UserError: one line naming the difference, both ways.
  """
  saved = set(name for name in checkpoints.variable_names(checkpoint)
              if not _TRAINING_STATE.search(name))
  model = set(model_variables)
  extra, lacking = sorted(saved - model), sorted(model - saved)
  if not (extra or lacking):
    return
  parts = []
  if extra:
    parts.append("%d variables the student of --bert_config_file lacks "
                 "(e.g. %s)" % (len(extra), ", ".join(extra[:2])))
  if lacking:
    parts.append("none of %d variables the student has (e.g. %s)" %
                 (len(lacking), ", ".join(lacking[:2])))
  raise cli.UserError(
      "--output_dir: checkpoint %s was written by another model: it holds %s."
      " Resume with the --bert_config_file it was trained with, or give a "
      "new --output_dir" % (checkpoint, " and ".join(parts)))


# The settings of a training run, stored in output_dir to compare on resume.
RUN_SETTINGS_FILE = "run_settings.json"
_RESUME_SETTINGS = ("train_batch_size", "learning_rate", "num_train_steps",
                    "num_warmup_steps", "processes")


def check_run_settings(opts, distribution, resuming):
  """Warns about settings that changed since the run in output_dir began.

  Writes the run's settings to output_dir/run_settings.json (chief only).
  Resuming with another batch size or learning rate continues the series
  of checkpoints with a different optimisation: allowed, but said.
  """
  path = os.path.join(opts.output_dir, RUN_SETTINGS_FILE)
  settings = {"train_batch_size": opts.train_batch_size,
              "learning_rate": opts.learning_rate,
              "num_train_steps": opts.num_train_steps,
              "num_warmup_steps": opts.num_warmup_steps,
              "processes": distribution.size}
  if resuming and tf.io.gfile.exists(path):
    try:
      with tf.io.gfile.GFile(path) as f:
        before = json.load(f)
    except ValueError:
      before = {}
    changed = ["%s %s -> %s" % (key, before[key], settings[key])
               for key in _RESUME_SETTINGS
               if key in before and before[key] != settings[key]]
    if changed:
      logging.warning("Resuming %s with other settings than it was started "
                      "with: %s", opts.output_dir, ", ".join(changed))
  with outputs.atomic_output(path) as tmp:
    with tf.io.gfile.GFile(tmp, "w") as f:
      json.dump(settings, f, indent=2, sort_keys=True)
      f.write("\n")


def initialize(opts, student_config, model_variables, all_variables,
               optimizer, extra_state=None):
  """Restores the newest checkpoint in output_dir, or initialises the model.

  Order: resume from output_dir (model, optimizer slots, global_step, loss
  scale, and the extra state from the companion checkpoint); else
  --init_checkpoint; else --init_from_teacher_layers; else the random
  initialisation (seeded by --random_seed). Projections not found in a
  checkpoint keep their seeded initialisation.

  Returns:
    True when resuming from a checkpoint in output_dir.
  """
  latest = checkpoints.latest_checkpoint(opts.output_dir)
  if latest:
    wanted = all_variables if opts.do_train else collections.OrderedDict(
        list(model_variables.items()) +
        [("global_step", optimizer.global_step)])
    check_same_model(latest, model_variables)
    with cli.blame_flag("--output_dir"):
      _, missing = checkpoints.load_checkpoint(wanted, latest)
    # A run may switch float16 loss scaling on or off between restarts.
    missing = [n for n in missing if not n.startswith("loss_scale")]
    if missing:
      raise cli.UserError(
          "--output_dir: checkpoint %s is not a training checkpoint of this "
          "model: it lacks %d variables, e.g. %s" % (latest, len(missing),
                                                     missing[0]))
    if extra_state:
      with cli.blame_flag("--output_dir"):
        checkpoints.load_companion(latest, extra_state)
    logging.info("Resuming from %s (global_step %d)", latest,
                 int(optimizer.global_step.numpy()))
    return True
  if opts.init_checkpoint:
    with cli.blame_flag("--init_checkpoint"):
      checkpoint = checkpoints.resolve_checkpoint(opts.init_checkpoint)
      initialized, missing = checkpoints.load_checkpoint(model_variables,
                                                      checkpoint)
    teacher.require_masked_lm_variables(missing, checkpoint,
                                        "--init_checkpoint", "student")
    logging.info("Initialised %d variables from %s; %d not in it%s",
                 len(initialized), checkpoint, len(missing),
                 ": " + checkpoints.some_names(missing) if missing else "")
  elif opts.init_from_teacher_layers:
    init_from_teacher_layers(model_variables, opts.init_from_teacher_layers,
                             opts.teacher_init_checkpoint,
                             student_config.num_hidden_layers)
  else:
    logging.info("No checkpoint: the student starts from its random "
                 "initialisation (--random_seed=%d)", opts.random_seed)
  return False
