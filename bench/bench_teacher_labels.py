"""Stage IV benchmark: teacher-label throughput, ours vs Hugging Face.

Labels synthetic but valid stage-III records (seq 128, 20 masked positions)
with a BERT-Base-sized teacher (12 layers, hidden 768, 12 heads, intermediate
3072, vocab 30522; random weights saved with checkpoints.save_checkpoint and
loaded as the script loads a teacher) and K = 10:

  ours  teacher.label_records, the whole path of produce_teacher_labels.py:
        read and parse the records (tf.data), the teacher's forward pass with
        the vocabulary projection at the masked positions only, softmax,
        top-K, and the output records serialised and written to disk;
  peer  a Hugging Face `transformers` PyTorch BertForMaskedLM (eval mode,
        torch.no_grad) over the same batches, already in memory as tensors:
        its encoder (`model.bert`), the hidden states gathered at the masked
        positions, its masked-LM head (`model.cls`) there, softmax and top-K
        in float32. Gathering before the head is the same work as ours (the
        model called whole projects every position onto the vocabulary). It
        reads and writes no records.

Two more views of the same work, so that a stall at the end or a start-up
cost shows as a difference: the steady state (ours: the labelling function
alone on batches already parsed and in memory, as the peer's always are),
and whole processes (ours: produce_teacher_labels.py on the records; the
peer: bench/hf_peer.py, which imports no TensorFlow, labels the same inputs
from a .npz and writes its labels), each timed from its start to its exit
(`--whole_process_rounds`, best of).

Each side runs in float32 and in bfloat16 (`--dtypes`): ours with
--compute_dtype=bfloat16, the peer under torch.autocast("cpu",
dtype=torch.bfloat16), the mixed precision a PyTorch user tries first. Rows:
ours vs the peer in the same precision, and our bfloat16 vs our float32.

The peer gets our teacher's weights, so both compute the same function: the
largest difference of their top-K probabilities is printed. Both use the same
number of CPU threads; the in-process rows run in this one process, their
tracing/compilation done in a warm-up on one batch first, and the best of
the rounds is reported.
The machine's bfloat16 support (hardware.py) is printed first.

Usage (keep it short on shared machines):
  PYTHONPATH=. .venv/bin/python bench/bench_teacher_labels.py
"""

import json
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import tensorflow as tf  # pylint: disable=g-import-not-at-top

from bench import common  # pylint: disable=g-import-not-at-top
from bench import hf_peer  # pylint: disable=g-import-not-at-top
from bert_distill.lib import checkpoints  # pylint: disable=g-import-not-at-top
import modeling  # pylint: disable=g-import-not-at-top
from bert_distill.lib import record_format  # pylint: disable=g-import-not-at-top
from bert_distill.lib import records  # pylint: disable=g-import-not-at-top
from bert_distill.stages import teacher  # pylint: disable=g-import-not-at-top
from tests import example_records  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
common.define_model_flags("Teacher", num_layers=12)
flags.DEFINE_integer("batch_size", 32, "Teacher batch size (both).")
flags.DEFINE_integer("num_records", 192, "Records labelled per round.")
flags.DEFINE_integer("rounds", 3, "Measurement rounds, alternating ours and "
                     "the peer (best is reported).")
flags.DEFINE_list("modes", ["graph"],
                  "Our variants to time: graph (tf.function), xla "
                  "(tf.function with jit_compile, --use_xla).")
flags.DEFINE_integer("whole_process_rounds", 3,
                     "Rounds of the whole-process runs, alternating ours "
                     "and the peer; the best of each is reported (0: "
                     "none). One process moves by up to 20% between runs "
                     "on a shared machine.")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"],
                  "Precisions to time, ours and the peer's: float32, "
                  "bfloat16 (ours --compute_dtype=bfloat16, the peer under "
                  "torch.autocast).")


def teacher_config():
  """The benchmark teacher's BertConfig (erf GELU, as HF's "gelu")."""
  return common.bert_config_from_flags("gelu_exact")


