"""The training core shared by distillation (V/VI) and fine-tuning (VIII).

One place for what every training run needs, whatever its loss:

  - `Distribution`: where this process stands in a job (one process by
    default; horovod_distribution.HorovodDistribution under mpirun);
  - `dropout_seed_for_step`: the stateless dropout seed of a step and rank,
    so that a killed and resumed run ends with the same weights;
  - `DynamicLossScale`: loss scaling for float16;
  - `StepLoop`: the compiled device loop. It runs several steps in one
    tf.function: the loss and its dense gradients (optionally compiled with
    XLA), the gradient average over processes (which also carries a stop
    request, so every rank stops after the same step), the optimizer update
    (skipped, with the step still counted, when a scaled float16 gradient
    overflows);
  - `train`: the Python loop around it. It returns to Python every
    --iterations_per_loop, --log_every_n_steps and --save_checkpoints_steps
    step; the chief logs progress, writes TensorBoard scalars and saves
    checkpoints. A non-finite loss stops the run with one line; SIGINT or
    SIGTERM finishes the current step, saves a checkpoint and ends with one
    line (`cli.Interrupted`); the distribution's watchdog ends a job whose
    step stops advancing (a frozen rank);
  - `output_lock`: one training run at a time per output folder;
  - `check_run_settings`: warns when a run resumes with other settings than
    it started with (run_settings.json in the output folder).

A stage brings its model, its loss and its optimizer:

  loop = training.StepLoop(loss_fn, variables_by_name, optimizer,
                           distribution, random_seed)
  training.train(loop, make_iterator, schedule, saver=...,
                 summary_writer=...)

where loss_fn(features, dropout_seed, prepared) returns the scalar loss of
one batch (training mode), `prepared` being what the optional
`prepare_fn(features)` computed outside the gradient tape (e.g. an online
teacher's outputs).
"""

import collections
import contextlib
import dataclasses
import json
import math
import os
import signal
import time

from absl import logging
import tensorflow as tf

from bert_distill.lib import checkpoints
from bert_distill import cli
from bert_distill.lib import outputs
from bert_distill.lib import results


class Distribution(object):
  """Where this process stands in a training job: one process by default.

  The Horovod scripts pass a subclass (horovod_distribution.py). The
  training loops call, in this order:
    - `broadcast_variables(variables)` once, eagerly, after the chief has
      initialised or restored every variable (model, optimizer slots,
      global_step): the other ranks must end up with the chief's values;
    - `allreduce_gradients(grads)` inside the compiled training step, on the
      list of dense gradients (model variable order) of this rank's batch,
      before clipping and the update: return the average over ranks.
    - `watch_training(global_step)`: a context manager around the training
      loop (a hook, e.g. for a watchdog that ends a job whose global_step
      stops advancing).
  They read `rank`, `size`, `is_chief`, and `num_shards` / `shard_index`
  (each rank reads a disjoint share of the training data).
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
    """Number of disjoint shares the training data is split into."""
    return self.size

  @property
  def shard_index(self):
    """The share of the training data this process reads."""
    return self.rank

  @tf.autograph.experimental.do_not_convert
  def allreduce_gradients(self, grads):
    """Averages gradients over processes (one process: unchanged)."""
    return grads

  def broadcast_object(self, value):
    """Rank 0's `value` (a picklable object), on every process."""
    return value

  def shutdown(self):
    """Ends this process's communication with the others (a job whose
    processes work alone after a start, stage IV's); no collective runs
    after it."""

  def broadcast_variables(self, variables):
    """Sets `variables` to the chief's values (one process: nothing to do)."""
    del variables

  def watch_training(self, global_step):
    """A context manager around the training loop (one process: nothing)."""
    del global_step
    return contextlib.nullcontext()


def dropout_seed_for_step(random_seed, step, distribution):
  """The stateless seed of the dropout masks of `step` on this rank."""
  step = tf.cast(step, tf.int64)
  return tf.stack([tf.constant(random_seed, tf.int64),
                   step * distribution.size + distribution.rank])


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


