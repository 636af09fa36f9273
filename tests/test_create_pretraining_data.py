# coding=utf-8
"""Tests of stage III (create_pretraining_data.py): real Wikipedia text from
stage II, the real uncased vocab, records checked against the text, the
masking statistics, the original script, and TensorFlow's readers."""

import collections
import math
import os
import random
import shutil
import struct

import numpy as np
import pytest
import tensorflow as tf

import original_bert
from conftest import MAX_PREDICTIONS, MAX_SEQ_LENGTH, run_script
import example_records
from bert_distill.stages import pretraining_data
from bert_distill.lib import record_format
from bert_distill.lib import records
import tokenization

SCRIPT = "create_pretraining_data.py"
LENGTHS = records.stage3_lengths(MAX_SEQ_LENGTH, MAX_PREDICTIONS)


def load_records(path, lengths=LENGTHS):
  """All records of a file as a dict of numpy arrays."""
  batches = list(records.make_dataset([path], lengths, batch_size=4096,
                                      is_training=False))
  return {k: np.concatenate([b[k].numpy() for b in batches])
          for k in lengths}


def record_dicts(path):
  """Each record of a file as {feature name: list of values}."""
  out = []
  for raw in tf.data.TFRecordDataset(path):
    example = tf.train.Example.FromString(raw.numpy())
    out.append({k: list(getattr(v, v.WhichOneof("kind")).value)
                for k, v in example.features.feature.items()})
  return out


def stage3_args(input_dir, output_dir, *extra, seq=MAX_SEQ_LENGTH,
                preds=MAX_PREDICTIONS, vocab=None, dupe=1, workers=2):
  return [SCRIPT, "--input_dir", input_dir, "--output_dir", output_dir,
          "--output_base_name", "wiki", "--vocab_file", vocab,
          "--do_lower_case=true", "--max_seq_length", seq,
          "--max_predictions_per_seq", preds, "--dupe_factor", dupe,
          "--random_seed", 12345, "--num_workers", workers] + list(extra)


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
  return tokenization.FullTokenizer(vocab_file, do_lower_case=True)


@pytest.fixture(scope="module")
def inputs(wiki_text_dir):
  return [os.path.join(wiki_text_dir, n)
          for n in sorted(os.listdir(wiki_text_dir))]


@pytest.fixture(scope="module")
def parsed(stage3_dir, inputs):
  """Records of each output file, parsed, in input order."""
  names = sorted(os.listdir(stage3_dir))
  assert names == ["wiki_%d.tfrecord" % i for i in range(len(inputs))]
  return [load_records(os.path.join(stage3_dir, "wiki_%d.tfrecord" % i))
          for i in range(len(inputs))]


class TextIndex(object):
  """The token ids of a stage-II file's documents, searchable by n-grams."""

  def __init__(self, path, tokenizer):
    with open(path, encoding="utf-8") as f:
      lines = f.read().split("\n")
    self.docs = [[]]
    for line in lines:
      if not line.strip():
        if self.docs[-1]:
          self.docs.append([])
        continue
      self.docs[-1].extend(tokenizer.tokenize_to_ids(line))
    self.docs = [d for d in self.docs if d]
    self._index = {}
    for k in (1, 2, 3):
      index = collections.defaultdict(list)
      for d, doc in enumerate(self.docs):
        for p in range(len(doc) - k + 1):
          index[tuple(doc[p:p + k])].append((d, p))
      self._index[k] = index

  def find(self, segment):
    """(document, position) of each occurrence of a list of ids."""
    segment = list(segment)
    k = min(3, len(segment))
    return [(d, p) for d, p in self._index[k].get(tuple(segment[:k]), ())
            if self.docs[d][p:p + len(segment)] == segment]


def unpack(batch, r):
  """Segments and masking of record r of a parsed batch."""
  n = int(batch["input_mask"][r].sum())
  seg = batch["segment_ids"][r]
  len_a = int((seg[:n] == 0).sum()) - 2
  len_b = n - len_a - 3
  m = int(batch["masked_lm_weights"][r].sum())
  positions = batch["masked_lm_positions"][r][:m]
  labels = batch["masked_lm_ids"][r][:m]
  ids = batch["input_ids"][r]
  original = ids[:n].copy()
  original[positions] = labels
  return n, len_a, len_b, positions, labels, ids, original


