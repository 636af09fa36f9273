"""Outputs that never appear half-written under their final name.

A file (or folder) is written under `temporary_name(final)`, in the same
folder so that the rename is atomic, and renamed to `final` only when
complete. The temporary's name carries the writer's host and pid, so a later
run can remove what a killed run left (`remove_stale_temporaries`).

A path with a scheme (gs://, s3://, hdfs://, ram://: `is_remote`) goes
through tf.io.gfile, imported only then: stage III's worker processes use
this module on local paths without TensorFlow. On an object store a rename
is not atomic: gfile copies the object and deletes the source (gs:// and
s3:// have no rename), so a reader can see the final name only once the
copy is complete, but two writers racing for the same name are not told
apart, and a folder "rename" copies its files one by one.

  with atomic_output("out/eval_results.txt") as tmp:
    write(tmp)            # out/eval_results.txt appears only now
"""

import contextlib
import os
import re
import shutil
import socket

from absl import logging

from bert_distill.lib import errors


def is_remote(path):
  """True for a path with a scheme (gs://..., s3://..., ram://...)."""
  return "://" in str(path)


def tensorflow():
  """TensorFlow, for paths with a scheme; imported only when one is used
  (stage III's worker processes use this module without it)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (see above)
  return tf


def listdir(directory):
  """The names in `directory`; OSError (as os.listdir) when it is missing."""
  if not is_remote(directory):
    return os.listdir(directory)
  tf = tensorflow()
  try:
    return [name.rstrip("/") for name in tf.io.gfile.listdir(directory)]
  except tf.errors.NotFoundError as exc:
    raise FileNotFoundError(str(exc)) from exc


def _remove(path):
  """Removes a file or a folder tree, on any file system.

  Raises:
    FileNotFoundError: `path` is gone (on a remote path too).
  """
  if is_remote(path):
    tf = tensorflow()
    try:
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      else:
        tf.io.gfile.remove(path)
    except tf.errors.NotFoundError as exc:
      raise FileNotFoundError(str(exc)) from exc
  elif os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  else:
    os.remove(path)


def isdir(path):
  """os.path.isdir, on any file system."""
  if is_remote(path):
    return tensorflow().io.gfile.isdir(path)
  return os.path.isdir(path)


def file_size(path):
  """The size of a file in bytes, on any file system."""
  if is_remote(path):
    return tensorflow().io.gfile.stat(path).length
  return os.path.getsize(path)


def read_bytes(path):
  """The whole content of a file, on any file system."""
  if is_remote(path):
    with tensorflow().io.gfile.GFile(path, "rb") as f:
      return f.read()
  with open(path, "rb") as f:
    return f.read()


def open_for_writing(path):
  """A new binary file object writing `path`, on any file system."""
  if is_remote(path):
    return tensorflow().io.gfile.GFile(path, "wb")
  return open(path, "wb")


def replace(source, final):
  """Renames `source` to `final`, replacing a file there.

  Atomic on a local file system; on an object store a copy and a delete
  (see the module docstring).
  """
  if is_remote(final):
    tensorflow().io.gfile.rename(source, final, overwrite=True)
  else:
    os.replace(source, final)


def this_host():
  """This machine's short host name (no dots), as used in file names."""
  return socket.gethostname().split(".")[0] or "localhost"


def temporary_name(final_path):
  """The name a file is written under before it is complete.

  `.NAME.tmp-HOST-PID` next to the final name (the same file system, so the
  final rename is atomic); HOST and PID tell a later run whether the writer
  is gone (`remove_stale_temporaries`).
  """
  head, tail = os.path.split(final_path)
  return os.path.join(head, ".%s.tmp-%s-%d" % (tail, this_host(),
                                              os.getpid()))


def claim_temporary(path):
  """Makes `path` a new, empty file of this process's, never through a link.

  Whatever stands under the name (a temporary of a dead process that had
  this pid, or a symbolic link someone planted so that the writer would
  follow it into another file) is removed first, the link itself and not
  its target, and the file is then created exclusively (O_EXCL, which does
  not follow a link), so the writer that opens it next writes into this
  file alone. A remote path (no links there) is left to its writer.

  Returns:
    `path`.

  Raises:
    errors.UnsafeOutputError: something appeared under the name between the
      removal and the creation.
  """
  if is_remote(path):
    return path
  with contextlib.suppress(FileNotFoundError):
    _remove(path)
  try:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                     getattr(os, "O_NOFOLLOW", 0), 0o666))
  except FileExistsError:
    raise errors.UnsafeOutputError(
        "%s: another process created this temporary file's name while this "
        "run was about to write it; nothing was written through it" % path)
  return path


