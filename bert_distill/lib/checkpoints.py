"""Name-based checkpoints that Google's TF1 BERT code reads and writes.

A checkpoint is a name -> variable map saved under Google's variable names
(`bert/encoder/layer_0/attention/self/query/kernel`, `global_step`, Adam's
`.../adam_m`; docs/formats.md lists them) as `<prefix>.index` and
`<prefix>.data-*`. A training folder lists its checkpoints in TensorFlow's
`checkpoint` state file, which `tf.train.latest_checkpoint` and TF1's Saver
read too. With layer-wise distillation losses, model.ckpt-<step> has a
companion checkpoint model.ckpt-<step>.distillation (the projections and
their optimizer slots), so that model.ckpt-<step> stays a BERT checkpoint.

  save_checkpoint(variables_by_name, "out/model.ckpt-100")
  load_checkpoint(model.variables_by_name(), "out")   # the newest in out/
  CheckpointSaver("out", variables_by_name, keep=5).save(step)

Every file is written under a temporary name and renamed into place, so a
checkpoint whose .index exists is complete. Every path goes through
tf.io.gfile, so a folder may be `gs://...` or any other file system
TensorFlow knows.
"""

import collections
import os
import re
import time

from absl import logging
import numpy as np
import tensorflow as tf

from bert_distill.lib import errors
from bert_distill.lib import outputs

CHECKPOINT_BASENAME = "model.ckpt"
# The companion checkpoint of model.ckpt-<step> holding the variables that
# distillation adds (projections) and their optimizer slots.
EXTRA_CHECKPOINT_SUFFIX = ".distillation"
CHECKPOINT_STATE_FILE = "checkpoint"

_LAYER = re.compile(r"bert/encoder/layer_(\d+)/(.*)$")


def some_names(names, shown=3):
  """A log-sized list: the first `shown` names and how many more.

  E.g. "bert/pooler/dense/kernel, bert/pooler/dense/bias and 2 more". A
  whole list of a model's variables (about 200 for BERT-Base, more with the
  optimizer slots) would bury the log; --verbosity=1 shows every name where
  the loader logs them.
  """
  names = list(names)
  text = ", ".join(names[:shown])
  if len(names) > shown:
    text += " and %d more" % (len(names) - shown)
  return text


def _shape_str(shape):
  return "[%s]" % ", ".join(str(int(d)) for d in shape)


def _exists(prefix):
  return tf.io.gfile.exists(prefix + ".index")


def save_checkpoint(variables_by_name, prefix):
  """Writes a name-based checkpoint (`prefix`.index, `prefix`.data-*).

  The files are written under a temporary prefix and renamed into place,
  data first and the .index last, so a checkpoint whose .index exists is
  complete.

  Args:
    variables_by_name: name -> tf.Variable (or tensor or NumPy array), e.g.
      the model's variables merged with the optimizer's.
    prefix: the checkpoint prefix, e.g. "out/model.ckpt-100".

  Returns:
    `prefix`.
  """
  names = list(variables_by_name.keys())
  if not names:
    raise ValueError("save_checkpoint: nothing to save for %s" % prefix)
  directory = os.path.dirname(prefix)
  if directory:
    tf.io.gfile.makedirs(directory)
  tmp_prefix = outputs.temporary_name(prefix)
  tensors = []
  for name in names:
    value = variables_by_name[name]
    if isinstance(value, tf.Variable):
      value = value.read_value()
    tensors.append(tf.convert_to_tensor(value))
  try:
    # A failure here (a full disk) leaves an older checkpoint under the same
    # prefix as it was; the temporaries are removed below.
    with tf.device("CPU:0"):
      tf.raw_ops.SaveV2(prefix=tmp_prefix, tensor_names=names,
                        shape_and_slices=[""] * len(names), tensors=tensors)
    tmp_files = tf.io.gfile.glob(tmp_prefix + ".*")
    data_files = [f for f in tmp_files if not f.endswith(".index")]
    # All written: an old checkpoint under the same prefix stops being
    # valid first.
    if _exists(prefix):
      tf.io.gfile.remove(prefix + ".index")
    for path in data_files:
      tf.io.gfile.rename(path, prefix + path[len(tmp_prefix):],
                         overwrite=True)
    tf.io.gfile.rename(tmp_prefix + ".index", prefix + ".index",
                       overwrite=True)
  finally:
    for path in tf.io.gfile.glob(tmp_prefix + ".*"):
      tf.io.gfile.remove(path)
  return prefix



