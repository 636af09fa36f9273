"""network_distillation_distributed_truncated.py, watched (tests only).

Runs the Horovod script's own `main` with its flags, and writes to the folder
named by the environment variable DISTILL_DEBUG_DIR (outside --output_dir)
what each rank did:

  rank<R>_records.txt    one line per training record it consumed, in order:
                         "input_ids | masked_lm_positions | masked_lm_ids"
                         (space-separated integers);
  rank<R>_variables.npz  its final values of every variable it broadcast
                         (model, optimizer slots, global_step), in order.

The script is not changed: this wrapper hooks, from outside, the training
pipelines that records.make_dataset builds and the distribution that
horovod_distribution.start makes. tests/test_distributed.py launches it under
mpirun in place of the script.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill import cli
import network_distillation_distributed_truncated as script
import numpy as np
import tensorflow as tf

from bert_distill.stages import horovod_distribution
from bert_distill.lib import records
# pylint: enable=g-import-not-at-top,wrong-import-position

DEBUG_DIR_ENV = "DISTILL_DEBUG_DIR"


def log_consumed_records(dataset, path):
  """`dataset` (parsed batches), appending each consumed record to `path`."""
  open(path, "w").close()

  def _log(input_ids, positions, label_ids):
    with open(path, "a") as f:
      for row in zip(input_ids.numpy(), positions.numpy(),
                     label_ids.numpy()):
        f.write(" | ".join(" ".join(str(int(x)) for x in part)
                           for part in row) + "\n")
    return np.int32(0)

  def _log_batch(features):
    done = tf.py_function(_log, [features["input_ids"],
                                 features["masked_lm_positions"],
                                 features["masked_lm_ids"]], tf.int32)
    with tf.control_dependencies([done]):
      return {k: tf.identity(v) for k, v in features.items()}

  # A sequential map with nothing prefetching after it (tf.data would
  # otherwise inject a prefetch): a batch is logged when it is consumed.
  options = tf.data.Options()
  options.experimental_optimization.inject_prefetch = False
  options.experimental_optimization.map_parallelization = False
  return dataset.map(_log_batch).with_options(options)


class WatchedDistribution(horovod_distribution.HorovodDistribution):
  """Remembers the variables that distillation.run broadcasts."""

  broadcast_list = None

  def broadcast_variables(self, variables):
    self.broadcast_list = list(variables)
    super(WatchedDistribution, self).broadcast_variables(self.broadcast_list)


def main(argv):
  debug_dir = os.environ[DEBUG_DIR_ENV]
  os.makedirs(debug_dir, exist_ok=True)
  started = []
  start = horovod_distribution.start
  make_dataset = records.make_dataset

  def watched_start():
    distribution, device = start(WatchedDistribution)
    started.append(distribution)
    return distribution, device

  def watched_make_dataset(paths, lengths, batch_size, is_training,
                           **kwargs):
    dataset = make_dataset(paths, lengths, batch_size, is_training, **kwargs)
    if not is_training:
      return dataset
    return log_consumed_records(dataset, os.path.join(
        debug_dir, "rank%d_records.txt" % started[0].rank))

  horovod_distribution.start = watched_start
  records.make_dataset = watched_make_dataset
  script.main(argv)
  distribution = started[0]
  if distribution.broadcast_list is None:
    return
  values = {}
  for i, var in enumerate(distribution.broadcast_list):
    values["%03d:%s" % (i, var.name)] = var.numpy()
  np.savez(os.path.join(debug_dir, "rank%d_variables.npz" %
                        distribution.rank), **values)


if __name__ == "__main__":
  cli.run(main)
