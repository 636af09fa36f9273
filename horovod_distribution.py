"""The Horovod side of the training loops: one process per GPU.

Shared by the Horovod scripts of distillation (stage VI,
network_distillation_distributed_truncated.py) and fine-tuning (stage VIII,
run_classifier_distributed.py, run_squad_distributed.py). Their training
loops (distillation.run, finetuning.FineTuner) take a
`distillation.Distribution`; this module's subclass fills it in with Horovod:

  - `pin_device`: one GPU per process, chosen by the local rank (CPU threads
    shared out when the machine has no GPU);
  - `HorovodDistribution.allreduce_gradients`: the average of each gradient
    over all processes (one fused hvd.grouped_allreduce, op=Average);
  - `HorovodDistribution.broadcast_variables`: every variable set to rank 0's
    value (after rank 0 initialised or restored them);
  - rank, size, local rank: only rank 0 (the chief) writes outputs.

Usage in a script's main:
  distribution, device = horovod_distribution.start()
  ... run(options, distribution) ...
"""

import os

from absl import logging
import horovod.tensorflow as hvd
import tensorflow as tf

import cli
import distillation


class HorovodDistribution(distillation.Distribution):
  """A process of a Horovod job: averaged gradients, rank-0 broadcast."""

  def __init__(self):
    """Reads rank, size and local rank from Horovod (hvd.init() first)."""
    super(HorovodDistribution, self).__init__(
        rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank())

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
  hvd.init()
  device = pin_device(hvd.local_rank(), hvd.local_size())
  distribution = distribution_factory()
  if not distribution.is_chief:
    logging.set_verbosity(logging.WARNING)
  return distribution, device
