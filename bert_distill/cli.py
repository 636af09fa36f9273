"""Small pieces every stage script shares: clean error exits (errors that
name the flag at fault, the BERT config a flag names), atomic outputs,
input-file resolution and progress logging.

A stage script calls `cli.run(main)` instead of `absl.app.run(main)`. Errors a
user can fix (a missing file, a flag out of range, records that disagree with
the flags) are the project's `errors.Error`s: `UserError` from a script or
stage, a library's own subclass otherwise (`blame_flag` adds the flag). They
end the process with one line on stderr and exit status 1; any other
exception is a bug and keeps its traceback.

Command lines: a boolean flag also takes its value as the next word
(`--do_eval false`, as the original README writes them), and any other word
that is not a flag is an error naming it (an unquoted glob that the shell
expanded into several files would otherwise train on the first file only).
Ctrl-C ends a script with one line, not a traceback.

A script that needs TensorFlow calls `import_tensorflow_quietly()` before
importing the modules that use it, so that the user sees this project's
lines and not the framework's start-up notices.
"""

import contextlib
import errno
import gc
import glob
import os
import re
import signal
import stat
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

from bert_distill.lib import errors
from bert_distill.lib import outputs

# Lines TensorFlow 2.21 writes to stderr while it is imported, whatever
# TF_CPP_MIN_LOG_LEVEL says: absl's "before absl::InitializeLog()" warning,
# the oneDNN notice (twice) and the CPU-instructions notice.
_TENSORFLOW_IMPORT_NOTICES = re.compile(
    r"absl::InitializeLog\(\)|oneDNN custom operations are on|"
    r"cpu_feature_guard|^To enable the following instructions")


def import_tensorflow_quietly():
  """Imports TensorFlow with its start-up notices dropped from stderr.

  Sets TF_CPP_MIN_LOG_LEVEL=1 (the framework's INFO lines off, warnings on)
  unless the user set it. Anything else written to stderr during the import
  (a real warning or error) is passed on. Call it before importing a module
  that imports TensorFlow; later imports are then free.
  """
  if "tensorflow" in sys.modules:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      text = capture.read().decode("utf-8", "replace")
      kept = [line for line in text.splitlines(True)
              if not _TENSORFLOW_IMPORT_NOTICES.search(line)]
      sys.stderr.write("".join(kept))
      sys.stderr.flush()


# An error in the user's flags or inputs, found by a script or stage: one
# line, exit status 1. Defined with the library errors (errors.py).
UserError = errors.UserError


def _one_line(exc):
  text = str(exc).strip() or exc.__class__.__name__
  return " ".join(text.split())


# The words a boolean flag accepts as its value in the next word.
BOOLEAN_WORDS = {"true": "true", "false": "false", "1": "true", "0": "false"}


def join_boolean_values(argv, flag_values=None):
  """Turns `--flag WORD` into `--flag=WORD` for boolean flags.

  absl reads a bare `--do_eval` as true and the next word as a positional
  argument, so `--do_eval false` would turn evaluation on. Here a boolean
  flag followed by True, False, true, false, 1 or 0 (any case) takes that
  word as its value. Words after `--` are left alone.

  Args:
    argv: the command line, program name first.
    flag_values: the absl FlagValues defining the flags (default: FLAGS).

  Returns:
    The new argv list.
  """
  flag_values = flag_values or flags.FLAGS
  out = list(argv[:1])
  i = 1
  while i < len(argv):
    word = argv[i]
    out.append(word)
    i += 1
    if word == "--":
      out.extend(argv[i:])
      break
    m = re.match(r"^--?([A-Za-z_][\w.-]*)$", word)
    if (m and i < len(argv) and m.group(1) in flag_values and
        flag_values[m.group(1)].boolean and
        argv[i].lower() in BOOLEAN_WORDS):
      out[-1] = "%s=%s" % (word, BOOLEAN_WORDS[argv[i].lower()])
      i += 1
  return out


