"""Fine-tuning BERT on a downstream task (stage VIII): the shared loop.

One train / evaluate / predict loop for every fine-tuning script:
run_classifier.py and run_squad.py (one process), run_classifier_distributed.py
and run_squad_distributed.py (Horovod). A task brings its features (NumPy
arrays) and a *head*; this module brings the encoder, the optimizer, the
initialisation from a pre-trained checkpoint, checkpoints, the training loop
and batched inference.

The model is Google's: `modeling.BertModel` under the `bert/` variable names,
plus the head's variables under the names Google's scripts give them
(run_classifier.py: `output_weights` [num_labels, hidden] and `output_bias`;
run_squad.py: `cls/squad/output_weights` [2, hidden] and
`cls/squad/output_bias`). Training is Google's: AdamWeightDecay with linear
warmup (warmup_proportion of the steps) and linear decay
(optimization.create_optimizer), gradients clipped to norm 1.0,
num_train_steps = int(num_train_examples / train_batch_size *
num_train_epochs).

API
---
  opts = SomeTaskOptions(...)     # a dataclass extending `Options`
  config, tokenizer = load_model_inputs(opts)
  tuner = FineTuner(opts, config, head, distribution,
                    num_train_examples=len(train_features["input_ids"]))
  if opts.do_train:
    tuner.train(train_features)        # every rank, same call
  if distribution.is_chief:
    outputs = tuner.predict(eval_features, batch_size, with_loss=True)

Scripts: the flags are defined in finetuning_flags.py (the shared ones),
classifier_flags.py and squad_flags.py.

`features` are dicts of NumPy arrays with one row per example and at least
`input_ids`, `input_mask`, `segment_ids` (int, [N, max_seq_length]), plus
whatever the head's loss reads (e.g. `label_ids` [N]); every array is fed to
the model (ints as int32, floats as float32).

A head is a `tf.Module` with:
  variables_by_name()  OrderedDict name -> tf.Variable (its checkpoint names);
  __call__(sequence_output, pooled_output, features, dropout)
                       -> dict of float32 tensors, each [batch, ...]
                       (sequence_output [B, S, H], pooled_output [B, H];
                       `dropout(x, rate)` applies training-time dropout with
                       the step's seed, identity at inference);
  loss(outputs, features) -> per-example loss, float32 [batch].
`predict` returns the head's outputs as NumPy arrays ([N, ...], in input
order), with `per_example_loss` [N] when asked.

Initialisation (`FineTuner`), in order: the newest checkpoint in output_dir
(model, optimizer slots, global_step: a stopped run resumes); else
--init_checkpoint, any Google-format BERT checkpoint (Google's release, a
converted Hugging Face model, a stage V/VI student): every `bert/` variable
must be there (an error names the first missing one), the head's variables
are taken when present with the right shapes, and the checkpoint's other
variables (pre-training heads, optimizer slots) are ignored with a note; else
the seeded random initialisation (a baseline that was never pre-trained).

Task-specific distillation (`TaskTeacher`, with --teacher_init_checkpoint):
a teacher fine-tuned on the same task (an earlier run's output folder or
checkpoint, of any size) runs in each training step, in inference mode,
and the loss of an example becomes

  hard_label_weight * (the head's loss on the gold label)
  + soft_label_weight * (the head's `soft_loss`: T^2 * the cross-entropy
    from the teacher's temperature-softened class (SQuAD: start and end)
    distribution to the student's, T = --temperature, as Hinton et al.;
    the squared difference of the two scores for a regression task)

plus, for the batch, the weighted layer-wise losses of stage V
(layer_losses.LayerLosses: hidden states, attention scores, MiniLMv2
relations) between the student's and the teacher's encoders. Evaluation
and prediction are the student's alone, and eval_loss stays the gold-label
loss.

Distribution: a `training.Distribution` (one process) or
`horovod_distribution.HorovodDistribution`. Under Horovod, as stage VI: each
rank trains on its share of the training examples (example i goes to rank
i % size; disjoint, together all), gradients are averaged over ranks before
clipping and the update, rank 0's initial state is broadcast, the learning
rate is multiplied by the number of processes and the number of steps divided
by it (`FineTuner` does both: the options keep what the user gave), and only
the chief writes (checkpoints, TensorBoard events, results).
"""

