"""Stage IV as a job over many files: --output_dir, mpirun, resuming,
compact labels, and stages III and IV on remote paths.

Real stage-III records of the Wikipedia sample, the real small BERT as the
teacher, real mpirun/Horovod. Labels of a job are compared with the labels
one process writes for the same file; compact labels with float32 ones
decoded here with NumPy (not with the reader under test).
"""

import glob
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import conftest
import helpers
import inprocess
from bert_distill.lib import record_format
from bert_distill.lib import records
from conftest import MAX_PREDICTIONS
from conftest import MAX_SEQ_LENGTH
from conftest import TRUNCATION_FACTOR
from conftest import run_main

SCRIPT = "produce_teacher_labels.py"
S, P, K = MAX_SEQ_LENGTH, MAX_PREDICTIONS, TRUNCATION_FACTOR


def label_flags(teacher_dir, input_file, *extra):
  return ["--bert_config_file", os.path.join(teacher_dir, "bert_config.json"),
          "--init_checkpoint", os.path.join(teacher_dir, "bert_model.ckpt"),
          "--input_file", str(input_file), "--truncation_factor", K,
          "--max_seq_length", S, "--max_predictions_per_seq", P,
          "--batch_size", 16] + [str(e) for e in extra]


def copy_records(source, path, count=None, skip=0):
  """Writes records skip.. of `source` (bytes unchanged) to `path`."""
  os.makedirs(os.path.dirname(str(path)), exist_ok=True)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for raw in tf.data.TFRecordDataset(source).skip(skip).take(
        count or -1):
      writer.write(raw.numpy())
  return str(path)


def decoded(path):
  """Every record of a stage-IV file: (stage-III features as a dict of
  lists, top-K probabilities [n, P*K] float32, ids [n, P*K] int64). Compact
  values are decoded here with NumPy."""
  stage3, probs, ids = [], [], []
  for raw in tf.data.TFRecordDataset(path):
    feature = tf.train.Example.FromString(raw.numpy()).features.feature
    stage3.append({name: list(getattr(feature[name],
                                      feature[name].WhichOneof("kind")).value)
                   for name in record_format.STAGE3_FEATURES})
    p, i = (feature[record_format.TRUNCATED_PROBS],
            feature[record_format.TOP_K_INDICES])
    if p.WhichOneof("kind") == "bytes_list":
      probs.append(np.frombuffer(p.bytes_list.value[0], "<f2"))
      ids.append(np.frombuffer(i.bytes_list.value[0], "<u2"))
    else:
      probs.append(np.array(p.float_list.value, np.float32))
      ids.append(np.array(i.int64_list.value, np.int64))
  return (stage3, np.array(probs, np.float32).reshape(-1, P * K),
          np.array(ids, np.int64).reshape(-1, P * K))


def assert_same_labels(path, reference, atol=1e-5):
  """The records of `path` are those of `reference`, with its labels."""
  stage3, probs, ids = decoded(path)
  ref_stage3, ref_probs, ref_ids = decoded(reference)
  assert stage3 == ref_stage3, path
  np.testing.assert_allclose(probs, ref_probs, atol=atol, rtol=0)
  # The same words, except where two of them are (nearly) tied.
  tied = np.abs(np.diff(ref_probs.reshape(-1, P, K), axis=-1)) < 2 * atol
  differ = ids.reshape(-1, P, K) != ref_ids.reshape(-1, P, K)
  assert not np.any(differ[..., :-1] & ~tied & ~np.roll(tied, 1, -1)), path


def made(folder):
  """name -> (inode, modification time) of the labelled files in `folder`."""
  out = {}
  for path in glob.glob(os.path.join(str(folder), "*.tfrecord")):
    stat = os.stat(path)
    out[os.path.basename(path)] = (stat.st_ino, stat.st_mtime_ns)
  return out


def temporaries(folder):
  return [n for n in os.listdir(str(folder)) if ".tmp-" in n]


@pytest.fixture(scope="module")
def four_files(tmp_path_factory, stage3_dir):
  """Four stage-III files of distinct sizes (200-350 records)."""
  folder = tmp_path_factory.mktemp("four")
  source = os.path.join(stage3_dir, "wiki_0.tfrecord")
  return [copy_records(source, folder / ("part_%d.tfrecord" % i), count,
                       skip=i * 100)
          for i, count in enumerate((350, 200, 300, 250))]


