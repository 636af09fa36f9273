"""Stages VI and VII under real Horovod and real mpirun (2 CPU processes).

The records are the real stage-IV records of the Wikipedia sample (fixture
stage4_file: the real small BERT's top-10 labels); the student is tiny
(2 layers, hidden 32). Each rank runs with one TensorFlow thread.

What rank each record went to, and each rank's final variables, are read from
tests/horovod_debug_run.py, which runs the Horovod script's own main under
mpirun and writes rank<R>_records.txt and rank<R>_variables.npz to the folder
DISTILL_DEBUG_DIR names (outside --output_dir).
"""

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from bert_distill.lib import checkpoints
from bert_distill import cli
import conftest
from bert_distill.stages import distillation
import inprocess
import modeling
from bert_distill.lib import records
from bert_distill.lib import results
from bert_distill.stages import training

SCRIPT = "network_distillation_distributed_truncated.py"
SINGLE_SCRIPT = "network_distillation_single_machine_truncated.py"
# The Horovod script watched from outside (tests only): see its docstring.
DEBUG_SCRIPT = "tests/horovod_debug_run.py"
DEBUG_DIR_ENV = "DISTILL_DEBUG_DIR"
SEQ = conftest.MAX_SEQ_LENGTH
PREDS = conftest.MAX_PREDICTIONS
K = conftest.TRUNCATION_FACTOR
# Rank 0 writes only these under --output_dir.
CHIEF_OUTPUT = re.compile(
    r"^(checkpoint|eval_results\.txt|run_settings\.json"
    r"|model\.ckpt-\d+\.(index|data-\d+-of-\d+)"
    r"|events\.out\.tfevents\..*|eval/events\.out\.tfevents\..*)$")


def tiny_student_config(path, dropout=0.1):
  """Writes a 2-layer, hidden-32 student config (the teacher's vocab)."""
  config = {
      "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
      "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": "gelu",
      "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout,
      "max_position_embeddings": SEQ, "type_vocab_size": 2,
      "initializer_range": 0.02}
  with open(path, "w") as f:
    json.dump(config, f)
  return str(path)


def mpi_env(debug_dir=None):
  """The environment of an mpirun test job (one TF thread per rank); with
  debug_dir, the folder where tests/horovod_debug_run.py writes."""
  env = conftest.mpi_env()
  env.pop(DEBUG_DIR_ENV, None)
  if debug_dir:
    env[DEBUG_DIR_ENV] = str(debug_dir)
  return env


def mpirun_command(np_, app_args, env=None, python=None):
  """mpirun on localhost; app_args: one argument list, or one per rank.

  Runs the Horovod script, or its watched wrapper (DEBUG_SCRIPT) when `env`
  names a DISTILL_DEBUG_DIR; python: see conftest.mpirun_command.
  """
  if not isinstance(app_args[0], (list, tuple)):
    app_args = [app_args] * np_
  if env and env.get(DEBUG_DIR_ENV):
    return conftest.mpirun_command(DEBUG_SCRIPT, app_args, (DEBUG_DIR_ENV,),
                                   python)
  return conftest.mpirun_command(SCRIPT, app_args, python=python)