def _listed_checkpoints(directory):
  """(newest, [all, oldest first]) of `directory`/checkpoint, full paths."""
  try:
    state = tf.train.get_checkpoint_state(directory)
  except ValueError:  # a state file without model_checkpoint_path
    state = None
  if state is None:
    return None, []
  return state.model_checkpoint_path, list(state.all_model_checkpoint_paths)


def latest_checkpoint(directory, warn=True):
  """The newest checkpoint of a training folder, or None.

  The one `directory`/checkpoint (TensorFlow's state file) names; if its
  files are gone, the newest listed one that still exists. When the state
  file is missing, unreadable or lists nothing that exists, the
  `model.ckpt-<step>` on disk with the highest step (a checkpoint is
  complete once its .index exists: save_checkpoint writes it last), with a
  warning (unless `warn` is False: resolve_checkpoint's folders, often
  converted ones, have no state file): a run must not start again from
  step 0 beside its own checkpoints.
  """
  latest, all_paths = _listed_checkpoints(directory)
  candidates = ([latest] if latest else []) + list(reversed(all_paths))
  for prefix in candidates:
    if _exists(prefix):
      return prefix
  on_disk = newest_numbered_checkpoint(directory)
  if on_disk and warn:
    logging.warning(
        "%s: its state file %s %s; using the checkpoint with the highest "
        "step on disk, %s", directory, CHECKPOINT_STATE_FILE,
        "lists no checkpoint that exists" if candidates else
        "is missing or unreadable", on_disk)
  return on_disk


def newest_numbered_checkpoint(directory,
                               basename=CHECKPOINT_BASENAME):
  """The `basename-<step>` prefix in `directory` with the highest step whose
  .index exists, or None."""
  pattern = re.compile(r"^%s-(\d+)\.index$" % re.escape(basename))
  try:
    names = tf.io.gfile.listdir(directory)
  except tf.errors.NotFoundError:
    return None
  steps = [int(m.group(1)) for m in map(pattern.match, names) if m]
  if not steps:
    return None
  return os.path.join(directory, "%s-%d" % (basename, max(steps)))


def _full(path):
  """A local path made absolute; a URL (gs://...) as it is."""
  return path.rstrip("/") if "://" in path else os.path.abspath(path)


def _entry(directory, prefix):
  """`prefix` as the state file lists it: relative when in `directory`."""
  if _full(os.path.dirname(prefix) or ".") == _full(directory):
    return os.path.basename(prefix)
  return _full(prefix)


def write_checkpoint_index(directory, prefix):
  """Makes `prefix` the newest checkpoint in `directory`/checkpoint.

  The file is TensorFlow's CheckpointState text (`model_checkpoint_path:
  "model.ckpt-100"` and `all_model_checkpoint_paths: ...` lines, oldest
  first), with the paths of checkpoints in `directory` relative to it, as
  TF1's Saver wrote them, so that a training folder can be moved or copied.
  Entries whose files no longer exist are dropped. Call this after
  `save_checkpoint`.

  Returns:
    The path of the state file.
  """
  directory = directory or "."
  _, listed = _listed_checkpoints(directory)
  entry = _entry(directory, prefix)
  kept = [_entry(directory, p) for p in listed if _exists(p)]
  kept = [p for p in kept if p != entry] + [entry]
  # TensorFlow's writer (the one behind TF1's Saver and tf.train's
  # CheckpointManager; TF2 exposes it under tf.__internal__ only, as its
  # CheckpointManager handles object-based checkpoints, not these
  # name-based ones) replaces the file atomically: it writes
  # `checkpoint.tmp<random>` and renames it (a run killed in between
  # leaves that small file; it is not one of ours to clean up, see
  # outputs.remove_stale_temporaries). Paths that are not absolute are
  # written relative to `directory`: as given when `directory` is absolute;
  # when it is not (a relative local path, or a URL such as gs://b/out,
  # which os.path.isabs does not count as absolute) TensorFlow takes them
  # as relative to the working directory and rewrites them relative to
  # `directory`, so they are given joined to it.
  if not os.path.isabs(directory):
    joined = lambda p: (p if os.path.isabs(p) or outputs.is_remote(p) else
                        os.path.join(directory, p))
    entry, kept = joined(entry), [joined(p) for p in kept]
  tf.__internal__.train.update_checkpoint_state(
      directory, entry, all_model_checkpoint_paths=kept,
      save_relative_paths=True)
  return os.path.join(directory, CHECKPOINT_STATE_FILE)


