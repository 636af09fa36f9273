"""The Horovod side of the training loops: one process per GPU.

Shared by the Horovod scripts of distillation (stage VI,
network_distillation_distributed_truncated.py) and fine-tuning (stage VIII,
run_classifier_distributed.py, run_squad_distributed.py). Their training
loops (distillation.run, finetuning.FineTuner) take a
`training.Distribution`; this module's subclass fills it in with Horovod:

  - `pin_device`: one GPU per process, chosen by the local rank (CPU threads
    shared out when the machine has no GPU);
  - `HorovodDistribution.allreduce_gradients`: the average of each gradient
    over all processes (one fused hvd.grouped_allreduce, op=Average);
  - `HorovodDistribution.broadcast_variables`: every variable set to rank 0's
    value (after rank 0 initialised or restored them);
  - rank, size, local rank: only rank 0 (the chief) writes outputs;
  - stall bounds: a frozen or lost process would otherwise hang the job for
    good (the others wait in the next allreduce). From environment
    variables the user may set (mpirun -x, or multinode_train.sh):
      HOROVOD_STALL_CHECK_TIME_SECONDS [60]: Horovod warns, naming the
        missing ranks, when ranks wait this long for the others;
      HOROVOD_STALL_SHUTDOWN_TIME_SECONDS [600]: Horovod shuts down after
        this long, and `StallWatchdog` (`watch_training`) ends the job (exit
        1, one error line naming a stopped process of the same node) when
        global_step has not advanced for this long during training. A
        stopped process (kill -STOP, a frozen node) also stops Horovod's
        own negotiation, so Horovod's check alone cannot end such a job.

Usage in a script's main:
  distribution, device = horovod_distribution.start()
  ... run(options, distribution) ...
"""

import os
import socket
import sys
import threading
import time

from absl import logging
import horovod.tensorflow as hvd
import tensorflow as tf

from bert_distill import cli
from bert_distill.stages import training

# Defaults of Horovod's stall check, set unless the user set them (the
# check time is at most the shutdown time: Horovod ignores the shutdown time
# otherwise).
STALL_DEFAULTS = {"HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "600",
                  "HOROVOD_STALL_CHECK_TIME_SECONDS": "60"}


class HorovodDistribution(training.Distribution):
  """A process of a Horovod job: averaged gradients, rank-0 broadcast."""

  def __init__(self):
    """Reads rank and size from Horovod (hvd.init() first)."""
    super(HorovodDistribution, self).__init__(
        rank=hvd.rank(), size=hvd.size())
    # (pid, host) of every rank, to name a stalled one.
    self.peers = hvd.allgather_object((os.getpid(), socket.gethostname()))

  @tf.autograph.experimental.do_not_convert
  def allreduce_gradients(self, grads):
    """The average of each gradient over all processes (one fused call)."""
    if self.size == 1:
      return grads
    return hvd.grouped_allreduce(grads, op=hvd.Average,
                                 name="average_gradients")

  def broadcast_variables(self, variables):
    """Sets every variable to rank 0's value."""
    if self.size > 1:
      hvd.broadcast_variables(list(variables), root_rank=0)

  def broadcast_object(self, value):
    """Rank 0's `value` (a picklable object), on every process."""
    if self.size == 1:
      return value
    return hvd.broadcast_object(value, root_rank=0)

  def shutdown(self):
    """Stops Horovod (all ranks call it together): its background thread
    would otherwise keep negotiating every few milliseconds, about 12% of a
    core per process while stage IV labels (measured)."""
    hvd.shutdown()

  def watch_training(self, global_step):
    """A watchdog that ends the job when global_step stops advancing."""
    return StallWatchdog(global_step, self.peers, self.rank,
                         stall_shutdown_seconds())


def stall_shutdown_seconds():
  """HOROVOD_STALL_SHUTDOWN_TIME_SECONDS as a number (0: no watchdog)."""
  name = "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"
  value = os.environ.get(name, STALL_DEFAULTS[name])
  try:
    return max(0.0, float(value))
  except ValueError:
    raise cli.UserError("%s=%s: expected a number of seconds" % (name, value))


def process_state(pid):
  """The state letter of a local process (R, S, T: stopped, ...) or None."""
  try:
    with open("/proc/%d/stat" % pid) as f:
      stat = f.read()
  except OSError:
    return None
  return stat[stat.rindex(")") + 2:].split()[0]


