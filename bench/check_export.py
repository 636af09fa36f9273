"""Loads exported Hugging Face folders with `transformers`; compares outputs.

export_bert_checkpoint.py's promise is that Hugging Face `transformers`
loads its folder as the architecture named in config.json and computes what
this project computes. This check makes three BERTs in Google's format
(random weights, every variable perturbed so no bias is zero and no
LayerNorm is the identity):

  pre-training  4 layers, hidden 256, Google's tanh GELU, both heads
  classifier    2 layers, hidden 128, the exact erf GELU, a 3-class
                run_classifier head (output_weights, output_bias)
  SQuAD         2 layers, hidden 128, tanh GELU, a run_squad head

exports each with exporter.export (format hf), loads it with
transformers' class of config.json's architecture and AutoTokenizer, checks
that nothing was missing or unexpected when loading and that both
tokenizers give the same ids on real sentences, then prints the largest
difference between transformers' outputs (PyTorch, float32) and this
project's (modeling.py on the checkpoint; the task heads in NumPy as
Google's run_classifier/run_squad compute them).

Usage: PYTHONPATH=. .venv/bin/python bench/check_export.py
(bench/run_all.sh runs it; needs torch and transformers.)
"""

import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import tensorflow as tf  # pylint: disable=g-import-not-at-top

from bert_distill.stages import exporter  # pylint: disable=g-import-not-at-top
from bert_distill.lib import hf_bert  # pylint: disable=g-import-not-at-top
from bert_distill.lib import checkpoints  # pylint: disable=g-import-not-at-top
import modeling  # pylint: disable=g-import-not-at-top
import sample_data  # pylint: disable=g-import-not-at-top
import tokenization  # pylint: disable=g-import-not-at-top

SENTENCES = [
    ("The student leaves the pipeline.", "It is loaded elsewhere."),
    ("Paris is the capital of France.", "Its museums are famous."),
    ("Knowledge distillation trains a small model.",
     "A large teacher gives soft labels."),
]
MODELS = {
    "pre-training": dict(num_hidden_layers=4, hidden_size=256,
                         num_attention_heads=4, intermediate_size=1024,
                         hidden_act="gelu", head=None),
    "classifier": dict(num_hidden_layers=2, hidden_size=128,
                       num_attention_heads=2, intermediate_size=512,
                       hidden_act="gelu_exact", head=hf_bert.CLASSIFIER_HEAD),
    "SQuAD": dict(num_hidden_layers=2, hidden_size=128,
                  num_attention_heads=2, intermediate_size=512,
                  hidden_act="gelu", head=hf_bert.SQUAD_HEAD),
}


def make_checkpoint(directory, spec, rng):
  """Writes a Google-format checkpoint; returns (config, arrays)."""
  spec = dict(spec)
  head = spec.pop("head")
  config = modeling.BertConfig(vocab_size=30522, max_position_embeddings=128,
                               type_vocab_size=2, **spec)
  model = (modeling.BertPretrainingModel(config) if head is None else
           modeling.BertModel(config))
  arrays = {name: var.numpy() + rng.normal(0, 0.05, var.shape).astype(
      np.float32) for name, var in model.variables_by_name().items()}
  h = config.hidden_size
  if head == hf_bert.CLASSIFIER_HEAD:
    arrays["output_weights"] = rng.normal(0, 0.1, (3, h)).astype(np.float32)
    arrays["output_bias"] = rng.normal(0, 0.1, 3).astype(np.float32)
  elif head == hf_bert.SQUAD_HEAD:
    arrays["cls/squad/output_weights"] = rng.normal(0, 0.1, (2, h)).astype(
        np.float32)
    arrays["cls/squad/output_bias"] = rng.normal(0, 0.1, 2).astype(
        np.float32)
  checkpoints.save_checkpoint(arrays, os.path.join(directory, "model.ckpt-1"))
  return config, arrays


def batch(vocab_file):
  """Our tokenizer's ids for SENTENCES: [CLS] A [SEP] B [SEP], padded."""
  tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case=True)
  rows = []
  for a, b in SENTENCES:
    tokens_a, tokens_b = tokenizer.tokenize(a), tokenizer.tokenize(b)
    tokens = ["[CLS]"] + tokens_a + ["[SEP]"] + tokens_b + ["[SEP]"]
    rows.append((tokenizer.convert_tokens_to_ids(tokens),
                 [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)))
  length = max(len(ids) for ids, _ in rows)
  ids = np.zeros((len(rows), length), np.int64)
  segments = np.zeros_like(ids)
  for i, (row_ids, row_segments) in enumerate(rows):
    ids[i, :len(row_ids)] = row_ids
    segments[i, :len(row_segments)] = row_segments
  return ids, (ids > 0).astype(np.int64), segments


