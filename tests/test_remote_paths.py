"""Stages V and VIII with their paths on a non-local file system (tf.io.gfile).

TensorFlow's in-memory file system `ram://` stands for gs:// or s3:// here:
it has a scheme, so the code takes the same tf.io.gfile paths as for an
object store, and it needs no network. It lives inside one process, so the
stage runs in the test process (tests/inprocess.py), twice: a run, then its
resume.
(ram:// counts any path that begins another's name as a folder, e.g.
out/model.ckpt-4 beside out/model.ckpt-4.index, which tf.train.load_checkpoint
then takes for a folder: the checkpoints are read with TensorFlow's
CheckpointReader of the prefix.)
"""

import json
import logging
import os

import numpy as np
import tensorflow as tf

from bert_distill.lib import checkpoints
import inprocess
from bert_distill.lib import outputs
from bert_distill.lib import results
from conftest import MAX_PREDICTIONS
from conftest import MAX_SEQ_LENGTH
from conftest import TRUNCATION_FACTOR
from conftest import run_main

SCRIPT = "network_distillation_single_machine_truncated.py"


def copy_to(local_path, remote_path):
  tf.io.gfile.makedirs(os.path.dirname(remote_path))
  tf.io.gfile.copy(local_path, remote_path, overwrite=True)
  return remote_path


def test_stage5_runs_and_resumes_on_a_remote_output_dir(stage4_file,
                                                        caplog):
  root = "ram://remote_paths_test"
  config = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 64,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": 128, "type_vocab_size": 2,
            "initializer_range": 0.02}
  config_file = root + "/student/bert_config.json"
  tf.io.gfile.makedirs(root + "/student")
  with tf.io.gfile.GFile(config_file, "w") as f:
    json.dump(config, f)
  records = copy_to(stage4_file, root + "/data/wiki_teacher.tfrecord")
  out = root + "/out"
  common = ["--bert_config_file", config_file,
            "--input_file", root + "/data/*.tfrecord", "--output_dir", out,
            "--truncation_factor", TRUNCATION_FACTOR,
            "--max_seq_length", MAX_SEQ_LENGTH,
            "--max_predictions_per_seq", MAX_PREDICTIONS,
            "--do_train", "--do_eval", "--train_batch_size", 8,
            "--eval_batch_size", 8, "--max_eval_steps", 2,
            "--learning_rate", 1e-3, "--num_warmup_steps", 1,
            "--save_checkpoints_steps", 2, "--log_every_n_steps", 2,
            "--keep_checkpoint_max", 2, "--random_seed", 5]
  assert tf.io.gfile.exists(records)

  # absl's logger keeps the level an earlier test left (WARNING after
  # an unparsed --verbosity): INFO for this test, restored after it.
  caplog.set_level(logging.INFO, logger="absl")
  run_main([SCRIPT] + common + ["--num_train_steps", 4])
  assert "is not on a local file system: it is not locked" in caplog.text
  assert checkpoints.latest_checkpoint(out) == out + "/model.ckpt-4"
  names = set(tf.io.gfile.listdir(out))
  for name in ("checkpoint", "model.ckpt-4.index", "eval_results.txt",
               "run_settings.json"):
    assert name in names, sorted(names)
  assert any(n.startswith("events.out.tfevents.") for n in names)
  # Nothing was left under a temporary name.
  assert not [n for n in names if ".tmp-" in n], sorted(names)
  first = results.read_eval_results(out)
  assert first["global_step"] == 4
  assert set(results.read_scalars(out, "loss")) == {2, 4}
  assert set(results.read_scalars(out + "/eval",
                                  "masked_lm_accuracy")) == {4}
  with tf.io.gfile.GFile(out + "/run_settings.json") as f:
    assert json.load(f)["num_train_steps"] == 4
  at_4 = tf.compat.v1.train.NewCheckpointReader(out + "/model.ckpt-4")
  assert int(at_4.get_tensor("global_step")) == 4

  # A killed writer's temporary (this host, a pid that cannot be alive) is
  # removed by the next run.
  stale = out + "/.eval_results.txt.tmp-%s-%d" % (outputs.this_host(),
                                                  2 ** 22 + 1)
  with tf.io.gfile.GFile(stale, "w") as f:
    f.write("half")
  caplog.clear()
  run_main([SCRIPT] + common + ["--num_train_steps", 6])
  assert "Resuming from %s/model.ckpt-4 (global_step 4)" % out in caplog.text
  assert not tf.io.gfile.exists(stale)
  assert checkpoints.latest_checkpoint(out) == out + "/model.ckpt-6"
  # --keep_checkpoint_max 2: model.ckpt-2 went when model.ckpt-6 came.
  kept = sorted(n for n in tf.io.gfile.listdir(out) if n.endswith(".index"))
  assert kept == ["model.ckpt-4.index", "model.ckpt-6.index"], kept
  second = results.read_eval_results(out)
  assert second["global_step"] == 6
  at_6 = tf.compat.v1.train.NewCheckpointReader(out + "/model.ckpt-6")
  assert int(at_6.get_tensor("global_step")) == 6
  # The resumed run trained on from the restored weights.
  name = "bert/embeddings/LayerNorm/gamma"
  assert not np.array_equal(at_4.get_tensor(name), at_6.get_tensor(name))
  with tf.io.gfile.GFile(out + "/run_settings.json") as f:
    assert json.load(f)["num_train_steps"] == 6