def resolve_checkpoint(checkpoint):
  """A checkpoint prefix from a prefix, a `.index` file name or a directory.

  A directory resolves to the newest checkpoint of its `checkpoint` state
  file, or else to its only `*.index` checkpoint, or else to the one with
  the highest step among its `<name>-<step>.index` checkpoints.

  Raises:
    errors.CheckpointError: no checkpoint there.
  """
  if not checkpoint:
    raise errors.CheckpointError("no checkpoint given")
  # A prefix first: a file system that lists names by prefix (ram://) also
  # calls model.ckpt-4 a folder when model.ckpt-4.index is there.
  if _exists(checkpoint):
    return checkpoint
  if tf.io.gfile.isdir(checkpoint):
    found = latest_checkpoint(checkpoint, warn=False)
    if found is None:
      try:
        found = tf.train.latest_checkpoint(checkpoint)
      except (tf.errors.OpError, ValueError):
        found = None
    if found is None:
      prefixes = [path[:-len(".index")] for path in tf.io.gfile.glob(
          os.path.join(checkpoint, "*.index"))]
      steps = [re.search(r"-(\d+)$", prefix) for prefix in prefixes]
      if len(prefixes) == 1:
        found = prefixes[0]
      elif prefixes and all(steps):
        # No state file: the highest step (model.ckpt-N) is the newest.
        found = max(zip((int(m.group(1)) for m in steps), prefixes))[1]
    if found is None:
      raise errors.CheckpointError("%s: no checkpoint in this directory" %
                            checkpoint)
    return found
  for suffix in (".index", ".data-00000-of-00001", ".meta"):
    if checkpoint.endswith(suffix) and _exists(checkpoint[:-len(suffix)]):
      return checkpoint[:-len(suffix)]
  if not _exists(checkpoint):
    raise errors.CheckpointError("checkpoint not found: %s (no %s.index)" %
                          (checkpoint, checkpoint))
  return checkpoint


def open_checkpoint(checkpoint):
  """Opens a checkpoint for reading (its variables' names, shapes, values).

  Args:
    checkpoint: a checkpoint prefix, or a directory (its newest checkpoint).

  Returns:
    (prefix, reader): TensorFlow's CheckpointReader of the prefix.

  Raises:
    errors.CheckpointError: no checkpoint there, or it cannot be read.
  """
  prefix = resolve_checkpoint(checkpoint)
  try:
    # The reader of the prefix itself: tf.train.load_checkpoint would ask
    # again whether the prefix is a folder (see resolve_checkpoint).
    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    reader.get_variable_to_shape_map()
  except (tf.errors.OpError, ValueError) as exc:
    raise errors.CheckpointError("%s: cannot read checkpoint: %s" % (
        prefix, getattr(exc, "message", exc)))
  return prefix, reader


def read_tensor(reader, prefix, name):
  """The value (NumPy) of variable `name` of checkpoint `prefix`.

  Raises:
    errors.CheckpointError: the data cannot be read; the message says
      whether the file is cut short (an incomplete download or copy) or
      fails its checksum (corrupted on disk or in transfer).
  """
  try:
    return reader.get_tensor(name)
  except (tf.errors.OpError, ValueError, IndexError) as exc:
    detail = " ".join(str(getattr(exc, "message", exc)).split())
    data_files = sorted(tf.io.gfile.glob(prefix + ".data-*")) or [prefix]
    if "checksum" in detail.lower():
      how = "its data fails the checksum: corrupted on disk or in transfer"
    else:
      # IndexError("Read less bytes than requested"): a cut .data file.
      how = "cut short by an incomplete download or copy?"
    raise errors.CheckpointError(
        "%s is damaged (%s): variable %s cannot be read (%s)" % (
            ", ".join(data_files), how, name, detail))


def variable_names(checkpoint):
  """The names of the variables in a checkpoint (a prefix or a directory).

  Raises:
    errors.CheckpointError: as `open_checkpoint`.
  """
  _, reader = open_checkpoint(checkpoint)
  return sorted(reader.get_variable_to_shape_map())