class StallWatchdog(object):
  """Ends this process (exit 1) when global_step stops advancing too long.

  A thread polls the step variable. When it has not changed for `seconds`,
  it writes one `error:` line naming the ranks it finds stopped or gone on
  this node (others cannot be seen from here) and exits with status 1;
  it is armed by the first step this process makes;
  mpirun then stops the other processes.
  """

  def __init__(self, global_step, peers, rank, seconds):
    self._step = global_step
    self._peers = peers
    self._rank = rank
    self._seconds = seconds
    self._done = threading.Event()
    self._thread = None

  def __enter__(self):
    if self._seconds > 0:
      self._thread = threading.Thread(target=self._watch, daemon=True,
                                      name="stall_watchdog")
      self._thread.start()
    return self

  def __exit__(self, *exc_info):
    self._done.set()

  def _watch(self):
    # Armed from the first step on: before it, tracing the training step and
    # filling the shuffle buffer may take long (Horovod's own stall check
    # covers that time).
    last, since = int(self._step.numpy()), None
    poll = min(5.0, self._seconds / 4)
    polled = time.time()
    while not self._done.wait(poll):
      step, now = int(self._step.numpy()), time.time()
      if since is not None and now - polled > poll + 2.0:
        # This process itself was stopped (and continued, e.g. by mpirun
        # ending the job): the stalled rank is this one, not the others.
        since = now
      polled = now
      if step != last:
        last, since = step, now
      elif (since is not None and now - since >= self._seconds and
            not self._done.is_set()):
        self._fail(step)

  def _fail(self, step):
    host = socket.gethostname()
    seen = []
    for rank, (pid, peer_host) in enumerate(self._peers):
      if rank == self._rank or peer_host != host:
        continue
      state = process_state(pid)
      if state in (None, "Z", "X"):
        seen.append("rank %d (pid %d) is gone" % (rank, pid))
      elif state in ("T", "t"):
        seen.append("rank %d (pid %d) is stopped" % (rank, pid))
    sys.stderr.write(
        "error: rank %d: no training step for %d s (global_step %d): %s; "
        "ending the job (HOROVOD_STALL_SHUTDOWN_TIME_SECONDS=%g). Rerun the "
        "same command to resume from the newest checkpoint\n" %
        (self._rank, self._seconds, step,
         "; ".join(seen) or "a process on another node stopped responding",
         self._seconds))
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access


def pin_device(local_rank, local_size):
  """Makes GPU `local_rank` the only visible GPU (or sizes CPU threads).

  Must run before TensorFlow initialises its devices. Without GPUs, the
  processes of a node share its cores: unless TF_NUM_INTRAOP_THREADS is set,
  each gets cores // local_size intra-op threads.

  Returns:
    The device name ("CPU" without GPUs).

  Raises:
    cli.UserError: this local rank has no GPU of its own.
  """
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    if local_rank >= len(gpus):
      raise cli.UserError(
          "local rank %d has no GPU: this node has %d GPU(s) but runs %d "
          "processes (give each node at most as many slots as GPUs)" %
          (local_rank, len(gpus), local_size))
    gpu = gpus[local_rank]
    tf.config.set_visible_devices([gpu], "GPU")
    tf.config.experimental.set_memory_growth(gpu, True)
    return gpu.name
  tf.config.set_visible_devices([], "GPU")
  if not os.environ.get("TF_NUM_INTRAOP_THREADS"):
    tf.config.threading.set_intra_op_parallelism_threads(
        max(1, (os.cpu_count() or 1) // max(1, local_size)))
  return "CPU"


def start(distribution_factory=HorovodDistribution):
  """Starts this process's part of a Horovod job.

  hvd.init(), one GPU per process (`pin_device`), then the distribution;
  ranks other than 0 log warnings only.

  Args:
    distribution_factory: makes the distribution once Horovod is
      initialised (HorovodDistribution, or e.g. a subclass with a test hook).

  Returns:
    (distribution, device name).
  """
  shutdown = stall_shutdown_seconds()  # a bad value: an error at once
  os.environ.setdefault("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS",
                        STALL_DEFAULTS["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"])
  check = min(float(STALL_DEFAULTS["HOROVOD_STALL_CHECK_TIME_SECONDS"]),
              shutdown or float("inf"))
  os.environ.setdefault("HOROVOD_STALL_CHECK_TIME_SECONDS",
                        str(max(1, int(check))))
  hvd.init()
  device = pin_device(hvd.local_rank(), hvd.local_size())
  distribution = distribution_factory()
  if not distribution.is_chief:
    logging.set_verbosity(logging.WARNING)
  return distribution, device
