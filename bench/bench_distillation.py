"""Stage V benchmark: student training throughput, ours vs Hugging Face.

Measures training sequences/s of a 6-layer, 768-hidden BERT student (12 heads,
intermediate 3072, vocab 30522) at seq 128 with 20 masked positions and the
teacher's top-10 probabilities, on synthetic stage-IV records:

  ours  the project's training step (distillation.step_loop: records pipeline,
        soft cross-entropy at the masked positions + next-sentence loss,
        AdamWeightDecay with clipping), as the stage-V script runs it;
  peer  a Hugging Face `transformers` PyTorch BertForPreTraining training
        step with the same sizes and the same loss (soft cross-entropy on
        the top-K at the masked positions + next-sentence cross-entropy),
        AdamW with weight decay 0.01 and global-norm clipping 1.0.

With --layer_losses, both also run a BERT-Base-sized teacher (12 layers,
the student's width) online in each step, in inference mode, on stage-III
records, and add the TinyBERT hidden-state and attention losses (student layer
i against teacher layer 2i+1, embeddings against embeddings, padding left
out) to the soft cross-entropy on the teacher's top-K:

  ours  distillation.step_loop with --teacher_bert_config_file and
        --hidden_loss_weight=1 --attention_loss_weight=1 (pre-softmax
        attention scores);
  peer  Hugging Face teacher and student BertForPreTraining called with
        output_hidden_states=True and output_attentions=True (eager
        attention; the attentions it returns are the softmax probabilities,
        so its attention loss compares those), the same losses and AdamW.

Both use the same number of CPU threads and run in the same process, one
after the other, alternating, and the best of the rounds is reported.
The peer's step is the model as users call it: BertForPreTraining computes
the vocabulary projection at every position; the figure of a hand-tuned peer
that projects only the masked positions is printed as well.

Each side runs in every precision of `--dtypes`: ours with
--use_mixed_precision --mixed_precision_dtype=<dtype> (float32 variables,
matmuls in the dtype), the peer under torch.autocast("cpu", dtype=<dtype>).
Rows: ours vs the peers in the same precision, and ours in each reduced
precision vs ours in float32. The machine's bfloat16 support is printed
first.

Usage (keep it short on shared machines):
  PYTHONPATH=. .venv/bin/python bench/bench_distillation.py --batch_size 16
  PYTHONPATH=. .venv/bin/python bench/bench_distillation.py --layer_losses \
      --batch_size 8 --steps 2
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
from bert_distill.stages import distillation  # pylint: disable=g-import-not-at-top
from bert_distill.stages import distillation_objective  # pylint: disable=g-import-not-at-top
# Defines the scripts' flags: the benchmark's options start from their
# defaults.
from bert_distill.flags import distillation_flags  # pylint: disable=g-import-not-at-top,unused-import
from bert_distill.lib import layer_losses  # pylint: disable=g-import-not-at-top
from bert_distill.lib import checkpoints  # pylint: disable=g-import-not-at-top
import modeling  # pylint: disable=g-import-not-at-top
import optimization  # pylint: disable=g-import-not-at-top
from bert_distill.lib import record_format  # pylint: disable=g-import-not-at-top
from bert_distill.lib import records  # pylint: disable=g-import-not-at-top
from bert_distill.flags import stage_flags  # pylint: disable=g-import-not-at-top
from bert_distill.stages import teacher  # pylint: disable=g-import-not-at-top
from bert_distill.stages import training  # pylint: disable=g-import-not-at-top
from tests import example_records  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
common.define_model_flags("Student", num_layers=6)
flags.DEFINE_integer("batch_size", 32, "Training batch size.")
flags.DEFINE_integer("steps", 4, "Timed steps per round.")
flags.DEFINE_integer("rounds", 2, "Alternating measurement rounds.")
# --use_xla is the distillation scripts' flag (distillation_flags.py): our
# step compiled with XLA (slower on this CPU).
flags.declare_key_flag("use_xla")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"],
                  "Precisions to time, each on both sides: float32, "
                  "bfloat16, float16 (ours --use_mixed_precision, the peer "
                  "under torch.autocast).")
flags.DEFINE_bool("tuned_peer", True,
                  "Also time the peer projecting only the masked positions.")
flags.DEFINE_bool(
    "layer_losses", False,
    "Run a teacher online (--teacher_layers, the student's width and heads) "
    "and add the hidden-state and attention losses, in ours and the peer.")
flags.DEFINE_integer("teacher_layers", 12,
                     "Teacher layers with --layer_losses (BERT-Base: 12).")


def student_config():
  """The benchmark student's BertConfig."""
  return common.bert_config_from_flags("gelu")