def run_mpi(np_, app_args, env, timeout=300):
  """Runs an mpirun job; fails the test on a non-zero exit."""
  result = subprocess.run(mpirun_command(np_, app_args, env),
                          cwd=conftest.REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
  if result.returncode != 0:
    pytest.fail("mpirun exited %d:\n%s" % (result.returncode,
                                           result.stderr[-5000:]))
  return result


def common_flags(config, input_file):
  return ["--bert_config_file", config, "--input_file", input_file,
          "--truncation_factor", K, "--max_seq_length", SEQ,
          "--max_predictions_per_seq", PREDS]


def record_key(input_ids, positions, label_ids):
  """The identity of a record, as tests/horovod_debug_run.py writes it."""
  return " | ".join(" ".join(str(int(x)) for x in part)
                    for part in (input_ids, positions, label_ids))


Record = collections.namedtuple("Record", "raw key weight_sum label")


def read_raw_records(path, limit=None):
  """The first `limit` (all) records of a file, each as a `Record`.

  raw: the serialized tf.train.Example; key: see record_key; weight_sum: sum
  of masked_lm_weights (real masked positions); label: next_sentence_labels.
  """
  out = []
  for raw in tf.data.TFRecordDataset(path).take(limit or -1):
    feat = tf.train.Example.FromString(raw.numpy()).features.feature
    key = record_key(feat["input_ids"].int64_list.value,
                     feat["masked_lm_positions"].int64_list.value,
                     feat["masked_lm_ids"].int64_list.value)
    out.append(Record(raw.numpy(), key,
                      float(sum(feat["masked_lm_weights"].float_list.value)),
                      int(feat["next_sentence_labels"].int64_list.value[0])))
  return out


def write_records(path, chosen):
  """Writes Records (their serialized bytes, unchanged) to a TFRecord file."""
  with tf.io.TFRecordWriter(str(path)) as w:
    for record in chosen:
      w.write(record.raw)
  return str(path)


def read_rank_records(debug_dir, rank):
  with open(os.path.join(debug_dir, "rank%d_records.txt" % rank)) as f:
    return [line.rstrip("\n") for line in f]


def files_under(directory):
  return sorted(os.path.relpath(os.path.join(d, n), directory)
                for d, _, names in os.walk(directory) for n in names)


def test_two_ranks_train_on_disjoint_shares(tmp_path, stage4_file):
  """mpirun -np 2: trains to the end, loss falls, ranks agree, shards split.

  The input is the first 256 real stage-IV records (the whole sample has
  about 4,800: an epoch of it would take minutes here), so that a short run
  goes through each rank's share once. Rank 1 is started (MPMD) with its own
  --output_dir: the code path that would write there is the one that writes
  rank 0's output, so that folder staying absent shows that other ranks write
  nothing under output_dir.
  """
  all_records = read_raw_records(stage4_file, limit=256)
  assert len(all_records) == 256
  data = write_records(tmp_path / "sample.tfrecord", all_records)
  all_keys = collections.Counter(r.key for r in all_records)
  assert max(all_keys.values()) == 1
  config = tiny_student_config(tmp_path / "student.json")
  debug_dir, out0, out1 = (tmp_path / "debug", tmp_path / "out",
                           tmp_path / "out_rank1")
  batch = 16
  # One epoch of each rank's share, and a bit more.
  steps_per_rank = (len(all_records) // 2) // batch + 2
  eval_flags = common_flags(config, data) + [
      "--do_eval=true", "--eval_batch_size", 32, "--max_eval_steps", 2]
  flags = eval_flags + [
      "--do_train=true", "--train_batch_size", batch,
      "--learning_rate", 5e-3, "--num_train_steps", 2 * steps_per_rank,
      "--num_warmup_steps", 4, "--save_checkpoints_steps", 10,
      "--log_every_n_steps", 2, "--iterations_per_loop", 2]
  start = time.time()
  result = run_mpi(2, [flags + ["--output_dir", out0],
                       flags + ["--output_dir", out1]], mpi_env(debug_dir))
  elapsed = time.time() - start
  print("mpirun -np 2, %d steps per rank: %.1f s" % (steps_per_rank, elapsed))

  # Ran to the end; the chief's outputs, and nothing from rank 1.
  assert not out1.exists()
  files = files_under(out0)
  assert all(CHIEF_OUTPUT.match(f) for f in files), files
  assert "model.ckpt-%d.index" % steps_per_rank in files
  metrics = results.read_eval_results(str(out0))
  assert int(metrics["global_step"]) == steps_per_rank
  assert "Horovod: 2 processes" in result.stderr
  assert tf.train.load_variable(
      str(out0 / ("model.ckpt-%d" % steps_per_rank)),
      "global_step") == steps_per_rank

  # TensorBoard scalars from rank 0, to the last step.
  assert max(results.read_scalars(str(out0), "loss")) == steps_per_rank

  # The loss went down: the untrained student (same seed, evaluated by the
  # single-machine script in this process) does worse on the same records.
  before = tmp_path / "before"
  conftest.run_main([SINGLE_SCRIPT] + eval_flags + ["--output_dir", before,
                                                     "--eval_untrained"])
  before = results.read_eval_results(str(before))
  assert int(before["global_step"]) == 0
  assert (float(metrics["masked_lm_loss"]) <
          0.9 * float(before["masked_lm_loss"])), (before, metrics)
  assert (float(metrics["teacher_top1_agreement"]) >
          float(before["teacher_top1_agreement"]) + 0.02), (before, metrics)

  # Both ranks hold identical weights, optimizer slots and global_step.
  ranks = [np.load(debug_dir / ("rank%d_variables.npz" % r)) for r in (0, 1)]
  assert ranks[0].files == ranks[1].files and len(ranks[0].files) > 20
  for name in ranks[0].files:
    np.testing.assert_array_equal(ranks[0][name], ranks[1][name],
                                  err_msg=name)
  # ... and they are what rank 0 saved in its final checkpoint.
  saved = tf.train.load_checkpoint(str(out0 / ("model.ckpt-%d" %
                                              steps_per_rank)))
  digest = lambda a: (np.asarray(a).shape, np.asarray(a).tobytes())
  assert (sorted(digest(saved.get_tensor(n))
                 for n in saved.get_variable_to_shape_map()) ==
          sorted(digest(ranks[0][n]) for n in ranks[0].files))

  # Each rank consumed batch * steps records, all from its own share; the
  # shares are disjoint and together are the whole input.
  seen = [read_rank_records(debug_dir, r) for r in (0, 1)]
  for r in (0, 1):
    assert len(seen[r]) == batch * steps_per_rank
  shares = [set(s) for s in seen]
  assert not shares[0] & shares[1]
  assert shares[0] | shares[1] == set(all_keys)
  expected = [set(rec.key for i, rec in enumerate(all_records)
                  if i % 2 == r) for r in (0, 1)]
  assert shares == expected


def test_two_ranks_with_layer_losses_hold_identical_weights(
    tmp_path, stage3_dir, teacher_dir):
  """mpirun -np 2 with the online teacher and the hidden-state (through a
  projection: hidden 32 vs the teacher's 128) and attention-relation losses.

  Each rank trains on its own records, so the ranks stay identical only if
  the projection's gradients are averaged along with the student's.
  """
  data = write_records(tmp_path / "stage3.tfrecord", read_raw_records(
      os.path.join(stage3_dir, "wiki_0.tfrecord"), limit=64))
  config = tiny_student_config(tmp_path / "student.json")
  debug_dir, out = tmp_path / "debug", tmp_path / "out"
  flags = common_flags(config, data) + [
      "--output_dir", out, "--do_train=true", "--train_batch_size", 8,
      "--learning_rate", 5e-3, "--num_train_steps", 8,
      "--num_warmup_steps", 2, "--save_checkpoints_steps", 4,
      "--teacher_bert_config_file",
      os.path.join(teacher_dir, "bert_config.json"),
      "--teacher_init_checkpoint",
      os.path.join(teacher_dir, "bert_model.ckpt"),
      "--hidden_loss_weight", 1, "--attention_relation_loss_weight", 1]
  run_mpi(2, flags, mpi_env(debug_dir))

  # 4 steps per rank: the student checkpoint and its companion.
  files = files_under(out)
  assert "model.ckpt-4.index" in files, files
  assert "model.ckpt-4.distillation.index" in files, files
  ranks = [np.load(debug_dir / ("rank%d_variables.npz" % r)) for r in (0, 1)]
  assert ranks[0].files == ranks[1].files
  projection = [n for n in ranks[0].files if "hidden_projection/" in n]
  assert len(projection) == 6, projection  # kernel, bias and their slots
  for name in ranks[0].files:
    np.testing.assert_array_equal(ranks[0][name], ranks[1][name],
                                  err_msg=name)
  slot = [n for n in projection if n.endswith("kernel/adam_m:0")][0]
  assert np.abs(ranks[0][slot]).max() > 0  # the projection was trained
  saved = tf.train.load_variable(str(out / "model.ckpt-4.distillation"),
                                 "distillation/hidden_projection/kernel")
  kernel = [n for n in projection if n.endswith("projection/kernel:0")][0]
  np.testing.assert_array_equal(saved, ranks[0][kernel])


def test_averaged_update_equals_single_process_update_on_the_union(
    tmp_path, stage4_file):
  """One 2-rank step equals one single-process step on both ranks' batches.

  Why the two must agree exactly (up to float summation order):
  - the records: 8 real stage-IV records, each with all 10 masked positions
    real (masked_lm_weights sum to 10). Written in file order, rank r reads
    records r, r+2, ... (4 each); with batch 4 its first batch is exactly its
    share (one epoch), and the single process with batch 8 reads all 8.
    Half are actual next sentences and half random ones (two of each per
    rank): with one label only, the next-sentence bias gradient alone has a
    norm near 0.7 and the whole gradient gets clipped (see below).
  - the loss: each rank's masked-LM loss is sum(w*l) / (sum(w) + 1e-5) over
    its batch and its next-sentence loss a mean over its 4 examples. With
    equal weight sums W = 40 on both ranks, the average of the two rank
    gradients equals the gradient of sum(w*l) / (2W) + NSP mean over 8 (the
    1e-5 changes it by a relative 1e-5 / 80, below the tolerance); the single
    process computes the same on its batch of 8 (denominator 80 + 1e-5).
  - dropout is off (probabilities 0), both start from the same
    --init_checkpoint with zero optimizer slots, no warmup, and the same
    learning rate: the 2-rank job gets --learning_rate 1e-3 (multiplied by 2)
    and --num_train_steps 2 (divided by 2), the single process 2e-3 and 1.
  - the first Adam step moves each weight by about lr * sign(gradient), which
    would hide a wrong scale of the averaged gradient (a sum instead of an
    average). The optimizer slots adam_m = 0.1 g and adam_v = 0.001 g^2 hold
    the (clipped) gradient g itself, so they are compared too; and the test
    checks that g's global norm is below the clipping norm 1.0, so that
    clipping did not rescale it (a summed gradient would then show up as
    twice the slots).
  Tolerances: weights 1e-6 absolute; slots 1e-5 of each tensor's largest
  entry. The only difference between the two computations is the order of
  float32 sums (two half-batch sums averaged vs one sum), measured at a few
  1e-7 relative.
  """
  full = [r for r in read_raw_records(stage4_file, limit=2000)
          if r.weight_sum == PREDS]
  actual = [r for r in full if r.label == 0][:4]
  random_next = [r for r in full if r.label == 1][:4]
  assert len(actual) == len(random_next) == 4
  # File order a a r r a a r r: each rank gets two of each label.
  chosen = [actual[0], actual[1], random_next[0], random_next[1],
            actual[2], actual[3], random_next[2], random_next[3]]
  data = write_records(tmp_path / "eight.tfrecord", chosen)
  config_path = tiny_student_config(tmp_path / "student.json", dropout=0.0)

  # A shared random initial checkpoint of the student.
  tf.random.set_seed(7)
  model = modeling.BertPretrainingModel(
      modeling.BertConfig.from_json_file(config_path))
  model(tf.zeros([1, SEQ], tf.int32), tf.ones([1, SEQ], tf.int32),
        tf.zeros([1, SEQ], tf.int32), tf.zeros([1, PREDS], tf.int32))
  (tmp_path / "init").mkdir()
  init = checkpoints.save_checkpoint(model.variables_by_name(),
                                  str(tmp_path / "init" / "student.ckpt"))

  flags = common_flags(config_path, data) + [
      "--init_checkpoint", init, "--do_train=true", "--num_warmup_steps", 0,
      "--save_checkpoints_steps", 100, "--random_seed", 3]
  debug_dir = tmp_path / "debug"
  hvd_out = tmp_path / "hvd"
  run_mpi(2, flags + ["--output_dir", hvd_out, "--train_batch_size", 4,
                      "--learning_rate", 1e-3, "--num_train_steps", 2],
          mpi_env(debug_dir))
  single_out = tmp_path / "single"
  conftest.run_main([SINGLE_SCRIPT] + flags + [
      "--output_dir", single_out, "--train_batch_size", 8,
      "--learning_rate", 2e-3, "--num_train_steps", 1])

  keys = [r.key for r in chosen]
  for r in (0, 1):
    assert sorted(read_rank_records(debug_dir, r)) == sorted(keys[r::2])

  hvd_ckpt = tf.train.load_checkpoint(str(hvd_out / "model.ckpt-1"))
  single_ckpt = tf.train.load_checkpoint(str(single_out / "model.ckpt-1"))
  start = tf.train.load_checkpoint(init)
  names = sorted(hvd_ckpt.get_variable_to_shape_map())
  assert names == sorted(single_ckpt.get_variable_to_shape_map())
  model_names = [n for n in names if n.startswith(("bert/", "cls/")) and
                 "/adam_" not in n]
  assert len(model_names) == len(model.variables_by_name())
  grad_sq = 0.0
  for name in names:
    a, b = hvd_ckpt.get_tensor(name), single_ckpt.get_tensor(name)
    if "/adam_" in name:
      # The gradient itself: equal to 1e-5 of the tensor's largest entry.
      np.testing.assert_allclose(a, b, rtol=0,
                                 atol=1e-5 * np.abs(b).max() + 1e-12,
                                 err_msg=name)
    else:
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=name)
    if name.endswith("/adam_m"):
      grad_sq += float(np.sum((b / 0.1) ** 2))
  assert 1e-3 < grad_sq ** 0.5 < 1.0, grad_sq ** 0.5
  # And the step did move the weights.
  for name in ("bert/embeddings/word_embeddings", "cls/predictions/output_bias",
               "cls/seq_relationship/output_weights",
               "bert/encoder/layer_1/output/dense/kernel"):
    assert np.abs(hvd_ckpt.get_tensor(name) -
                  start.get_tensor(name)).max() > 1e-4, name


def test_multinode_train_script_on_localhost(tmp_path, stage4_file):
  """multinode_train.sh 2 over a hosts file `localhost slots=2`."""
  hosts = tmp_path / "hosts"
  hosts.write_text("# test\nlocalhost slots=2\n")
  out = tmp_path / "out"
  env = mpi_env()
  env.update(
      HOSTS_FILE=str(hosts), PYTHON=conftest.forked_python(),
      BERT_CONFIG=tiny_student_config(tmp_path / "student.json"),
      INPUT_FILE=stage4_file, OUTPUT_DIR=str(out), TRAIN_BATCH_SIZE="4",
      NUM_TRAIN_STEPS="6", NUM_WARMUP_STEPS="2", TRUNCATION_FACTOR=str(K),
      MPI_EXTRA_ARGS="-x PYTHONPATH -x CUDA_VISIBLE_DEVICES -x OMP_NUM_THREADS"
                     " -x TF_NUM_INTRAOP_THREADS -x TF_NUM_INTEROP_THREADS")
  cmd = ["bash", "multinode_train.sh", "2", "--max_seq_length", SEQ,
         "--max_predictions_per_seq", PREDS, "--do_eval=true",
         "--max_eval_steps", 1, "--log_every_n_steps", 1]
  result = subprocess.run([str(c) for c in cmd], cwd=conftest.REPO, env=env,
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-5000:]
  assert "HOROVOD_HIERARCHICAL_ALLREDUCE=1" in result.stdout
  assert "-hostfile %s" % hosts in result.stdout
  # 6 steps in total over 2 processes: 3 per process.
  assert (out / "model.ckpt-3.index").exists()
  assert int(results.read_eval_results(str(out))["global_step"]) == 3

  # Wrong arguments: a usage message and exit status 2, nothing started.
  for args, message in (([], "missing TOTAL_GPUS"),
                        (["two"], "positive integer"),
                        (["3"], "more than the 2 slots"),
                        (["0"], "positive integer")):
    bad = subprocess.run(["bash", "multinode_train.sh"] + args,
                         cwd=conftest.REPO, env=env, capture_output=True,
                         text=True, timeout=30, check=False)
    assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    assert "Usage: multinode_train.sh TOTAL_GPUS" in bad.stderr
  env["HOSTS_FILE"] = str(tmp_path / "missing_hosts")
  bad = subprocess.run(["bash", "multinode_train.sh", "2"], cwd=conftest.REPO,
                       env=env, capture_output=True, text=True, timeout=30,
                       check=False)
  assert bad.returncode == 2 and "hosts file not found" in bad.stderr


def _newest_checkpoint_step(directory):
  """The highest N of the model.ckpt-N.index files in directory (-1: none)."""
  steps = [int(m.group(1)) for m in
           (re.fullmatch(r"model\.ckpt-(\d+)\.index", p.name)
            for p in directory.glob("model.ckpt-*.index")) if m]
  return max(steps, default=-1)


def test_killed_rank_ends_the_job_and_a_restart_resumes(tmp_path,
                                                        stage4_file):
  """kill -9 of rank 1 mid-run: mpirun exits non-zero quickly; resume works."""
  out = tmp_path / "out"
  config = tiny_student_config(tmp_path / "student.json")
  flags = common_flags(config, stage4_file) + [
      "--output_dir", out, "--do_train=true", "--train_batch_size", 4,
      "--save_checkpoints_steps", 3, "--log_every_n_steps", 1,
      "--iterations_per_loop", 1, "--num_warmup_steps", 0]
  log = open(tmp_path / "first_run.log", "w")
  job = subprocess.Popen(
      mpirun_command(2, flags + ["--num_train_steps", 100000],
                     python=sys.executable),
      cwd=conftest.REPO, env=mpi_env(), stdout=log, stderr=subprocess.STDOUT)
  try:
    # Any checkpoint from step 6 on: with --keep_checkpoint_max 5 a fast run
    # has deleted model.ckpt-6 again before a poll would see it.
    deadline = time.time() + 240
    while _newest_checkpoint_step(out) < 6:
      assert job.poll() is None, open(tmp_path / "first_run.log").read()[-3000:]
      assert time.time() < deadline, (
          "no checkpoint after 240 s: " +
          open(tmp_path / "first_run.log").read()[-3000:])
      time.sleep(0.2)
    victim = conftest.rank_process(job.pid, 1, SCRIPT)
    assert victim is not None
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    returncode = job.wait(timeout=120)
    took = time.time() - killed_at
  finally:
    if job.poll() is None:
      job.kill()
      job.wait()
    log.close()
  print("job ended %.1f s after the kill, exit %d" % (took, returncode))
  assert returncode != 0
  assert took < 60
  with open(out / "checkpoint") as f:
    last = int(re.search(r'model_checkpoint_path: ".*model\.ckpt-(\d+)"',
                         f.read()).group(1))
  assert last >= 6 and last % 3 == 0

  # The same job again (a shorter total so that it ends soon) resumes from
  # rank 0's newest checkpoint on both ranks.
  debug_dir = tmp_path / "debug"
  target = last + 3
  result = run_mpi(2, flags + ["--num_train_steps", 2 * target],
                   mpi_env(debug_dir))
  assert re.search(r"Resuming from \S*model\.ckpt-%d\b" % last,
                   result.stderr), result.stderr[-3000:]
  assert (out / ("model.ckpt-%d.index" % target)).exists()
  for r in (0, 1):
    # Each rank trained only the remaining steps.
    assert len(read_rank_records(debug_dir, r)) == 4 * (target - last)
    values = np.load(debug_dir / ("rank%d_variables.npz" % r))
    ints = [int(values[n]) for n in values.files
            if values[n].dtype == np.int64 and values[n].shape == ()]
    assert ints == [target]  # global_step


def note_training_records(monkeypatch):
  """The set that every record the training pipelines deliver is added to.

  records.make_dataset is wrapped (for this test only) so that each batch of
  a training pipeline adds its records' keys (see record_key) to the set.
  """
  seen = set()
  make_dataset = records.make_dataset

  def _note(input_ids, positions, label_ids):
    seen.update(record_key(*row) for row in zip(
        input_ids.numpy(), positions.numpy(), label_ids.numpy()))
    return input_ids

  def noting_make_dataset(paths, lengths, batch_size, is_training,
                          **kwargs):
    dataset = make_dataset(paths, lengths, batch_size, is_training, **kwargs)
    if not is_training:
      return dataset
    return dataset.map(lambda f: dict(f, input_ids=tf.ensure_shape(
        tf.py_function(_note, [f["input_ids"], f["masked_lm_positions"],
                               f["masked_lm_ids"]], tf.int32),
        f["input_ids"].shape)))

  monkeypatch.setattr(records, "make_dataset", noting_make_dataset)
  return seen


def test_with_enough_files_a_rank_opens_only_its_own(tmp_path, stage4_file,
                                                      monkeypatch):
  """4 files, 2 ranks: each rank trains on whole files of its own.

  One of the files is not a TFRecord file at all and is the largest, so the
  split gives it to one rank; the other rank runs distillation.run (files
  resolved, validated, read for 4 steps) without touching it, and trains on
  the records of its own files, all of them (batch 16, 64 records).
  The owner of the bad file fails on it, naming it: opening it is noticed.
  """
  recs = read_raw_records(stage4_file, limit=80)
  files = {"a": write_records(tmp_path / "a.tfrecord", recs[:40]),
           "b": write_records(tmp_path / "b.tfrecord", recs[40:64]),
           "c": write_records(tmp_path / "c.tfrecord", recs[64:80])}
  bad = tmp_path / "bad.tfrecord"
  bad.write_bytes(os.urandom(os.path.getsize(files["a"]) + 1000))
  files["bad"] = str(bad)
  keys = {files["a"]: recs[:40], files["b"]: recs[40:64],
          files["c"]: recs[64:80]}
  paths = sorted(files.values())
  shares = records.split_files_by_size(paths, 2)
  owner = [r for r in (0, 1) if files["bad"] in shares[r]][0]
  good = 1 - owner
  assert sum(len(keys[p]) for p in shares[good]) == 64, shares

  opts = inprocess.options(
      "distillation_flags",
      bert_config_file=tiny_student_config(tmp_path / "student.json"),
      input_file=",".join(paths), output_dir=str(tmp_path / "out"),
      truncation_factor=K, max_seq_length=SEQ, max_predictions_per_seq=PREDS,
      do_train=True, train_batch_size=16, num_train_steps=4,
      num_warmup_steps=0, save_checkpoints_steps=100, log_every_n_steps=4)
  seen = note_training_records(monkeypatch)
  distillation.run(opts, training.Distribution(rank=good, size=2))
  own = [r.key for p in shares[good] for r in keys[p]]
  assert seen == set(own)

  with pytest.raises(cli.UserError, match=re.escape(files["bad"])):
    distillation.run(opts, training.Distribution(rank=owner, size=2))