import collections
import dataclasses
import json
import os
import re
import time

from absl import logging
import numpy as np
import tensorflow as tf

from bert_distill.lib import checkpoints
from bert_distill import cli
from bert_distill.lib import hardware
from bert_distill.lib import layer_losses
import modeling
import optimization
from bert_distill.lib import records
import tokenization
from bert_distill.stages import training

@dataclasses.dataclass
class Options(layer_losses.LayerLossSettings):
  """The settings every fine-tuning run shares: one field per flag (the
  layer losses' first).

  The flags (finetuning_flags.py, layer_loss_flags.py) are the one source
  of their meaning and defaults; this holds their values, for code that
  does not read flags.
  """
  bert_config_file: str
  vocab_file: str
  output_dir: str
  init_checkpoint: str
  do_lower_case: bool
  max_seq_length: int
  do_train: bool
  do_predict: bool
  train_batch_size: int
  predict_batch_size: int
  learning_rate: float
  num_train_epochs: float
  warmup_proportion: float
  save_checkpoints_steps: int
  iterations_per_loop: int
  keep_checkpoint_max: int
  log_every_n_steps: int
  random_seed: int
  teacher_init_checkpoint: str
  teacher_bert_config_file: str
  teacher_compute_dtype: str
  temperature: float
  soft_label_weight: float
  hard_label_weight: float

  @property
  def has_teacher(self):
    """True when a fine-tuned teacher distils into the model."""
    return bool(self.teacher_init_checkpoint)


# The teacher's settings and their defaults without a teacher: another value
# without --teacher_init_checkpoint is an error (the user meant a teacher).
TEACHER_SETTINGS = {"teacher_bert_config_file": "", "temperature": 1.0,
                    "soft_label_weight": 1.0, "hard_label_weight": 1.0,
                    "teacher_compute_dtype": "auto", "teacher_layer_map": "",
                    "attention_relation_teacher_layer": -1,
                    "attention_relation_heads": 0}


def check_options(opts):
  """Raises cli.UserError (one line naming the flag) on bad shared settings."""
  for name in ("bert_config_file", "vocab_file", "output_dir"):
    if not getattr(opts, name):
      raise cli.UserError("--%s is required" % name)
  positive = ["max_seq_length", "save_checkpoints_steps",
              "iterations_per_loop", "keep_checkpoint_max",
              "log_every_n_steps"]
  if opts.do_train:
    positive += ["train_batch_size", "num_train_epochs"]
  if opts.do_predict:
    positive += ["predict_batch_size"]
  for name in positive:
    if getattr(opts, name) <= 0:
      raise cli.UserError("--%s must be positive, got %s" %
                          (name, getattr(opts, name)))
  if not 0.0 <= opts.warmup_proportion <= 1.0:
    raise cli.UserError("--warmup_proportion must be in [0, 1], got %s" %
                        opts.warmup_proportion)
  if opts.learning_rate < 0:
    raise cli.UserError("--learning_rate must not be negative, got %s" %
                        opts.learning_rate)
  _check_teacher_options(opts)


def _check_teacher_options(opts):
  """The task-distillation flags: only with a teacher, and sensible."""
  if not opts.has_teacher:
    given = [name for name, default in TEACHER_SETTINGS.items()
             if (getattr(opts, name) or type(default)()) != default]
    given += [flag[2:] for flag in opts.layer_loss_weights]
    if given:
      raise cli.UserError(
          "--%s=%s: a teacher's setting, but no --teacher_init_checkpoint "
          "is given (the fine-tuned teacher to distil from)" %
          (given[0], getattr(opts, given[0])))
    return
  if not opts.do_train:
    logging.warning("--teacher_init_checkpoint is used in training only: "
                    "this run (--do_train=false) evaluates or predicts "
                    "with the model alone")
    return
  if not opts.teacher_bert_config_file:
    raise cli.UserError(
        "--teacher_init_checkpoint needs --teacher_bert_config_file (the "
        "teacher's bert_config.json)")
  if opts.temperature <= 0:
    raise cli.UserError("--temperature must be positive, got %s" %
                        opts.temperature)
  for name in ("soft_label_weight", "hard_label_weight"):
    if getattr(opts, name) < 0:
      raise cli.UserError("--%s must not be negative, got %s" %
                          (name, getattr(opts, name)))
  for flag, weight in opts.layer_loss_weights.items():
    if weight < 0:
      raise cli.UserError("%s must not be negative, got %s" % (flag, weight))
  if not (opts.soft_label_weight or opts.hard_label_weight or
          opts.layer_loss_weights):
    raise cli.UserError(
        "--soft_label_weight=0 and --hard_label_weight=0 and no layer loss: "
        "nothing to learn from")