def teacher_config():
  """The --layer_losses teacher: the student's sizes, --teacher_layers."""
  config = student_config()
  config.num_hidden_layers = FLAGS.teacher_layers
  return config


def layer_map():
  """Student layer i <- teacher layer (the project's uniform map)."""
  return layer_losses.uniform_layer_map(FLAGS.num_layers,
                                        FLAGS.teacher_layers)


def synthetic_examples(n, rng):
  """`n` stage-IV feature dicts with realistic masking and top-K labels."""
  s, p, k, v = (FLAGS.seq_length, FLAGS.predictions, FLAGS.k,
                FLAGS.vocab_size)
  out = []
  for _ in range(n):
    length = int(rng.integers(s // 2, s + 1))
    real = min(p, max(1, int(round(length * 0.15))))
    positions = np.zeros(p, np.int64)
    positions[:real] = np.sort(rng.choice(np.arange(1, length), real,
                                          replace=False))
    probs = rng.dirichlet(np.ones(k), size=p) * 0.9
    out.append({
        "input_ids": np.pad(rng.integers(999, v, length), (0, s - length)),
        "input_mask": [1] * length + [0] * (s - length),
        "segment_ids": [0] * (length // 2) + [1] * (length - length // 2) +
                       [0] * (s - length),
        "masked_lm_positions": positions,
        "masked_lm_ids": rng.integers(999, v, p),
        "masked_lm_weights": [1.0] * real + [0.0] * (p - real),
        "next_sentence_labels": [int(rng.integers(0, 2))],
        record_format.TRUNCATED_PROBS: probs.reshape(-1),
        record_format.TOP_K_INDICES: rng.integers(0, v, p * k),
    })
  return out


class Ours(object):
  """This project's training loop on the synthetic records."""

  def __init__(self, path, dtype):
    mixed = dtype != "float32"
    labeler, online = None, {}
    if FLAGS.layer_losses:
      # A random teacher of the right size: speed does not depend on values.
      model = modeling.BertPretrainingModel(teacher_config())
      prefix = os.path.join(os.path.dirname(path), "teacher.ckpt")
      checkpoints.save_checkpoint(model.variables_by_name(), prefix)
      del model
      labeler = teacher.TeacherLabeler(teacher_config(), prefix, FLAGS.k)
      for loaded in tf.io.gfile.glob(prefix + ".*"):  # 440 MB at Base size
        tf.io.gfile.remove(loaded)
      online = dict(teacher_bert_config_file="bench",
                    teacher_init_checkpoint=prefix, hidden_loss_weight=1.0,
                    attention_loss_weight=1.0)
    opts = dataclasses.replace(
        stage_flags.options_from_flags(distillation.Options, FLAGS),
        bert_config_file="", input_file=path, output_dir="", do_train=True,
        truncation_factor=FLAGS.k, max_seq_length=FLAGS.seq_length,
        max_predictions_per_seq=FLAGS.predictions,
        train_batch_size=FLAGS.batch_size, learning_rate=1e-4,
        num_train_steps=100000, num_warmup_steps=100,
        use_xla=FLAGS.use_xla,
        use_mixed_precision=mixed,
        mixed_precision_dtype=dtype if mixed else "float16", **online)
    config = student_config()
    dtype = distillation.compute_dtype(opts)
    self.distiller = distillation_objective.Distiller(
        opts, config, labeler, compute_dtype=dtype)
    loss_scale = (training.DynamicLossScale()
                  if dtype == tf.float16 else None)
    optimizer = optimization.create_optimizer(
        opts.learning_rate, opts.num_train_steps, opts.num_warmup_steps)
    optimizer.build(self.distiller.trainable_variables_by_name())
    self.loop = distillation.step_loop(self.distiller, optimizer,
                                       training.Distribution(), opts,
                                       loss_scale)
    lengths = distillation.record_lengths(opts, config.vocab_size)
    dataset = records.make_dataset([path], lengths, FLAGS.batch_size,
                                   is_training=True, seed=1)
    self.iterator = iter(dataset)

  def run(self, steps):
    """Runs `steps` training steps; returns their mean loss."""
    return self.loop.run(self.iterator, steps)


class Peer(object):
  """Hugging Face BertForPreTraining (PyTorch) with the same loss."""

  def __init__(self, examples, tuned, dtype):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.tuned = tuned
    self.dtype = dtype

    def config(num_layers):
      return transformers.BertConfig(
          vocab_size=FLAGS.vocab_size, hidden_size=FLAGS.hidden_size,
          num_hidden_layers=num_layers,
          num_attention_heads=FLAGS.num_heads,
          intermediate_size=FLAGS.intermediate_size,
          hidden_act="gelu_new",  # Google's tanh gelu, as ours.
          max_position_embeddings=512, type_vocab_size=2,
          # output_attentions needs the eager attention (SDPA returns none).
          attn_implementation="eager" if FLAGS.layer_losses else None)

    torch.manual_seed(0)
    self.model = transformers.BertForPreTraining(config(FLAGS.num_layers))
    self.model.train()
    self.teacher = None
    if FLAGS.layer_losses:
      self.teacher = transformers.BertForPreTraining(
          config(FLAGS.teacher_layers))
      self.teacher.eval()
    no_decay = [p for n, p in self.model.named_parameters()
                if "LayerNorm" in n or "bias" in n]
    decay = [p for n, p in self.model.named_parameters()
             if not ("LayerNorm" in n or "bias" in n)]
    self.optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-4, betas=(0.9, 0.999), eps=1e-6)
    self.batches = []
    b = FLAGS.batch_size
    for start in range(0, len(examples) - b + 1, b):
      chunk = examples[start:start + b]
      stack = lambda name, dtype: torch.tensor(  # pylint: disable=g-long-lambda
          np.stack([np.asarray(e[name]) for e in chunk]), dtype=dtype)
      self.batches.append({
          "input_ids": stack("input_ids", torch.long),
          "attention_mask": stack("input_mask", torch.long),
          "token_type_ids": stack("segment_ids", torch.long),
          "positions": stack("masked_lm_positions", torch.long),
          "weights": stack("masked_lm_weights", torch.float32),
          "nsp": stack("next_sentence_labels", torch.long).view(-1),
          "probs": stack(record_format.TRUNCATED_PROBS, torch.float32).view(
              b, FLAGS.predictions, FLAGS.k),
          "indices": stack(record_format.TOP_K_INDICES, torch.long).view(
              b, FLAGS.predictions, FLAGS.k),
      })
    self.next = 0

  def _logits(self, model, batch):
    """(MLM logits at the masked positions, NSP logits, hidden states,
    attentions); the last two only with --layer_losses."""
    torch = self.torch
    index = batch["positions"].unsqueeze(-1).expand(-1, -1,
                                                   FLAGS.hidden_size)
    inputs = dict(input_ids=batch["input_ids"],
                  attention_mask=batch["attention_mask"],
                  token_type_ids=batch["token_type_ids"],
                  output_hidden_states=FLAGS.layer_losses,
                  output_attentions=FLAGS.layer_losses)
    if not self.tuned:
      out = model(**inputs)
      vocab_index = batch["positions"].unsqueeze(-1).expand(
          -1, -1, FLAGS.vocab_size)
      return (torch.gather(out.prediction_logits, 1, vocab_index),
              out.seq_relationship_logits, out.hidden_states, out.attentions)
    out = model.bert(**inputs)
    gathered = torch.gather(out.last_hidden_state, 1, index)
    return model.cls(gathered, out.pooler_output) + (out.hidden_states,
                                                     out.attentions)

  def _layer_losses(self, batch, student, teacher_out):
    """TinyBERT's hidden-state and attention MSEs, padding left out."""
    mask = batch["attention_mask"].float()
    pairs = mask[:, None, :, None] * mask[:, None, None, :]
    hidden = sum(
        (((s - teacher_out[2][t]) ** 2).sum(-1) * mask).sum() /
        (mask.sum() * FLAGS.hidden_size)
        for s, t in zip(student[2], [0] + [i + 1 for i in layer_map()]))
    attention = sum(
        (((s - teacher_out[3][t]) ** 2) * pairs).sum() /
        (pairs.sum() * FLAGS.num_heads)
        for s, t in zip(student[3], layer_map()))
    return hidden + attention

  def run(self, steps):
    """Runs `steps` training steps; returns the last loss."""
    torch = self.torch
    loss = None
    for _ in range(steps):
      batch = self.batches[self.next % len(self.batches)]
      self.next += 1
      probs, indices = batch["probs"], batch["indices"]
      if self.teacher is not None:
        with torch.no_grad():
          teacher_out = self._logits(self.teacher, batch)
          probs, indices = torch.topk(
              torch.softmax(teacher_out[0].float(), dim=-1), FLAGS.k)
      with torch.autocast("cpu", dtype=getattr(torch, self.dtype),
                          enabled=self.dtype != "float32"):
        student = self._logits(self.model, batch)
      mlm_logits, nsp_logits = student[:2]
      log_probs = torch.log_softmax(mlm_logits.float(), dim=-1)
      picked = torch.gather(log_probs, 2, indices)
      per_position = -(probs * picked).sum(-1)
      w = batch["weights"]
      mlm = (w * per_position).sum() / (w.sum() + 1e-5)
      nsp = torch.nn.functional.cross_entropy(nsp_logits.float(),
                                              batch["nsp"])
      loss = mlm + nsp
      if self.teacher is not None:
        loss = loss + self._layer_losses(batch, student, teacher_out)
      self.optimizer.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
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
  examples = synthetic_examples(4 * FLAGS.batch_size, rng)
  tmp = tempfile.mkdtemp(prefix="bench_distillation_")
  path = os.path.join(tmp, "stage4.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    for e in examples:
      writer.write(example_records.make_example(e))

  runners = {}
  for dtype in FLAGS.dtypes:
    if dtype not in ("float32", "bfloat16", "float16"):
      raise app.UsageError("--dtypes: unknown dtype %r" % dtype)
    runners["ours " + dtype] = Ours(path, dtype)
    runners["peer " + dtype] = Peer(examples, tuned=False, dtype=dtype)
    if FLAGS.tuned_peer:
      runners["tuned peer " + dtype] = Peer(examples, tuned=True,
                                            dtype=dtype)
  for name, runner in runners.items():  # warm-up: tracing, XLA, allocators
    loss = runner.run(2)
    print("%s: warm-up loss %.3f" % (name, loss))
  best = {name: 0.0 for name in runners}
  for _ in range(FLAGS.rounds):
    for name, runner in runners.items():
      best[name] = max(best[name], timed(runner, FLAGS.steps))
  for name, value in best.items():
    print("%s: %.2f sequences/s" % (name, value))
  sizes = ("%d layers, hidden %d, seq %d, %d predictions, K=%d, batch %d, "
           "%d threads%s" % (FLAGS.num_layers, FLAGS.hidden_size,
                             FLAGS.seq_length, FLAGS.predictions, FLAGS.k,
                             FLAGS.batch_size, threads,
                             ", XLA" if FLAGS.use_xla else ""))
  base = "V distillation training"
  if FLAGS.layer_losses:
    base = "V + online %d-layer teacher, hidden + attention losses" % (
        FLAGS.teacher_layers)
    sizes += "; teacher %d layers, layer map %s" % (
        FLAGS.teacher_layers, ",".join(str(i) for i in layer_map()))
  for dtype in FLAGS.dtypes:
    stage = "%s (%s%s)" % (base, dtype, ", XLA" if FLAGS.use_xla else "")
    autocast = "" if dtype == "float32" else ", torch.autocast(%s)" % dtype
    common.report(stage, "sequences/s", best["ours " + dtype],
                  best["peer " + dtype], "HF transformers BertForPreTraining "
                  "(PyTorch %s%s)" % (torch.__version__, autocast), sizes)
    if FLAGS.tuned_peer:
      common.report(stage, "sequences/s", best["ours " + dtype],
                    best["tuned peer " + dtype], "HF BertModel + heads on "
                    "masked positions only (PyTorch, hand-tuned%s)" %
                    autocast, sizes)
    if dtype != "float32" and "float32" in FLAGS.dtypes:
      common.report(stage, "sequences/s", best["ours " + dtype],
                    best["ours float32"], "ours in float32",
                    "target >= 2x on bfloat16 hardware; " + sizes)

if __name__ == "__main__":
  app.run(main)