class StepLoop(object):
  """The compiled device loop of one training run.

  `run(iterator, num_steps)` runs up to `num_steps` steps in a single
  tf.function (like the original's iterations_per_loop on TPUs) and returns
  the mean loss of the steps it ran (float). It runs fewer when a stop was
  requested (`request_stop`, from a signal handler's thread; then `stopped`
  is True on every rank).
  """

  def __init__(self, loss_fn, variables_by_name, optimizer, distribution,
               random_seed, prepare_fn=None, loss_scale=None, use_xla=False):
    """Builds the loop (traced on its first run).

    Args:
      loss_fn: loss_fn(features, dropout_seed, prepared) -> scalar loss of
        one batch, in training mode.
      variables_by_name: the trained variables, name -> tf.Variable (the
        optimizer's `apply_gradients` order and names).
      optimizer: an optimization.AdamWeightDecayOptimizer built for them.
      distribution: the Distribution.
      random_seed: seeds the dropout masks (with the step and the rank).
      prepare_fn: prepare_fn(features) -> `prepared`, computed outside the
        gradient tape (None: prepared is None).
      loss_scale: a DynamicLossScale (float16), or None.
      use_xla: compile the loss and gradients with XLA.
    """
    self.loss_fn = loss_fn
    self.prepare_fn = prepare_fn
    self.variables_by_name = variables_by_name
    self.optimizer = optimizer
    self.distribution = distribution
    self.random_seed = random_seed
    self.loss_scale = loss_scale
    self._variables = list(variables_by_name.values())
    gradients = self._loss_and_gradients
    if use_xla:
      gradients = tf.function(gradients, jit_compile=True)
    self._compiled_gradients = gradients
    # stop_requested is set (from a signal's helper thread) to end the loop
    # after the current step; `stopped` says that a loop ended so, on every
    # rank.
    self.stop_requested = tf.Variable(False, trainable=False,
                                      name="stop_requested")
    self._stopped = tf.Variable(False, trainable=False, name="stopped")
    # AutoGraph turns the loop below into a graph loop; the code it calls
    # (the model, the loss, the optimizer, the gradient averaging) is marked
    # do_not_convert and traced as written: it has no tensor-dependent Python
    # control flow, and converting it cost about 1.5 s at every run's start.
    self._loop = tf.function(self._loop_fn)

  @property
  def stopped(self):
    """True once a run of the loop ended on a stop request."""
    return bool(self._stopped.numpy())

  def request_stop(self, signum=None):
    """Asks the loop to stop after the current step (any thread)."""
    del signum
    self.stop_requested.assign(True)

  @tf.autograph.experimental.do_not_convert
  def _loss_and_gradients(self, features, step):
    """Loss and dense gradients of one batch (XLA-compilable: no
    collectives)."""
    prepared = self.prepare_fn(features) if self.prepare_fn else None
    seed = dropout_seed_for_step(self.random_seed, step, self.distribution)
    with tf.GradientTape() as tape:
      loss = self.loss_fn(features, seed, prepared)
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
      self.optimizer.apply_gradients(grads, self.variables_by_name)
      return
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                            for g in grads])

    def _step():
      self.optimizer.apply_gradients(grads, self.variables_by_name)
      return tf.constant(True)

    def _skip():
      # The step still counts, so that data and dropout stay aligned with
      # global_step (exact resume).
      self.optimizer.global_step.assign_add(1)
      return tf.constant(False)

    tf.cond(finite, _step, _skip)
    self.loss_scale.update(finite)

  def _loop_fn(self, iterator, num_steps):
    loss_sum = tf.constant(0.0)
    done = tf.constant(0)
    for _ in tf.range(num_steps):
      features = next(iterator)
      loss, grads = self._compiled_gradients(
          features, self.optimizer.global_step.read_value())
      # The stop request travels with the gradients: every rank ends the
      # loop after the same step when any rank was asked to stop.
      reduced = self.distribution.allreduce_gradients(
          list(grads) + [tf.cast(self.stop_requested, tf.float32)])
      self._apply(reduced[:-1])
      loss_sum += loss
      done += 1
      if reduced[-1] > 0:
        self._stopped.assign(True)
        break
    return loss_sum / tf.cast(tf.maximum(done, 1), tf.float32)

  def run(self, iterator, num_steps):
    """Runs up to `num_steps` steps; returns their mean loss (float)."""
    return float(self._loop(iterator, tf.constant(num_steps,
                                                  tf.int32)).numpy())


@dataclasses.dataclass
class Schedule(object):
  """When a training run stops and returns to Python (steps)."""
  num_train_steps: int
  iterations_per_loop: int
  log_every_n_steps: int
  save_checkpoints_steps: int
  examples_per_step: int  # over all processes
  output_dir: str  # named in the line that says where a stopped run is