def load_model_inputs(opts):
  """Reads and cross-checks the BERT config and the vocabulary.

  Returns:
    (modeling.BertConfig, tokenization.FullTokenizer).

  Raises:
    cli.UserError: a missing or bad file, a vocabulary whose size is not the
      config's vocab_size, --do_lower_case contradicting a released model's
      name, or --max_seq_length beyond max_position_embeddings.
  """
  config = cli.load_bert_config(opts.bert_config_file, "--bert_config_file",
                                opts.max_seq_length)
  cli.require_file(opts.vocab_file, "--vocab_file", "vocabulary file")
  with cli.blame_flag("--do_lower_case"):
    tokenization.validate_case_matches_checkpoint(opts.do_lower_case,
                                                  opts.init_checkpoint)
  tokenizer = tokenization.FullTokenizer(opts.vocab_file,
                                         do_lower_case=opts.do_lower_case)
  if len(tokenizer.vocab) != config.vocab_size:
    raise cli.UserError(
        "--vocab_file %s has %d tokens but --bert_config_file %s says "
        "vocab_size %d: give the vocabulary the model was trained with" %
        (opts.vocab_file, len(tokenizer.vocab), opts.bert_config_file,
         config.vocab_size))
  return config, tokenizer


def train_schedule(num_train_examples, opts, num_processes=1):
  """(num_train_steps, num_warmup_steps) of each process, as Google's.

  num_train_steps = int(num_train_examples / (train_batch_size * processes)
  * num_train_epochs): each of the N processes takes a 1/N share of the
  examples, and every process runs the same number of steps.
  """
  steps = int(num_train_examples / float(opts.train_batch_size *
                                         num_processes) *
              opts.num_train_epochs)
  return steps, int(steps * opts.warmup_proportion)


class FineTuningModel(tf.Module):
  """BERT encoder + a task head (see the module docstring for heads)."""

  def __init__(self, config, head, compute_dtype=tf.float32):
    """Creates the encoder's variables under `bert/`; keeps the head."""
    super(FineTuningModel, self).__init__(name="finetuning_model")
    self.bert = modeling.BertModel(config, compute_dtype=compute_dtype,
                                   name="bert")
    self.config = self.bert.config
    self.head = head

  def variables_by_name(self):
    """Encoder then head variables, under their checkpoint names."""
    result = self.bert.variables_by_name()
    for name, var in self.head.variables_by_name().items():
      if name in result:
        raise ValueError("the head's variable %s clashes with the "
                         "encoder's" % name)
      result[name] = var
    return result

  def __call__(self, features, training=False, dropout_seed=None):
    """The head's outputs (dict of float32 tensors) for a batch."""
    return self.run(features, training, dropout_seed)[0]

  def run(self, features, training=False, dropout_seed=None,
          return_internals=False):
    """(the head's outputs, the encoder's `modeling.EncoderInternals` with
    return_internals=True, else None) for a batch."""
    # One dropout object for encoder and head: each dropout site of a step
    # gets its own seed folded from the step's seed, in call order.
    # pylint: disable-next=protected-access
    dropout = modeling._Dropout(training, dropout_seed)
    encoder = self.bert(
        features["input_ids"], features["input_mask"],
        features["segment_ids"], training=training, dropout=dropout,
        return_internals=return_internals)
    return (self.head(encoder.sequence_output, encoder.pooled_output,
                      features, dropout), encoder.internals)


def soft_cross_entropy(student_logits, teacher_logits, temperature):
  """T^2 * the cross-entropy from softmax(teacher / T) to softmax(student /
  T), over the last axis: float32 [...] (the teacher's side without
  gradient)."""
  targets = tf.stop_gradient(tf.nn.softmax(
      tf.cast(teacher_logits, tf.float32) / temperature, axis=-1))
  log_probs = tf.nn.log_softmax(
      tf.cast(student_logits, tf.float32) / temperature, axis=-1)
  return -tf.reduce_sum(targets * log_probs, axis=-1) * temperature ** 2


