"""augment_task_data.py: TinyBERT's task data augmentation, on real data.

The real small BERT (its masked-LM head) augments real polarity sentences
and the STS-B fixture's pairs. Every replacement is checked against the
model's own predictions computed here the plain way (the whole forward pass,
the logits at the masked word, ranked with NumPy, filtered by a rule
written out here); the rest of each row, the copied splits and the settings
file are read back.
"""

import csv
import filecmp
import json
import os

import numpy as np
import pytest

import conftest
import helpers
import inprocess
import modeling
import sample_data
import tokenization
from bert_distill.lib import checkpoints

N = 3
K = 5


def augment_argv(teacher_dir, data_dir, output_dir, task="sst-2", **values):
  """augment_task_data.py's arguments: the real small BERT, N, K, p = 0.5,
  with `values` replacing or adding flags."""
  args = {"task_name": task, "data_dir": data_dir, "output_dir": output_dir,
          "bert_config_file": os.path.join(teacher_dir, "bert_config.json"),
          "init_checkpoint": os.path.join(teacher_dir, "bert_model.ckpt"),
          "vocab_file": os.path.join(teacher_dir, "vocab.txt"),
          "num_augmented": N, "candidates": K, "replace_prob": 0.5,
          "max_seq_length": 64, "batch_size": 16}
  args.update(values)
  argv = []
  for name, value in args.items():
    argv += ["--" + name, str(value)]
  return argv


def augment(teacher_dir, data_dir, output_dir, task="sst-2", **values):
  """Runs augment_task_data.py's main in this process."""
  inprocess.run_main("augment_task_data", augment_argv(
      teacher_dir, data_dir, output_dir, task, **values))


def read_tsv(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.reader(f, delimiter="\t", quotechar=None))


@pytest.fixture(scope="module")
def polarity(tmp_path_factory, teacher_dir):
  """40 real polarity sentences, augmented (N=3, K=5, p=0.5)."""
  folder = tmp_path_factory.mktemp("polarity")
  data = helpers.write_polarity_subset(sample_data.fetch("polarity_sst2"),
                                       folder, 40)
  out = str(tmp_path_factory.mktemp("augmented") / "polarity")
  augment(teacher_dir, data, out)
  return data, out


class Reference(object):
  """The masked LM's whole-word predictions, computed the plain way."""

  def __init__(self, teacher_dir):
    config = modeling.BertConfig.from_json_file(
        os.path.join(teacher_dir, "bert_config.json"))
    self.model = modeling.BertPretrainingModel(config)
    checkpoints.load_checkpoint(self.model.variables_by_name(),
                                os.path.join(teacher_dir, "bert_model.ckpt"))
    self.tokenizer = tokenization.FullTokenizer(
        os.path.join(teacher_dir, "vocab.txt"), do_lower_case=True)
    self.tokens = list(self.tokenizer.vocab)

  def candidates(self, words, index):
    """The K most probable whole words at words[index], masked."""
    pieces = [self.tokenizer.wordpiece_tokenizer.tokenize(w) for w in words]
    tokens = ["[CLS]"]
    for n, piece in enumerate(pieces):
      if n == index:
        position = len(tokens)
        tokens.append("[MASK]")
      else:
        tokens.extend(piece)
    ids = np.array([self.tokenizer.convert_tokens_to_ids(
        tokens[:63] + ["[SEP]"])], np.int32)
    logits = self.model(ids, np.ones_like(ids), np.zeros_like(ids),
                        np.array([[position]], np.int32)).masked_lm_logits
    ranked = np.argsort(-logits.numpy()[0, 0], kind="stable")
    kept = []
    for i in ranked:
      token = self.tokens[i]
      if (token.startswith("##") or token.startswith("[") or
          not any(c.isalpha() for c in token) or token == words[index]):
        continue
      kept.append(token)
      if len(kept) == K:
        return kept


def test_polarity_rows_and_their_variants(polarity, teacher_dir):
  """Each row, then N variants of it: the same label, the same number of
  words, and each changed word one of the masked LM's K best whole words
  there (checked on the first 5 rows against the plain forward pass);
  about half of the replaceable words changed; dev and test copied."""
  data, out = polarity
  source = read_tsv(os.path.join(data, "train.tsv"))
  got = read_tsv(os.path.join(out, "train.tsv"))
  assert got[0] == source[0] == ["sentence", "label"]
  rows = source[1:]
  assert len(got) == 1 + len(rows) * (1 + N)
  reference = Reference(teacher_dir)
  basic = reference.tokenizer.basic_tokenizer
  changed = replaceable = 0
  for n, row in enumerate(rows):
    block = got[1 + n * (1 + N):1 + (n + 1) * (1 + N)]
    assert block[0] == row
    words = basic.tokenize(row[0])
    cache = {}
    for variant in block[1:]:
      assert variant[1] == row[1]
      new = variant[0].split(" ")
      assert len(new) == len(words)
      for i, (old, word) in enumerate(zip(words, new)):
        pieces = reference.tokenizer.wordpiece_tokenizer.tokenize(old)
        if len(pieces) == 1 and any(c.isalpha() for c in old):
          replaceable += 1
        if word == old:
          continue
        changed += 1
        if n < 5:
          if i not in cache:
            cache[i] = reference.candidates(words, i)
          assert word in cache[i], (old, word, cache[i])
  assert 0.35 < changed / replaceable < 0.65, (changed, replaceable)
  for name in ("dev.tsv", "test.tsv"):
    assert filecmp.cmp(os.path.join(data, name), os.path.join(out, name),
                       shallow=False)
  with open(os.path.join(out, "augmentation.json")) as f:
    settings = json.load(f)
  assert settings["rows_read"] == 40 and settings["rows_written"] == 160
  assert settings["num_augmented"] == N and settings["copied"] == [
      "dev.tsv", "test.tsv"]
  assert sorted(os.listdir(out)) == ["augmentation.json", "dev.tsv",
                                     "test.tsv", "train.tsv"]


