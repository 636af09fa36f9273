# coding=utf-8
"""Hostile-user cases (issue 12): nothing silently wrong, nothing lost,
nothing left behind.

Where the process itself matters (a kill, Ctrl-C, exit codes, leftover
children) the scripts run as real processes; elsewhere a script's `main` or
the library function is called in-process to keep the suite fast.
"""

import bz2
import os
import re
import signal
import subprocess
import sys
import time

from absl import flags
import pytest

import cli
import conftest
import errors
import helpers
import inprocess
import outputs
from conftest import REPO
from conftest import run_script
from conftest import run_two_at_a_time
from conftest import script_env
from helpers import write_dump_pages

WIKI = "wikiextractor/wiki_to_text.py"


def session_processes(sid):
  """Pids of the live processes of session `sid` (from /proc)."""
  pids = []
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open("/proc/%s/stat" % name) as f:
        stat = f.read()
    except OSError:
      continue
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is the state, fields[3] the session id.
    if int(fields[3]) == sid and fields[0] != "Z":
      pids.append(int(name))
  return pids


def wait_until(predicate, timeout, what):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    time.sleep(0.05)
  pytest.fail("timed out waiting for " + what)


def _default_sigint():
  """Ctrl-C's default action in a child about to start.

  A shell without job control starts a background job (`make test &`) with
  SIGINT ignored, and an ignored signal stays ignored across exec: Python
  would then install no KeyboardInterrupt handler and a Ctrl-C test would
  see the run finish instead.
  """
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_session(args, **kwargs):
  """Starts `python args...` as the leader of a new session, with Ctrl-C's
  default action whatever the test runner's own (see _default_sigint)."""
  return subprocess.Popen([sys.executable] + [str(a) for a in args],
                          cwd=REPO, env=kwargs.pop("env", script_env()),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True,
                          preexec_fn=_default_sigint, **kwargs)


@pytest.fixture(scope="module")
def big_dump(tmp_path_factory, wiki_dump):
  """The real excerpt with its pages repeated 4 times, uncompressed (.xml):
  an extraction that runs long enough to be interrupted."""
  return write_dump_pages(wiki_dump,
                          tmp_path_factory.mktemp("dump") / "big.xml",
                          lambda pages: pages * 4)


# ---------------------------------------------------------------------------
# Case 1: leftover words, booleans written as `--flag False`.
# ---------------------------------------------------------------------------


def test_boolean_flag_takes_the_next_word_as_its_value():
  values = flags.FlagValues()
  flags.DEFINE_bool("do_eval", True, "", flag_values=values)
  flags.DEFINE_bool("do_train", False, "", flag_values=values)
  flags.DEFINE_string("input_file", None, "", flag_values=values)
  argv = ["prog", "--do_eval", "False", "--do_train", "1", "--input_file",
          "true", "-do_eval", "FALSE", "--do_train", "--", "--do_eval", "0"]
  joined = cli.join_boolean_values(argv, values)
  assert joined == ["prog", "--do_eval=false", "--do_train=true",
                    "--input_file", "true", "-do_eval=false", "--do_train",
                    "--", "--do_eval", "0"]
  rest = values(joined[:7])
  assert values.do_eval is False and values.do_train is True
  assert values.input_file == "true" and rest == ["prog"]


def test_leftover_words_are_an_error_naming_them(tmp_path):
  shards = [tmp_path / ("wiki_%d.tfrecord" % i) for i in range(2)]
  for path in shards:
    path.write_bytes(b"")
  with pytest.raises(cli.UserError, match=r"wiki_1\.tfrecord.*quote"):
    cli.check_no_arguments(["prog", str(shards[1])])
  with pytest.raises(cli.UserError, match=r"unexpected argument: maybe "):
    cli.check_no_arguments(["prog", "maybe"])
  cli.check_no_arguments(["prog"])


def test_stages_4_to_6_reject_leftover_words_and_read_booleans(tmp_path):
  shards = []
  for i in range(2):
    shards.append(tmp_path / ("wiki_%d.tfrecord" % i))
    shards[-1].write_bytes(b"")
  # What the shell makes of --input_file data/wiki_*.tfrecord, unquoted.
  commands = [
      ["produce_teacher_labels.py", "--input_file"] + shards +
      ["--use_xla", "false"],
      ["network_distillation_single_machine_truncated.py", "--input_file"] +
      shards + ["--do_train", "false"],
      ["network_distillation_distributed_truncated.py", "--input_file"] +
      shards + ["--do_train", "false"],
      # `--do_eval false` must mean false: no run is left to do.
      ["network_distillation_single_machine_truncated.py", "--do_train",
       "False", "--do_eval", "false", "--output_dir", tmp_path / "out"]]
  results = run_two_at_a_time(commands)
  for status, _, stderr in results:
    errors = [l for l in stderr.splitlines() if l.startswith("error:")]
    assert status == 1 and len(errors) == 1, stderr[-2000:]
    assert "Traceback" not in stderr
  for _, _, stderr in results[:3]:
    assert re.search(r"error: unexpected argument: \S*wiki_1\.tfrecord .*"
                     r"quote", stderr), stderr[-2000:]
  assert "At least one of `do_train` or `do_eval`" in results[3][2]
  assert not os.path.exists(tmp_path / "out")


# ---------------------------------------------------------------------------
# Case 12 (stage II), Ctrl-C in stage II, log noise of stage II.
# ---------------------------------------------------------------------------