class TaskTeacher(tf.Module):
  """A teacher fine-tuned on the task, run in inference mode in each
  training step (task-specific distillation).

  Built from --teacher_init_checkpoint (an output folder of an earlier
  run_classifier.py / run_squad.py, or one of its checkpoints) and
  --teacher_bert_config_file, with a head of the task made by
  make_head(hidden_size); computes in --teacher_compute_dtype ("auto":
  bfloat16 where the machine has bfloat16 units).
  """

  # What a run records of its teacher (run_settings.json).
  SETTINGS = ("teacher_checkpoint", "teacher_bert_config_file",
              "teacher_compute_dtype", "temperature", "soft_label_weight",
              "hard_label_weight") + tuple(
                  f.name for f in dataclasses.fields(
                      layer_losses.LayerLossSettings))

  def __init__(self, opts, make_head, student_config, distribution=None):
    """Loads the teacher; raises cli.UserError (one line) on a teacher of
    another task or model, or layer-loss settings that do not fit the two
    models. Under Horovod every process loads the checkpoint that rank 0
    resolved --teacher_init_checkpoint to."""
    super(TaskTeacher, self).__init__(name="task_teacher")
    self.config = cli.load_bert_config(opts.teacher_bert_config_file,
                                       "--teacher_bert_config_file",
                                       opts.max_seq_length)
    if self.config.vocab_size != student_config.vocab_size:
      raise cli.UserError(
          "--teacher_bert_config_file: vocab_size %d differs from the "
          "student's %d (--bert_config_file): the two must share a "
          "vocabulary" % (self.config.vocab_size, student_config.vocab_size))
    if opts.layer_loss_weights:
      layer_losses.layer_loss_plan(opts, student_config, self.config)
    dtype = opts.teacher_compute_dtype
    if dtype == "auto":
      dtype = ("bfloat16" if hardware.bfloat16_support().fast else
               "float32")
    elif dtype == "bfloat16":
      hardware.warn_if_bfloat16_is_slow("The teacher")
    self.compute_dtype = tf.as_dtype(dtype)
    self.model = FineTuningModel(self.config, make_head(
        self.config.hidden_size), compute_dtype=self.compute_dtype)
    distribution = distribution or training.Distribution()
    with cli.blame_flag("--teacher_init_checkpoint"):
      self.checkpoint = distribution.broadcast_object(
          checkpoints.resolve_checkpoint(opts.teacher_init_checkpoint))
      _check_teacher_checkpoint(self.model, self.checkpoint)
      _warn_if_unfinished(self.checkpoint)
      checkpoints.load_checkpoint(self.model.variables_by_name(),
                                  self.checkpoint)
    self.model.bert.freeze_kernels()
    logging.info("Teacher: %s (%d layers, hidden %d, %s), temperature %g, "
                 "soft label weight %g, hard label weight %g%s",
                 self.checkpoint, self.config.num_hidden_layers,
                 self.config.hidden_size, dtype, opts.temperature,
                 opts.soft_label_weight, opts.hard_label_weight,
                 "".join(", %s %g" % (flag, weight) for flag, weight in
                         opts.layer_loss_weights.items()))

  def settings(self, opts):
    """The teacher's part of run_settings.json (see SETTINGS)."""
    values = {name: getattr(opts, name, None) for name in self.SETTINGS}
    values.update(teacher_checkpoint=self.checkpoint,
                  teacher_compute_dtype=self.compute_dtype.name)
    return values

  def __call__(self, features, return_internals=False):
    """(head outputs, internals or None), in inference mode, without
    gradient."""
    outputs, internals = self.model.run(features, training=False,
                                        return_internals=return_internals)
    return tf.nest.map_structure(
        lambda t: None if t is None else tf.stop_gradient(t),
        (outputs, internals))


