"""Training a BERT student on a teacher's soft labels (stages V and VI).

The one training / evaluation loop shared by
`network_distillation_single_machine_truncated.py` (one process) and
`network_distillation_distributed_truncated.py` (Horovod). A script imports
the flags (distillation_flags.py), reads them into an `Options` with
`stage_flags.options_from_flags(Options)`, and calls `run(options,
distribution)`.

The objective (the loss and its maths, the Distiller module that holds the
student and an online teacher) is distillation_objective.py's: the original's
soft cross-entropy on the teacher's top-K probabilities plus the
next-sentence loss; options beyond the original (temperature, hard labels,
renormalised top-K, an online teacher and its layer-wise losses,
initialisation from teacher layers, XLA, mixed precision) are all off by
default. This module checks the options and inputs, initialises or resumes,
trains and evaluates.

Distribution: `run` takes a `training.Distribution` describing the process's
place in a job. The single-machine script passes `Distribution()` (one
process); the Horovod script passes a subclass that averages gradients across
ranks and broadcasts the initial variables. Only the chief (rank 0) writes
under output_dir. The training loop itself (device loop, checkpoints,
signals, the watchdog, the output lock) is training.py's, shared with
fine-tuning.

Reproducibility: the data order is a function of (--random_seed, rank) and the
dropout masks of step s are a function of (--random_seed, s, rank), so a run
that is killed and restarted from its newest checkpoint ends with the same
weights as a run that was never interrupted.
"""

import collections
import dataclasses
import os
import re
import time

from absl import logging
import tensorflow as tf

from bert_distill.lib import checkpoints
from bert_distill import cli
from bert_distill.stages import distillation_objective
from bert_distill.lib import errors
from bert_distill.lib import layer_losses
import optimization
from bert_distill.lib import records
from bert_distill.lib import results
from bert_distill.stages import teacher
from bert_distill.stages import training