# --- records, structure ----------------------------------------------------


def test_feature_names_follow_the_schema():
  # The order of docs/formats.md, in which the encoder writes them.
  assert record_format.STAGE3_FEATURES == (
      "input_ids", "input_mask", "segment_ids", "masked_lm_positions",
      "masked_lm_ids", "masked_lm_weights", "next_sentence_labels")


def test_records_parse_with_the_stage3_schema(stage3_dir, parsed):
  paths = [os.path.join(stage3_dir, n) for n in sorted(os.listdir(stage3_dir))]
  assert records.validate_files(paths, LENGTHS) == paths
  counts = [len(b["input_ids"]) for b in parsed]
  assert records.count_records(paths) == sum(counts)
  assert min(counts) > 1500
  # Feature order in each record is the schema's.
  raw = next(iter(tf.data.TFRecordDataset(paths[0]))).numpy()
  offsets = [raw.index(name.encode()) for name in record_format.STAGE3_FEATURES]
  assert offsets == sorted(offsets)


def test_segments_mask_and_padding_are_consistent(parsed, tokenizer):
  vocab = tokenizer.vocab
  cls, sep = vocab["[CLS]"], vocab["[SEP]"]
  for batch in parsed:
    for r in range(len(batch["input_ids"])):
      n, len_a, len_b, positions, labels, ids, _ = unpack(batch, r)
      assert 5 <= n <= MAX_SEQ_LENGTH and len_a >= 1 and len_b >= 1
      mask = batch["input_mask"][r]
      assert (mask[:n] == 1).all() and (mask[n:] == 0).all()
      assert (ids[n:] == 0).all()
      seg = batch["segment_ids"][r]
      assert (seg == [0] * (len_a + 2) + [1] * (len_b + 1) +
              [0] * (MAX_SEQ_LENGTH - n)).all()
      assert ids[0] == cls and ids[len_a + 1] == sep and ids[n - 1] == sep
      m = len(positions)
      weights = batch["masked_lm_weights"][r]
      assert (weights[:m] == 1.0).all() and (weights[m:] == 0.0).all()
      assert (batch["masked_lm_positions"][r][m:] == 0).all()
      assert (batch["masked_lm_ids"][r][m:] == 0).all()
      # Positions: ascending, distinct, never [CLS] or a [SEP].
      assert (np.diff(positions) > 0).all()
      assert positions[0] >= 1 and positions[-1] <= n - 2
      assert len_a + 1 not in positions
      # The number of predictions is the original's rule.
      assert m == min(MAX_PREDICTIONS, max(1, int(round(n * 0.15))))
      unmasked = np.ones(n, bool)
      unmasked[positions] = False
      unmasked[[0, len_a + 1, n - 1]] = False
      assert not np.isin(ids[:n][unmasked], [cls, sep]).any()


def test_masked_lm_ids_are_the_original_tokens(parsed, inputs, tokenizer):
  # Put the labels back at the masked positions: segment A and segment B
  # must then be runs of the tokenized text of the input file; for label 0,
  # B follows A in the same document; for label 1, B is from another one.
  for batch, path in zip(parsed, inputs):
    index = TextIndex(path, tokenizer)
    assert len(index.docs) > 10
    for r in range(len(batch["input_ids"])):
      n, len_a, _, _, _, _, original = unpack(batch, r)
      found_a = index.find(original[1:len_a + 1])
      found_b = index.find(original[len_a + 2:n - 1])
      assert found_a and found_b, (path, r)
      first_a = {}
      for d, p in found_a:
        first_a[d] = min(p, first_a.get(d, p))
      last_b = {}
      for d, p in found_b:
        last_b[d] = max(p, last_b.get(d, p))
      if batch["next_sentence_labels"][r][0] == 0:
        assert any(last_b[d] >= first_a[d] + len_a
                   for d in set(first_a) & set(last_b)), (path, r)
      else:
        assert len(set(first_a) | set(last_b)) > 1, (path, r)