def next_boundary(step, schedule):
  """The step at which the device loop that starts at `step` must return."""
  candidates = [schedule.num_train_steps]
  for every in (schedule.iterations_per_loop, schedule.log_every_n_steps,
                schedule.save_checkpoints_steps):
    candidates.append((step // every + 1) * every)
  return min(candidates)


def train(loop, make_iterator, schedule, saver=None, summary_writer=None):
  """Trains from the optimizer's global_step to schedule.num_train_steps.

  `make_iterator()` gives the training batches from that step on; it is
  called only when there is a step to run (a finished run builds no input
  pipeline). Every process calls it; the chief (saver and summary_writer
  given) logs, writes scalars (loss, learning_rate, examples_per_sec) and
  saves model.ckpt-<step> every save_checkpoints_steps, at the end and
  when stopped by a signal.

  Returns:
    The mean loss of the last device loop (nan when no step ran).

  Raises:
    cli.UserError: a non-finite loss (without loss scaling).
    cli.Interrupted: SIGINT or SIGTERM (after a checkpoint was saved).
  """
  optimizer, distribution = loop.optimizer, loop.distribution
  step = int(optimizer.global_step.numpy())
  if step >= schedule.num_train_steps:
    logging.info("Skipping training: global_step %d >= %d training steps",
                 step, schedule.num_train_steps)
    return float("nan")
  iterator = make_iterator()
  progress = cli.StepProgress(step, schedule.num_train_steps,
                              schedule.examples_per_step)
  # Ctrl-C or SIGTERM: the current step is finished, a checkpoint written,
  # and the run ends with one line saying where it is.
  stop = cli.StopOnSignal(loop.request_stop)
  stopped = False
  mean_loss = float("nan")
  with distribution.watch_training(optimizer.global_step), stop:
    while step < schedule.num_train_steps and not stopped:
      boundary = next_boundary(step, schedule)
      loop_start = time.time()
      mean_loss = loop.run(iterator, boundary - step)
      if not math.isfinite(mean_loss) and loop.loss_scale is None:
        raise cli.UserError(
            "training loss is %s at step %d; lower --learning_rate" %
            (mean_loss, boundary))
      elapsed = time.time() - loop_start
      stopped = loop.stopped
      new_step = int(optimizer.global_step.numpy())
      loop_steps, step = new_step - step, new_step
      if not distribution.is_chief:
        continue
      learning_rate = float(optimizer.learning_rate_at(step).numpy())
      if summary_writer is not None:
        results.write_scalars(summary_writer, {
            "loss": mean_loss, "learning_rate": learning_rate,
            "examples_per_sec": loop_steps * schedule.examples_per_step /
                                max(elapsed, 1e-9)}, step)
      if (step % schedule.log_every_n_steps == 0 or
          step == schedule.num_train_steps):
        progress.log(step, mean_loss, learning_rate)
      if saver is not None and (step % schedule.save_checkpoints_steps == 0
                                or step == schedule.num_train_steps or
                                stopped):
        saver.save(step)
  if summary_writer is not None:
    summary_writer.flush()
  if stopped or stop.signum:
    # (A signal after the last step stops the run here too: the final
    # checkpoint is written, and the work after training is not started.)
    signum = stop.signum or signal.SIGINT  # another rank's signal
    raise cli.Interrupted(
        "stopped by %s after step %d; checkpoint %s-%d saved in %s: run the "
        "same command to resume from it" % (
            signal.Signals(signum).name, step,
            checkpoints.CHECKPOINT_BASENAME, step, schedule.output_dir),
        signum)
  progress.done(step)
  return mean_loss


def output_lock(output_dir, distribution, do_train):
  """One training run at a time per output folder (the chief holds it).

  An evaluation-only run takes no lock: it may read the checkpoints of a
  training run.
  """
  if distribution.is_chief and do_train:
    cli.ensure_writable_dir(output_dir)
    return cli.DirectoryLock(output_dir)
  return contextlib.nullcontext()


# The settings of a training run, stored in output_dir to compare on resume.
RUN_SETTINGS_FILE = "run_settings.json"


def check_run_settings(output_dir, settings, resuming):
  """Warns about settings that changed since the run in output_dir began.

  Writes `settings` (a dict of JSON values: batch size, learning rate,
  steps, processes) to output_dir/run_settings.json (call on the chief).
  Resuming with another batch size or learning rate continues the series
  of checkpoints with a different optimisation: allowed, but said.
  """
  path = os.path.join(output_dir, RUN_SETTINGS_FILE)
  if resuming and tf.io.gfile.exists(path):
    try:
      with tf.io.gfile.GFile(path) as f:
        before = json.load(f)
    except ValueError:
      before = {}
    changed = ["%s %s -> %s" % (key, before[key], settings[key])
               for key in settings
               if key in before and before[key] != settings[key]]
    if changed:
      logging.warning("Resuming %s with other settings than it was started "
                      "with: %s", output_dir, ", ".join(changed))
  with outputs.atomic_output(path) as tmp:
    with tf.io.gfile.GFile(tmp, "w") as f:
      json.dump(settings, f, indent=2, sort_keys=True)
      f.write("\n")
