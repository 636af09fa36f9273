"""The machine's cores shared out between pytest-xdist workers (tests only).

`make test` runs the suite on two workers (`pytest -n 2`), one per core of
the 2-core test machines. So that no more TensorFlow processes run at once
than there are cores, a test holds cores while it runs (setup and teardown
included), from a pool of one core per worker:

- a test takes one core;
- an mpirun job takes two while it runs: the workers' PATH starts with a
  folder whose `mpirun` lends the job its test's core (the test waits for
  mpirun meanwhile), waits for a second one, and then becomes the real
  mpirun (same process, same exit status); when mpirun ends, its cores are
  free and the test has its own again;
- `extra_core()` takes a second core for a block only if one is free at
  once (conftest.run_two_at_a_time runs its commands two at a time then,
  one at a time otherwise).

Requests are served in order of arrival, except an mpirun job's, which
comes first. A request never waits while holding a core (an mpirun job has
lent its test's core away before it waits), so nothing can wait in a
circle. The pool is a JSON file read and written under an flock; a waiting
request polls it every 20 ms. Cores held by a process that has ended are
free again.

Outside xdist (`pytest tests/test_modeling.py`) none of this runs.
"""

import contextlib
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time

import helpers

# The pool's folder (set by the xdist controller for its workers).
FOLDER_ENV = "TEST_CORES_FOLDER"
# The worker process whose test an mpirun job belongs to.
OWNER_ENV = "TEST_CORES_OWNER"
_POLL = 0.02


def _running(pid):
  """Whether process `pid` exists and has not ended (a zombie has)."""
  try:
    with open("/proc/%d/stat" % pid) as f:
      return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
  except (OSError, IndexError):
    return False


class Pool(object):
  """The cores of the workers that share `folder`: one per worker."""

  def __init__(self, folder, total):
    self._path = os.path.join(folder, "cores.json")
    self.total = total

  @contextlib.contextmanager
  def _state(self):
    """The pool's state, locked; written back when the block ends."""
    with open(self._path + ".lock", "a") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      try:
        with open(self._path) as f:
          state = json.load(f)
      except (OSError, ValueError):
        state = {"held": {}, "queue": []}
      # What processes that have ended held or asked for is given back.
      state["held"] = {k: v for k, v in state["held"].items()
                       if _running(v["pid"])}
      state["queue"] = [q for q in state["queue"] if _running(q[1])]
      yield state
      with open(self._path + ".tmp", "w") as f:
        json.dump(state, f)
      os.rename(self._path + ".tmp", self._path)

  def take(self, key, pid, cores=1, first=False, wait=True, lend=None):
    """Takes `cores` cores for process `pid` under `key`.

    first: served before the requests that wait. wait: False to take them
    only if they are free now. lend: the key of a holder whose core goes
    into this request until process `pid` ends. Returns whether they were
    taken.
    """
    cores = min(cores, self.total)
    me = [key, pid]
    while True:
      with self._state() as state:
        if lend in state["held"]:
          state["held"][lend]["lent_to"] = pid
        if wait and me not in state["queue"]:
          state["queue"].insert(0 if first else len(state["queue"]), me)
        turn = state["queue"][0] == me if wait else not state["queue"]
        if turn and self.total - _used(state) >= cores:
          if wait:
            state["queue"].remove(me)
          state["held"][key] = {"pid": pid, "cores": cores, "lent_to": None}
          return True
        if not wait:
          return False
      time.sleep(_POLL)

  def give_back(self, key):
    with self._state() as state:
      state["held"].pop(key, None)


def _used(state):
  """The cores held: a core lent to a running process counts there."""
  return sum(v["cores"] for v in state["held"].values()
             if not (v["lent_to"] and _running(v["lent_to"])))


def start_controller():
  """In the xdist controller: a fresh pool folder for its workers (through
  the environment they inherit); returns it, for `stop_controller`."""
  folder = tempfile.mkdtemp(prefix="test-cores-")
  os.environ[FOLDER_ENV] = folder
  return folder


def stop_controller(folder):
  shutil.rmtree(folder, ignore_errors=True)
  os.environ.pop(FOLDER_ENV, None)


def worker_pool():
  """In an xdist worker: its pool (None outside xdist). The first call puts
  the workers' `mpirun` (mpirun_main) first on this process's PATH, for
  the processes its tests start."""
  folder = os.environ.get(FOLDER_ENV)
  workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
  if not folder or not workers or "PYTEST_XDIST_WORKER" not in os.environ:
    return None
  if os.environ.get(OWNER_ENV) != str(os.getpid()):
    os.environ[OWNER_ENV] = str(os.getpid())
    bin_dir = os.path.join(folder, "bin")
    if not os.path.exists(os.path.join(bin_dir, "mpirun")):
      helpers.write_launcher(os.path.join(bin_dir, "mpirun"), "cores",
                             "mpirun_main()")
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
  return Pool(folder, int(workers))


def _test_key(pid):
  return "test in worker %d" % pid


@contextlib.contextmanager
def held():
  """The core of one test, held while the block runs (outside xdist:
  nothing)."""
  pool = worker_pool()
  if pool is None:
    yield
    return
  key = _test_key(os.getpid())
  pool.take(key, os.getpid())
  try:
    yield
  finally:
    pool.give_back(key)


@contextlib.contextmanager
def extra_core():
  """Yields how many processes the test may run side by side: 2 outside
  xdist; under xdist 2 if a second core is free now (held for the block),
  else 1."""
  pool = worker_pool()
  if pool is None:
    yield 2
    return
  key = "second core of worker %d" % os.getpid()
  if not pool.take(key, os.getpid(), wait=False):
    yield 1
    return
  try:
    yield 2
  finally:
    pool.give_back(key)


def mpirun_main():
  """The workers' `mpirun`: takes two cores (its test's and a second one),
  then becomes the next `mpirun` on PATH."""
  bin_dir = os.path.dirname(os.path.abspath(sys.argv[0]))
  path = [p for p in os.environ.get("PATH", "").split(os.pathsep)
          if p and os.path.abspath(p) != bin_dir]
  os.environ["PATH"] = os.pathsep.join(path)
  real = shutil.which("mpirun")
  if not real:
    sys.exit("tests/cores.py: no mpirun on PATH")
  folder, owner = os.environ.get(FOLDER_ENV), os.environ.get(OWNER_ENV)
  if folder and owner:
    pool = Pool(folder, int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    # Held by this process, which becomes mpirun: free when mpirun ends.
    pool.take("mpirun %d" % os.getpid(), os.getpid(), cores=2, first=True,
              lend=_test_key(int(owner)))
  os.execv(real, [real] + sys.argv[1:])