def test_masking_proportions(parsed, tokenizer):
  vocab_size = len(tokenizer.vocab)
  mask_id = tokenizer.vocab["[MASK]"]
  counts = collections.Counter()
  random_ids = []
  in_b = expected_in_b = var_in_b = 0.0
  for batch in parsed:
    for r in range(len(batch["input_ids"])):
      n, len_a, len_b, positions, labels, ids, _ = unpack(batch, r)
      shown = ids[positions]
      counts["mask"] += int((shown == mask_id).sum())
      counts["keep"] += int(((shown == labels) & (shown != mask_id)).sum())
      other = (shown != labels) & (shown != mask_id)
      counts["random"] += int(other.sum())
      random_ids.extend(shown[other].tolist())
      # Positions are drawn uniformly among the candidates of A and B.
      m = len(positions)
      q = len_b / (len_a + len_b)
      in_b += int((positions > len_a + 1).sum())
      expected_in_b += m * q
      var_in_b += m * q * (1 - q)
  total = sum(counts.values())
  assert total > 50000
  # Expected shares: [MASK] 80%, kept 10%, random 10% (a random draw equal
  # to the label counts as kept, one equal to [MASK] as masked).
  expected = {"mask": 0.8 + 0.1 / vocab_size, "keep": 0.1 + 0.1 / vocab_size,
              "random": 0.1 - 0.2 / vocab_size}
  for key, p in expected.items():
    sigma = math.sqrt(p * (1 - p) / total)
    assert abs(counts[key] / total - p) < 5 * sigma, (key, counts, total)
  assert abs(in_b - expected_in_b) < 5 * math.sqrt(var_in_b)
  # Random replacements are uniform over the vocabulary: mean and spread.
  random_ids = np.array(random_ids, np.float64)
  sigma_mean = vocab_size / math.sqrt(12 * len(random_ids))
  assert abs(random_ids.mean() - (vocab_size - 1) / 2) < 5 * sigma_mean
  assert abs(random_ids.std() - vocab_size / math.sqrt(12)) < 0.05 * (
      vocab_size / math.sqrt(12))


def test_about_half_of_next_sentences_are_random(parsed):
  labels = np.concatenate([b["next_sentence_labels"][:, 0] for b in parsed])
  assert set(labels.tolist()) == {0, 1}
  # 1/2 by draw, plus the single-sentence chunks that are always random.
  assert 0.47 < labels.mean() < 0.6, labels.mean()


# --- determinism and the original script -----------------------------------


def test_identical_bytes_for_any_number_of_workers(tmp_path, wiki_text_dir,
                                                   stage3_dir, vocab_file):
  inputs = tmp_path / "text"
  shutil.copytree(wiki_text_dir, inputs)
  (inputs / ".hidden").write_bytes(b"\x00\xff binary, and ignored")
  out = tmp_path / "out"
  out.mkdir()
  (out / "wiki_7.tfrecord").write_bytes(b"stale")
  (out / "wiki_7.tfrecord.keep").write_bytes(b"not ours")
  result = run_script(stage3_args(inputs, out, vocab=vocab_file, workers=1))
  assert "instances" in result.stderr
  expected = sorted(os.listdir(stage3_dir))
  assert sorted(os.listdir(out)) == sorted(expected + ["wiki_7.tfrecord.keep"])
  for name in expected:
    with open(os.path.join(stage3_dir, name), "rb") as a, \
        open(os.path.join(out, name), "rb") as b:
      assert a.read() == b.read(), name


def test_single_file_equals_original_script(tmp_path, inputs, vocab_file):
  # With one input file, the records are those of Google's script
  # (same seed, same draws), record by record and value by value.
  text = tmp_path / "text"
  text.mkdir()
  smallest = min(inputs, key=os.path.getsize)
  shutil.copy(smallest, text / "part.txt")
  out = tmp_path / "ours"
  run_script(stage3_args(text, out, vocab=vocab_file, dupe=2, workers=1))
  reference = str(tmp_path / "original.tfrecord")
  run_script(original_bert.create_pretraining_data_args(
      [str(text / "part.txt")], reference, vocab_file,
      max_seq_length=MAX_SEQ_LENGTH, max_predictions_per_seq=MAX_PREDICTIONS,
      dupe_factor=2, random_seed=12345, do_lower_case="true"),
             env=original_bert.reference_env())
  ours = record_dicts(str(out / "wiki_0.tfrecord"))
  theirs = record_dicts(reference)
  assert len(ours) > 1000
  assert len(ours) == len(theirs)
  for i, (a, b) in enumerate(zip(ours, theirs)):
    assert a == b, i