# Values are read by one restore op per chunk of about this many bytes: a
# BERT-Base teacher's load took 0.78 s read variable by variable into NumPy
# and assigned, 0.26 s so (assigning the op's outputs took 0.01 s of it), and
# at most a chunk is held twice.
_RESTORE_CHUNK_BYTES = 256 << 20


def _chunks(names, shapes, dtypes):
  """`names`, in order, in lists of about _RESTORE_CHUNK_BYTES or less."""
  chunks, size = [[]], 0
  for name in names:
    nbytes = int(np.prod(shapes[name])) * dtypes[name].size
    if chunks[-1] and size + nbytes > _RESTORE_CHUNK_BYTES:
      chunks.append([])
      size = 0
    chunks[-1].append(name)
    size += nbytes
  return [chunk for chunk in chunks if chunk]


def _restore(reader, prefix, names, dtypes):
  """The values (tensors) of variables `names` of checkpoint `prefix`.

  Raises:
    errors.CheckpointError: as `read_tensor`, naming the damaged variable;
      or, when each variable reads alone but not the chunk, with the
      restore's message.
  """
  try:
    return tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=names,
                                shape_and_slices=[""] * len(names),
                                dtypes=[dtypes[name] for name in names])
  except tf.errors.OpError as exc:
    for name in names:  # which one, and how it is damaged
      read_tensor(reader, prefix, name)
    # Each reads alone (e.g. the chunk did not fit in memory).
    raise errors.CheckpointError("%s: cannot read checkpoint: %s" % (
        prefix, " ".join(exc.message.split())))


def load_checkpoint(variables_by_name, checkpoint):
  """Assigns the variables found in a checkpoint, by name.

  All shapes are checked before anything is assigned. Names in the
  checkpoint that `variables_by_name` lacks are ignored (a student may take
  a subset of a teacher).

  Args:
    variables_by_name: name -> tf.Variable.
    checkpoint: a checkpoint prefix, or a directory (its newest checkpoint).

  Returns:
    (initialized_names, not_initialized_names), lists in the dict's order.

  Raises:
    errors.CheckpointError: one line, on a missing or unreadable checkpoint,
      or a variable whose shape (or kind of dtype) differs from the model's.
  """
  prefix, reader = open_checkpoint(checkpoint)
  shapes = reader.get_variable_to_shape_map()
  dtypes = reader.get_variable_to_dtype_map()
  initialized, not_initialized = [], []
  for name, var in variables_by_name.items():
    if name not in shapes:
      not_initialized.append(name)
      continue
    expected = var.shape.as_list()
    if list(shapes[name]) != expected:
      raise errors.CheckpointError(
          "%s: variable %s has shape %s in the checkpoint, the model expects "
          "%s" % (prefix, name, _shape_str(shapes[name]),
                  _shape_str(expected)))
    if dtypes[name].is_floating != var.dtype.is_floating:
      raise errors.CheckpointError(
          "%s: variable %s has dtype %s in the checkpoint, the model expects "
          "%s" % (prefix, name, dtypes[name].name, var.dtype.name))
    initialized.append(name)
  for names in _chunks(initialized, shapes, dtypes):
    for name, value in zip(names, _restore(reader, prefix, names, dtypes)):
      var = variables_by_name[name]
      var.assign(tf.cast(value, var.dtype))
  unused = len(set(shapes) - set(variables_by_name))
  logging.info("Loaded %d of %d variables from %s (%d checkpoint variables "
               "not used)", len(initialized), len(variables_by_name), prefix,
               unused)
  # The names (about 200 for BERT-Base) only with --verbosity=1.
  logging.debug("Initialised from the checkpoint: %s",
                ", ".join(initialized) or "(none)")
  if not_initialized:
    logging.debug("Not in the checkpoint (kept as they were): %s",
                  ", ".join(not_initialized))
  return initialized, not_initialized