def check_no_arguments(argv):
  """Raises a `UserError` naming the words of argv[1:] that are not flags.

  Words that are existing files (or contain *, ? or [) are most likely an
  unquoted glob pattern the shell expanded: the message says to quote it.
  """
  extra = list(argv[1:])
  if not extra:
    return
  message = "unexpected argument%s: %s" % ("s" if len(extra) > 1 else "",
                                           " ".join(extra))
  if any(os.path.exists(w) or re.search(r"[*?\[]", w) for w in extra):
    message += (" (a path or file pattern: give it as the flag's value and "
                "quote a glob pattern so that the shell passes it whole, "
                "e.g. --input_file 'data/wiki_*.tfrecord')")
  else:
    message += (" (flags are written --name=value or --name value; boolean "
                "flags take true/false/1/0)")
  raise UserError(message)


class Interrupted(UserError):
  """The user stopped the run (Ctrl-C, SIGTERM); exit status 128 + signal."""

  def __init__(self, message, signum=signal.SIGINT):
    super(Interrupted, self).__init__(message)
    self.signum = signum


def disk_full_message(exc):
  """One line for an error caused by a full disk, or None.

  TensorFlow reports ENOSPC as ResourceExhaustedError("PATH; No space left
  on device"); Python as OSError(errno.ENOSPC).
  """
  if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
    where = exc.filename or "a file"
  else:
    text = " ".join(str(getattr(exc, "message", exc)).split())
    m = re.search(r"(\S+); No space left on device", text)
    if not m:
      return None
    where = m.group(1)
  # The temporary being written stands for its final name.
  where = re.sub(r"(^|/)\.([^/]+)\.tmp-[^./]*-\d+(\.[^/]*)?$", r"\1\2", where)
  return ("no space left on device while writing %s; nothing was written "
          "under a final name and earlier outputs are intact" % where)


def error_line(exc):
  """(one-line message, exit status) for an exception `run` reports.

  The project's errors (errors.Error), a full disk and Ctrl-C give one line;
  None for any other exception: a bug, which keeps its traceback.
  """
  if isinstance(exc, Interrupted):
    return _one_line(exc), 128 + int(exc.signum)
  if isinstance(exc, KeyboardInterrupt):
    return "interrupted (Ctrl-C)", 128 + int(signal.SIGINT)
  full = disk_full_message(exc)
  if full:
    return full, 1
  if isinstance(exc, errors.Error):
    return _one_line(exc), 1
  return None


def run(main):
  """Runs an absl `main`: errors and Ctrl-C become one line, not tracebacks.

  User errors exit with status 1; Ctrl-C (or an `Interrupted`) with
  128 + the signal number. Leftover words on the command line are an error
  (see `check_no_arguments`), boolean flags take a following true/false
  word (see `join_boolean_values`).
  """

  def _exit(message, status):
    sys.stderr.write("error: %s\n" % message)
    sys.stderr.flush()
    os._exit(status)  # pylint: disable=protected-access

  def _guarded(argv):
    try:
      check_no_arguments(argv)
      status = main(argv)
      # Every output is closed and renamed by now. Python's last garbage
      # collection at exit walks TensorFlow's millions of objects: about
      # 0.9 s of every run (measured: import TensorFlow, one op, exit). The
      # objects frozen here are skipped by it; exit handlers (log flushing,
      # Horovod's shutdown) still run.
      gc.freeze()
      return status
    except BaseException as exc:  # pylint: disable=broad-except
      line = error_line(exc)
      if line is None:
        raise
      _exit(*line)

  try:
    app.run(_guarded, argv=join_boolean_values(sys.argv))
  except KeyboardInterrupt:  # while absl parsed the flags
    _exit("interrupted (Ctrl-C)", 128 + int(signal.SIGINT))


