"""Shared output format for the benchmarks under bench/.

Every benchmark measures this project and a peer in the same run and ends by
calling `report(...)` once per figure. `report` prints a readable line and a
machine-readable `BENCH_RESULT {json}` line that bench/run_all.sh collects
into one table.
"""

import json
import os
import subprocess
import sys
import time


def describe_hardware():
  """One line: the CPU (or GPU) and its bfloat16 units, and the core count."""
  from bert_distill.lib import hardware  # pylint: disable=g-import-not-at-top
  return "%s; %d cores" % (hardware.bfloat16_support().what, os.cpu_count())


def report(stage, metric, ours, peer, peer_name, note=""):
  """Prints one benchmark figure: ours, the peer's, and their ratio.

  Args:
    stage: e.g. "III create_pretraining_data".
    metric: e.g. "instances/s" (higher is better).
    ours: this project's figure.
    peer: the peer's figure, measured in the same run.
    peer_name: what the peer is, e.g. "original BERT script, 1 process".
    note: anything a reader needs to compare fairly.
  """
  ratio = ours / peer if peer else float("nan")
  print("%s: %s ours %.1f, %s %.1f, ratio %.2fx%s" %
        (stage, metric, ours, peer_name, peer, ratio,
         " (%s)" % note if note else ""))
  print("BENCH_RESULT " + json.dumps({
      "stage": stage, "metric": metric, "ours": ours, "peer": peer,
      "peer_name": peer_name, "ratio": ratio, "note": note}))
  sys.stdout.flush()


def define_model_flags(role, num_layers):
  """Defines the size flags shared by the model benchmarks (IV and V).

  Args:
    role: what the model is, for the help text ("Teacher", "Student").
    num_layers: the default of --num_layers.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_integer("num_layers", num_layers, "%s layers." % role)
  flags.DEFINE_integer("hidden_size", 768, "%s hidden size." % role)
  flags.DEFINE_integer("num_heads", 12, "Attention heads.")
  flags.DEFINE_integer("intermediate_size", 3072, "Feed-forward size.")
  flags.DEFINE_integer("vocab_size", 30522, "Vocabulary size.")
  flags.DEFINE_integer("seq_length", 128, "max_seq_length.")
  flags.DEFINE_integer("predictions", 20, "max_predictions_per_seq.")
  flags.DEFINE_integer("k", 10, "truncation_factor.")
  flags.DEFINE_integer("threads", 0, "CPU threads for both (0: all cores).")


def bert_config_from_flags(hidden_act):
  """The benchmarked model's modeling.BertConfig, from the size flags."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  import modeling  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  return modeling.BertConfig(
      vocab_size=f.vocab_size, hidden_size=f.hidden_size,
      num_hidden_layers=f.num_layers, num_attention_heads=f.num_heads,
      intermediate_size=f.intermediate_size, hidden_act=hidden_act,
      hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
      max_position_embeddings=512, type_vocab_size=2,
      initializer_range=0.02)


def set_threads():
  """Gives TensorFlow and PyTorch the same CPU threads (--threads or all)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  threads = flags.FLAGS.threads or os.cpu_count()
  print("Hardware: " + describe_hardware())
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(2)
  torch.set_num_threads(threads)
  return threads


def timed_command(cmd, env, cwd):
  """Runs a command (a whole process); returns its wall time in seconds.

  Raises:
    RuntimeError: it failed (the end of its stderr in the message).
  """
  start = time.perf_counter()
  result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True,
                          text=True, check=False)
  seconds = time.perf_counter() - start
  if result.returncode != 0:
    raise RuntimeError("%s failed:\n%s" % (" ".join(cmd),
                                           result.stderr[-3000:]))
  return seconds