def start_extraction(dump, out):
  """Starts stage II on `dump`; returns once its extraction workers run."""
  proc = start_session([WIKI, "--input", dump, "--output_dir", out,
                        "--num_files", 2, "--processes", 2])
  # The launcher and its two extraction workers (and a reducer) run.
  wait_until(lambda: len(session_processes(proc.pid)) >= 4, 60,
             "the extraction processes")
  time.sleep(0.3)
  return proc


def test_stage2_children_die_with_a_killed_parent(big_dump, tmp_path):
  out = tmp_path / "text"
  proc = start_extraction(big_dump, out)
  proc.kill()
  proc.communicate()
  wait_until(lambda: not session_processes(proc.pid), 10,
             "the extraction processes to die with their parent")
  leftovers = [n for n in os.listdir(out) if ".tmp-" in n]
  assert leftovers, "the killed run left no temporary folder"
  # The next run removes what the killed one left.
  result = run_script([WIKI, "--input", big_dump, "--output_dir", out,
                       "--num_files", 2, "--processes", 2])
  assert sorted(os.listdir(out)) == ["wiki_000.txt", "wiki_001.txt"]
  assert "Removed 1 temporaries" in result.stderr


def test_stage2_ctrl_c_is_one_line_and_leaves_nothing(big_dump, tmp_path):
  out = tmp_path / "text"
  proc = start_extraction(big_dump, out)
  os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
  _, stderr = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signal.SIGINT, stderr[-2000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.strip()]
  assert lines[-1] == "error: interrupted (Ctrl-C)", lines[-5:]
  assert not [l for l in lines if "KeyboardInterrupt" in l], lines
  wait_until(lambda: not session_processes(proc.pid), 10,
             "the extraction processes to stop")
  assert os.listdir(out) == []