def resolve_input_files(spec, flag_name="--input_file"):
  """Expands a comma-separated list of paths and glob patterns.

  Local paths, or any that tf.io.gfile reads (gs://bucket/x_*.tfrecord).

  Args:
    spec: e.g. "out/train_*.tfrecord,other/x.tfrecord".
    flag_name: named in the error message.

  Returns:
    The matching files, sorted within each comma-separated item, without
    duplicates.

  Raises:
    UserError: if the spec is empty or an item matches no file.
  """
  if not spec:
    raise UserError("%s is required" % flag_name)
  files = []
  for item in spec.split(","):
    item = item.strip()
    if not item:
      continue
    if outputs.is_remote(item):
      gfile = outputs.tensorflow().io.gfile
      matches = sorted(m for m in gfile.glob(item) if not gfile.isdir(m))
    else:
      matches = sorted(glob.glob(item))
      matches = [m for m in matches if os.path.isfile(m)]
    if not matches:
      raise UserError("%s: no file matches %r" % (flag_name, item))
    for m in matches:
      if m not in files:
        files.append(m)
  if not files:
    raise UserError("%s: no input files in %r" % (flag_name, spec))
  return files


def require_file(path, flag_name, what="file"):
  """Raises a `UserError` unless `path` is a readable regular file.

  A path with a scheme (gs://...) is checked through tf.io.gfile: it must
  exist and not be a folder (read permission shows only when it is read).
  """
  if not path:
    raise UserError("%s is required" % flag_name)
  if outputs.is_remote(path):
    gfile = outputs.tensorflow().io.gfile
    if not gfile.exists(path) or gfile.isdir(path):
      raise UserError("%s: %s not found: %s" % (flag_name, what, path))
    return
  if not os.path.isfile(path):
    raise UserError("%s: %s not found: %s" % (flag_name, what, path))
  if not os.access(path, os.R_OK):
    raise UserError("%s: %s is not readable: %s" % (flag_name, what, path))


@contextlib.contextmanager
def blame_flag(flag_name):
  """Re-raises a library error of the block as a UserError naming the flag.

  Library modules (modeling, records, checkpoints, ...) raise their
  errors.Error with what is wrong; the flag that gave the bad value is only
  known here. Other exceptions pass unchanged.
  """
  try:
    yield
  except errors.Error as exc:
    if isinstance(exc, UserError):
      raise
    raise UserError("%s: %s" % (flag_name, exc))


def load_bert_config(path, flag_name, max_seq_length=None):
  """Reads the bert_config.json a flag names; errors name the flag.

  Args:
    path: the file.
    flag_name: e.g. "--bert_config_file".
    max_seq_length: if given, the model's max_position_embeddings must cover
      it.

  Returns:
    A modeling.BertConfig.
  """
  import modeling  # pylint: disable=g-import-not-at-top  (keeps cli light)
  require_file(path, flag_name, "BERT config file")
  with blame_flag(flag_name):
    config = modeling.BertConfig.from_json_file(path)
  if max_seq_length is not None and (
      max_seq_length > config.max_position_embeddings):
    raise UserError(
        "--max_seq_length=%d is longer than the model of %s was trained for "
        "(max_position_embeddings %d in %s)" %
        (max_seq_length, flag_name, config.max_position_embeddings, path))
  return config