def test_checkpoint_state_in_a_relative_or_remote_directory(tmp_path,
                                                            monkeypatch):
  # TensorFlow rewrites the state file's entries against a directory that
  # os.path.isabs does not call absolute: a relative --output_dir and a URL.
  monkeypatch.chdir(tmp_path)
  values = {"w": tf.Variable([1.0, 2.0, 3.0])}
  for directory in ("relative/out", "ram://state_test/out"):
    for step in (1, 2):
      prefix = directory + "/model.ckpt-%d" % step
      checkpoints.save_checkpoint(values, prefix)
      checkpoints.write_checkpoint_index(directory, prefix)
    with tf.io.gfile.GFile(directory + "/checkpoint") as f:
      assert f.read().splitlines() == [
          'model_checkpoint_path: "model.ckpt-2"',
          'all_model_checkpoint_paths: "model.ckpt-1"',
          'all_model_checkpoint_paths: "model.ckpt-2"'], directory
    assert checkpoints.latest_checkpoint(directory) == (
        directory + "/model.ckpt-2")
    assert checkpoints.resolve_checkpoint(directory + "/model.ckpt-1") == (
        directory + "/model.ckpt-1")
    assert checkpoints.variable_names(directory) == ["w"]


# Ten SST-2 sentences (label 1: positive), written as GLUE's files are.
SENTENCES = [("a warm , funny and moving film", 1),
             ("the plot is thin and the jokes fall flat", 0),
             ("one of the best pictures of the year", 1),
             ("dull , slow and far too long", 0),
             ("the actors are wonderful", 1),
             ("a mess from start to finish", 0),
             ("smart , sharp and full of life", 1),
             ("i wanted my two hours back", 0),
             ("a gentle and beautiful story", 1),
             ("nothing here works", 0)]


def run_stage8_classifier(**values):
  from bert_distill.stages import classifier  # pylint: disable=g-import-not-at-top
  return classifier.run(inprocess.options("classifier_flags", **values))


def test_stage8_classifier_writes_and_resumes_on_a_remote_output_dir(
    tmp_path, vocab_file, caplog):
  data_dir = tmp_path / "sst2"
  data_dir.mkdir()
  rows = ["%s\t%d" % pair for pair in SENTENCES]
  (data_dir / "train.tsv").write_text("\n".join(["sentence\tlabel"] + rows))
  (data_dir / "dev.tsv").write_text("\n".join(["sentence\tlabel"] + rows[:4]))
  (data_dir / "test.tsv").write_text("\n".join(
      ["index\tsentence"] + ["%d\t%s" % (i, s)
                             for i, (s, _) in enumerate(SENTENCES[:3])]))
  root = "ram://remote_paths_classifier"
  config_file = root + "/student/bert_config.json"
  tf.io.gfile.makedirs(root + "/student")
  with tf.io.gfile.GFile(config_file, "w") as f:
    json.dump({"vocab_size": 30522, "hidden_size": 32,
               "num_hidden_layers": 1, "num_attention_heads": 2,
               "intermediate_size": 64, "hidden_act": "gelu",
               "hidden_dropout_prob": 0.1,
               "attention_probs_dropout_prob": 0.1,
               "max_position_embeddings": 64, "type_vocab_size": 2,
               "initializer_range": 0.02}, f)
  out = root + "/out"
  values = dict(task_name="sst-2", data_dir=str(data_dir),
                vocab_file=vocab_file, bert_config_file=config_file,
                output_dir=out, max_seq_length=16, train_batch_size=4,
                eval_batch_size=4, predict_batch_size=4, learning_rate=1e-3,
                save_checkpoints_steps=2, log_every_n_steps=1,
                do_train=True, do_eval=True, do_predict=True)
  # absl's logger keeps the level an earlier test left (WARNING after
  # an unparsed --verbosity): INFO for this test, restored after it.
  caplog.set_level(logging.INFO, logger="absl")
  first = run_stage8_classifier(num_train_epochs=1.0, **values)
  # Google's step count: int(10 examples / batches of 4 * epochs): 2 here,
  # 5 for 2 epochs below.
  assert checkpoints.latest_checkpoint(out) == out + "/model.ckpt-2"
  assert results.read_eval_results(out)["global_step"] == 2
  assert first["global_step"] == 2
  with tf.io.gfile.GFile(out + "/test_results.tsv") as f:
    probabilities = [[float(v) for v in line.split("\t")] for line in f]
  assert len(probabilities) == 3
  np.testing.assert_allclose(np.sum(probabilities, axis=1), 1.0, atol=1e-5)
  assert tf.io.gfile.glob(out + "/events.out.tfevents.*")
  assert not [n for n in tf.io.gfile.listdir(out) if ".tmp-" in n]

  caplog.clear()
  run_stage8_classifier(num_train_epochs=2.0, **values)
  assert "Resuming from %s/model.ckpt-2 (global_step 2)" % out in caplog.text
  assert checkpoints.latest_checkpoint(out) == out + "/model.ckpt-5"
  assert results.read_eval_results(out)["global_step"] == 5