def test_whole_word_masking(tmp_path, inputs, vocab_file, tokenizer):
  text = tmp_path / "text"
  text.mkdir()
  shutil.copy(inputs[0], text / "part.txt")
  out = tmp_path / "out"
  run_script(stage3_args(text, out, "--do_whole_word_mask", vocab=vocab_file,
                         workers=1))
  batch = load_records(str(out / "wiki_0.tfrecord"))
  index = TextIndex(inputs[0], tokenizer)
  subword = np.zeros(len(tokenizer.vocab), bool)
  for token, i in tokenizer.vocab.items():
    subword[i] = token.startswith("##")
  words_masked = 0
  for r in range(len(batch["input_ids"])):
    n, len_a, _, positions, _, _, original = unpack(batch, r)
    assert index.find(original[1:len_a + 1])
    # Groups of pieces: a "##" piece joins the group before it (also
    # across the first [SEP], as Google's whole-word masking does).
    groups = []
    for p in range(1, n - 1):
      if p == len_a + 1:
        continue
      if groups and subword[original[p]]:
        groups[-1].append(p)
      else:
        groups.append([p])
    chosen = set(positions.tolist())
    for group in groups:
      hit = sum(p in chosen for p in group)
      assert hit in (0, len(group)), (r, group, positions)
      if hit and len(group) > 1:
        words_masked += 1
    assert len(positions) <= min(MAX_PREDICTIONS,
                                 max(1, int(round(n * 0.15))))
  assert words_masked > 500


# --- serialisation ---------------------------------------------------------


def test_random_draws_match_python_random():
  for seed in range(3):
    a, b = random.Random(seed), random.Random(seed)
    for size in list(range(0, 70)) + [127, 128, 129, 1000]:
      x, y = list(range(size)), list(range(size))
      a.shuffle(x)
      pretraining_data.shuffle(y, b)
      assert x == y
      for n in (1, 2, 3, 7, 8, 30522):
        assert a.randint(0, n - 1) == pretraining_data.randbelow(
            b.getrandbits, n)
    assert a.random() == b.random()


def test_example_encoding_matches_tensorflow(tmp_path):
  rng = random.Random(3)
  encoder = record_format.ExampleEncoder(MAX_SEQ_LENGTH, MAX_PREDICTIONS,
                                            30522)
  for _ in range(200):
    len_a = rng.randint(1, 30)
    len_b = rng.randint(1, MAX_SEQ_LENGTH - 3 - len_a)
    n = len_a + len_b + 3
    ids = [rng.choice([0, 1, 127, 128, 16383, 16384, 30521])
           for _ in range(n)]
    m = rng.randint(1, MAX_PREDICTIONS)
    positions = sorted(rng.sample(range(1, n - 1), min(m, n - 2)))
    labels = [rng.randint(0, 30521) for _ in positions]
    instance = pretraining_data.Instance(ids, len_a, len_b, positions,
                                         labels, rng.random() < 0.5)
    ours = encoder.encode(instance)
    pad = MAX_SEQ_LENGTH - n
    ppad = MAX_PREDICTIONS - len(positions)
    features = collections.OrderedDict([
        ("input_ids", ids + [0] * pad),
        ("input_mask", [1] * n + [0] * pad),
        ("segment_ids", instance.segment_ids + [0] * pad),
        ("masked_lm_positions", positions + [0] * ppad),
        ("masked_lm_ids", labels + [0] * ppad),
        ("masked_lm_weights", [1.0] * len(positions) + [0.0] * ppad),
        ("next_sentence_labels", [int(instance.is_random_next)]),
    ])
    reference = tf.train.Example.FromString(
        example_records.make_example(features))
    assert tf.train.Example.FromString(ours) == reference
    assert len(ours) == reference.ByteSize()
  # TFRecord framing: byte for byte what TensorFlow's writer writes.
  payloads = [b"", b"x", os.urandom(5), os.urandom(300), os.urandom(1027)]
  payloads += [os.urandom(rng.randint(0, 900)) for _ in range(50)]
  theirs = str(tmp_path / "tf.tfrecord")
  with tf.io.TFRecordWriter(theirs) as writer:
    for p in payloads:
      writer.write(p)
  ours = tmp_path / "ours.tfrecord"
  with open(ours, "wb") as f:
    record_format.write_tfrecords(f, payloads)
  assert ours.read_bytes() == open(theirs, "rb").read()
  assert int(record_format.crc32c_batch([b"123456789"])[0]) == 0xE3069283