def synthetic_examples(n, rng):
  """`n` valid stage-III feature dicts: [CLS] A [SEP] B [SEP], 15% masked."""
  s, p, v = FLAGS.seq_length, FLAGS.predictions, FLAGS.vocab_size
  out = []
  for _ in range(n):
    # Most pre-training sequences are full; some are short (short_seq_prob).
    length = s if rng.random() < 0.9 else int(rng.integers(8, s))
    split = int(rng.integers(2, length - 2))
    ids = rng.integers(1000, v, length)
    ids[0], ids[split], ids[length - 1] = 101, 102, 102
    real = min(p, max(1, int(round((length - 3) * 0.15))))
    candidates = [i for i in range(1, length - 1) if i != split]
    positions = np.zeros(p, np.int64)
    positions[:real] = np.sort(rng.choice(candidates, real, replace=False))
    masked_ids = np.zeros(p, np.int64)
    masked_ids[:real] = ids[positions[:real]]
    ids[positions[:real]] = 103
    out.append({
        "input_ids": np.pad(ids, (0, s - length)),
        "input_mask": [1] * length + [0] * (s - length),
        "segment_ids": ([0] * (split + 1) + [1] * (length - split - 1) +
                        [0] * (s - length)),
        "masked_lm_positions": positions,
        "masked_lm_ids": masked_ids,
        "masked_lm_weights": [1.0] * real + [0.0] * (p - real),
        "next_sentence_labels": [int(rng.integers(0, 2))],
    })
  return out


def write_records(path, examples):
  with tf.io.TFRecordWriter(path) as writer:
    for e in examples:
      writer.write(example_records.make_example(e))
  return path


class Ours(object):
  """This project's stage IV: records in, labelled records out."""

  def __init__(self, config, checkpoint, use_xla, dtype, tmp):
    self.labeler = teacher.TeacherLabeler(config, checkpoint, FLAGS.k,
                                          use_xla=use_xla,
                                          compute_dtype=dtype)
    self.tmp = tmp
    self.output = None

  def run(self, path):
    """Labels the records of `path`; returns the number written."""
    self.output = os.path.join(self.tmp, "labels.tfrecord")
    return teacher.label_records(self.labeler, [path], self.output,
                                 FLAGS.seq_length, FLAGS.predictions,
                                 FLAGS.batch_size)


def hf_state_dict(variables_by_name, torch):
  """Our Google-named variables as a BertForMaskedLM state dict."""
  state = {}
  for name, var in variables_by_name.items():
    if name.startswith(("bert/pooler", "cls/seq_relationship")):
      continue
    value = var.numpy()
    key = name.replace("/", ".")
    key = key.replace("layer_", "layer.")
    if key.endswith(".kernel"):
      key, value = key[:-len("kernel")] + "weight", value.T
    elif key.endswith(".gamma"):
      key = key[:-len("gamma")] + "weight"
    elif key.endswith(".beta"):
      key = key[:-len("beta")] + "bias"
    elif key.endswith("_embeddings"):
      key += ".weight"
    elif key == "cls.predictions.output_bias":
      key = "cls.predictions.bias"
    state[key] = torch.tensor(np.ascontiguousarray(value))
  return state


def peer_config_kwargs():
  """The peer's transformers.BertConfig arguments (the teacher's shape)."""
  return dict(vocab_size=FLAGS.vocab_size, hidden_size=FLAGS.hidden_size,
              num_hidden_layers=FLAGS.num_layers,
              num_attention_heads=FLAGS.num_heads,
              intermediate_size=FLAGS.intermediate_size, hidden_act="gelu",
              max_position_embeddings=512, type_vocab_size=2,
              layer_norm_eps=1e-12)


def stacked_inputs(examples):
  """The teacher's inputs of `examples` as int64 arrays [n, ...]."""
  return {name: np.stack([np.asarray(e[name], np.int64) for e in examples])
          for name in teacher.TEACHER_INPUTS}


class Peer(object):
  """Hugging Face BertForMaskedLM (PyTorch) at the masked positions."""

  def __init__(self, variables_by_name, examples, dtype):
    import torch  # pylint: disable=g-import-not-at-top
    self.peer = hf_peer.HFPeer(
        peer_config_kwargs(), hf_state_dict(variables_by_name, torch),
        stacked_inputs(examples), dtype, FLAGS.k, FLAGS.batch_size)

  def run(self, num_batches=None):
    """Labels the batches; returns (records labelled, first batch's top-K)."""
    count, labels = self.peer.run(num_batches)
    return count, labels[0]


