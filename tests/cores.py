"""The machine's cores shared out between pytest-xdist workers (tests only).

`make test` runs the suite on two workers (`pytest -n 2`), one per core of
the 2-core test machines. So that no more TensorFlow processes run at once
than there are cores, a test holds cores while it runs (setup and teardown
included), from a pool of one core per worker:

- a test takes one core;
- a test marked `mpirun` also takes the mpirun right (one test at a time
  holds it), and each mpirun job it starts takes a second core while it
  runs: the workers' PATH starts with a folder whose `mpirun` waits for that
  core and then becomes the real mpirun (same process, same exit status);
- `extra_core()` takes a second core for a block only if one is free at
  once (conftest.run_two_at_a_time runs its commands two at a time then,
  one at a time otherwise).

Requests are served in order of arrival, except an mpirun job's core, which
comes first: its test already holds a core, and it is the only request that
waits while holding one (so nothing can wait in a circle). The pool is a
JSON file read and written under an flock; a waiting request polls it every
20 ms. Cores held by a process that has ended are free again: an mpirun
job's core when mpirun exits.

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

  def take(self, key, pid, mpirun_right=False, first=False, wait=True):
    """Takes a core (and the mpirun right) for process `pid` under `key`.

    first: served before the requests that wait. wait: False to take it only
    if it is free now. Returns whether it was taken.
    """
    me = [key, pid]
    while True:
      with self._state() as state:
        used = len(state["held"])  # one core each
        right = not mpirun_right or not any(
            v["mpirun_right"] for v in state["held"].values())
        if wait and me not in state["queue"]:
          state["queue"].insert(0 if first else len(state["queue"]), me)
        turn = state["queue"][0] == me if wait else not state["queue"]
        if turn and right and used < self.total:
          if wait:
            state["queue"].remove(me)
          state["held"][key] = {"pid": pid, "mpirun_right": mpirun_right}
          return True
        if not wait:
          return False
      time.sleep(_POLL)

  def give_back(self, key):
    with self._state() as state:
      state["held"].pop(key, None)

  def holds_mpirun_right(self, key):
    with self._state() as state:
      return state["held"].get(key, {}).get("mpirun_right", False)


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
  the `mpirun` that waits for a core first on this process's PATH."""
  folder = os.environ.get(FOLDER_ENV)
  workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
  if not folder or not workers or "PYTEST_XDIST_WORKER" not in os.environ:
    return None
  if os.environ.get(OWNER_ENV) != str(os.getpid()):
    os.environ[OWNER_ENV] = str(os.getpid())
    bin_dir = os.path.join(folder, "bin")
    shim = os.path.join(bin_dir, "mpirun")
    if not os.path.exists(shim):
      os.makedirs(bin_dir, exist_ok=True)
      with open(shim + ".%d" % os.getpid(), "w") as f:
        f.write("#!%s -S\nimport sys\nsys.path.insert(0, %r)\n"
                "import cores\ncores.mpirun_main()\n" % (
                    sys.executable, os.path.dirname(os.path.abspath(
                        __file__))))
      os.chmod(shim + ".%d" % os.getpid(), 0o755)
      os.rename(shim + ".%d" % os.getpid(), shim)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
  return Pool(folder, int(workers))


def _test_key(pid):
  return "test in worker %d" % pid


@contextlib.contextmanager
def held(mpirun):
  """The core of one test (and the mpirun right if `mpirun`), held while
  the block runs (outside xdist: nothing)."""
  pool = worker_pool()
  if pool is None:
    yield
    return
  key = _test_key(os.getpid())
  pool.take(key, os.getpid(), mpirun_right=mpirun)
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
  """The workers' `mpirun`: takes a second core for the test that holds the
  mpirun right, then becomes the next `mpirun` on PATH."""
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
    if not pool.holds_mpirun_right(_test_key(int(owner))):
      sys.exit("tests/cores.py: this test starts mpirun: mark it "
               "@pytest.mark.mpirun")
    # Held by this process, which becomes mpirun: free when mpirun ends.
    pool.take("mpirun %d" % os.getpid(), os.getpid(), first=True)
  os.execv(real, [real] + sys.argv[1:])