def test_tensorflow_checks_the_record_checksums(stage3_dir):
  # The readers above verify CRCs: a flipped data byte is reported.
  path = os.path.join(stage3_dir, "wiki_0.tfrecord")
  data = bytearray(open(path, "rb").read())
  (length,) = struct.unpack("<Q", data[:8])
  data[12 + length // 2] ^= 0x01
  bad = path + ".corrupt"
  with open(bad, "wb") as f:
    f.write(bytes(data))
  try:
    with pytest.raises(tf.errors.DataLossError):
      for _ in tf.data.TFRecordDataset(bad):
        pass
  finally:
    os.remove(bad)


# --- bad input -------------------------------------------------------------


def bad_run(args):
  result = run_script(args, check=False)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  return last


def test_bad_input(tmp_path, inputs, vocab_file):
  good = tmp_path / "good"
  good.mkdir()
  shutil.copy(inputs[0], good / "a.txt")
  out = tmp_path / "out"

  def check(input_dir, *extra, expect, **kwargs):
    kwargs.setdefault("vocab", vocab_file)
    msg = bad_run(stage3_args(input_dir, out, *extra, **kwargs))
    for word in expect:
      assert word in msg, msg
    # Nothing under a final name, no temporary file left behind.
    assert not out.exists() or os.listdir(out) == [], os.listdir(out)

  check(tmp_path / "missing", expect=["--input_dir", "missing"])
  empty = tmp_path / "empty"
  empty.mkdir()
  check(empty, expect=["--input_dir", "no input files"])
  blank = tmp_path / "blank"
  blank.mkdir()
  (blank / "a.txt").write_text("\n\n  \n")
  check(blank, expect=["no text"])
  check(good, vocab=tmp_path / "vocab.txt", expect=["--vocab_file",
                                                    "vocab.txt"])
  latin1 = tmp_path / "latin1"
  shutil.copytree(good, latin1)
  (latin1 / "b.txt").write_bytes("Caf\u00e9 au lait.\n".encode("latin-1"))
  check(latin1, expect=["b.txt", "not UTF-8", "offset 3"])
  binary = tmp_path / "binary"
  shutil.copytree(good, binary)
  (binary / "c.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
  check(binary, expect=["c.bin", "binary"])
  check(good, "--max_predictions_per_seq", 62,
        expect=["--max_predictions_per_seq", "61"])
  check(good, "--masked_lm_prob", 0, expect=["--masked_lm_prob"])
  check(good, "--masked_lm_prob", 1.5, expect=["--masked_lm_prob"])
  blocker = tmp_path / "file"
  blocker.write_text("x")
  msg = bad_run(stage3_args(good, blocker / "sub", vocab=vocab_file))
  assert "--output_dir" in msg


def test_warns_about_files_with_few_documents(tmp_path, inputs, vocab_file):
  """A file of one article gets "random next" segments from that article."""
  with open(inputs[0], encoding="utf-8") as f:
    articles = [a for a in f.read().split("\n\n") if a.strip()]
  assert len(articles) >= pretraining_data.MIN_DOCUMENTS_PER_FILE
  text = tmp_path / "text"
  text.mkdir()
  (text / "a_many.txt").write_text("\n\n".join(articles) + "\n",
                                   encoding="utf-8")
  (text / "b_one.txt").write_text(articles[0] + "\n", encoding="utf-8")
  (text / "c_three.txt").write_text("\n\n".join(articles[1:4]) + "\n",
                                    encoding="utf-8")
  result = run_script(stage3_args(text, tmp_path / "out", vocab=vocab_file))
  warnings = [l for l in result.stderr.splitlines()
              if "poor negatives" in l]
  assert len(warnings) == 2, result.stderr[-3000:]
  assert "b_one.txt holds 1 document(s)" in warnings[0]
  assert "the same document" in warnings[0]
  assert "c_three.txt holds 3 document(s)" in warnings[1]
  assert "2 other documents only" in warnings[1]
  assert "--num_files" in warnings[0]
  assert not any("a_many.txt" in l for l in warnings)