def test_stage2_warns_about_a_cut_dump_and_is_quiet(wiki_dump, tmp_path):
  data = bz2.open(wiki_dump).read()
  last = data.rindex(b"<page>")
  title = re.search(rb"<title>(.*?)</title>", data[last:]).group(1).decode()
  cut = tmp_path / "cut.xml"
  cut.write_bytes(data[:last + (len(data) - last) // 2])
  result = run_script([WIKI, "--input", cut, "--output_dir",
                       tmp_path / "text", "--num_files", 1])
  warnings = [l for l in result.stderr.splitlines() if "truncated" in l]
  assert len(warnings) == 1 and repr(title) in warnings[0], result.stderr
  # Our progress lines only: nothing relayed from wikiextractor's logger.
  assert "wikiextractor:" not in result.stderr


# ---------------------------------------------------------------------------
# Case 13: a frozen rank (kill -STOP) ends the job, naming the rank.
# ---------------------------------------------------------------------------


def test_frozen_rank_ends_the_job_naming_it(tmp_path, stage4_file):
  import test_distributed as td  # pylint: disable=g-import-not-at-top
  out = tmp_path / "out"
  config = td.tiny_student_config(tmp_path / "student.json")
  flags_ = td.common_flags(config, stage4_file) + [
      "--output_dir", out, "--do_train=true", "--train_batch_size", 2,
      "--save_checkpoints_steps", 2, "--iterations_per_loop", 1,
      "--num_warmup_steps", 0, "--num_train_steps", 100000]
  freeze_a_rank(td.SCRIPT, [flags_, flags_], out)


def freeze_a_rank(script, per_rank_flags, out):
  """Runs `script` under mpirun -np 2 (real interpreters: a forked rank
  cannot be stopped), stops rank 1 with SIGSTOP once out/model.ckpt-2 is
  written, and checks that the job ends within a minute with one error
  line naming the stopped rank (HOROVOD_STALL_SHUTDOWN_TIME_SECONDS=5)."""
  env = conftest.mpi_env()
  env["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] = "5"
  cmd = conftest.mpirun_command(script, per_rank_flags,
                                python=sys.executable)
  cmd[1:1] = ["-x", "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"]
  job = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
  victim = None
  try:
    wait_until(lambda: (out / "model.ckpt-2.index").exists() or
               job.poll() is not None, 240, "the first checkpoint")
    assert job.poll() is None, job.communicate()[0][-3000:]
    victim = conftest.rank_process(job.pid, 1, script)
    os.kill(victim.pid, signal.SIGSTOP)
    stopped_at = time.time()
    output, _ = job.communicate(timeout=120)
    took = time.time() - stopped_at
  finally:
    if job.poll() is None:
      job.kill()
      job.wait()
    if victim is not None and victim.is_running():
      victim.kill()
  assert job.returncode != 0
  print("job ended %.1f s after the stop" % took)
  assert took < 60, took
  lines = [l for l in output.splitlines() if l.startswith("error:")]
  assert len(lines) == 1, output[-3000:]
  assert "rank 1 (pid %d) is stopped" % victim.pid in lines[0], lines
  assert "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS=5" in lines[0]


# ---------------------------------------------------------------------------
# Cases 13 and 14: multinode_train.sh.
# ---------------------------------------------------------------------------


def multinode(hosts_text, tmp_path, **settings):
  hosts = tmp_path / "hosts"
  hosts.write_bytes(hosts_text.encode())
  env = script_env()
  env.update(HOSTS_FILE=str(hosts), DRY_RUN="1", PYTHON=sys.executable)
  env.pop("BERT_CONFIG", None)
  env.update(settings)
  return subprocess.run(["bash", "multinode_train.sh", "2"], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=30,
                        check=False)


def test_multinode_hosts_file_and_settings(tmp_path):
  for text, message in (
      ("localhost slots=2 max_slots=two\n", "max_slots must be a positive "
       "integer, found 'max_slots=two'"),
      ("localhost slots=2\r\n", "Windows (CRLF) line ends"),
      ("localhost slot=2\n", "unknown word 'slot=2'")):
    result = multinode(text, tmp_path, BERT_CONFIG="student.json")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr.splitlines()[0], result.stderr
    assert "\r" not in result.stderr
  # No BERT_CONFIG: the teacher's BERT-Base config is no longer the default.
  result = multinode("localhost slots=2\n", tmp_path)
  assert result.returncode == 2 and "set BERT_CONFIG" in result.stderr
  # Relative paths: said to be taken from REPO_DIR; stall bounds passed on,
  # with defaults the user can override.
  result = multinode("localhost slots=2 max_slots=4\n", tmp_path,
                     BERT_CONFIG="student.json", OUTPUT_DIR="/abs/out",
                     HOROVOD_STALL_SHUTDOWN_TIME_SECONDS="120")
  assert result.returncode == 0, result.stderr
  assert re.search(r"relative paths are taken from REPO_DIR=\S+: "
                   r"INPUT_FILE=\S+ BERT_CONFIG=student.json\n",
                   result.stderr), result.stderr
  assert "-x HOROVOD_STALL_CHECK_TIME_SECONDS=60 " in result.stdout
  assert "-x HOROVOD_STALL_SHUTDOWN_TIME_SECONDS=120 " in result.stdout
  assert "-mca odls_base_sigkill_timeout 60 " in result.stdout


# ---------------------------------------------------------------------------
# Small real inputs for stages IV and V.
# ---------------------------------------------------------------------------

SEQ, PREDS, K = 64, 10, 10  # conftest's sizes


def copy_records(source, path, count):
  """Writes the first `count` records of `source` (bytes unchanged)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.TFRecordWriter(str(path)) as writer:
    for raw in tf.data.TFRecordDataset(source).take(count):
      writer.write(raw.numpy())
  return str(path)


def cut_file(source, path):
  """A copy of `source` without its last 10 bytes: its last record is cut.

  (A cut exactly between two records would leave a shorter file that is
  whole as far as its framing can tell.)
  """
  data = open(source, "rb").read()
  path.write_bytes(data[:-10])
  return str(path)


def flip_byte(source, path, offset):
  data = bytearray(open(source, "rb").read())
  data[offset] ^= 0x55
  path.write_bytes(bytes(data))
  return str(path)


@pytest.fixture(scope="module")
def small_stage4(tmp_path_factory, stage4_file):
  return copy_records(stage4_file, tmp_path_factory.mktemp("s4") /
                      "small.tfrecord", 48)


def student_options(config_path, input_file, output_dir, **kwargs):
  values = dict(
      bert_config_file=str(config_path), input_file=str(input_file),
      output_dir=str(output_dir), truncation_factor=K, max_seq_length=SEQ,
      max_predictions_per_seq=PREDS, train_batch_size=4, eval_batch_size=8,
      num_train_steps=2, num_warmup_steps=0, save_checkpoints_steps=2,
      log_every_n_steps=1, max_eval_steps=2, do_train=True)
  values.update(kwargs)
  return inprocess.options("distillation_flags", **values)


def tiny_config(path, **changes):
  import json  # pylint: disable=g-import-not-at-top
  config = {
      "vocab_size": 30522, "hidden_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 2, "intermediate_size": 32, "hidden_act": "gelu",
      "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
      "max_position_embeddings": SEQ, "type_vocab_size": 2,
      "initializer_range": 0.02}
  config.update(changes)
  for key in [k for k, v in config.items() if v is None]:
    del config[key]
  path.write_text(json.dumps(config))
  return str(path)


# ---------------------------------------------------------------------------
# Case 5: damaged TFRecords name the file and the record.
# ---------------------------------------------------------------------------


def test_damaged_records_name_the_file_and_record(tmp_path, small_stage4):
  import errors  # pylint: disable=g-import-not-at-top
  import records  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Record i starts at the sum of the earlier records' frames (12 bytes of
  # length and its checksum, the data, 4 bytes of checksum).
  sizes = [len(r.numpy()) for r in tf.data.TFRecordDataset(small_stage4)]
  starts = [sum(s + 16 for s in sizes[:i]) for i in range(len(sizes))]
  total = starts[-1] + sizes[-1] + 16
  assert os.path.getsize(small_stage4) == total
  # Cut inside record 20.
  data = open(small_stage4, "rb").read()
  cut = tmp_path / "cut.tfrecord"
  cut.write_bytes(data[:starts[20] + 100])
  cut = str(cut)
  cut_index = 20
  corrupt = flip_byte(small_stage4, tmp_path / "crc.tfrecord",
                      starts[7] + 12 + 30)  # inside record 7's data
  with pytest.raises(errors.DamagedFileError,
                     match=r"cut\.tfrecord: record %d .*cut short" %
                     cut_index):
    records.count_records([small_stage4, cut])
  with pytest.raises(errors.DamagedFileError,
                     match=r"crc\.tfrecord: record 7 .*checksum"):
    records.check_records(corrupt)
  assert records.check_records(small_stage4) == len(sizes)


def test_stage5_damaged_training_and_eval_files(tmp_path, small_stage4):
  import distillation  # pylint: disable=g-import-not-at-top
  import errors  # pylint: disable=g-import-not-at-top
  config = tiny_config(tmp_path / "student.json")
  cut = cut_file(small_stage4, tmp_path / "cut.tfrecord")
  # A damaged training file: named, whichever record the reader was at.
  opts = student_options(config, cut, tmp_path / "train_out",
                         num_train_steps=40)
  with pytest.raises(errors.DamagedFileError, match=r"cut\.tfrecord: "
                     r"record \d+ .*cut short"):
    distillation.run(opts)
  # A damaged eval file: found before training (--check_inputs), so no
  # training time is lost and no checkpoint written.
  out = tmp_path / "eval_out"
  opts = student_options(config, small_stage4, out, do_eval=True,
                         eval_input_file=cut)
  with pytest.raises(errors.DamagedFileError, match=r"cut\.tfrecord"):
    distillation.run(opts)
  assert not os.path.exists(out / "checkpoint")


# ---------------------------------------------------------------------------
# Cases 7, 8 and 14 (warmup): stage V settings.
# ---------------------------------------------------------------------------


def test_eval_only_needs_a_checkpoint(tmp_path, small_stage4):
  import distillation  # pylint: disable=g-import-not-at-top
  config = tiny_config(tmp_path / "student.json")
  wrong = tmp_path / "typo_out"
  opts = student_options(config, small_stage4, wrong, do_train=False,
                         do_eval=True)
  with pytest.raises(cli.UserError, match=r"nothing to evaluate.*typo_out "
                     r"holds no checkpoint"):
    distillation.run(opts)
  assert not wrong.exists()
  # On purpose: the untrained student as a baseline.
  opts.eval_untrained = True
  distillation.check_something_to_evaluate(opts)


def test_bert_config_keys_are_all_required_and_checked(tmp_path):
  import modeling  # pylint: disable=g-import-not-at-top
  path = tmp_path / "c.json"
  for changes, message in (
      ({"intermediate_size": None}, r"has no intermediate_size \(all "
       r"eleven keys"),
      ({"num_hiden_layers": 6}, r"unknown key 'num_hiden_layers'; did you "
       r"mean 'num_hidden_layers'\?"),
      ({"hidden_size": None}, r"has no hidden_size"),
      ({"position_embedding_type": "relative_key"},
       r"position_embedding_type is 'relative_key'")):
    with pytest.raises(cli.UserError, match=r"--bert_config_file: .*c\.json: .*"
                       + message):
      cli.load_bert_config(tiny_config(path, **changes),
                           "--bert_config_file")
  # The extra keys of real Google (multilingual) and Hugging Face configs.
  extra = {"directionality": "bidi", "pooler_fc_size": 768,
           "pooler_num_attention_heads": 12, "pooler_num_fc_layers": 3,
           "pooler_size_per_head": 128, "pooler_type": "first_token_transform",
           "model_type": "bert", "architectures": ["BertForMaskedLM"],
           "transformers_version": "4.40.0", "layer_norm_eps": 1e-12,
           "pad_token_id": 0, "position_embedding_type": "absolute",
           "use_cache": True, "torch_dtype": "float32"}
  config = cli.load_bert_config(tiny_config(path, **extra), "--x")
  assert config.to_dict() == modeling.BertConfig.from_json_file(
      tiny_config(path)).to_dict()


def test_warmup_longer_than_training_warns(tmp_path, caplog):
  import distillation  # pylint: disable=g-import-not-at-top
  opts = student_options("c.json", "x", tmp_path, num_train_steps=10,
                         num_warmup_steps=20)
  distillation.check_options(opts)
  assert "--num_warmup_steps=20 is more than --num_train_steps=10" in (
      caplog.text)


# ---------------------------------------------------------------------------
# Stage IV: output paths (case 9), damaged inputs (case 5), resuming.
# ---------------------------------------------------------------------------


def test_output_file_paths_are_checked_first(tmp_path):
  folder = tmp_path / "existing"
  folder.mkdir()
  with pytest.raises(cli.UserError, match=r"--output_file: .*existing is a "
                     r"folder; give a file name"):
    cli.check_output_file(str(folder))
  with pytest.raises(cli.UserError, match=r"newdir/ is a folder"):
    cli.check_output_file(str(tmp_path / "newdir") + "/")
  assert not (tmp_path / "newdir").exists()
  path = str(tmp_path / "made" / "out.tfrecord")
  assert cli.check_output_file(path) == path
  assert (tmp_path / "made").is_dir()


def test_atomic_output_onto_a_folder_leaves_no_temporary(tmp_path):
  folder = tmp_path / "taken"
  folder.mkdir()
  with pytest.raises(errors.OutputError) as raised:
    with outputs.atomic_output(str(folder)) as tmp:
      with open(tmp, "w") as f:
        f.write("x" * 1000)
  assert cli.error_line(raised.value) == (
      "%s is a folder; a file is written there: move the folder away" %
      folder, 1)
  assert os.listdir(tmp_path) == ["taken"]


def labels_command(teacher_dir, input_file, output_file, *extra):
  return ["produce_teacher_labels.py",
          "--bert_config_file", os.path.join(teacher_dir, "bert_config.json"),
          "--init_checkpoint", os.path.join(teacher_dir, "bert_model.ckpt"),
          "--input_file", input_file, "--output_file", output_file,
          "--truncation_factor", K, "--max_seq_length", SEQ,
          "--max_predictions_per_seq", PREDS, "--batch_size", 16] + list(extra)


def test_stage4_skips_a_complete_output_and_names_damaged_input(
    tmp_path, stage3_dir, teacher_dir, caplog):
  import records  # pylint: disable=g-import-not-at-top
  small = copy_records(os.path.join(stage3_dir, "wiki_0.tfrecord"),
                       tmp_path / "small.tfrecord", 40)
  out = tmp_path / "labels" / "small_k10.tfrecord"
  # A fresh interpreter: its TensorFlow import is what the notices come from.
  first_run = run_script(labels_command(teacher_dir, small, out), fresh=True)
  first = out.read_bytes()
  # Log noise: our lines, not TensorFlow's import notices nor the ~200
  # loaded variable names (those only with --verbosity=1).
  for noise in ("oneDNN", "absl::InitializeLog", "cpu_feature_guard",
                "Initialised from the checkpoint"):
    assert noise not in first_run.stderr, noise
  assert "teacher labels: done, 40 seq" in first_run.stderr
  # A rerun keeps the complete output (the reruns in this process).
  caplog.set_level("INFO", logger="absl")
  inprocess.run_main("produce_teacher_labels",
                     labels_command(teacher_dir, small, out)[1:])
  assert re.search(r"small_k10\.tfrecord is complete \(40 records.*skipped",
                   caplog.text), caplog.text[-2000:]
  assert out.read_bytes() == first
  assert sorted(os.listdir(out.parent)) == [".small_k10.tfrecord.made-by.json",
                                            "small_k10.tfrecord"]
  # Another teacher (one weight changed), then other input records of the
  # same count: each rerun labels again, naming what differs.
  other_teacher = helpers.teacher_with_changed_weight(
      teacher_dir, tmp_path / "other_teacher")
  for change, differs in (
      (lambda: None, "the teacher checkpoint"),
      (lambda: copy_records(os.path.join(stage3_dir, "wiki_1.tfrecord"),
                            small, 40), "the input files")):
    change()
    caplog.clear()
    inprocess.run_main("produce_teacher_labels",
                       labels_command(str(other_teacher), small, out)[1:])
    assert re.search(r"small_k10\.tfrecord is complete but was not made by "
                     r"this run's settings \(it differs in: %s\): labelling "
                     r"again" % differs, caplog.text), caplog.text[-2000:]
    assert out.read_bytes() != first
    first = out.read_bytes()
  # A cut output (an interrupted copy) is labelled again, whole.
  cut_file(str(out), out)
  caplog.clear()
  inprocess.run_main("produce_teacher_labels",
                     labels_command(teacher_dir, small, out)[1:])
  assert "labelling again" in caplog.text, caplog.text[-2000:]
  assert records.check_records(str(out)) == 40
  assert records.validate_file(str(out), records.stage4_lengths(SEQ, PREDS,
                                                                K))
  # A damaged input: one line naming the file and record; an output path
  # that is a folder: one line, before any work, nothing left in the cwd.
  cut = cut_file(small, tmp_path / "cut.tfrecord")
  before = set(os.listdir(REPO))
  results = run_two_at_a_time([
      labels_command(teacher_dir, cut, tmp_path / "x.tfrecord"),
      labels_command(teacher_dir, small, tmp_path / "labels")])
  for (status, _, stderr), message in zip(results, (
      r"error: \S*cut\.tfrecord: record \d+ \(counting from 0\) is cut short",
      r"error: --output_file: \S*labels is a folder")):
    assert status == 1 and re.search(message, stderr), stderr[-2000:]
    assert "Traceback" not in stderr
  assert set(os.listdir(REPO)) == before
  assert not (tmp_path / "x.tfrecord").exists()


def test_an_output_that_is_an_input_through_a_link_is_refused(
    tmp_path, stage3_dir, teacher_dir, wiki_text_dir, vocab_file):
  """Stage IV's --output_file and stage III's --output_dir are compared with
  their inputs as files (links, `//`, `..`), not as path strings."""
  from conftest import check_main_errors  # pylint: disable=g-import-not-at-top
  data = tmp_path / "data"
  data.mkdir()
  small = copy_records(os.path.join(stage3_dir, "wiki_0.tfrecord"),
                       data / "small.tfrecord", 8)
  alias = tmp_path / "alias"
  alias.symlink_to(data)
  text = tmp_path / "text"
  text.symlink_to(wiki_text_dir)
  before = sorted(os.listdir(data))
  check_main_errors("produce_teacher_labels", {
      name: (labels_command(teacher_dir, small, output)[1:],
             "--output_file %s is the input file %s" % (output, small))
      for name, output in (
          ("link", str(alias / "small.tfrecord")),
          ("double slash", str(data) + "//small.tfrecord"),
          ("dot dot", str(alias / ".." / "data" / "small.tfrecord")))})
  assert sorted(os.listdir(data)) == before
  assert open(small, "rb").read() == open(copy_records(
      os.path.join(stage3_dir, "wiki_0.tfrecord"), tmp_path / "again", 8),
                                           "rb").read()
  check_main_errors("create_pretraining_data", {
      name: (stage3_command(wiki_text_dir, output, vocab_file)[1:],
             "--output_dir %s is --input_dir %s: a rerun would read this "
             "run's records as text" % (output, wiki_text_dir))
      for name, output in (("same", wiki_text_dir), ("link", str(text)))})
  assert not [n for n in os.listdir(wiki_text_dir) if "tfrecord" in n]


# ---------------------------------------------------------------------------
# Case 12 and Ctrl-C: stage III; temporaries of dead processes.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_text_dir(tmp_path_factory, wiki_text_dir):
  """Stage II's real text, each file 6 times over: a few seconds of work."""
  out = tmp_path_factory.mktemp("big_text")
  for name in sorted(os.listdir(wiki_text_dir)):
    with open(os.path.join(wiki_text_dir, name)) as f:
      text = f.read()
    (out / name).write_text("\n".join([text] * 6))
  return str(out)


def stage3_command(input_dir, output_dir, vocab_file):
  return ["create_pretraining_data.py", "--input_dir", input_dir,
          "--output_dir", output_dir, "--output_base_name", "wiki",
          "--vocab_file", vocab_file, "--max_seq_length", SEQ,
          "--max_predictions_per_seq", PREDS, "--dupe_factor", 2,
          "--num_workers", 2]


def test_stage3_ctrl_c_and_kill(big_text_dir, vocab_file, tmp_path):
  out = tmp_path / "records"
  proc = start_session(stage3_command(big_text_dir, out, vocab_file))
  wait_until(lambda: len(session_processes(proc.pid)) >= 3 and
             out.exists() and any(".tmp-" in n for n in os.listdir(out)),
             60, "the workers")
  os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
  _, stderr = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signal.SIGINT, stderr[-2000:]
  assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
  assert stderr.splitlines()[-1] == "error: interrupted (Ctrl-C)"
  wait_until(lambda: not session_processes(proc.pid), 10, "the workers")
  assert os.listdir(out) == []
  # kill -9 of the parent: the workers go with it.
  proc = start_session(stage3_command(big_text_dir, out, vocab_file))
  wait_until(lambda: len(session_processes(proc.pid)) >= 3 and
             any(".tmp-" in n for n in os.listdir(out)), 60, "the workers")
  proc.kill()
  proc.communicate()
  wait_until(lambda: not session_processes(proc.pid), 10,
             "the workers to die with their parent")
  assert any(".tmp-" in n for n in os.listdir(out))


def test_temporaries_of_dead_processes_are_removed(tmp_path):
  dead = subprocess.Popen(["true"])
  dead.wait()
  here = outputs.temporary_name(str(tmp_path / "x.tfrecord"))
  gone = here.replace("-%d" % os.getpid(), "-%d" % dead.pid)
  names = {
      "live": here,
      "dead": gone,
      "dead_checkpoint": outputs.temporary_name(str(tmp_path / "model.ckpt-5"))
                         .replace("-%d" % os.getpid(), "-%d" % dead.pid) +
                         ".data-00000-of-00001",
      "other_host": str(tmp_path / (".y.tmp-otherhost-%d" % dead.pid)),
      "final": str(tmp_path / "wiki_0.tfrecord")}
  for path in names.values():
    open(path, "w").close()
  os.makedirs(gone + "_dir")  # a stage II folder is a temporary too
  os.rename(gone + "_dir", gone.replace("x.tfrecord", "wiki"))
  cli.ensure_writable_dir(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == sorted(
      os.path.basename(names[k]) for k in ("live", "other_host", "final"))


# ---------------------------------------------------------------------------
# Cases 4 and 11: a full disk. Stage IV writes through /dev/full (a real
# ENOSPC from the kernel) in place of its temporary; checkpoints get the error TensorFlow's SaveV2
# raises on a full disk, injected after the files were written.
# ---------------------------------------------------------------------------


def full_disk_at_save(monkeypatch):
  """Makes SaveV2 write its files and then fail as on a full disk."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  real = tf.raw_ops.SaveV2

  def save(prefix, tensor_names, shape_and_slices, tensors, name=None):
    real(prefix=prefix, tensor_names=tensor_names,
         shape_and_slices=shape_and_slices, tensors=tensors, name=name)
    raise tf.errors.ResourceExhaustedError(
        None, None, "%s.data-00000-of-00001.tempstate1; No space left on "
        "device [Op:SaveV2]" % prefix)

  monkeypatch.setattr(tf.raw_ops, "SaveV2", save)


def folder_state(path):
  return {name: open(os.path.join(path, name), "rb").read()
          for name in sorted(os.listdir(path))}


def test_stage4_disk_full_leaves_nothing(tmp_path, stage3_dir, teacher_dir,
                                         monkeypatch):
  import modeling  # pylint: disable=g-import-not-at-top
  import teacher  # pylint: disable=g-import-not-at-top
  small = copy_records(os.path.join(stage3_dir, "wiki_0.tfrecord"),
                       tmp_path / "small.tfrecord", 40)
  out_dir = tmp_path / "labels"
  out_dir.mkdir()
  final = str(out_dir / "wiki_k10.tfrecord")
  with open(final, "wb") as f:
    f.write(b"an earlier output")
  # The temporary, once claimed, is made a link to /dev/full (a planted
  # link would be removed, not followed: test_no_run_writes_through_...).
  claim = outputs.claim_temporary

  def claim_on_a_full_disk(path):
    claim(path)
    os.remove(path)
    os.symlink("/dev/full", path)
    return path

  monkeypatch.setattr(outputs, "claim_temporary", claim_on_a_full_disk)
  config = modeling.BertConfig.from_json_file(
      os.path.join(teacher_dir, "bert_config.json"))
  labeler = teacher.TeacherLabeler(
      config, os.path.join(teacher_dir, "bert_model.ckpt"), K)
  with pytest.raises(Exception) as raised:
    with outputs.atomic_output(final) as tmp:
      teacher.label_records(labeler, [small], tmp, SEQ, PREDS, 16)
  message, status = cli.error_line(raised.value)
  assert status == 1
  assert message.startswith("no space left on device while writing %s;" %
                            final), message
  assert folder_state(out_dir) == {"wiki_k10.tfrecord": b"an earlier output"}


def test_stage5_disk_full_keeps_earlier_checkpoints(tmp_path, small_stage4,
                                                    monkeypatch):
  import distillation  # pylint: disable=g-import-not-at-top
  config = tiny_config(tmp_path / "student.json")
  out = tmp_path / "out"
  distillation.run(student_options(config, small_stage4, out))
  before = folder_state(out)
  assert "model.ckpt-2.index" in before
  full_disk_at_save(monkeypatch)
  with pytest.raises(Exception) as raised:
    distillation.run(student_options(config, small_stage4, out,
                                     num_train_steps=4))
  message, status = cli.error_line(raised.value)
  assert status == 1 and message.startswith(
      "no space left on device while writing %s;" % (out / "model.ckpt-4"))
  after = folder_state(out)
  for name in [n for n in before if n.startswith(("model.ckpt", "check"))]:
    assert after[name] == before[name], name
  assert not [n for n in after if ".tmp-" in n or "ckpt-4" in n], after


def test_converter_into_an_existing_folder_survives_a_full_disk(
    tmp_path, small_bert_hf_dir, teacher_dir, monkeypatch):
  import shutil  # pylint: disable=g-import-not-at-top
  import convert_hf_bert_checkpoint as convert  # pylint: disable=g-import-not-at-top
  out = tmp_path / "teacher"
  shutil.copytree(teacher_dir, out)
  before = folder_state(out)
  full_disk_at_save(monkeypatch)
  with pytest.raises(Exception) as raised:
    convert.convert(small_bert_hf_dir, str(out))
  assert cli.error_line(raised.value)[0].startswith(
      "no space left on device while writing %s;" % (out / "bert_model.ckpt"))
  assert folder_state(out) == before


def test_export_onto_a_full_disk_keeps_the_earlier_export(
    tmp_path, teacher_dir, monkeypatch):
  """The weights file is written through /dev/full (a real ENOSPC): one
  error line, the earlier export as it was, no temporary folder left."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import exporter  # pylint: disable=g-import-not-at-top
  import modeling  # pylint: disable=g-import-not-at-top
  config = modeling.BertConfig.from_json_file(
      os.path.join(teacher_dir, "bert_config.json"))
  args = (config, os.path.join(teacher_dir, "bert_model.ckpt"),
          os.path.join(teacher_dir, "vocab.txt"))
  out = tmp_path / "exported"
  exporter.export(*args, str(out))
  before = folder_state(out)
  real = outputs.atomic_output_dir

  @contextlib.contextmanager
  def on_a_full_disk(final_dir):
    with real(final_dir) as tmp:
      os.symlink("/dev/full", os.path.join(tmp, "model.safetensors"))
      yield tmp

  monkeypatch.setattr(outputs, "atomic_output_dir", on_a_full_disk)
  with pytest.raises(Exception) as raised:
    exporter.export(*args, str(out), overwrite=True)
  message, status = cli.error_line(raised.value)
  assert status == 1 and message.startswith(
      "no space left on device while writing "), message
  assert "\n" not in message
  assert folder_state(out) == before
  assert sorted(os.listdir(tmp_path)) == ["exported"]


def test_converter_names_a_vocab_that_is_not_utf8(tmp_path,
                                                  small_bert_hf_dir):
  import shutil  # pylint: disable=g-import-not-at-top
  import convert_hf_bert_checkpoint as convert  # pylint: disable=g-import-not-at-top
  hf = tmp_path / "hf"
  shutil.copytree(small_bert_hf_dir, hf)
  (hf / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\ncaf\xe9\n")
  with pytest.raises(cli.UserError, match=r"hf/vocab\.txt: not UTF-8 text"):
    convert.read_vocab(str(hf))


# ---------------------------------------------------------------------------
# Cases 2, 3, 6, 10 and Ctrl-C: stage V's output_dir and checkpoints.
# ---------------------------------------------------------------------------


def test_one_training_run_per_output_dir(tmp_path, small_stage4):
  import distillation  # pylint: disable=g-import-not-at-top
  out = tmp_path / "out"
  out.mkdir()
  opts = student_options(tiny_config(tmp_path / "s.json"), small_stage4, out)
  with conftest.lock_held_elsewhere(out) as pid:
    with pytest.raises(cli.UserError, match=r"--output_dir: \S*out is in use "
                       r"by process %d on \S+ \(lock file \S*out/\.lock\)" %
                       pid):
      distillation.run(opts)
  assert (out / ".lock").exists()
  distillation.run(opts)  # the dead process's lock does not block
  assert (out / "model.ckpt-2.index").exists()
  assert not (out / ".lock").exists()


def test_no_run_writes_through_a_planted_link(tmp_path, small_stage4):
  """Security: a symbolic or hard link planted as the lock file or as a
  temporary's name never has its target written (stage V, the lock; stage
  V's eval_results.txt, a temporary named after this process)."""
  import distillation  # pylint: disable=g-import-not-at-top
  victim = tmp_path / "victim.txt"
  victim.write_text("precious\n")
  out = tmp_path / "out"
  out.mkdir()
  opts = student_options(tiny_config(tmp_path / "s.json"), small_stage4, out,
                         do_eval=True)
  (out / ".lock").symlink_to(victim)
  with pytest.raises(cli.UserError, match=(
      r"^--output_dir: the lock file \S*out/\.lock is a symbolic link \(to "
      r"\S*victim\.txt\); a run writes no lock through a link: remove it$")):
    distillation.run(opts)
  (out / ".lock").unlink()
  os.link(victim, out / ".lock")
  with pytest.raises(cli.UserError, match=(
      r"the lock file \S*out/\.lock is a hard link to another file \(2 "
      r"names\)")):
    distillation.run(opts)
  (out / ".lock").unlink()
  assert victim.read_text() == "precious\n"
  assert os.listdir(out) == []

  # The temporary of eval_results.txt, under this process's own name.
  tmp_name = outputs.temporary_name(str(out / "eval_results.txt"))
  os.symlink(victim, tmp_name)
  distillation.run(opts)
  assert victim.read_text() == "precious\n"
  assert "masked_lm_loss = " in (out / "eval_results.txt").read_text()
  assert not os.path.lexists(tmp_name)
  assert not (out / ".lock").exists()

  # A folder written whole (the exporter's): a planted link is removed,
  # not followed.
  target = tmp_path / "elsewhere"
  target.mkdir()
  final = tmp_path / "export"
  os.symlink(target, outputs.temporary_name(str(final)))
  with outputs.atomic_output_dir(str(final)) as tmp:
    with open(os.path.join(tmp, "f.txt"), "w") as f:
      f.write("x")
  assert os.listdir(target) == [] and os.listdir(final) == ["f.txt"]


def test_resume_checks_the_model_and_the_settings(tmp_path, small_stage4,
                                                  caplog):
  import distillation  # pylint: disable=g-import-not-at-top
  out = tmp_path / "out"
  two = tiny_config(tmp_path / "two.json", num_hidden_layers=2)
  distillation.run(student_options(two, small_stage4, out))
  one = tiny_config(tmp_path / "one.json", num_hidden_layers=1)
  with pytest.raises(cli.UserError, match=r"model\.ckpt-2 was written by "
                     r"another model: it holds 16 variables the student of "
                     r"--bert_config_file lacks \(e\.g\. bert/encoder/"
                     r"layer_1/"):
    distillation.run(student_options(one, small_stage4, out,
                                     num_train_steps=4))
  distillation.run(student_options(two, small_stage4, out, num_train_steps=3,
                                   train_batch_size=8, learning_rate=1e-4))
  warning = [r.getMessage() for r in caplog.records
             if "other settings" in r.getMessage()]
  assert len(warning) == 1 and ("train_batch_size 4 -> 8, learning_rate "
                                "5e-05 -> 0.0001") in warning[0], warning


def test_foreign_and_damaged_checkpoints(tmp_path, small_stage4,
                                         teacher_dir):
  import checkpoints  # pylint: disable=g-import-not-at-top
  import distillation  # pylint: disable=g-import-not-at-top
  import errors  # pylint: disable=g-import-not-at-top
  import modeling  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  foreign = checkpoints.save_checkpoint(
      {"model/dense/kernel": np.zeros([3, 3], np.float32)},
      str(tmp_path / "foreign.ckpt"))
  opts = student_options(tiny_config(tmp_path / "s.json"), small_stage4,
                         tmp_path / "out", init_checkpoint=foreign)
  with pytest.raises(cli.UserError, match=r"--init_checkpoint: checkpoint "
                     r"\S*foreign\.ckpt lacks 2\d of the student's variables"):
    distillation.run(opts)
  # A teacher whose .data file was cut short (a partial download).
  import shutil  # pylint: disable=g-import-not-at-top
  cut = tmp_path / "teacher"
  shutil.copytree(teacher_dir, cut)
  data = cut / "bert_model.ckpt.data-00000-of-00001"
  data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
  config = modeling.BertConfig.from_json_file(str(cut / "bert_config.json"))
  model = modeling.BertPretrainingModel(config)
  with pytest.raises(errors.CheckpointError, match=r"bert_model\.ckpt\."
                     r"data-00000-of-00001 is damaged \(cut short"):
    checkpoints.load_checkpoint(model.variables_by_name(),
                             str(cut / "bert_model.ckpt"))


def test_ctrl_c_in_training_saves_a_checkpoint(tmp_path, small_stage4):
  config = tiny_config(tmp_path / "s.json")
  stop_training_with(signal.SIGINT, [
      "network_distillation_single_machine_truncated.py",
      "--bert_config_file", config, "--input_file", small_stage4,
      "--truncation_factor", K, "--max_seq_length", SEQ,
      "--max_predictions_per_seq", PREDS, "--do_train", "true",
      "--train_batch_size", 2, "--num_train_steps", 100000,
      "--num_warmup_steps", 0], tmp_path)


def stop_training_with(signum, args, tmp_path):
  """Runs a training script (`args`: the script and its flags but the
  output's and the loop's) into tmp_path/out, sends `signum` once it
  trains, and checks the stop: the current step ends, a checkpoint of that
  step is written, one last line says where, exit status 128 + signum, the
  lock is gone. One device loop of 100000 steps: the signal must not wait
  for it."""
  out = tmp_path / "out"
  log_path = tmp_path / "log"
  name = signal.Signals(signum).name
  with open(log_path, "w") as log:
    proc = subprocess.Popen(
        [sys.executable] + [str(a) for a in args] + [
            "--output_dir", str(out), "--iterations_per_loop", "100000",
            "--log_every_n_steps", "100000",
            "--save_checkpoints_steps", "100000"],
        cwd=REPO, env=script_env(), stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=_default_sigint)
  try:
    wait_until(lambda: "Training from step 0" in log_path.read_text() or
               proc.poll() is not None, 120, "training to start")
    time.sleep(3)
    proc.send_signal(signum)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  text = log_path.read_text()
  assert proc.returncode == 128 + signum, text[-3000:]
  assert "Traceback" not in text
  m = re.search(r"^error: stopped by %s after step (\d+); checkpoint "
                r"model\.ckpt-(\d+) saved in \S+out: run the same command to "
                r"resume from it$" % name, text, re.M)
  assert m and m.group(1) == m.group(2), text[-2000:]
  step = int(m.group(1))
  assert 0 < step < 100000
  assert (out / ("model.ckpt-%d.index" % step)).exists()
  assert not (out / ".lock").exists()
  assert text.strip().splitlines()[-1] == m.group(0)
