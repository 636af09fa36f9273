"""A `python` for the pipeline tests that starts scripts without importing
TensorFlow again (tests only).

Every TensorFlow script run as a process spends about 2.5 s of a 2-core
machine importing TensorFlow before its first line of work. The tests that
run whole pipelines through a shell (the demo, the README's sample track)
start a dozen such processes each. Here a server imports TensorFlow once and
forks a child per run; the child takes the caller's command line, working
folder, environment and standard streams, runs the script as `__main__`,
and its exit status becomes the caller's.

  server = Server(folder, env)     # imports TensorFlow, listens
  env["PYTHON"] = server.python    # an executable: `python script.py ...`
  ...
  server.stop()

What a run sees is what `python script.py args` gives it (sys.argv, sys.path
from the script's folder and PYTHONPATH, os.environ, cwd, the three streams,
atexit handlers, the exit status; SIGINT, SIGTERM and SIGHUP sent to the
caller reach the run; a killed caller takes its run along), except that
TensorFlow is already imported (so its start-up notices are not on the
run's stderr) and a traceback shows runpy's frames above the script's.
`python -c ...`, `python -m ...` and a script that is not there go to the
real interpreter. An mpirun rank started as this `python` is forked too: it
gets mpirun's variables with the rest of the environment, and its
`hvd.init()` joins the job as a rank that mpirun started would (mpirun
signals and waits for the `python` process, which passes both on). Tests whose
subject is the process itself (kill -9 or kill -STOP of a rank, Ctrl-C of a
training run, a fresh interpreter) start the real one.
tests/test_python_fork.py checks these promises against the real
interpreter, an mpirun job included.
"""

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

import helpers

def _recv_exact(conn, size):
  data = b""
  while len(data) < size:
    chunk = conn.recv(size - len(data))
    if not chunk:
      raise ConnectionError("python_fork: the other side closed")
    data += chunk
  return data


def _int(conn):
  return struct.unpack("!i", _recv_exact(conn, 4))[0]


def client(socket_path):
  """The `python` executable's body: one run through the server."""
  argv = sys.argv[1:]
  if not argv or argv[0].startswith("-") or not os.path.isfile(argv[0]):
    os.execv(sys.executable, [sys.executable] + argv)
  for fd in (0, 1, 2):  # a closed standard stream reads as /dev/null
    try:
      os.fstat(fd)
    except OSError:
      os.open(os.devnull, os.O_RDWR)
  conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  conn.connect(socket_path)
  request = json.dumps({"argv": argv, "cwd": os.getcwd(),
                        "env": dict(os.environ)}).encode("utf-8")
  socket.send_fds(conn, [struct.pack("!I", len(request))], [0, 1, 2])
  conn.sendall(request)
  pid = _int(conn)
  forward = lambda signum, _: os.kill(pid, signum)
  for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, forward)
  status = _int(conn)
  if status < 0:  # the run died of a signal: so does its caller
    signal.signal(-status, signal.SIG_DFL)
    os.kill(os.getpid(), -status)
  os._exit(status)  # pylint: disable=protected-access


def _exit_code(exc):
  """The exit status that Python gives for an uncaught SystemExit."""
  if exc.code is None:
    return 0
  if isinstance(exc.code, int):
    return exc.code
  print(exc.code, file=sys.stderr)
  return 1


def _run_child(conn, request, fds, base_path):
  """In the forked child: becomes `python argv...` and never returns."""
  import atexit  # pylint: disable=g-import-not-at-top
  import runpy  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  import traceback  # pylint: disable=g-import-not-at-top
  status = 1
  try:
    conn.close()
    for target, fd in enumerate(fds):
      os.dup2(fd, target)
      os.close(fd)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
      signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    script = request["argv"][0]
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
             if p]
    sys.path[:] = [os.path.dirname(os.path.abspath(script))] + [
        os.path.abspath(p) for p in extra] + base_path
    sys.argv = list(request["argv"])
    try:
      runpy.run_path(script, run_name="__main__")
      status = 0
    except SystemExit as exc:
      status = _exit_code(exc)
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
      status = 1
    threading._shutdown()  # pylint: disable=protected-access
    atexit._run_exitfuncs()  # pylint: disable=protected-access
  finally:
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except Exception:  # pylint: disable=broad-except
        pass
    os._exit(status)  # pylint: disable=protected-access


def serve(socket_path, parent):
  """The server: imports TensorFlow, then forks a child per request.

  A run whose caller goes away (killed, or its connection closed) is
  killed; the server ends when the process `parent` (the one that started
  it) does.
  """
  # Without the server's own folder (tests/): each child puts its script's.
  base_path = sys.path[1:]
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  listener.bind(socket_path + ".tmp")
  listener.listen(16)
  os.rename(socket_path + ".tmp", socket_path)  # ready
  children = {}  # pid -> the connection that waits for its status
  while os.getppid() == parent:  # (1 once the parent is gone)
    readable, _, _ = select.select([listener] + list(children.values()), [],
                                   [], 0.05)
    for pid, conn in list(children.items()):
      if conn in readable:  # the caller is gone: so is its run
        os.kill(pid, signal.SIGKILL)
    if listener in readable:
      conn, _ = listener.accept()
      header, fds, _, _ = socket.recv_fds(conn, 4, 3)
      if len(header) < 4:
        header += _recv_exact(conn, 4 - len(header))
      request = json.loads(_recv_exact(conn, struct.unpack("!I", header)[0]))
      sys.stdout.flush()
      sys.stderr.flush()
      pid = os.fork()
      if pid == 0:
        for other in [listener] + list(children.values()):
          other.close()
        _run_child(conn, request, fds, base_path)
      for fd in fds:
        os.close(fd)
      conn.sendall(struct.pack("!i", pid))
      children[pid] = conn
    while children:
      pid, status = os.waitpid(-1, os.WNOHANG)
      if not pid:
        break
      conn = children.pop(pid, None)
      if conn is None:
        continue
      try:
        conn.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
      except OSError:
        pass  # the caller is gone
      conn.close()


class Server(object):
  """A running server and its `python` executable, in `folder`."""

  def __init__(self, folder, env):
    """Starts the server with `env` (PYTHONPATH is left out: each run gets
    its own from its caller)."""
    folder = os.path.abspath(str(folder))
    os.makedirs(folder, exist_ok=True)
    self.socket_path = os.path.join(folder, "python.sock")
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    # Its own output (TensorFlow's import notices) goes to a log there.
    log_path = os.path.join(folder, "server.log")
    with open(log_path, "wb") as log:
      self._process = subprocess.Popen(
          [sys.executable, os.path.abspath(__file__), self.socket_path,
           str(os.getpid())],
          env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    self.python = os.path.join(folder, "bin", "python")
    helpers.write_launcher(self.python, "python_fork",
                           "client(%r)" % self.socket_path)
    deadline = time.time() + 120
    while not os.path.exists(self.socket_path):
      if self._process.poll() is not None or time.time() > deadline:
        with open(log_path, "rb") as log:
          raise RuntimeError("python_fork: the server did not start:\n" +
                             log.read()[-3000:].decode(errors="replace"))
      time.sleep(0.05)

  @property
  def pid(self):
    """The server's process id (each run is a child of it)."""
    return self._process.pid

  def stop(self):
    self._process.kill()
    self._process.wait()


if __name__ == "__main__":
  serve(sys.argv[1], int(sys.argv[2]))