def _warn_if_unfinished(checkpoint):
  """Warns when the teacher's checkpoint is from before the end of its
  training run (its folder's run_settings.json says how many steps)."""
  match = re.search(r"-(\d+)$", checkpoint)
  path = os.path.join(os.path.dirname(checkpoint),
                      training.RUN_SETTINGS_FILE)
  if not match or not tf.io.gfile.exists(path):
    return
  try:
    with tf.io.gfile.GFile(path) as f:
      planned = int(json.load(f).get("num_train_steps") or 0)
  except (ValueError, TypeError, AttributeError):
    return
  if int(match.group(1)) < planned:
    logging.warning("--teacher_init_checkpoint %s: step %s of the %d its "
                    "run planned; its training was stopped before the end",
                    checkpoint, match.group(1), planned)


def _check_teacher_checkpoint(model, checkpoint):
  """Raises cli.UserError unless `checkpoint` holds every variable of the
  teacher `model` (encoder and task head) with its shape."""
  _, reader = checkpoints.open_checkpoint(checkpoint)
  shapes = reader.get_variable_to_shape_map()
  head = model.head.variables_by_name()
  for name, var in model.variables_by_name().items():
    if name not in shapes:
      if name in head:
        raise cli.UserError(
            "--teacher_init_checkpoint %s is not fine-tuned on a task of "
            "this kind: it lacks the head's %s (give the output folder of "
            "an earlier run_classifier.py or run_squad.py on this task)" %
            (checkpoint, name))
      raise cli.UserError(
          "--teacher_init_checkpoint %s lacks %s, a variable of the model "
          "that --teacher_bert_config_file describes" % (checkpoint, name))
    want = var.shape.as_list()
    if list(shapes[name]) == want:
      continue
    if name in head and list(shapes[name])[1:] == want[1:]:
      raise cli.UserError(
          "--teacher_init_checkpoint %s is fine-tuned on another task: its "
          "head %s has %d outputs, this task's %d" %
          (checkpoint, name, shapes[name][0], want[0]))
    raise cli.UserError(
        "--teacher_init_checkpoint %s does not match "
        "--teacher_bert_config_file: %s has shape %s in the checkpoint, "
        "the config makes %s" % (checkpoint, name, list(shapes[name]),
                                 want))


def initialize(model, optimizer, opts, all_variables, extra_state=None):
  """Resumes from output_dir, or loads --init_checkpoint, or keeps random.

  See the module docstring for the order and the rules. `extra_state` (a
  task-distilling run's projections and their slots) is resumed from the
  companion checkpoint (checkpoints.load_companion) and otherwise keeps
  its seeded initialisation.

  Returns:
    One of "resumed", "init_checkpoint", "random".

  Raises:
    cli.UserError: a checkpoint that is missing, unreadable, of another
      shape, or lacking encoder variables.
  """
  model_variables = model.variables_by_name()
  latest = checkpoints.latest_checkpoint(opts.output_dir)
  if latest:
    wanted = all_variables if opts.do_train else collections.OrderedDict(
        list(model_variables.items()) +
        [("global_step", optimizer.global_step)])
    with cli.blame_flag("--output_dir"):
      _, missing = checkpoints.load_checkpoint(wanted, latest)
    if missing:
      raise cli.UserError(
          "--output_dir: checkpoint %s is not a fine-tuning checkpoint of "
          "this model and task: it lacks %d variables, e.g. %s (use another "
          "--output_dir)" % (latest, len(missing), missing[0]))
    if extra_state and opts.do_train:
      with cli.blame_flag("--output_dir"):
        checkpoints.load_companion(latest, extra_state)
    logging.info("Resuming from %s (global_step %d)", latest,
                 int(optimizer.global_step.numpy()))
    return "resumed"
  if not opts.init_checkpoint and not opts.do_train:
    raise cli.UserError(
        "--do_train=false: nothing to evaluate or predict with: --output_dir "
        "%s holds no checkpoint and no --init_checkpoint is given (a "
        "mistyped --output_dir?)" % opts.output_dir)
  if not opts.init_checkpoint:
    logging.warning(
        "No --init_checkpoint: the whole model starts from random weights "
        "(--random_seed=%d), not from a pre-trained BERT", opts.random_seed)
    return "random"
  with cli.blame_flag("--init_checkpoint"):
    checkpoint = checkpoints.resolve_checkpoint(opts.init_checkpoint)
    names = set(checkpoints.variable_names(checkpoint))
    encoder = model.bert.variables_by_name()
    missing = [n for n in encoder if n not in names]
    if missing:
      raise cli.UserError(
          "--init_checkpoint %s is not a BERT checkpoint of this model: it "
          "lacks %d of the %d encoder variables of --bert_config_file, e.g. "
          "%s" % (checkpoint, len(missing), len(encoder), missing[0]))
    loaded, not_loaded = checkpoints.load_checkpoint(model_variables,
                                                  checkpoint)
  ignored = sorted(names - set(loaded))
  kinds = sorted(set(_variable_kind(n) for n in ignored))
  logging.info("Initialised the encoder%s from %s",
               " and the head" if not not_loaded else "", checkpoint)
  if not_loaded:
    logging.info("Head variables not in the checkpoint, initialised at "
                 "random (--random_seed=%d): %s", opts.random_seed,
                 checkpoints.some_names(not_loaded))
  if ignored:
    logging.info("Note: %d variables of the checkpoint are not used by "
                 "fine-tuning and are ignored (%s)", len(ignored),
                 "; ".join(kinds))
  return "init_checkpoint"


