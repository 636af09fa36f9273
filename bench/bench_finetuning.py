"""Stage VIII benchmark: fine-tuning throughput, ours vs Hugging Face.

Measures training sequences/s of sentence(-pair) classification with a
BERT-Base-sized model (12 layers, hidden 768, 12 heads, intermediate 3072,
vocab 30522) at seq 128, on synthetic features (random word ids, lengths
drawn between half and all of the sequence, two labels):

  ours  run_classifier.py's training step: finetuning.FineTuner with
        classifier.ClassifierHead (the [CLS] pooled output, dropout,
        output_weights / output_bias, softmax cross-entropy),
        AdamWeightDecay with clipping, fed by FineTuner.train_dataset;
  peer  Hugging Face `transformers` PyTorch BertForSequenceClassification
        (loss from its labels), AdamW with weight decay 0.01 and global-norm
        clipping 1.0.

Both use the same number of CPU threads and run in the same process, one
after the other, alternating; the best of the rounds is reported.

Usage (keep it short on shared machines):
  PYTHONPATH=. .venv/bin/python bench/bench_finetuning.py --batch_size 8
"""

import dataclasses
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
from bert_distill.stages import classifier  # pylint: disable=g-import-not-at-top
# Defines run_classifier.py's flags: the benchmark's options start from their
# defaults.
from bert_distill.flags import classifier_flags  # pylint: disable=g-import-not-at-top,unused-import
from bert_distill.stages import finetuning  # pylint: disable=g-import-not-at-top
from bert_distill.flags import stage_flags  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
common.define_model_flags("Model", num_layers=12)
flags.DEFINE_integer("batch_size", 16, "Training batch size.")
flags.DEFINE_integer("steps", 2, "Timed steps per round.")
flags.DEFINE_integer("rounds", 2, "Alternating measurement rounds.")
flags.DEFINE_integer("num_labels", 2, "Classes.")


def synthetic_features(n, rng):
  """`n` classification inputs as run_classifier.py makes them."""
  s, v = FLAGS.seq_length, FLAGS.vocab_size
  input_ids = np.zeros([n, s], np.int32)
  input_mask = np.zeros([n, s], np.int32)
  segment_ids = np.zeros([n, s], np.int32)
  for i in range(n):
    length = int(rng.integers(s // 2, s + 1))
    input_ids[i, :length] = rng.integers(999, v, length)
    input_ids[i, 0], input_ids[i, length - 1] = 101, 102
    input_mask[i, :length] = 1
    segment_ids[i, length // 2:length] = 1
  return {"input_ids": input_ids, "input_mask": input_mask,
          "segment_ids": segment_ids,
          "label_ids": rng.integers(0, FLAGS.num_labels, n).astype(np.int32)}


class Ours(object):
  """run_classifier.py's training loop (finetuning.FineTuner)."""

  def __init__(self, features, output_dir):
    config = common.bert_config_from_flags("gelu")
    opts = dataclasses.replace(
        stage_flags.options_from_flags(
            classifier.ClassifierOptions, FLAGS), output_dir=output_dir,
        do_train=True, max_seq_length=FLAGS.seq_length,
        train_batch_size=FLAGS.batch_size, learning_rate=2e-5,
        num_train_epochs=1000.0)
    head = classifier.ClassifierHead(config.hidden_size, FLAGS.num_labels,
                                     config.hidden_dropout_prob)
    self.tuner = finetuning.FineTuner(
        opts, config, head, num_train_examples=len(features["input_ids"]))
    self.iterator = iter(self.tuner.train_dataset(features))

  def run(self, steps):
    """Runs `steps` training steps; returns the mean loss."""
    return self.tuner.train_steps(self.iterator, steps)


class Peer(object):
  """Hugging Face BertForSequenceClassification (PyTorch)."""

  def __init__(self, features):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    config = transformers.BertConfig(
        vocab_size=FLAGS.vocab_size, hidden_size=FLAGS.hidden_size,
        num_hidden_layers=FLAGS.num_layers,
        num_attention_heads=FLAGS.num_heads,
        intermediate_size=FLAGS.intermediate_size,
        hidden_act="gelu_new",  # Google's tanh gelu, as ours.
        max_position_embeddings=512, type_vocab_size=2,
        num_labels=FLAGS.num_labels)
    torch.manual_seed(0)
    self.model = transformers.BertForSequenceClassification(config)
    self.model.train()
    no_decay = [p for n, p in self.model.named_parameters()
                if "LayerNorm" in n or "bias" in n]
    decay = [p for n, p in self.model.named_parameters()
             if not ("LayerNorm" in n or "bias" in n)]
    self.optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=2e-5, betas=(0.9, 0.999), eps=1e-6)
    self.torch = torch
    b = FLAGS.batch_size
    n = len(features["input_ids"])
    self.batches = [
        {"input_ids": torch.tensor(features["input_ids"][i:i + b],
                                   dtype=torch.long),
         "attention_mask": torch.tensor(features["input_mask"][i:i + b],
                                        dtype=torch.long),
         "token_type_ids": torch.tensor(features["segment_ids"][i:i + b],
                                        dtype=torch.long),
         "labels": torch.tensor(features["label_ids"][i:i + b],
                                dtype=torch.long)}
        for i in range(0, n - b + 1, b)]
    self.next = 0

  def run(self, steps):
    """Runs `steps` training steps; returns the last loss."""
    loss = None
    for _ in range(steps):
      batch = self.batches[self.next % len(self.batches)]
      self.next += 1
      loss = self.model(**batch).loss
      self.optimizer.zero_grad(set_to_none=True)
      loss.backward()
      self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
      self.optimizer.step()
    return float(loss.detach())


def timed(runner, steps):
  """Sequences per second of `steps` steps of `runner`."""
  start = time.perf_counter()
  runner.run(steps)
  return steps * FLAGS.batch_size / (time.perf_counter() - start)


def main(argv):
  del argv
  threads = common.set_threads()
  import torch  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  features = synthetic_features(4 * FLAGS.batch_size, rng)
  with tempfile.TemporaryDirectory(prefix="bench_finetuning_") as tmp:
    runners = {"ours": Ours(features, tmp), "peer": Peer(features)}
    for name, runner in runners.items():  # warm-up: tracing, allocators
      print("%s: warm-up loss %.3f" % (name, runner.run(1)))
    best = {name: 0.0 for name in runners}
    for _ in range(FLAGS.rounds):
      for name, runner in runners.items():
        best[name] = max(best[name], timed(runner, FLAGS.steps))
  for name, value in best.items():
    print("%s: %.2f sequences/s" % (name, value))
  sizes = ("%d layers, hidden %d, seq %d, %d labels, batch %d, %d threads" %
           (FLAGS.num_layers, FLAGS.hidden_size, FLAGS.seq_length,
            FLAGS.num_labels, FLAGS.batch_size, threads))
  common.report("VIII fine-tuning (run_classifier) training", "sequences/s",
                best["ours"], best["peer"],
                "HF transformers BertForSequenceClassification (PyTorch %s)" %
                torch.__version__, sizes)


if __name__ == "__main__":
  app.run(main)