class OursInMemory(object):
  """Our teacher's steady state: the labelling function alone, on batches
  already parsed and in memory (as the peer's)."""

  def __init__(self, labeler, examples):
    self.labeler = labeler
    inputs = stacked_inputs(examples)
    b = FLAGS.batch_size
    self.batches = [{name: tf.constant(values[start:start + b], tf.int32)
                     for name, values in inputs.items()}
                    for start in range(0, len(examples), b)]

  def run(self):
    count = 0
    for batch in self.batches:
      probs, _ = self.labeler(batch)
      probs.numpy()
      count += int(batch["input_ids"].shape[0])
    return count


def whole_processes(tmp, config, model, examples, path, threads):
  """Records/s of one whole process of each side, per dtype.

  Ours: produce_teacher_labels.py on the records (Python start, TensorFlow
  import, checkpoint load, labelling, writing). The peer: bench/hf_peer.py
  (Python start, torch and transformers imports, loading the weights,
  labelling the inputs from a .npz, writing the labels).
  """
  import torch  # pylint: disable=g-import-not-at-top
  with open(os.path.join(tmp, "bert_config.json"), "w") as f:
    f.write(config.to_json_string())
  with open(os.path.join(tmp, "peer_config.json"), "w") as f:
    json.dump(peer_config_kwargs(), f)
  torch.save(hf_state_dict(model.variables_by_name(), torch),
             os.path.join(tmp, "peer_state.pt"))
  np.savez(os.path.join(tmp, "inputs.npz"), **stacked_inputs(examples))
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
             TF_NUM_INTRAOP_THREADS=str(threads))
  best = {}
  for _ in range(FLAGS.whole_process_rounds):
    for dtype in FLAGS.dtypes:
      ours = [sys.executable, os.path.join(REPO, "produce_teacher_labels.py"),
              "--bert_config_file", os.path.join(tmp, "bert_config.json"),
              "--init_checkpoint", os.path.join(tmp, "bert_model.ckpt"),
              "--input_file", path, "--output_file",
              os.path.join(tmp, "whole.tfrecord"), "--overwrite",
              "--truncation_factor", str(FLAGS.k),
              "--max_seq_length", str(FLAGS.seq_length),
              "--max_predictions_per_seq", str(FLAGS.predictions),
              "--batch_size", str(FLAGS.batch_size),
              "--compute_dtype", dtype]
      peer = [sys.executable, os.path.join(REPO, "bench", "hf_peer.py"),
              "--config", os.path.join(tmp, "peer_config.json"),
              "--state", os.path.join(tmp, "peer_state.pt"),
              "--inputs", os.path.join(tmp, "inputs.npz"),
              "--output", os.path.join(tmp, "peer_labels.npz"),
              "--dtype", dtype, "--k", str(FLAGS.k),
              "--batch_size", str(FLAGS.batch_size),
              "--threads", str(threads)]
      for side, cmd in (("ours", ours), ("peer", peer)):
        rate = len(examples) / common.timed_command(cmd, env, REPO)
        key = "%s %s" % (side, dtype)
        best[key] = max(best.get(key, 0.0), rate)
  return best


def first_batch_labels(path):
  """(probs, indices) [B, P, K] of the first batch of a stage-IV file."""
  lengths = records.stage4_lengths(FLAGS.seq_length, FLAGS.predictions,
                                   FLAGS.k)
  batch = next(iter(records.make_dataset([path], lengths, FLAGS.batch_size,
                                         is_training=False)))
  shape = [-1, FLAGS.predictions, FLAGS.k]
  return (batch[record_format.TRUNCATED_PROBS].numpy().reshape(shape),
          batch[record_format.TOP_K_INDICES].numpy().reshape(shape))


def main(argv):
  del argv
  with tempfile.TemporaryDirectory(prefix="bench_teacher_labels_",
                                   ignore_cleanup_errors=True) as tmp:
    run(tmp)