def _variable_kind(name):
  """A short description of a checkpoint variable fine-tuning ignores."""
  if "/adam_" in name or name == "global_step" or name.startswith(
      "loss_scale"):
    return "optimizer state"
  if name.startswith("cls/predictions/"):
    return "masked-LM head cls/predictions/*"
  if name.startswith("cls/seq_relationship/"):
    return "next-sentence head cls/seq_relationship/*"
  return "other: %s" % name


def _as_tensors(features):
  """NumPy feature dict -> dict of int32 / float32 arrays."""
  out = collections.OrderedDict()
  for name, values in features.items():
    values = np.asarray(values)
    if values.dtype.kind in "iub":
      out[name] = values.astype(np.int32)
    elif values.dtype.kind == "f":
      out[name] = values.astype(np.float32)
    else:
      raise ValueError("feature %s has dtype %s: only numbers can be fed "
                       "to the model" % (name, values.dtype))
  sizes = set(len(v) for v in out.values())
  if len(sizes) != 1:
    raise ValueError("features of different lengths: %s" %
                     {k: len(v) for k, v in out.items()})
  return out


class FineTuner(object):
  """A model, its optimizer and its state for one fine-tuning run.

  Building it creates the model (encoder + head), the optimizer with the
  schedule of `num_train_examples`, restores or initialises every variable on
  the chief (see `initialize`) and broadcasts them to the other processes.

  Attributes:
    model: the FineTuningModel.
    optimizer: the optimization.AdamWeightDecayOptimizer.
    num_train_steps, num_warmup_steps: this process's schedule.
    init_source: "resumed", "init_checkpoint" or "random" (chief only).
    last_predict_rate: examples/s of the last `predict`, its first batch
      (which includes tracing) left out.
  """

  def __init__(self, opts, config, head, distribution=None,
               num_train_examples=0, teacher=None):
    """Builds and initialises (see the class docstring).

    Args:
      opts: Options (or a subclass).
      config: the modeling.BertConfig.
      head: the task head (see the module docstring).
      distribution: a training.Distribution (default: one process).
      num_train_examples: the number of training examples over all
        processes (0 when not training).
      teacher: a `TaskTeacher` to distil from while training, or None.
    """
    self.opts = opts
    self.distribution = distribution or training.Distribution()
    size = self.distribution.size
    self.num_train_steps, self.num_warmup_steps = train_schedule(
        num_train_examples, opts, size)
    if opts.do_train and self.num_train_steps < 1:
      raise cli.UserError(
          "--num_train_epochs=%s over %d training examples with "
          "--train_batch_size=%d%s gives no training step" %
          (opts.num_train_epochs, num_train_examples, opts.train_batch_size,
           " on each of %d processes" % size if size > 1 else ""))
    if self.distribution.is_chief:
      cli.ensure_writable_dir(opts.output_dir)
    # The head's (and a checkpoint-less encoder's) initialisation.
    tf.random.set_seed(opts.random_seed)
    self.model = FineTuningModel(config, head)
    self.teacher = teacher if opts.do_train else None
    self.layer_losses = None
    if self.teacher is not None and opts.layer_loss_weights:
      # The hidden-state projection (when the widths differ) is trained
      # with the model and saved in its checkpoints, apart from it.
      self.layer_losses = layer_losses.LayerLosses(opts, config,
                                                   self.teacher.config)
    self.learning_rate = opts.learning_rate * size
    self.optimizer = optimization.create_optimizer(
        self.learning_rate, self.num_train_steps, self.num_warmup_steps)
    self.model_variables = self.model.variables_by_name()
    trained = collections.OrderedDict(self.model_variables)
    if self.layer_losses is not None:
      trained.update(self.layer_losses.variables_by_name())
    self.optimizer.build(trained)
    # The model's state (model.ckpt-<step>: Google's names, slots,
    # global_step) and the projections' (the companion checkpoint
    # model.ckpt-<step>.distillation), as stage V saves them.
    self.all_variables, self.extra_state = layer_losses.split_extra_state(
        list(trained.items()) +
        list(self.optimizer.variables_by_name().items()))
    self.init_source = None
    if self.distribution.is_chief:
      self.init_source = initialize(self.model, self.optimizer, opts,
                                    self.all_variables, self.extra_state)
      if opts.do_train:
        settings = {
            "train_batch_size": opts.train_batch_size,
            "learning_rate": opts.learning_rate,
            "num_train_epochs": opts.num_train_epochs,
            "num_train_steps": self.num_train_steps,
            "processes": size}
        # The teacher's settings, None without one, so that a resume that
        # adds, drops or changes the teacher is said.
        settings.update(self.teacher.settings(opts) if self.teacher else
                        dict.fromkeys(TaskTeacher.SETTINGS))
        training.check_run_settings(opts.output_dir, settings,
                                    self.init_source == "resumed")
    self.distribution.broadcast_variables(
        list(self.all_variables.values()) + list(self.extra_state.values()))
    self.saver = self.summary_writer = None
    if self.distribution.is_chief:
      self.saver = checkpoints.CheckpointSaver(
          opts.output_dir, self.all_variables, opts.keep_checkpoint_max,
          self.extra_state)
      self.summary_writer = tf.summary.create_file_writer(opts.output_dir)
    self.step_loop = training.StepLoop(
        self._loss, trained, self.optimizer, self.distribution,
        opts.random_seed,
        prepare_fn=self._teacher_outputs if self.teacher else None)
    self._predict_step = {}
    self.last_predict_rate = None

  @property
  def global_step(self):
    """The number of training steps done (int)."""
    return int(self.optimizer.global_step.numpy())

  def _teacher_outputs(self, features):
    """The teacher's head outputs and internals for a batch (prepare_fn)."""
    return self.teacher(features,
                        return_internals=self.layer_losses is not None)

  def _loss(self, features, dropout_seed, prepared):
    """The mean loss of one batch, in training mode (training.StepLoop);
    `prepared` is the teacher's (outputs, internals) or None."""
    outputs, internals = self.model.run(
        features, training=True, dropout_seed=dropout_seed,
        return_internals=self.layer_losses is not None)
    head = self.model.head
    per_example = head.loss(outputs, features)
    if prepared is None:
      return tf.reduce_mean(per_example)
    opts = self.opts
    teacher_outputs, teacher_internals = prepared
    per_example = (opts.hard_label_weight * per_example +
                   opts.soft_label_weight * head.soft_loss(
                       outputs, teacher_outputs, features, opts.temperature))
    loss = tf.reduce_mean(per_example)
    if self.layer_losses is not None:
      loss = self.layer_losses.add_weighted(loss, self.layer_losses(
          internals, teacher_internals, features["input_mask"]))
    return loss

  def train_steps(self, iterator, num_steps):
    """Runs `num_steps` training steps in one device loop (tf.function).

    Args:
      iterator: an iterator over `train_dataset(features)`.
      num_steps: steps to run (no checkpoint, log or summary in between).

    Returns:
      The mean training loss of those steps (float).
    """
    return self.step_loop.run(iterator, num_steps)

  def train_dataset(self, features):
    """This process's training batches: its share, shuffled, repeated.

    Example i goes to rank i % size. The order is a function of
    (--random_seed, rank); a resumed run skips the batches already trained.
    """
    share = {k: v[self.distribution.shard_index::self.distribution.num_shards]
             for k, v in _as_tensors(features).items()}
    n = len(next(iter(share.values())))
    if n < self.opts.train_batch_size:
      raise cli.UserError(
          "%d training examples for this process, fewer than "
          "--train_batch_size=%d" % (n, self.opts.train_batch_size))
    dataset = tf.data.Dataset.from_tensor_slices(share)
    dataset = dataset.shuffle(n, seed=self.opts.random_seed +
                              self.distribution.rank,
                              reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(self.opts.train_batch_size, drop_remainder=True)
    step = self.global_step
    if step:
      dataset = dataset.skip(step)
    return records.without_autotune(
        dataset.prefetch(records.PREFETCH_BATCHES))

  def train(self, features):
    """Trains from global_step to num_train_steps on `features`.

    Every process calls it with the same (whole) features; each trains on
    its share. The loop is training.train's: the chief logs progress,
    writes TensorBoard scalars (loss, learning_rate, examples_per_sec) and
    checkpoints model.ckpt-<step> every --save_checkpoints_steps, at the end
    and when SIGINT or SIGTERM stops it; a frozen rank ends a Horovod job.

    Returns:
      The mean training loss of the last device loop (nan if no step ran).
    """
    opts = self.opts
    step = self.global_step
    schedule = training.Schedule(
        self.num_train_steps, opts.iterations_per_loop,
        opts.log_every_n_steps, opts.save_checkpoints_steps,
        opts.train_batch_size * self.distribution.size, opts.output_dir)
    if step < self.num_train_steps:
      logging.info(
          "Training from step %d to %d (%d warmup), %d examples per step, "
          "learning rate %g%s", step, self.num_train_steps,
          self.num_warmup_steps, schedule.examples_per_step,
          self.learning_rate, " (resumed)" if step else "")
    return training.train(self.step_loop,
                          lambda: iter(self.train_dataset(features)),
                          schedule, saver=self.saver,
                          summary_writer=self.summary_writer)

  def predict(self, features, batch_size, with_loss=False, name="predict"):
    """The head's outputs on every example, in order (no dropout).

    Args:
      features: dict of NumPy arrays [N, ...] (see the module docstring).
      batch_size: examples per batch.
      with_loss: also return `per_example_loss` [N] (the features must
        hold what the head's loss reads, e.g. labels).
      name: names the progress log lines.

    Returns:
      dict name -> NumPy array [N, ...].
    """
    tensors = _as_tensors(features)
    n = len(next(iter(tensors.values())))
    # The last batch is padded with all-zero rows to the full size (and their
    # outputs dropped), so that one traced step serves every batch.
    padding = -n % batch_size
    if padding:
      tensors = {k: np.concatenate([v, np.zeros((padding,) + v.shape[1:],
                                                v.dtype)])
                 for k, v in tensors.items()}
    dataset = tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size)
    if with_loss not in self._predict_step:

      def _step(batch):
        outputs = dict(self.model(batch, training=False))
        if with_loss:
          outputs["per_example_loss"] = self.model.head.loss(outputs, batch)
        return outputs

      self._predict_step[with_loss] = tf.function(
          _step, reduce_retracing=True, autograph=False)
    step = self._predict_step[with_loss]
    parts = collections.defaultdict(list)
    logging.info("%s: %d examples in batches of %d", name, n, batch_size)
    progress = cli.Progress(name, unit="examples", total=n)
    first_batch_end, after_first = None, 0
    for index, batch in enumerate(records.without_autotune(
        dataset.prefetch(records.PREFETCH_BATCHES))):
      for key, value in step(batch).items():
        parts[key].append(value.numpy())
      real = min(batch_size, n - index * batch_size)
      progress.update(real)
      if first_batch_end is None:
        first_batch_end = time.time()
      else:
        after_first += real
    progress.done("the first batch, which traces the model, %.1f s" % (
        first_batch_end - progress.start) if first_batch_end else "")
    # The rate without the first batch, which includes tracing the step.
    self.last_predict_rate = (
        after_first / max(time.time() - first_batch_end, 1e-9)
        if after_first else progress.rate)
    return {k: np.concatenate(v, axis=0)[:n] for k, v in parts.items()}