# A temporary_name, possibly with a suffix its writer added (a checkpoint's
# .index / .data-* files, TensorFlow's own .tempstate files).
_TEMPORARY = re.compile(r"^\..+\.tmp-(?P<host>[^./]*)-(?P<pid>\d+)(\..*)?$")


def process_alive(host, pid):
  """False only when process `pid` of this machine is known to be gone.

  A process of another machine (a folder on shared storage) counts as alive;
  one that has ended and waits to be reaped (a zombie: e.g. a killed MPI
  rank whose parent is gone too) does not.
  """
  if host != this_host():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:
    with open("/proc/%d/stat" % pid) as f:
      return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
  except (OSError, IndexError):
    return True


def remove_stale_temporaries(directory, final_name=None):
  """Removes temporaries in `directory` whose writing process is gone.

  A run killed with SIGKILL (or a lost machine) cannot remove its
  temporaries; the next run writing to the same folder does. With
  `final_name`, only the temporaries of that name (a run that writes one
  output into a shared folder leaves the others alone).

  Returns:
    The names removed.
  """
  removed = []
  try:
    names = sorted(listdir(directory))
  except OSError:
    return removed
  for name in names:
    m = _TEMPORARY.match(name)
    if not m or process_alive(m.group("host"), int(m.group("pid"))):
      continue
    if final_name and not name.startswith(".%s.tmp-" % final_name):
      continue
    path = os.path.join(directory, name)
    try:
      _remove(path)
    except FileNotFoundError:
      continue
    removed.append(name)
  if removed:
    logging.warning("Removed %d temporaries left in %s by runs that were "
                    "killed: %s", len(removed), directory,
                    ", ".join(removed))
  return removed


def remove_quietly(path):
  """Removes a file or folder if it can; never raises."""
  if is_remote(path):
    with contextlib.suppress(OSError, tensorflow().errors.OpError):
      _remove(path)
  else:
    with contextlib.suppress(OSError):
      _remove(path)


@contextlib.contextmanager
def atomic_output(final_path):
  """Yields a temporary path; renames it to `final_path` only on success.

  If the body raises (or the process dies), nothing appears under
  `final_path` and an older file there is left as it was; the temporary is
  removed on an exception.
  """
  with atomic_outputs([final_path]) as (tmp,):
    yield tmp


@contextlib.contextmanager
def atomic_outputs(final_paths):
  """`atomic_output` for several files that belong together.

  Yields their temporary paths. Only when the body has written all of them
  are they renamed to their final names, in the given order (put the file
  that marks the set complete last); if the body raises, every temporary
  is removed and the files under the final names are left as they were (a
  disk that fills up while writing cannot destroy an older version).
  """
  final_paths = list(final_paths)
  for final in final_paths:
    if not is_remote(final) and os.path.isdir(final):
      raise errors.OutputError("%s is a folder; a file is written there: "
                               "move the folder away" % final)
  tmps = [temporary_name(p) for p in final_paths]
  try:
    for tmp in tmps:
      claim_temporary(tmp)
    yield tmps
    for tmp, final in zip(tmps, final_paths):
      replace(tmp, final)
  except BaseException:
    for tmp in tmps:
      remove_quietly(tmp)
    raise


@contextlib.contextmanager
def atomic_output_dir(final_dir):
  """Yields a temporary folder next to `final_dir`; renames it on success.

  An existing `final_dir` is replaced only once the new one is complete; on
  an exception the temporary folder is removed and `final_dir` is kept.
  """
  final_dir = os.path.normpath(final_dir)
  parent = os.path.dirname(os.path.abspath(final_dir))
  os.makedirs(parent, exist_ok=True)
  remove_stale_temporaries(parent, os.path.basename(final_dir))
  tmp = temporary_name(final_dir)
  with contextlib.suppress(FileNotFoundError):
    _remove(tmp)  # a dead namesake's folder, or a planted link (not followed)
  os.mkdir(tmp)  # fails, rather than follows, if a link appeared meanwhile
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
