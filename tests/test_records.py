"""Tests of the stage-file schemas (records.py) and the CLI helpers (cli.py)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from bert_distill import cli
from bert_distill.lib import errors
import example_records
from bert_distill.lib import outputs
from bert_distill.lib import record_format
from bert_distill.lib import records


def _write(path, examples):
  with tf.io.TFRecordWriter(str(path)) as w:
    for ex in examples:
      w.write(example_records.make_example(ex))


def _stage3_example(rng, seq=8, preds=3):
  return {
      "input_ids": rng.integers(0, 100, seq),
      "input_mask": [1] * seq,
      "segment_ids": [0] * (seq // 2) + [1] * (seq - seq // 2),
      "masked_lm_positions": rng.integers(1, seq, preds),
      "masked_lm_ids": rng.integers(0, 100, preds),
      "masked_lm_weights": [1.0] * (preds - 1) + [0.0],
      "next_sentence_labels": [int(rng.integers(0, 2))],
  }


def test_round_trip_through_parse(tmp_path):
  rng = np.random.default_rng(0)
  ex = _stage3_example(rng)
  ex[record_format.TRUNCATED_PROBS] = rng.random(3 * 2).astype(np.float32)
  ex[record_format.TOP_K_INDICES] = rng.integers(0, 100, 3 * 2)
  path = tmp_path / "a.tfrecord"
  _write(path, [ex])
  lengths = records.stage4_lengths(8, 3, 2)
  assert records.validate_file(str(path), lengths)
  ds = records.make_dataset([str(path)], lengths, batch_size=1,
                            is_training=False)
  batch = next(iter(ds))
  for name, values in ex.items():
    got = batch[name].numpy()[0]
    np.testing.assert_allclose(got, np.asarray(values, got.dtype))
    expected_dtype = (np.float32 if name in record_format.FLOAT_FEATURES
                      else np.int32)
    assert got.dtype == expected_dtype


def test_validate_names_file_and_mismatch(tmp_path):
  rng = np.random.default_rng(1)
  path = tmp_path / "s3.tfrecord"
  _write(path, [_stage3_example(rng)])
  with pytest.raises(errors.RecordMismatchError) as e:
    records.validate_file(str(path), records.stage3_lengths(16, 3),
                          {"max_seq_length": 16})
  msg = str(e.value)
  assert str(path) in msg and "input_ids has length 8, expected 16" in msg
  assert "--max_seq_length=16" in msg
  with pytest.raises(errors.RecordMismatchError) as e:
    records.validate_file(str(path), records.stage4_lengths(8, 3, 10))
  assert "stage-III records" in str(e.value)
  ex = _stage3_example(rng)
  ex[record_format.FULL_PROBS] = np.zeros(3 * 5, np.float32)
  _write(path, [ex])
  with pytest.raises(errors.RecordMismatchError) as e:
    records.validate_file(str(path), records.stage4_lengths(8, 3, 10),
                          {"truncation_factor": 10})
  assert "masked_lm_probs" in str(e.value)
  assert "--truncation_factor=10" in str(e.value)


def test_validate_rejects_non_tfrecord(tmp_path):
  path = tmp_path / "junk.tfrecord"
  path.write_bytes(b"this is not a tfrecord file at all" * 10)
  with pytest.raises(errors.RecordMismatchError) as e:
    records.validate_file(str(path), records.stage3_lengths(8, 3))
  assert str(path) in str(e.value)


def test_sharding_is_disjoint_and_complete(tmp_path):
  rng = np.random.default_rng(2)
  paths = []
  for f in range(3):
    exs = []
    for i in range(5):
      ex = _stage3_example(rng)
      ex["input_ids"] = [f * 100 + i] * 8
      exs.append(ex)
    path = tmp_path / ("r%d.tfrecord" % f)
    _write(path, exs)
    paths.append(str(path))
  lengths = records.stage3_lengths(8, 3)
  seen = []
  for rank in range(2):
    ds = records.make_dataset(paths, lengths, batch_size=1, is_training=True,
                              num_shards=2, shard_index=rank, seed=3,
                              repeat=False)
    seen.append(sorted(int(b["input_ids"][0, 0]) for b in ds))
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == sorted(
      f * 100 + i for f in range(3) for i in range(5))
  assert records.count_records(paths) == 15


def test_resolve_input_files(tmp_path):
  for name in ("b_1.tfrecord", "b_0.tfrecord", "c.tfrecord"):
    (tmp_path / name).write_bytes(b"")
  spec = "%s,%s" % (tmp_path / "b_*.tfrecord", tmp_path / "c.tfrecord")
  assert [os.path.basename(p) for p in cli.resolve_input_files(spec)] == [
      "b_0.tfrecord", "b_1.tfrecord", "c.tfrecord"]
  with pytest.raises(cli.UserError) as e:
    cli.resolve_input_files(str(tmp_path / "nothing_*.tfrecord"))
  assert "--input_file" in str(e.value)


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
  final = tmp_path / "out.txt"
  with pytest.raises(RuntimeError):
    with outputs.atomic_output(str(final)) as tmp:
      with open(tmp, "w") as f:
        f.write("half")
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == []
  with outputs.atomic_output(str(final)) as tmp:
    with open(tmp, "w") as f:
      f.write("whole")
  assert final.read_text() == "whole"
  assert os.listdir(tmp_path) == ["out.txt"]


def test_only_the_projects_errors_become_one_line():
  # A mistake the user can fix, from a script or from a library: one line,
  # exit status 1; the flag is added where the script knows it.
  assert cli.error_line(cli.UserError("--x: bad\n value")) == (
      "--x: bad value", 1)
  assert cli.error_line(errors.CheckpointError("a.ckpt: no")) == (
      "a.ckpt: no", 1)
  with pytest.raises(cli.UserError, match="^--init_checkpoint: a.ckpt: no$"):
    with cli.blame_flag("--init_checkpoint"):
      raise errors.CheckpointError("a.ckpt: no")
  # Anything else is a bug (TensorFlow's tracing raises ValueError): it
  # keeps its traceback, and blame_flag does not disguise it.
  assert cli.error_line(ValueError("Tensor shapes differ")) is None
  assert cli.error_line(KeyError("x")) is None
  with pytest.raises(ValueError, match="Tensor shapes differ"):
    with cli.blame_flag("--init_checkpoint"):
      raise ValueError("Tensor shapes differ")


def test_split_files_by_size_is_disjoint_complete_and_balanced(tmp_path):
  """Whole files per shard: disjoint, all non-empty files, balanced bytes.

  Sizes only matter (nothing is opened), so the files hold plain bytes. The
  greedy largest-first deal keeps the shards' byte totals within the largest
  file of each other.
  """
  rng = np.random.default_rng(5)
  sizes = [int(s) for s in rng.integers(1, 5000, 11)] + [0, 0]
  paths = []
  for i, size in enumerate(sizes):
    path = tmp_path / ("f%02d.tfrecord" % i)
    path.write_bytes(b"x" * size)
    paths.append(str(path))
  by_path = dict(zip(paths, sizes))
  for shards in (1, 2, 3, 5, 11):
    split = records.split_files_by_size(paths, shards)
    assert len(split) == shards
    flat = [p for share in split for p in share]
    assert len(flat) == len(set(flat))  # disjoint
    assert set(flat) == {p for p in paths if by_path[p] > 0}  # complete
    for share in split:
      assert share and share == sorted(share, key=paths.index)
    loads = [sum(by_path[p] for p in share) for share in split]
    assert max(loads) - min(loads) <= max(sizes), (shards, loads)
    # The share of every rank is what training_share hands that rank.
    for r in range(shards):
      share = records.training_share(paths, shards, r)
      if shards == 1:
        assert share == (paths, 1, 0)
      else:
        assert share == (split[r], 1, 0)
  # Fewer non-empty files than shards: every rank reads all files and keeps
  # its records (record i -> rank i mod N).
  assert records.split_files_by_size(paths, 12) is None
  assert records.training_share(paths, 12, 7) == (paths, 12, 7)


def test_input_pipelines_run_without_tf_data_autotuning(tmp_path):
  # With autotuning on, the end of an iterator waited up to 19 s for the
  # autotuner's thread on a busy machine (stage IV's end of file, stage V's
  # step from training to evaluation): every pipeline turns it off.
  from bert_distill.stages import teacher  # pylint: disable=g-import-not-at-top
  lengths = records.stage3_lengths(8, 3)
  path = str(tmp_path / "r.tfrecord")
  tf.io.TFRecordWriter(path).close()
  for dataset in (
      records.make_dataset([path], lengths, 4, is_training=True, seed=1),
      records.make_dataset([path], lengths, 4, is_training=False),
      teacher.teacher_input_dataset([path], 8, 3, 4)):
    assert dataset.options().autotune.enabled is False