def ensure_writable_dir(path, flag_name="--output_dir"):
  """Creates `path` if needed and checks that files can be written in it.

  Temporaries that dead processes of earlier runs left there are removed
  (see `outputs.remove_stale_temporaries`). A path with a scheme (gs://,
  s3://, ram://...) is created through tf.io.gfile; whether it can be
  written shows at the first write (object stores have no permission bits
  to read beforehand).
  """
  if not path:
    raise UserError("%s is required" % flag_name)
  if outputs.is_remote(path):
    _ensure_remote_dir(path, flag_name)
    outputs.remove_stale_temporaries(path)
    return
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError("%s: %s exists and is not a folder" % (flag_name, path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as exc:
    raise UserError("%s: cannot create %s: %s" % (flag_name, path,
                                                  exc.strerror or exc))
  if not os.access(path, os.W_OK | os.X_OK):
    raise UserError("%s: directory is not writable: %s" % (flag_name, path))
  outputs.remove_stale_temporaries(path)


def _ensure_remote_dir(path, flag_name):
  tf = outputs.tensorflow()
  if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
    raise UserError("%s: %s exists and is not a folder" % (flag_name, path))
  try:
    tf.io.gfile.makedirs(path)
  except tf.errors.OpError as exc:
    raise UserError("%s: cannot create %s: %s" % (flag_name, path,
                                                  exc.message))


def check_output_file(path, flag_name="--output_file"):
  """Checks an output file path before any work; creates its folder.

  Raises:
    UserError: the path is empty, names a folder (or ends in a separator),
      or its folder cannot be created or written.
  """
  if not path:
    raise UserError("%s is required" % flag_name)
  remote = outputs.is_remote(path)
  if path.endswith("/") or (outputs.tensorflow().io.gfile.isdir(path)
                            if remote else os.path.isdir(path)):
    raise UserError("%s: %s is a folder; give a file name (e.g. %s)" %
                    (flag_name, path,
                     os.path.join(path.rstrip("/") or "/", "out.tfrecord")))
  ensure_writable_dir(os.path.dirname(path) if remote else
                      os.path.dirname(os.path.abspath(path)), flag_name)
  return path


# Environment variables in which a launcher tells its processes how many
# there are: Open MPI's mpirun, horovodrun (Gloo), MPICH / Intel MPI.
_LAUNCHER_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "HOROVOD_SIZE",
                            "PMI_SIZE")


def launched_processes():
  """How many processes the launcher of this one started (1 if none).

  Read from the environment that mpirun or horovodrun gives each process,
  before Horovod is imported: a script that runs alone as well as under
  mpirun (stage IV) starts Horovod only when there are several processes.
  """
  for name in _LAUNCHER_SIZE_VARIABLES:
    value = os.environ.get(name, "")
    if value.isdigit() and int(value) > 0:
      return int(value)
  return 1


def same_file(a, b):
  """True when paths `a` and `b` name the same file or folder: through
  links, `..`, `//` or another mount of it (the same device and inode).
  A file:// path is the local path it names; other remote paths are
  compared as written (after collapsing repeated slashes)."""
  a, b = (p[len("file://"):] if str(p).startswith("file://") else str(p)
          for p in (a, b))
  if outputs.is_remote(a) or outputs.is_remote(b):
    def _plain(path):
      scheme, rest = path.split("://", 1) if "://" in path else ("", path)
      return scheme, re.sub(r"/+", "/", rest).rstrip("/")
    return _plain(a) == _plain(b)
  if os.path.realpath(a) == os.path.realpath(b):
    return True
  try:
    return os.path.samefile(a, b)
  except OSError:  # one of them does not exist (yet)
    return False


class DirectoryLock(object):
  """An exclusive lock on an output folder, held while a run writes there.

  The lock is `flock` on DIRECTORY/.lock, which holds "pid host" of the
  owner. The kernel releases it when the owner exits in any way (SIGKILL
  included), so a lock left by a dead process never blocks a later run.

  A folder with a scheme (gs://, s3://, hdfs://, ram://...) cannot be
  locked so: an object store has no flock, and a lock file there would
  outlive a killed run and block the next one. There no lock is taken and
  one warning says so; keeping two runs out of the same remote folder is
  the user's part.

  Usage:
    with cli.DirectoryLock(output_dir, "--output_dir"):
      ...  # write into output_dir
  """

  NAME = ".lock"

  def __init__(self, directory, flag_name="--output_dir"):
    self.directory = directory
    self.flag_name = flag_name
    self.path = os.path.join(directory, self.NAME)
    self._fd = None

  def acquire(self):
    """Takes the lock or raises a UserError naming the owner (pid, host).

    On a remote folder: takes nothing and logs a warning (see above).
    """
    if outputs.is_remote(self.directory):
      logging.warning(
          "%s %s is not on a local file system: it is not locked, so a "
          "second run writing there at the same time would mix its "
          "checkpoints with this run's; start one run per folder",
          self.flag_name, self.directory)
      return self
    import fcntl  # pylint: disable=g-import-not-at-top  (POSIX only)
    while True:
      # Never through a link: a symbolic link planted as the lock file would
      # otherwise have its target truncated and overwritten (O_NOFOLLOW), a
      # hard link likewise (checked below, before anything is written).
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT |
                     getattr(os, "O_NOFOLLOW", 0), 0o644)
      except OSError as exc:
        if exc.errno != errno.ELOOP:
          raise
        raise UserError(
            "%s: the lock file %s is a symbolic link (to %s); a run writes "
            "no lock through a link: remove it" % (
                self.flag_name, self.path, os.readlink(self.path)))
      info = os.fstat(fd)
      if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise UserError(
            "%s: the lock file %s is %s; a run writes its lock only into a "
            "file of its own: remove it" % (
                self.flag_name, self.path,
                "not a regular file" if not stat.S_ISREG(info.st_mode)
                else "a hard link to another file (%d names)" %
                info.st_nlink))
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
          raise
        raise UserError(
            "%s: %s is in use by %s (lock file %s); wait for that run to "
            "end or give another %s" % (self.flag_name, self.directory,
                                        self._owner(), self.path,
                                        self.flag_name))
      # The previous owner may have removed the file between our open and
      # flock: then this lock is on a file nobody else sees; start again.
      try:
        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, ("%d %s\n" % (os.getpid(), outputs.this_host())).encode())
    self._fd = fd
    return self

  def _owner(self):
    try:
      with open(self.path) as f:
        pid, host = f.read().split()[:2]
      return "process %s on %s" % (pid, host)
    except (OSError, ValueError):
      return "another process"

  def release(self):
    """Removes the lock file and releases the lock."""
    if self._fd is None:
      return
    with contextlib.suppress(OSError):
      os.remove(self.path)
    os.close(self._fd)
    self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc_info):
    self.release()