def run(tmp):
  """Measures ours and the peer; temporary files go to `tmp`."""
  threads = common.set_threads()
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  examples = synthetic_examples(FLAGS.num_records, rng)
  path = write_records(os.path.join(tmp, "stage3.tfrecord"), examples)
  warmup = write_records(os.path.join(tmp, "warmup.tfrecord"),
                         examples[:FLAGS.batch_size])
  config = teacher_config()
  model = modeling.BertPretrainingModel(config)
  checkpoint = checkpoints.save_checkpoint(
      model.variables_by_name(), os.path.join(tmp, "bert_model.ckpt"))

  for dtype in FLAGS.dtypes:
    if dtype not in ("float32", "bfloat16"):
      raise app.UsageError("--dtypes: unknown dtype %r" % dtype)
  runners = {}
  for mode in FLAGS.modes:
    if mode not in ("graph", "xla"):
      raise app.UsageError("--modes: unknown mode %r" % mode)
    for dtype in FLAGS.dtypes:
      runners["ours %s %s" % (mode, dtype)] = Ours(
          config, checkpoint, mode == "xla", dtype, tmp)
  if "graph" in FLAGS.modes:
    for dtype in FLAGS.dtypes:
      runners["ours steady " + dtype] = OursInMemory(
          runners["ours graph " + dtype].labeler, examples)
  for dtype in FLAGS.dtypes:
    runners["peer " + dtype] = Peer(model.variables_by_name(), examples,
                                    dtype)

  # Warm-up (tracing, XLA compilation, allocators) and agreement check.
  _, peer_first = runners["peer float32"].run(num_batches=1)
  for name, runner in runners.items():
    if name.startswith("ours steady"):
      runner.run()
      continue
    if name.startswith("peer"):
      _, (probs, indices) = runner.run(num_batches=1)
    else:
      runner.run(warmup)
      probs, indices = first_batch_labels(runner.output)
    print("%s vs peer float32 on batch 1: top-%d probabilities differ by "
          "at most %.1e (absolute), top-1 agreement %.4f" % (
              name, FLAGS.k, np.max(np.abs(probs - peer_first[0])),
              np.mean(indices[..., 0] == peer_first[1][..., 0])))

  best = {name: 0.0 for name in runners}
  for _ in range(FLAGS.rounds):
    for name, runner in runners.items():
      start = time.perf_counter()
      if name.startswith("peer"):
        count, _ = runner.run()
      elif name.startswith("ours steady"):
        count = runner.run()
      else:
        count = runner.run(path)
      assert count == len(examples)
      best[name] = max(best[name], count / (time.perf_counter() - start))
  for name, value in best.items():
    print("%s: %.2f sequences/s" % (name, value))

  sizes = ("%d layers, hidden %d, seq %d, %d predictions, K=%d, batch %d, "
           "%d records, %d threads" %
           (FLAGS.num_layers, FLAGS.hidden_size, FLAGS.seq_length,
            FLAGS.predictions, FLAGS.k, FLAGS.batch_size, len(examples),
            threads))
  peer_names = {
      "float32": "HF transformers %s BertForMaskedLM (PyTorch %s) float32, "
                 "head at the masked positions" % (transformers.__version__,
                                                   torch.__version__),
      "bfloat16": "the same under torch.autocast(bfloat16)"}
  note = (sizes + "; ours includes reading, parsing and writing the records, "
          "the peer has tensors in memory and writes nothing")
  for mode in FLAGS.modes:
    for dtype in FLAGS.dtypes:
      common.report("IV teacher labels (%s, %s)" % (mode, dtype),
                    "sequences/s", best["ours %s %s" % (mode, dtype)],
                    best["peer " + dtype], peer_names[dtype], note)
    if "float32" in FLAGS.dtypes and "bfloat16" in FLAGS.dtypes:
      common.report("IV teacher labels (%s, bfloat16)" % mode,
                    "sequences/s", best["ours %s bfloat16" % mode],
                    best["ours %s float32" % mode], "ours in float32",
                    "target >= 3x on bfloat16 hardware; " + sizes)
  # The same work measured two more ways: the labelling alone on batches in
  # memory (both sides' steady state), and whole processes (start-up and
  # loading included): a stall or a start-up cost shows as the difference.
  if "graph" in FLAGS.modes:
    for dtype in FLAGS.dtypes:
      common.report("IV teacher labels, steady state (%s)" % dtype,
                    "sequences/s", best["ours steady " + dtype],
                    best["peer " + dtype], peer_names[dtype],
                    sizes + "; both label batches already in memory")
  if FLAGS.whole_process_rounds:
    whole = whole_processes(tmp, config, model, examples, path, threads)
    for dtype in FLAGS.dtypes:
      common.report(
          "IV teacher labels, whole process (%s)" % dtype, "sequences/s",
          whole["ours " + dtype], whole["peer " + dtype], peer_names[dtype],
          sizes + "; produce_teacher_labels.py against bench/hf_peer.py, "
          "each from its start (imports, loading the weights) to its "
          "labels written")

if __name__ == "__main__":
  app.run(main)