@pytest.fixture(scope="module")
def one_process_labels(tmp_path_factory, four_files, teacher_dir):
  """The four files labelled by one process (--output_dir)."""
  out = tmp_path_factory.mktemp("one_process")
  run_main([SCRIPT] + label_flags(
      teacher_dir, os.path.join(os.path.dirname(four_files[0]),
                                "part_*.tfrecord"), "--output_dir", out))
  return str(out)


def test_mpirun_deals_files_and_a_killed_job_resumes(tmp_path, four_files,
                                                     one_process_labels,
                                                     teacher_dir):
  input_spec = os.path.join(os.path.dirname(four_files[0]), "part_*.tfrecord")
  names = sorted(os.path.basename(f) for f in four_files)
  # One process wrote one labelled file per input, a record of what made
  # it beside each.
  assert sorted(os.listdir(one_process_labels)) == sorted(
      names + [".%s.made-by.json" % n for n in names])
  for name, source in zip(sorted(names), sorted(four_files)):
    stage3, _, _ = decoded(os.path.join(one_process_labels, name))
    assert len(stage3) == records.check_records(source)

  # Two ranks: each file dealt to one of them; the labels equal one
  # process's. Rank 1 is killed while it labels its second file.
  out = tmp_path / "out"
  log = open(tmp_path / "first_run.log", "w")
  job = subprocess.Popen(conftest.mpirun_command(
      SCRIPT, [label_flags(teacher_dir, input_spec, "--output_dir", out)] * 2,
      python=sys.executable),
                         cwd=conftest.REPO, env=conftest.mpi_env(),
                         stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + 240
    victim, seen = None, set()
    while True:
      assert job.poll() is None, open(tmp_path / "first_run.log").read()[-3000:]
      assert time.time() < deadline, open(tmp_path /
                                          "first_run.log").read()[-3000:]
      victim = victim or conftest.rank_process(job.pid, 1, SCRIPT)
      if victim is not None and out.exists():
        # Rank 1's temporaries (.NAME.tmp-HOST-PID): its second file.
        seen.update(n.split(".tmp-")[0] for n in temporaries(out)
                    if n.endswith("-%d" % victim.pid) and "made-by" not in n)
        if len(seen) == 2:
          break
      time.sleep(0.01)
    rank0 = conftest.rank_process(job.pid, 0, SCRIPT)
    os.kill(victim.pid, signal.SIGKILL)
    returncode = job.wait(timeout=120)
    # mpirun ends rank 0 (SIGTERM) and may exit before it is gone.
    if rank0 is not None:
      rank0.wait(timeout=60)
  finally:
    if job.poll() is None:
      job.kill()
      job.wait()
    log.close()
  assert returncode != 0
  complete = {n: v for n, v in made(out).items()
              if os.path.exists(out / (".%s.made-by.json" % n))}
  assert 1 <= len(complete) < 4, sorted(os.listdir(out))
  assert set(made(out)) == set(complete)  # nothing half-written

  # The same job again, through the multi-node launcher on a hosts file of
  # this machine: only the missing files are labelled, the complete ones
  # are kept as they were (written once); nothing temporary is left.
  hosts = tmp_path / "hosts"
  hosts.write_text("localhost slots=2\n")
  env = conftest.mpi_env()
  env.update(
      STAGE="labels", HOSTS_FILE=str(hosts), PYTHON=conftest.forked_python(),
      BERT_CONFIG=os.path.join(teacher_dir, "bert_config.json"),
      INIT_CHECKPOINT=os.path.join(teacher_dir, "bert_model.ckpt"),
      INPUT_FILE=input_spec, OUTPUT_DIR=str(out), TRUNCATION_FACTOR=str(K),
      MPI_EXTRA_ARGS="-x PYTHONPATH -x OMP_NUM_THREADS"
                     " -x TF_NUM_INTRAOP_THREADS -x TF_NUM_INTEROP_THREADS")
  result = subprocess.run(
      ["bash", "multinode_train.sh", "2", "--max_seq_length", str(S),
       "--max_predictions_per_seq", str(P), "--batch_size", "16"],
      cwd=conftest.REPO, env=env, capture_output=True, text=True,
      timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "produce_teacher_labels.py --bert_config_file" in result.stdout
  assert "%d of 4 files to label (%d complete, kept), 2 process(es)" % (
      4 - len(complete), len(complete)) in result.stderr, result.stderr[-3000:]
  after = made(out)
  assert sorted(after) == names
  for name, identity in complete.items():
    assert after[name] == identity, name
  assert not temporaries(out), sorted(os.listdir(out))
  for name in names:
    assert_same_labels(str(out / name), os.path.join(one_process_labels, name))


def test_a_rerun_relabels_what_changed_and_keeps_the_rest(
    tmp_path, stage3_dir, teacher_dir, one_process_labels, caplog):
  source = os.path.join(stage3_dir, "wiki_1.tfrecord")
  inputs = tmp_path / "in"
  copy_records(source, inputs / "a.tfrecord", 40)
  copy_records(source, inputs / "b.tfrecord", 40, skip=40)
  out = tmp_path / "out"
  flags = label_flags(teacher_dir, inputs / "*.tfrecord", "--output_dir", out)
  caplog.set_level(logging.INFO, logger="absl")

  def rerun(*extra, teacher=None):
    caplog.clear()
    args = list(flags) + list(extra)
    if teacher:
      args[args.index("--init_checkpoint") + 1] = teacher
    inprocess.run_main("produce_teacher_labels", args)
    return caplog.text

  rerun()
  first = made(out)
  log = rerun()
  assert "0 of 2 files to label (2 complete, kept)" in log
  assert made(out) == first
  # A record written before compact labels existed (no such key) stands
  # for float32 labels: kept.
  record = out / ".b.tfrecord.made-by.json"
  record.write_text(re.sub(r',\s*"compact_labels": false', "",
                           record.read_text()))
  assert "compact_labels" not in record.read_text()
  assert "0 of 2 files to label" in rerun()
  # A damaged record: labelled again, saying so.
  record.write_text("{not json")
  assert "b.tfrecord: labelling again (no record of what made it)" in rerun()
  assert "0 of 2 files to label" in rerun()
  first = made(out)
  # Other records in a (same count): a only.
  copy_records(source, inputs / "a.tfrecord", 40, skip=80)
  log = rerun()
  assert re.search(r"a\.tfrecord: labelling again \(made by other settings: "
                   r"the input files\)", log), log[-2000:]
  assert "1 of 2 files to label (1 complete, kept)" in log
  now = made(out)
  assert now["b.tfrecord"] == first["b.tfrecord"]
  assert now["a.tfrecord"] != first["a.tfrecord"]
  # A cut output: labelled again, whole.
  data = (out / "b.tfrecord").read_bytes()
  (out / "b.tfrecord").write_bytes(data[:-10])
  log = rerun()
  assert re.search(r"b\.tfrecord: labelling again \(%d bytes, %d when "
                   r"written\)" % (len(data) - 10, len(data)), log), log[-2000:]
  assert (out / "b.tfrecord").read_bytes() != data[:-10]
  assert records.check_records(str(out / "b.tfrecord")) == 40
  # Another teacher (one weight changed): both files.
  other = helpers.teacher_with_changed_weight(teacher_dir,
                                             tmp_path / "other_teacher")
  log = rerun(teacher=str(other / "bert_model.ckpt"))
  assert len(re.findall(r"labelling again \(made by other settings: the "
                        r"teacher checkpoint\)", log)) == 2, log[-2000:]
  # --overwrite labels everything again; --compact_labels is a setting.
  before = made(out)
  rerun("--overwrite")
  assert all(made(out)[n] != before[n] for n in before)
  log = rerun("--compact_labels")
  assert len(re.findall(r"labelling again \(made by other settings: "
                        r"compact_labels\)", log)) == 2, log[-2000:]


def test_compact_labels_are_float16_and_uint16_and_train(
    tmp_path, four_files, one_process_labels, teacher_dir):
  source = four_files[1]
  name = os.path.basename(source)
  out = tmp_path / "compact"
  run_main([SCRIPT] + label_flags(teacher_dir, source, "--output_dir", out,
                                  "--compact_labels"))
  compact, reference = str(out / name), os.path.join(one_process_labels,
                                                     name)
  # float16 rounds a probability to 11 significant bits.
  stage3, probs, ids = decoded(compact)
  ref_stage3, ref_probs, ref_ids = decoded(reference)
  assert stage3 == ref_stage3
  np.testing.assert_allclose(probs, ref_probs, rtol=2.0 ** -11, atol=6e-8)
  np.testing.assert_array_equal(ids, ref_ids)
  raw = next(iter(tf.data.TFRecordDataset(compact))).numpy()
  feature = tf.train.Example.FromString(raw).features.feature
  for feature_name in (record_format.TRUNCATED_PROBS,
                       record_format.TOP_K_INDICES):
    assert len(feature[feature_name].bytes_list.value[0]) == 2 * P * K
  smaller = os.path.getsize(compact) / os.path.getsize(reference)
  assert 0.7 < smaller < 0.85, smaller

  # The reader takes either form (decoded as above), file by file; one
  # training set holds one form.
  lengths = records.stage4_lengths(S, P, K)
  # An empty file first in a set does not decide its form.
  empty = str(tmp_path / "a_empty.tfrecord")
  tf.io.TFRecordWriter(empty).close()
  assert records.is_compact(records.match_label_form(lengths,
                                                     [empty, compact]))
  for path, want_probs in ((compact, probs), (reference, ref_probs)):
    matched = records.match_label_form(lengths, [path])
    assert records.is_compact(matched) == (path == compact)
    assert records.validate_file(path, matched)
    batch = next(iter(records.make_dataset([path], matched, 8,
                                           is_training=False)))
    np.testing.assert_array_equal(batch[record_format.TRUNCATED_PROBS],
                                  want_probs[:8])
    np.testing.assert_array_equal(batch[record_format.TOP_K_INDICES],
                                  ids[:8])
  with pytest.raises(Exception, match=r"holds float32 teacher labels, "
                     r"expected compact ones"):
    records.validate_file(reference, records.match_label_form(lengths,
                                                              [compact]))
  student = tmp_path / "student.json"
  student.write_text(
      '{"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1, '
      '"num_attention_heads": 2, "intermediate_size": 64, '
      '"hidden_act": "gelu", "hidden_dropout_prob": 0.0, '
      '"attention_probs_dropout_prob": 0.0, "max_position_embeddings": 64, '
      '"type_vocab_size": 2, "initializer_range": 0.02}')
  common = ["--bert_config_file", student, "--truncation_factor", K,
            "--max_seq_length", S, "--max_predictions_per_seq", P,
            "--do_train", "--do_eval", "--train_batch_size", 8,
            "--eval_batch_size", 16, "--learning_rate", 1e-3,
            "--num_train_steps", 6, "--num_warmup_steps", 1,
            "--random_seed", 3, "--max_eval_steps", 100]
  results = {}
  for label, path in (("compact", compact), ("float32", reference)):
    folder = tmp_path / ("student_" + label)
    run_main(["network_distillation_single_machine_truncated.py"] + common +
             ["--input_file", path, "--eval_input_file", path,
              "--output_dir", folder])
    with open(folder / "eval_results.txt") as f:
      results[label] = dict(line.split(" = ") for line in f.read().split(
          "\n") if " = " in line)
  for key in ("masked_lm_accuracy", "teacher_top1_agreement", "loss"):
    assert abs(float(results["compact"][key]) -
               float(results["float32"][key])) < 2e-3, (key, results)
  # Mixed forms in one training set: one line.
  line = inprocess.error_line(
      "network_distillation_single_machine_truncated",
      [str(a) for a in common] + ["--input_file", compact + "," + reference,
                                  "--output_dir", str(tmp_path / "mixed")])
  assert re.search(r"holds float32 teacher labels, expected compact ones",
                   line), line


def test_stages_3_and_4_on_remote_paths(tmp_path, wiki_text_dir, vocab_file,
                                        stage3_dir, teacher_dir):
  # Stage III through tf.io.gfile: file:// (TensorFlow's local file system
  # behind a scheme) with two worker processes, which start afresh; the
  # records are those of the local run, byte for byte.
  via_scheme = tmp_path / "stage3"
  stage3_flags = ["--output_base_name", "wiki", "--do_lower_case=true",
                  "--max_seq_length", S, "--max_predictions_per_seq", P,
                  "--dupe_factor", 1, "--random_seed", 12345]
  conftest.run_script(["create_pretraining_data.py",
                       "--input_dir", "file://" + str(wiki_text_dir),
                       "--output_dir", "file://" + str(via_scheme),
                       "--vocab_file", "file://" + str(vocab_file),
                       "--num_workers", 2] + stage3_flags)
  local = sorted(os.listdir(stage3_dir))
  assert sorted(os.listdir(via_scheme)) == local
  for name in local:
    assert ((via_scheme / name).read_bytes() ==
            open(os.path.join(stage3_dir, name), "rb").read()), name

  # ram:// (an object store's paths, in memory: one process): text in,
  # records, then labels in a folder.
  root = "ram://stage34_test"
  tf.io.gfile.makedirs(root + "/text")
  for name in sorted(os.listdir(wiki_text_dir))[:1]:
    tf.io.gfile.copy(os.path.join(wiki_text_dir, name),
                     root + "/text/" + name, overwrite=True)
  tf.io.gfile.copy(str(vocab_file), root + "/vocab.txt", overwrite=True)
  run_main(["create_pretraining_data.py", "--input_dir", root + "/text",
            "--output_dir", root + "/records", "--vocab_file",
            root + "/vocab.txt", "--num_workers", 1] + stage3_flags)
  with tf.io.gfile.GFile(root + "/records/wiki_0.tfrecord", "rb") as f:
    assert f.read() == open(os.path.join(stage3_dir, "wiki_0.tfrecord"),
                            "rb").read()
  shutil.copy(os.path.join(stage3_dir, "wiki_0.tfrecord"),
              tmp_path / "wiki_0.tfrecord")
  copy_records(str(tmp_path / "wiki_0.tfrecord"), tmp_path / "small" /
               "wiki_0.tfrecord", 60)
  tf.io.gfile.copy(str(tmp_path / "small" / "wiki_0.tfrecord"),
                   root + "/small/wiki_0.tfrecord", overwrite=True)
  run_main([SCRIPT] + label_flags(teacher_dir, root + "/small/*.tfrecord",
                                  "--output_dir", root + "/labels"))
  run_main([SCRIPT] + label_flags(teacher_dir, tmp_path / "small" /
                                  "wiki_0.tfrecord", "--output_dir",
                                  tmp_path / "labels"))
  names = sorted(tf.io.gfile.listdir(root + "/labels"))
  assert names == [".wiki_0.tfrecord.made-by.json", "wiki_0.tfrecord"], names
  tf.io.gfile.copy(root + "/labels/wiki_0.tfrecord",
                   str(tmp_path / "remote_labels.tfrecord"))
  assert_same_labels(str(tmp_path / "remote_labels.tfrecord"),
                     str(tmp_path / "labels" / "wiki_0.tfrecord"))
  # A rerun keeps it; --output_file on the remote folder works too.
  run_main([SCRIPT] + label_flags(teacher_dir, root + "/small/*.tfrecord",
                                  "--output_dir", root + "/labels"))
  run_main([SCRIPT] + label_flags(teacher_dir, root + "/small/*.tfrecord",
                                  "--output_file",
                                  root + "/one/labels.tfrecord"))
  assert tf.io.gfile.exists(root + "/one/labels.tfrecord")


def test_bad_job_settings_fail_with_one_line(tmp_path, four_files,
                                             teacher_dir):
  spec = os.path.join(os.path.dirname(four_files[0]), "part_*.tfrecord")
  twin = tmp_path / "other" / "part_0.tfrecord"
  copy_records(four_files[0], twin, 5)
  big_vocab = tmp_path / "big_vocab.json"
  with open(os.path.join(teacher_dir, "bert_config.json")) as f:
    big_vocab.write_text(f.read().replace('"vocab_size": 30522',
                                          '"vocab_size": 70000'))
  out = str(tmp_path / "out")
  conftest.check_main_errors("produce_teacher_labels", {
      "both outputs": (label_flags(teacher_dir, spec, "--output_dir", out,
                                   "--output_file", out + "/x.tfrecord"),
                       "give one of --output_file (one labelled file) and "
                       "--output_dir"),
      "no output": (label_flags(teacher_dir, spec), "give one of"),
      "same names": (label_flags(teacher_dir, "%s,%s" % (spec, twin),
                                 "--output_dir", out),
                     "have the same name; --output_dir holds one file per "
                     "name"),
      "into the input folder": (
          label_flags(teacher_dir, spec, "--output_dir",
                      os.path.dirname(four_files[0])),
          "holds the input file"),
      "into the input folder as file://": (
          label_flags(teacher_dir, spec, "--output_dir",
                      "file://" + os.path.dirname(four_files[0])),
          "holds the input file"),
      "compact ids beyond 16 bits": (
          [a if a != os.path.join(teacher_dir, "bert_config.json")
           else str(big_vocab) for a in label_flags(
               teacher_dir, spec, "--output_dir", out, "--compact_labels")],
          "--compact_labels stores word ids in 16 bits, but the teacher's "
          "vocab_size is 70000"),
  })
  assert not os.path.exists(out)
  # One output file and several processes (the environment mpirun gives).
  env = conftest.script_env()
  env["OMPI_COMM_WORLD_SIZE"] = "2"
  status, _, stderr = conftest.run_two_at_a_time(
      [[SCRIPT] + label_flags(teacher_dir, spec, "--output_file",
                              out + "/x.tfrecord")], env=env)[0]
  assert status == 1, stderr[-2000:]
  assert [l for l in stderr.splitlines() if l.startswith("error:")] == [
      "error: --output_file is written by one process, but mpirun started "
      "2: give --output_dir to deal the input files to them"], stderr[-2000:]