def init_from_teacher_layers(student_variables, layer_indices, checkpoint):
  """Copies chosen teacher layers, embeddings and heads into a student.

  Student layer i takes teacher layer layer_indices[i]; every other variable
  is taken from the teacher variable of the same name when the teacher has
  it (a teacher without pooler or next-sentence head leaves those as they
  are).

  Args:
    student_variables: the student's name -> tf.Variable (Google's names).
    layer_indices: one teacher layer index per student layer.
    checkpoint: the teacher's checkpoint prefix or directory.

  Returns:
    (initialized_names, not_initialized_names) as `load_checkpoint`.

  Raises:
    errors.CheckpointError: no checkpoint, a layer the teacher lacks, or a
      shape mismatch (the student's sizes must be the teacher's).
  """
  teacher_layers = set()
  for name in variable_names(checkpoint):
    m = _LAYER.match(name)
    if m:
      teacher_layers.add(int(m.group(1)))
  for i in layer_indices:
    if i not in teacher_layers:
      raise errors.CheckpointError(
          "the teacher checkpoint %s has no layer %d (it has %d layers)" %
          (checkpoint, i, len(teacher_layers)))
  mapping = collections.OrderedDict()
  for name, var in student_variables.items():
    m = _LAYER.match(name)
    if m:
      name = "bert/encoder/layer_%d/%s" % (layer_indices[int(m.group(1))],
                                            m.group(2))
    mapping[name] = var
  try:
    initialized, missing = load_checkpoint(mapping, checkpoint)
  except errors.CheckpointError as exc:
    raise errors.CheckpointError("sizes differ: %s" % exc)
  logging.info("Initialised %d student variables from teacher layers %s of "
               "%s%s", len(initialized), list(layer_indices), checkpoint,
               "; %d kept their random values: %s" % (
                   len(missing), some_names(missing)) if missing else "")
  return initialized, missing


def load_companion(prefix, extra_variables):
  """Loads `extra_variables` from `prefix`.distillation, when it exists.

  A checkpoint written without layer losses has none: the variables then
  keep their initialisation (logged), as do those the companion lacks.

  Raises:
    errors.CheckpointError: the companion exists but does not fit.
  """
  extra_prefix = prefix + EXTRA_CHECKPOINT_SUFFIX
  if not _exists(extra_prefix):
    logging.warning("%s has no %s: %s start from their initialisation",
                    prefix, os.path.basename(extra_prefix),
                    some_names(extra_variables))
    return
  _, missing = load_checkpoint(extra_variables, extra_prefix)
  if missing:
    logging.warning("Not in %s, starting from their initialisation: %s",
                    extra_prefix, some_names(missing))


class CheckpointSaver(object):
  """Writes model.ckpt-<step> checkpoints and keeps the newest few.

  With extra variables (projections of the layer-wise losses and their
  optimizer slots), each model.ckpt-<step> gets a companion checkpoint
  model.ckpt-<step>.distillation, written first: model.ckpt-<step> itself
  stays a BERT checkpoint under Google's names.
  """

  def __init__(self, directory, variables_by_name, keep,
               extra_variables=None):
    """Args: directory (any tf.io.gfile path), name -> variable, how many
    checkpoints to keep, optional name -> variable of the companion."""
    self.directory = directory
    self.variables_by_name = variables_by_name
    self.keep = keep
    self.extra_variables = extra_variables

  def prefix(self, step):
    """The checkpoint prefix of `step`."""
    return os.path.join(self.directory, "%s-%d" % (CHECKPOINT_BASENAME, step))

  def save(self, step):
    """Saves all variables as <directory>/model.ckpt-<step>[.distillation].
    """
    prefix = self.prefix(step)
    start = time.time()
    if self.extra_variables:
      save_checkpoint(self.extra_variables, prefix + EXTRA_CHECKPOINT_SUFFIX)
    save_checkpoint(self.variables_by_name, prefix)
    write_checkpoint_index(self.directory, prefix)
    if self._remove_old():
      # Drops the removed ones from the state file's list.
      write_checkpoint_index(self.directory, prefix)
    logging.info("Saved checkpoint %s (%.1f s)", prefix, time.time() - start)
    return prefix

  def steps(self):
    """Steps of the model.ckpt-<step> checkpoints present, ascending."""
    pattern = re.compile(re.escape(CHECKPOINT_BASENAME) + r"-(\d+)\.index$")
    found = set()
    for path in tf.io.gfile.glob(os.path.join(
        self.directory, CHECKPOINT_BASENAME + "-*.index")):
      m = pattern.match(os.path.basename(path))
      if m:
        found.add(int(m.group(1)))
    return sorted(found)

  def _remove_old(self):
    """Removes all but the newest `keep` checkpoints; returns their steps."""
    removed = self.steps()[:-self.keep]
    for step in removed:
      for path in tf.io.gfile.glob(self.prefix(step) + ".*"):
        tf.io.gfile.remove(path)
    return removed
