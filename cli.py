"""Small pieces every stage script shares: clean error exits (errors that
name the flag at fault, the BERT config a flag names), atomic outputs,
input-file resolution and progress logging.

A stage script calls `cli.run(main)` instead of `absl.app.run(main)`. Errors a
user can fix (a missing file, a flag out of range, records that disagree with
the flags) are raised as `UserError` (or `ValueError`/`OSError` from a library
module) and end the process with one line on stderr and exit status 1, not a
traceback.
"""

import contextlib
import glob
import os
import shutil
import sys
import time

from absl import app
from absl import logging


class UserError(Exception):
  """An error in the user's input: reported as one line, exit status 1."""


def fail(message):
  """Raises a `UserError` with `message` (convenience for flag checks)."""
  raise UserError(message)


def _one_line(exc):
  text = str(exc).strip() or exc.__class__.__name__
  return " ".join(text.split())


def run(main):
  """Runs an absl `main`, turning user errors into one line and exit 1."""

  def _guarded(argv):
    try:
      return main(argv)
    except (UserError, ValueError, OSError) as exc:
      sys.stderr.write("error: %s\n" % _one_line(exc))
      sys.stderr.flush()
      os._exit(1)  # pylint: disable=protected-access

  app.run(_guarded)


def resolve_input_files(spec, flag_name="--input_file"):
  """Expands a comma-separated list of paths and glob patterns.

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
  """Raises a `UserError` unless `path` is a readable regular file."""
  if not path:
    raise UserError("%s is required" % flag_name)
  if not os.path.isfile(path):
    raise UserError("%s: %s not found: %s" % (flag_name, what, path))
  if not os.access(path, os.R_OK):
    raise UserError("%s: %s is not readable: %s" % (flag_name, what, path))


@contextlib.contextmanager
def blame_flag(flag_name):
  """Re-raises a ValueError of the block as a UserError naming the flag.

  Library modules (modeling, records, ...) raise ValueError with what is
  wrong; the flag that gave the bad value is only known here.
  """
  try:
    yield
  except ValueError as exc:
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
  """Creates `path` if needed and checks that files can be written in it."""
  if not path:
    raise UserError("%s is required" % flag_name)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as exc:
    raise UserError("%s: cannot create %s: %s" % (flag_name, path,
                                                  exc.strerror or exc))
  if not os.access(path, os.W_OK | os.X_OK):
    raise UserError("%s: directory is not writable: %s" % (flag_name, path))


def temporary_name(final_path):
  """The name a file is written under before it is complete."""
  head, tail = os.path.split(final_path)
  return os.path.join(head, ".%s.tmp-%d" % (tail, os.getpid()))


@contextlib.contextmanager
def atomic_output(final_path):
  """Yields a temporary path; renames it to `final_path` only on success.

  If the body raises (or the process dies), nothing appears under
  `final_path`; the temporary file is removed on an exception.
  """
  tmp = temporary_name(final_path)
  try:
    yield tmp
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  os.replace(tmp, final_path)


@contextlib.contextmanager
def atomic_output_dir(final_dir):
  """Yields a temporary folder next to `final_dir`; renames it on success.

  An existing `final_dir` is replaced only once the new one is complete; on
  an exception the temporary folder is removed and `final_dir` is kept.
  """
  final_dir = os.path.normpath(final_dir)
  parent = os.path.dirname(os.path.abspath(final_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = temporary_name(final_dir)
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  old = None
  if os.path.isdir(final_dir) and os.listdir(final_dir):
    old = tmp + ".old"
    os.rename(final_dir, old)
  os.replace(tmp, final_dir)  # Replaces an empty folder.
  if old:
    shutil.rmtree(old, ignore_errors=True)


def format_duration(seconds):
  """Formats seconds as H:MM:SS."""
  seconds = max(0, int(round(seconds)))
  return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


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
