"""tests/python_fork.py gives a script what `python script.py` gives it.

Each small script runs through the forked `python` and through the real
interpreter; what the tests rely on must be the same: exit status (also
from an uncaught exception and from a signal), standard streams, argv, the
working folder, sys.path, environment, Ctrl-C, a killed caller taking
its run with it; and forked ranks of an mpirun job join one Horovod job.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

import conftest
from conftest import forked_python, script_env

SCRIPTS = {
    "exit3": "import sys\nprint('out')\nsys.exit(3)\n",
    "raises": "raise ValueError('boom')\n",
    "terminated": "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n",
    "where": ("import os, sys\nprint(sys.argv)\nprint(os.getcwd())\n"
              "print(sys.path[:2])\nprint(os.environ['PYTHON_FORK_TEST'])\n"
              "print(sys.stdin.read())\n"),
    "atexit": ("import atexit, sys\natexit.register(print, 'at exit')\n"
               "sys.exit('a message')\n"),
}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
  folder = tmp_path_factory.mktemp("scripts")
  for name, text in SCRIPTS.items():
    (folder / (name + ".py")).write_text(text)
  return folder


def _run(python, script, tmp_path):
  env = script_env()
  env["PYTHON_FORK_TEST"] = "set by the caller"
  env["PYTHONPATH"] = str(tmp_path)
  return subprocess.run([python, str(script), "x", "--y=1"],
                        cwd=str(tmp_path), env=env, input="from stdin",
                        capture_output=True, text=True, timeout=60,
                        check=False)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_run_is_the_same_as_with_the_real_interpreter(name, scripts,
                                                         tmp_path):
  forked = _run(forked_python(), scripts / (name + ".py"), tmp_path)
  real = _run(sys.executable, scripts / (name + ".py"), tmp_path)
  assert forked.returncode == real.returncode
  assert forked.stdout == real.stdout
  # The traceback's last lines (the forked run has runpy's frames above).
  assert forked.stderr.splitlines()[-2:] == real.stderr.splitlines()[-2:]
  if name == "where":
    assert real.stdout.splitlines()[2] == str([str(scripts), str(tmp_path)])


def _children(pid):
  """The pids of the processes whose parent is `pid`."""
  found = []
  for name in os.listdir("/proc"):
    try:
      with open("/proc/%s/stat" % name) as f:
        # pid (command) state ppid ...: the command may hold spaces.
        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
          found.append(int(name))
    except (OSError, ValueError, IndexError):
      continue
  return found


def test_ctrl_c_reaches_the_run_and_a_killed_caller_ends_it(tmp_path):
  script = tmp_path / "waits.py"
  script.write_text(
      "import time\nprint('started', flush=True)\ntry:\n"
      "  time.sleep(60)\nexcept KeyboardInterrupt:\n"
      "  print('interrupted', flush=True)\n  raise SystemExit(130)\n")
  python = forked_python()
  server = conftest.python_server().pid
  runs = []
  for _ in range(2):
    runs.append(subprocess.Popen([python, str(script)],
                                 stdout=subprocess.PIPE, text=True,
                                 env=script_env()))
    assert runs[-1].stdout.readline() == "started\n"
  assert len(_children(server)) == 2
  runs[0].send_signal(signal.SIGINT)
  assert runs[0].wait(timeout=30) == 130
  assert runs[0].stdout.read() == "interrupted\n"
  runs[1].kill()
  runs[1].wait()
  deadline = time.time() + 10
  while _children(server) and time.time() < deadline:
    time.sleep(0.05)
  assert not _children(server)


def test_an_mpirun_job_of_forked_ranks(tmp_path):
  """Two forked ranks join one Horovod job (rank, size, an allreduce between
  them), and rank 1's exit status 3 becomes mpirun's, as with real ranks
  (the kill and frozen-rank tests run real ones)."""
  script = tmp_path / "ranks.py"
  script.write_text(
      "import sys\nimport horovod.tensorflow as hvd\nimport tensorflow as tf\n"
      "hvd.init()\n"
      "total = hvd.allreduce(tf.constant(hvd.rank() + 1.0), op=hvd.Sum)\n"
      "print('rank %d of %d: %g' % (hvd.rank(), hvd.size(), total.numpy()),"
      " flush=True)\n"
      "sys.exit(3 if hvd.rank() == 1 else 0)\n")
  result = subprocess.run(
      conftest.mpirun_command(str(script), [[], []]), env=conftest.mpi_env(),
      cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
      check=False)
  assert result.returncode == 3, result.stderr[-3000:]
  # (mpirun relays both ranks' lines to one stdout: they may interleave)
  assert sorted(re.findall(r"rank \d+ of \d+: [\d.]+", result.stdout)) == [
      "rank 0 of 2: 3", "rank 1 of 2: 3"]