@dataclasses.dataclass
class Options(distillation_objective.LossSettings):
  """The settings of a distillation run: one field per flag of the scripts
  (the loss settings, which the Distiller reads from these options, then
  the others).

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
  for name in ("truncation_factor", "num_warmup_steps", "soft_label_weight",
               "hard_label_weight",
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
  if not opts.uses_teacher:
    if not opts.hard_label_weight:
      raise cli.UserError(
          "--soft_label_weight=0 with --hard_label_weight=0 and no layer "
          "loss: nothing to learn from (plain masked-LM training needs "
          "--hard_label_weight > 0)")
    if opts.online_teacher:
      raise cli.UserError(
          "--soft_label_weight=0 and no layer loss: the online teacher "
          "(--teacher_bert_config_file) would be unused")
  if opts.teacher_layer_map and not (opts.hidden_loss_weight or
                                     opts.attention_loss_weight):
    raise cli.UserError("--teacher_layer_map is used only with "
                        "--hidden_loss_weight or --attention_loss_weight")

  if opts.do_train and opts.num_warmup_steps > opts.num_train_steps:
    logging.warning(
        "--num_warmup_steps=%d is more than --num_train_steps=%d: the "
        "learning rate never reaches --learning_rate", opts.num_warmup_steps,
        opts.num_train_steps)


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
  if opts.online_teacher or not opts.uses_teacher:
    return records.stage3_lengths(opts.max_seq_length,
                                  opts.max_predictions_per_seq)
  return records.stage4_lengths(opts.max_seq_length,
                                opts.max_predictions_per_seq,
                                opts.truncation_factor, vocab_size)


def validate_inputs(paths, lengths, opts):
  """records.validate_files with the flags named in errors.

  Stage-IV labels are read in the form the first file holds (float32, or
  compact: records.match_label_form). Stage-III records given without an
  online teacher get a hint.

  Returns:
    (the files that hold records, their feature lengths).
  """
  flag_values = {"max_seq_length": opts.max_seq_length,
                 "max_predictions_per_seq": opts.max_predictions_per_seq,
                 "truncation_factor": opts.truncation_factor}
  try:
    lengths = records.match_label_form(lengths, paths)
    return records.validate_files(paths, lengths, flag_values), lengths
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
  indices = layer_losses.parse_layer_indices(spec, num_student_layers)
  with cli.blame_flag("--teacher_init_checkpoint"):
    checkpoint = checkpoints.resolve_checkpoint(checkpoint)
  with cli.blame_flag("--init_from_teacher_layers=%s" % spec):
    checkpoints.init_from_teacher_layers(student_variables, indices,
                                         checkpoint)


# ---------------------------------------------------------------------------
# Training and evaluation.
# ---------------------------------------------------------------------------


def step_loop(distiller, optimizer, distribution, opts, loss_scale=None):
  """The compiled training loop of a Distiller (training.StepLoop): the
  teacher's targets are computed outside the gradient tape, the student's
  loss inside."""

  def loss_fn(features, dropout_seed, prepared):
    targets, teacher_internals = prepared
    return distiller(features, targets, training=True,
                     dropout_seed=dropout_seed,
                     teacher_internals=teacher_internals)["loss"]

  return training.StepLoop(
      loss_fn, distiller.trainable_variables_by_name(), optimizer,
      distribution, opts.random_seed, prepare_fn=distiller.teacher_outputs,
      loss_scale=loss_scale, use_xla=opts.use_xla)


def train(distiller, optimizer, distribution, opts, share, lengths,
          saver=None, loss_scale=None, summary_writer=None):
  """Runs training from the optimizer's global_step to num_train_steps.

  Args:
    distiller: the Distiller.
    optimizer: an optimization.AdamWeightDecayOptimizer built for the student.
    distribution: the training.Distribution.
    opts: Options.
    share: this process's records.TrainingShare of the training files
      (validated).
    lengths: their feature lengths.
    saver: a checkpoints.CheckpointSaver (chief), or None.
    loss_scale: a training.DynamicLossScale for float16, or None.
    summary_writer: a tf.summary writer (chief), or None.
  """
  step = int(optimizer.global_step.numpy())

  def make_iterator():
    return iter(records.make_dataset(
        share.files, lengths, opts.train_batch_size, is_training=True,
        num_shards=share.record_shards,
        shard_index=share.record_shard_index,
        shuffle_buffer=opts.shuffle_buffer, seed=opts.random_seed,
        skip_batches=step))

  schedule = training.Schedule(
      opts.num_train_steps, opts.iterations_per_loop, opts.log_every_n_steps,
      opts.save_checkpoints_steps, opts.train_batch_size * distribution.size,
      opts.output_dir)
  if step < opts.num_train_steps:
    logging.info("Training from step %d to %d, %d examples per step%s",
                 step, opts.num_train_steps, schedule.examples_per_step,
                 " (resumed)" if step else "")
  training.train(step_loop(distiller, optimizer, distribution, opts,
                           loss_scale), make_iterator, schedule, saver=saver,
                 summary_writer=summary_writer)


def evaluate(distiller, opts, eval_files, lengths):
  """Evaluates the student on up to max_eval_steps batches.

  Returns:
    dict: masked_lm_accuracy, masked_lm_loss (the masked-LM part of the
    training loss), masked_lm_hard_label_loss (cross-entropy on the true ids),
    next_sentence_accuracy, next_sentence_loss, loss,
    teacher_top1_agreement (student argmax == teacher's top word; not
    without a teacher), eval_examples; and each enabled layer-wise loss
    (unweighted, e.g. hidden_loss), averaged over the eval examples.
  """
  dataset = records.make_dataset(eval_files, lengths, opts.eval_batch_size,
                                 is_training=False)
  dataset = dataset.take(opts.max_eval_steps)

  layer_loss_names = [
      layer_losses.LAYER_LOSS_WEIGHTS[option[2:]]
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
    if outputs["teacher_top1"] is not None:
      layer_sums["agreement"] = wsum(tf.equal(outputs["mlm_predictions"],
                                              outputs["teacher_top1"]))
    return dict(layer_sums, **{
        "weight": tf.reduce_sum(weights),
        "mlm_correct": wsum(tf.equal(outputs["mlm_predictions"],
                                     features["masked_lm_ids"])),
        "mlm_loss": wsum(outputs["masked_lm_per_position"]),
        "hard_loss": wsum(outputs["hard_per_position"]),
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
  if "agreement" in totals:  # the batches had a teacher to agree with
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
    distribution: a training.Distribution (default: one process).

  Returns:
    The eval results dict when opts.do_eval (on the chief), else None.

  Raises:
    cli.UserError: bad flags or inputs (one line).
  """
  distribution = distribution or training.Distribution()
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
    layer_losses.parse_layer_indices(
        opts.init_from_teacher_layers, student_config.num_hidden_layers)
  if opts.layer_loss_weights:
    layer_losses.layer_loss_plan(opts, student_config, teacher_config)

  lengths = record_lengths(opts, student_config.vocab_size)
  share = eval_files = None
  if opts.do_train:
    # Only this process's share of the files is opened (all of them when
    # the processes split records instead of files).
    share = records.training_share(
        cli.resolve_input_files(opts.input_file, "--input_file"),
        distribution.num_shards, distribution.shard_index)
    files, lengths = validate_inputs(share.files, lengths, opts)
    share = share._replace(files=files)
    if distribution.num_shards > 1:
      logging.info(
          "Rank %d trains on %s", distribution.shard_index,
          "its own %d file(s)" % len(share.files) if share.record_shards == 1
          else "records i %% %d == %d of all %d file(s)" % (
              share.record_shards, share.record_shard_index,
              len(share.files)))
  eval_lengths = lengths
  if opts.do_eval and distribution.is_chief:
    if opts.eval_input_file:
      eval_files, eval_lengths = validate_inputs(
          cli.resolve_input_files(opts.eval_input_file, "--eval_input_file"),
          lengths, opts)
    elif (share is not None and
          share.record_shards == distribution.num_shards):
      eval_files = share.files
    else:
      eval_files, eval_lengths = validate_inputs(
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
  with training.output_lock(opts.output_dir, distribution, opts.do_train):
    return _build_and_run(opts, distribution, student_config,
                          teacher_config, lengths, share, eval_files,
                          eval_lengths)


def _build_and_run(opts, distribution, student_config, teacher_config,
                   lengths, share, eval_files, eval_lengths):
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
  distiller = distillation_objective.Distiller(
      opts, student_config, labeler, dtype)
  optimizer = optimization.create_optimizer(
      opts.learning_rate, opts.num_train_steps, opts.num_warmup_steps)
  model_variables = distiller.student_variables()
  optimizer.build(distiller.trainable_variables_by_name())
  loss_scale = None
  if opts.use_mixed_precision and dtype == tf.float16:
    loss_scale = training.DynamicLossScale()
  # The student's training state (model.ckpt-<step>: Google's names, slots,
  # global_step) and what distillation adds (projections and their slots,
  # in the companion checkpoint model.ckpt-<step>.distillation).
  all_variables, extra_state = layer_losses.split_extra_state(
      list(model_variables.items()) +
      list(distiller.extra_variables().items()) +
      list(optimizer.variables_by_name().items()) +
      (list(loss_scale.variables_by_name().items()) if loss_scale else []))

  if distribution.is_chief:
    resuming = initialize(opts, student_config, model_variables,
                          all_variables, optimizer, extra_state)
    if opts.do_train:
      training.check_run_settings(opts.output_dir, {
          "train_batch_size": opts.train_batch_size,
          "learning_rate": opts.learning_rate,
          "num_train_steps": opts.num_train_steps,
          "num_warmup_steps": opts.num_warmup_steps,
          "processes": distribution.size}, resuming)
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
    metrics = evaluate(distiller, opts, eval_files, eval_lengths)
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