class StopOnSignal(object):
  """Turns SIGINT and SIGTERM into a request to stop, for long loops.

  While active, the first SIGINT or SIGTERM does not interrupt the program:
  `on_signal(signum)` is called at once from a helper thread (even while
  the main thread is busy inside TensorFlow, where Python signal handlers
  cannot run), and `signum` records it; the loop is expected to stop at its
  next safe point. A second signal interrupts as usual (KeyboardInterrupt
  for SIGINT; SIGTERM ends the process).

  Usage:
    with cli.StopOnSignal(lambda signum: stop_flag.assign(True)) as stop:
      ...  # a loop that checks stop_flag
    if stop.signum: ...
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self, on_signal):
    self._on_signal = on_signal
    self.signum = None
    self._previous = {}
    self._previous_fd = None
    self._pipe = None
    self._thread = None

  def _handler(self, signum, frame):
    if self.signum is not None:  # the second one: stop now
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      if signum == signal.SIGINT:
        raise KeyboardInterrupt
      os.kill(os.getpid(), signum)
      return
    self.signum = signum
    del frame

  def _watch(self):
    read_fd = self._pipe[0]
    while True:
      data = os.read(read_fd, 64)
      for byte in data:
        if byte == 0:  # __exit__ wakes the thread with a zero byte
          return
        if byte in [int(s) for s in self.SIGNALS]:
          self._on_signal(byte)

  def __enter__(self):
    import threading  # pylint: disable=g-import-not-at-top
    if threading.current_thread() is not threading.main_thread():
      return self  # signals reach the main thread only; nothing to do
    self._pipe = os.pipe()
    os.set_blocking(self._pipe[1], False)
    for signum in self.SIGNALS:
      self._previous[signum] = signal.signal(signum, self._handler)
    self._previous_fd = signal.set_wakeup_fd(self._pipe[1])
    self._thread = threading.Thread(target=self._watch, daemon=True,
                                    name="stop_on_signal")
    self._thread.start()
    return self

  def __exit__(self, *exc_info):
    if self._thread is None:
      return
    signal.set_wakeup_fd(self._previous_fd)
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    os.write(self._pipe[1], b"\0")
    self._thread.join()
    for fd in self._pipe:
      os.close(fd)


# prctl(2) option: the signal a process gets when its parent exits.
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid):
  """Makes this process get SIGKILL when its parent exits (Linux).

  For child processes the parent starts: a parent killed with SIGKILL cannot
  stop them, the kernel does. If the parent is already gone (it exited
  between the fork and this call), exits at once.

  Args:
    parent_pid: the pid the parent had when it started this process.

  Returns:
    True if the kernel will kill this process with its parent, False where
    prctl is not available (not Linux).
  """
  import ctypes  # pylint: disable=g-import-not-at-top
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    ok = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
  except (OSError, AttributeError):
    ok = False
  if ok and os.getppid() != parent_pid:
    os._exit(1)  # pylint: disable=protected-access
  return ok


def die_with_parent_after_fork():
  """Makes every process this one forks from now on die with its parent.

  A forked child does not inherit `die_with_parent`; this registers it for
  every later fork (multiprocessing's workers, for instance), so a chain
  parent -> child -> workers goes down together.
  """
  forking = []
  os.register_at_fork(before=lambda: forking.append(os.getpid()),
                      after_in_parent=forking.clear,
                      after_in_child=lambda: die_with_parent(forking.pop()))


def format_duration(seconds):
  """Formats seconds as H:MM:SS."""
  seconds = max(0, int(round(seconds)))
  return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


class StepProgress(object):
  """Progress of a training loop: step, loss, learning rate, examples/s, ETA.

  The distillation and fine-tuning loops both log through it, so their lines
  read the same. The rate is over the steps since the previous line; the ETA
  is from the rate since `first_step`.
  """

  def __init__(self, first_step, total_steps, examples_per_step):
    self.first_step = first_step
    self.total_steps = total_steps
    self.examples_per_step = examples_per_step
    self.start = time.time()
    self._last_step, self._last_time = first_step, self.start

  def log(self, step, loss, learning_rate):
    """Logs one line for `step`."""
    now = time.time()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    overall = (step - self.first_step) / max(now - self.start, 1e-9)
    logging.info(
        "step %d/%d, loss %.4f, learning rate %.3g, %.1f examples/s, ETA %s",
        step, self.total_steps, loss, learning_rate,
        rate * self.examples_per_step,
        format_duration((self.total_steps - step) / max(overall, 1e-9)))
    self._last_step, self._last_time = step, now

  def done(self, step):
    """Logs how many steps ran and how long they took."""
    logging.info("Training done: %d steps in %s", step - self.first_step,
                 format_duration(time.time() - self.start))


class Progress(object):
  """Logs progress of long work: count, rate and ETA, at most every N seconds.

  Example:
    progress = Progress("teacher labels", unit="seq", total=n)
    for batch in ...:
      progress.update(len(batch))
    progress.done()
  """

  def __init__(self, name, unit="items", total=None, every_seconds=10.0):
    self.name = name
    self.unit = unit
    self.total = total
    self.every_seconds = every_seconds
    self.count = 0
    self.start = time.time()
    self._last_log = self.start

  @property
  def elapsed(self):
    return time.time() - self.start

  @property
  def rate(self):
    return self.count / max(self.elapsed, 1e-9)

  def update(self, n=1, extra=""):
    """Adds `n` and logs when `every_seconds` have passed since the last log."""
    self.count += n
    now = time.time()
    if now - self._last_log >= self.every_seconds:
      self._last_log = now
      self.log(extra)

  def log(self, extra=""):
    """Logs one progress line now."""
    line = "%s: %d%s %s, %.1f %s/s" % (
        self.name, self.count,
        "/%d" % self.total if self.total else "", self.unit, self.rate,
        self.unit)
    if self.total:
      remaining = (self.total - self.count) / max(self.rate, 1e-9)
      line += ", ETA %s" % format_duration(remaining)
    if extra:
      line += ", " + extra
    logging.info(line)

  def done(self, extra=""):
    """Logs the final count, elapsed time and rate."""
    line = "%s: done, %d %s in %s (%.1f %s/s)" % (
        self.name, self.count, self.unit, format_duration(self.elapsed),
        self.rate, self.unit)
    if extra:
      line += ", " + extra
    logging.info(line)