def test_the_seed_decides_the_variants(polarity, teacher_dir, tmp_path):
  data, out = polarity
  augment(teacher_dir, data, tmp_path / "same")
  assert filecmp.cmp(os.path.join(out, "train.tsv"),
                     tmp_path / "same" / "train.tsv", shallow=False)
  augment(teacher_dir, data, tmp_path / "other", random_seed=7)
  assert not filecmp.cmp(os.path.join(out, "train.tsv"),
                         tmp_path / "other" / "train.tsv", shallow=False)


def test_pairs_vary_both_texts_and_keep_other_columns(teacher_dir, tmp_path):
  """STS-B: sentence1 and sentence2 varied, the other nine columns (ids,
  genre, score) as they were, the header kept."""
  data = os.path.join(conftest.FIXTURES, "sts-b")
  source = read_tsv(os.path.join(data, "train.tsv"))[:31]
  (tmp_path / "data").mkdir()
  with open(tmp_path / "data" / "train.tsv", "w", encoding="utf-8") as f:
    f.writelines("\t".join(row) + "\n" for row in source)
  augment(teacher_dir, tmp_path / "data", tmp_path / "out", task="sts-b",
          num_augmented=1)
  got = read_tsv(tmp_path / "out" / "train.tsv")
  assert got[0] == source[0] and len(got) == 1 + 30 * 2
  varied = {7: 0, 8: 0}
  words = tokenization.BasicTokenizer(do_lower_case=True).tokenize
  for n, row in enumerate(source[1:]):
    original, variant = got[1 + 2 * n], got[2 + 2 * n]
    assert original == row
    for column in range(len(row)):
      if column in varied:
        varied[column] += variant[column] != " ".join(words(row[column]))
      else:
        assert variant[column] == row[column]
  assert min(varied.values()) > 10, varied
  assert not os.path.exists(tmp_path / "out" / "dev.tsv")  # none given


def test_bad_input_is_one_line(teacher_dir, tmp_path, polarity):
  data, _ = polarity
  used = tmp_path / "used"
  used.mkdir()
  (used / "keep.txt").write_text("x")
  encoder_only = tmp_path / "encoder" / "model.ckpt"
  config = modeling.BertConfig.from_json_file(
      os.path.join(teacher_dir, "bert_config.json"))
  checkpoints.save_checkpoint(modeling.BertModel(config).variables_by_name(),
                              str(encoder_only))

  def error(**values):
    values = dict(dict(data_dir=data, output_dir=tmp_path / "out"), **values)
    return inprocess.error_line("augment_task_data", augment_argv(
        teacher_dir, **values))

  assert error(output_dir=data) == (
      "error: --output_dir %s is --data_dir: the augmented copy goes to "
      "another folder" % data)
  assert error(output_dir=used) == (
      "error: --output_dir %s exists and is not empty (choose another "
      "folder, or --overwrite to replace it)" % used)
  assert error(output_dir=used / "keep.txt") == (
      "error: --output_dir %s is a file, not a folder" % (used / "keep.txt"))
  assert error(output_dir=tmp_path, overwrite="true",
               data_dir=used) == (
      "error: --output_dir %s holds --data_dir %s, which the new folder "
      "would replace" % (tmp_path, used))
  assert error(max_seq_length=2) == (
      "error: --max_seq_length must be at least 3 ([CLS], a word, [SEP]), "
      "found 2")
  assert error(replace_prob=0) == (
      "error: --replace_prob must be in (0, 1], found 0")
  assert error(num_augmented=0) == (
      "error: --num_augmented must be at least 1, found 0")
  assert error(task_name="squad").startswith(
      "error: --task_name: unknown task 'squad'; known tasks: cola, sst-2")
  assert error(data_dir=tmp_path).startswith(
      "error: --data_dir: %s: no train.tsv in this folder (task sst-2 "
      "expects" %
      tmp_path)
  assert error(init_checkpoint=encoder_only).startswith(
      "error: --init_checkpoint: checkpoint %s lacks 5 of the teacher's "
      "variables, e.g. cls/predictions/" % encoder_only)
  assert not os.path.exists(tmp_path / "out")
  assert os.listdir(used) == ["keep.txt"]
