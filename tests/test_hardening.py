# coding=utf-8
"""Hostile-user cases (issue 12) about commands and processes: leftover
words and booleans, Ctrl-C and kills in stages II and III, a frozen rank,
multinode_train.sh's hosts and settings. tests/test_hardening_outputs.py
has those about files: damaged inputs, wrong settings, outputs, a full
disk, stage V's folder and checkpoints.

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

from bert_distill import cli
import conftest
from bert_distill.lib import outputs
from conftest import REPO
from conftest import run_script
from conftest import run_two_at_a_time
from conftest import script_env
from conftest import stage3_command
from helpers import session_processes
from helpers import start_session
from helpers import wait_until
from helpers import write_dump_pages

WIKI = "wikiextractor/wiki_to_text.py"


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


def test_stage3_ctrl_c_and_kill(big_text_dir, vocab_file, tmp_path):
  out = tmp_path / "records"
  proc = start_session(stage3_command(big_text_dir, out, vocab_file,
                                      "--dupe_factor", 2))
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
  proc = start_session(stage3_command(big_text_dir, out, vocab_file,
                                      "--dupe_factor", 2))
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