def ours(config, arrays, checkpoint, ids, mask, segments, positions):
  """This project's outputs, by output name."""
  if "cls/predictions/output_bias" in arrays:
    model = modeling.BertPretrainingModel(config)
    encoder = model.bert
  else:
    model = encoder = modeling.BertModel(config)
  checkpoints.load_checkpoint(model.variables_by_name(), checkpoint)
  seq, pooled = [t.numpy() for t in encoder(ids, mask, segments)[:2]]
  out = {"sequence_output": seq}
  if model is not encoder:
    mlm, nsp, _ = model(ids, mask, segments, positions)
    out.update(masked_lm_logits=mlm.numpy(), next_sentence_logits=nsp.numpy())
  if "output_weights" in arrays:
    out["logits"] = pooled @ arrays["output_weights"].T + arrays["output_bias"]
  if "cls/squad/output_weights" in arrays:
    logits = (seq @ arrays["cls/squad/output_weights"].T +
              arrays["cls/squad/output_bias"])
    out.update(start_logits=logits[..., 0], end_logits=logits[..., 1])
  return out


def theirs(folder, ids, mask, segments, positions):
  """transformers' outputs from the exported folder, by output name."""
  import json  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  with open(os.path.join(folder, "config.json")) as f:
    architecture = json.load(f)["architectures"][0]
  model, info = getattr(transformers, architecture).from_pretrained(
      folder, output_loading_info=True)
  problems = {k: v for k, v in info.items() if v}
  assert not problems, (architecture, problems)
  model.eval()
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids),
                attention_mask=torch.tensor(mask),
                token_type_ids=torch.tensor(segments),
                output_hidden_states=True)
  result = {"sequence_output": out.hidden_states[-1].numpy()}
  if architecture == "BertForPreTraining":
    logits = out.prediction_logits.numpy()
    result["masked_lm_logits"] = logits[
        np.arange(len(ids))[:, None], positions]
    result["next_sentence_logits"] = out.seq_relationship_logits.numpy()
  elif architecture == "BertForSequenceClassification":
    result["logits"] = out.logits.numpy()
  elif architecture == "BertForQuestionAnswering":
    result["start_logits"] = out.start_logits.numpy()
    result["end_logits"] = out.end_logits.numpy()
  return architecture, result


def main():
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  vocab_file = sample_data.fetch("vocab")
  ids, mask, segments = batch(vocab_file)
  positions = np.array([[1, 2, 4]] * len(ids), np.int64)
  print("transformers %s, torch %s, TensorFlow %s; inputs: %d real "
        "sentence pairs, %d tokens" % (transformers.__version__,
                                       torch.__version__, tf.__version__,
                                       len(ids), ids.shape[1]))
  rng = np.random.default_rng(0)
  worst = 0.0
  with tempfile.TemporaryDirectory() as tmp:
    for name, spec in MODELS.items():
      checkpoint = os.path.join(tmp, name)
      config, arrays = make_checkpoint(checkpoint, spec, rng)
      folder = os.path.join(tmp, name + "_hf")
      exporter.export(config, checkpoint, vocab_file, folder, "hf")
      hf_ids = transformers.AutoTokenizer.from_pretrained(folder)(
          [a for a, _ in SENTENCES], [b for _, b in SENTENCES],
          padding=True)["input_ids"]
      assert np.array_equal(np.array(hf_ids), ids), (name, hf_ids)
      want = ours(config, arrays, checkpoint, ids, mask, segments, positions)
      architecture, got = theirs(folder, ids, mask, segments, positions)
      assert sorted(got) == sorted(want), (sorted(got), sorted(want))
      real = mask.astype(bool)
      diffs = []
      for key in sorted(want):
        diff = np.abs(got[key] - want[key])
        if key in ("sequence_output", "start_logits", "end_logits"):
          diff = diff[real]
        diffs.append("%s %.2e" % (key, diff.max()))
        worst = max(worst, float(diff.max()))
      print("export %s -> transformers %s (hidden_act %s): largest "
            "difference %s" % (name, architecture,
                               hf_bert.hf_activation(config.hidden_act),
                               ", ".join(diffs)))
  print("export: largest difference, transformers vs this project: %.2e" %
        worst)
  if worst > 1e-4:
    print("export: FAILED, outputs differ by more than 1e-4")
    sys.exit(1)


if __name__ == "__main__":
  main()
