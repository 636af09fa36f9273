"""Reading the stage files: record schemas, parsing and validation.

The feature names, dtypes and lengths of the records that pass between the
stages are written out in docs/formats.md; the names live in
record_format.py (which also writes records without TensorFlow). Teacher
features are position-major: the K values of masked position 0 come
first, then those of position 1, and so on.
"""

import collections
import re

import numpy as np
import tensorflow as tf

from bert_distill.lib import errors
from bert_distill.lib import record_format


def stage3_lengths(max_seq_length, max_predictions_per_seq):
  """Feature name -> length for stage-III records."""
  lengths = collections.OrderedDict()
  for name in record_format.SEQUENCE_FEATURES:
    lengths[name] = max_seq_length
  for name in record_format.PREDICTION_FEATURES:
    lengths[name] = max_predictions_per_seq
  lengths[record_format.NEXT_SENTENCE_LABELS] = 1
  return lengths


class Packed(int):
  """The length of a feature stored as one bytes value (compact labels).

  An int (the number of values, as for the other features) that also
  knows the values' little-endian dtype (record_format.COMPACT_DTYPES).
  """

  def __new__(cls, n, dtype):
    self = super(Packed, cls).__new__(cls, n)
    self.dtype = np.dtype(dtype)
    return self

  @property
  def num_bytes(self):
    return int(self) * self.dtype.itemsize


def teacher_lengths(max_predictions_per_seq, truncation_factor, vocab_size,
                    compact=False):
  """Feature name -> length of the teacher features of stage-IV records.

  With `compact`, the lengths are `Packed` (float16 probabilities, uint16
  ids: produce_teacher_labels.py --compact_labels).
  """
  if truncation_factor > 0:
    n = max_predictions_per_seq * truncation_factor
    names = (record_format.TRUNCATED_PROBS, record_format.TOP_K_INDICES)
  else:
    if not vocab_size:
      raise ValueError("vocab_size is needed for full teacher distributions")
    n = max_predictions_per_seq * vocab_size
    names = (record_format.FULL_PROBS,)
  return collections.OrderedDict(
      (name, Packed(n, record_format.COMPACT_DTYPES[name]) if compact else n)
      for name in names)


def stage4_lengths(max_seq_length, max_predictions_per_seq, truncation_factor,
                   vocab_size=None, compact=False):
  """Feature name -> length for stage-IV records (see `teacher_lengths`)."""
  lengths = stage3_lengths(max_seq_length, max_predictions_per_seq)
  lengths.update(teacher_lengths(max_predictions_per_seq, truncation_factor,
                                 vocab_size, compact))
  return lengths


def is_compact(lengths):
  """True when `lengths` expects compact teacher labels."""
  return any(isinstance(n, Packed) for n in lengths.values())


def match_label_form(lengths, paths):
  """`lengths` with its teacher features in the form the files hold.

  Stage-IV files hold float32/int64 labels, or compact ones (bytes values:
  produce_teacher_labels.py --compact_labels); a reader takes either. The
  first record of the first of `paths` that holds one decides (stage-III
  files change nothing); `validate_file` then holds every file to that
  form.
  """
  found = next((f for f in map(read_first_example, paths) if f is not None),
               {})
  compact = any(found.get(name, (None,))[0] == "bytes_list"
                for name in record_format.TEACHER_FEATURES if name in lengths)
  if compact == is_compact(lengths):
    return lengths
  matched = collections.OrderedDict()
  for name, n in lengths.items():
    if name in record_format.TEACHER_FEATURES:
      n = Packed(n, record_format.COMPACT_DTYPES[name]) if compact else int(n)
    matched[name] = n
  return matched


def feature_spec(lengths):
  """`tf.io.parse_example` spec for a feature name -> length map."""
  spec = {}
  for name, n in lengths.items():
    if isinstance(n, Packed):
      spec[name] = tf.io.FixedLenFeature([], tf.string)
      continue
    dtype = tf.float32 if name in record_format.FLOAT_FEATURES else tf.int64
    spec[name] = tf.io.FixedLenFeature([n], dtype)
  return spec


def read_first_example(path):
  """Returns feature name -> (kind, length) of the first record of a file.

  kind is the tf.train.Feature field ("int64_list", "float_list",
  "bytes_list"); length the number of values, for bytes_list the number
  of bytes of its values.
  """
  try:
    it = iter(tf.data.TFRecordDataset(path).take(1))
    raw = next(it, None)
  except tf.errors.OpError as exc:
    raise errors.RecordMismatchError(
        "%s: not a readable TFRecord file (%s)" %
        (path, exc.message.splitlines()[0]))
  if raw is None:
    return None
  example = tf.train.Example()
  try:
    example.ParseFromString(raw.numpy())
  except Exception:  # pylint: disable=broad-except
    raise errors.RecordMismatchError(
        "%s: record is not a tf.train.Example" % path)
  found = {}
  for name, feat in example.features.feature.items():
    kind = feat.WhichOneof("kind")
    values = getattr(feat, kind).value if kind else []
    found[name] = (kind, sum(len(v) for v in values)
                   if kind == "bytes_list" else len(values))
  return found


def _describe_flags(name, flags):
  if name in record_format.TEACHER_FEATURES:
    # Their length is max_predictions_per_seq * (K or vocab_size).
    named = ["--%s=%s" % (key, flags[key]) for key in
             ("max_predictions_per_seq", "truncation_factor") if key in flags]
    return " (%s)" % ", ".join(named) if named else ""
  for key in ("max_seq_length", "max_predictions_per_seq",
              "truncation_factor"):
    if key in flags and (
        (key == "max_seq_length" and
         name in record_format.SEQUENCE_FEATURES) or
        (key == "max_predictions_per_seq" and
         name not in record_format.SEQUENCE_FEATURES and
         name != record_format.NEXT_SENTENCE_LABELS) or
        (key == "truncation_factor" and
         name in record_format.TEACHER_FEATURES)):
      return " (--%s=%s)" % (key, flags[key])
  return ""


def validate_file(path, lengths, flags=None):
  """Checks the first record of `path` against the expected feature lengths.

  Args:
    path: a TFRecord file.
    lengths: feature name -> expected length (from stage3_lengths /
      stage4_lengths).
    flags: optional dict of the reader's flag values, named in the error.

  Returns:
    True if the file holds records, False if it is empty.

  Raises:
    errors.RecordMismatchError: one line naming the file, the feature, what
      was found and what was expected (errors.StageThreeRecordsError when
      the teacher's features are missing altogether).
  """
  flags = flags or {}
  found = read_first_example(path)
  if found is None:
    return False
  teacher = record_format.TEACHER_FEATURES
  for name, n in lengths.items():
    if name not in found:
      if name in teacher:
        present = [t for t in teacher if t in found]
        if present:
          got = ", ".join("%s of length %d" % (t, found[t][1])
                          for t in present)
          raise errors.RecordMismatchError(
              "%s: records hold %s, but --truncation_factor=%s expects %s "
              "of length %d" % (path, got, flags.get("truncation_factor", "?"),
                                name, n))
        raise errors.StageThreeRecordsError(
            "%s: records have no teacher feature %r: expected stage-IV "
            "records from produce_teacher_labels.py, found stage-III records"
            % (path, name))
      raise errors.RecordMismatchError(
          "%s: records have no feature %r (found: %s)" %
          (path, name, ", ".join(sorted(found))))
    if isinstance(n, Packed) != (found[name][0] == "bytes_list"):
      raise errors.RecordMismatchError(
          "%s: feature %s holds %s teacher labels, expected %s ones (the "
          "files of one run come from one produce_teacher_labels.py "
          "setting, --compact_labels or not)" % (
              path, name,
              "compact" if found[name][0] == "bytes_list" else "float32",
              "compact" if isinstance(n, Packed) else "float32"))
    if isinstance(n, Packed):
      if found[name][1] != n.num_bytes:
        raise errors.RecordMismatchError(
            "%s: compact feature %s has %d bytes, expected %d (%d values)%s"
            % (path, name, found[name][1], n.num_bytes, n,
               _describe_flags(name, flags)))
    elif found[name][1] != n:
      raise errors.RecordMismatchError(
          "%s: feature %s has length %d, expected %d%s" %
          (path, name, found[name][1], n, _describe_flags(name, flags)))
  return True


def validate_files(paths, lengths, flags=None):
  """`validate_file` on each path; raises if no file holds any record."""
  nonempty = [p for p in paths if validate_file(p, lengths, flags)]
  if not nonempty:
    raise errors.RecordMismatchError("no records in %s" % ", ".join(paths))
  return nonempty


# Features holding word ids: each must be below the vocab_size of the model
# that reads them (a gather beyond it fails late on a CPU and returns zeros
# on a GPU).
WORD_ID_FEATURES = ("input_ids", "masked_lm_ids", record_format.TOP_K_INDICES)


def check_word_ids(paths, vocab_size, whose, names=WORD_ID_FEATURES,
                   max_records=1000):
  """Checks the word ids of the first records of each file.

  Reads up to `max_records` records of each file (a sample: cheap on a
  whole corpus) and the features of `names` they hold.

  Args:
    paths: TFRecord files.
    vocab_size: ids must lie in [0, vocab_size).
    whose: the model, named in the error (e.g. "the student,
      --bert_config_file").
    names: the int64 features to check (absent ones are skipped).
    max_records: records read per file.

  Raises:
    errors.RecordMismatchError: one line naming the file, the record, the
      feature and the id.
    errors.DamagedFileError: a file cut or corrupt within those records.
  """
  for path in paths:
    found = read_first_example(path) or {}
    # Compact ids (bytes) are decoded; the other features are int64 lists.
    spec = {name: tf.io.VarLenFeature(
        tf.string if found.get(name, (None,))[0] == "bytes_list"
        else tf.int64) for name in names}
    try:
      for raw in tf.data.TFRecordDataset(path).take(max_records).batch(
          max_records):
        parsed = tf.io.parse_example(raw, spec)
        for name in names:
          rows, ids = _ids_by_record(parsed[name])
          bad = tf.where((ids < 0) | (ids >= vocab_size))
          if bad.shape[0]:
            first = int(bad[0][0])
            raise errors.RecordMismatchError(
                "%s: record %d (counting from 0): %s holds id %d, outside "
                "[0, %d) (vocab_size of %s)" % (
                    path, int(rows[first]), name, int(ids[first]),
                    vocab_size, whose))
    except tf.errors.OpError as exc:
      raise _damaged(path, exc)


def _ids_by_record(values):
  """(record index, id) of every id of a parsed VarLenFeature, compact
  (uint16 bytes, one value per record) or int64."""
  if values.dtype != tf.string:
    return values.indices[:, 0], values.values
  dense = tf.io.decode_raw(tf.sparse.to_dense(values, "")[:, 0], tf.uint16,
                           little_endian=True)
  rows = tf.repeat(tf.range(tf.shape(dense)[0]), tf.shape(dense)[1])
  return rows, tf.cast(tf.reshape(dense, [-1]), tf.int64)


def count_records(paths):
  """Number of records in the given TFRecord files.

  Every record is read, its framing and checksums checked.

  Raises:
    errors.DamagedFileError: naming the file and the record that is cut or
      corrupt.
  """
  return sum(check_records(p) for p in paths)


def check_records(path):
  """Reads every record of a TFRecord file; returns how many it holds.

  TensorFlow checks each record's length and CRC32C checksums as it reads.

  Raises:
    errors.DamagedFileError: one line naming the file, the index of the first
      damaged record and what is wrong with it.
  """
  try:
    return int(tf.data.TFRecordDataset(path, buffer_size=8 << 20).reduce(
        np.int64(0), lambda n, _: n + 1))
  except tf.errors.OpError as exc:
    raise _damaged(path, exc)


def _damaged(path, exc):
  """An errors.DamagedFileError for `path` naming its first damaged record."""
  good = 0
  try:
    for _ in tf.data.TFRecordDataset(path):
      good += 1
  except tf.errors.OpError as again:
    exc = again
  text = " ".join(getattr(exc, "message", str(exc)).split())
  m = re.search(r"(truncated|corrupted) record at (\d+)", text)
  if m and m.group(1) == "truncated":
    what = "is cut short at byte %s (an incomplete copy?)" % m.group(2)
  elif m:
    what = "fails its checksum at byte %s (the file is corrupt)" % m.group(2)
  else:
    what = "cannot be read: %s" % re.sub(r"\{\{.*?\}\}|\[Op:.*$", "",
                                          text).strip()
  return errors.DamagedFileError("%s: record %d (counting from 0) %s" %
                                 (path, good, what))


def find_damaged_file(paths, exc):
  """The errors.DamagedFileError of the first damaged file among `paths`.

  For a DataLossError raised while reading several files at once (the error
  does not say which file): each file is read again until the damaged one
  is found. Returns an errors.DamagedFileError naming `exc` if every file reads
  whole (the damage was elsewhere).
  """
  for path in paths:
    try:
      check_records(path)
    except errors.DamagedFileError as found:
      return found
  return errors.DamagedFileError("cannot read the records of %s: %s" % (
      ", ".join(paths), " ".join(getattr(exc, "message", str(exc)).split())))


def deal_files_by_size(paths, num_shards, sizes=None):
  """Whole files dealt to `num_shards` shares, balanced by size.

  The files are dealt largest first, each to the share holding the fewest
  bytes so far (ties: the lower share index; equal sizes keep their given
  order), so the shares are disjoint, together hold every file, and their
  byte totals differ by at most the largest file. With fewer files than
  shares, some shares are empty.

  Args:
    paths: files.
    num_shards: number of shares (e.g. Horovod processes).
    sizes: their sizes in bytes; by default from the file system (nothing
      is opened).

  Returns:
    A list of `num_shards` lists of paths, each in the given order.
  """
  if sizes is None:
    sizes = [tf.io.gfile.stat(p).length for p in paths]
  loads = [0] * num_shards
  chosen = [[] for _ in range(num_shards)]
  for i in sorted(range(len(paths)), key=lambda i: (-sizes[i], i)):
    shard = min(range(num_shards), key=lambda s: (loads[s], s))
    loads[shard] += sizes[i]
    chosen[shard].append(i)
  return [[paths[i] for i in sorted(share)] for share in chosen]


def split_files_by_size(paths, num_shards):
  """`deal_files_by_size` of the non-empty files, or None if too few.

  Empty files (no records) are left out; None when fewer than `num_shards`
  files hold records (every share must have one).
  """
  sizes = [tf.io.gfile.stat(p).length for p in paths]
  nonempty = [i for i, size in enumerate(sizes) if size > 0]
  if len(nonempty) < num_shards:
    return None
  return deal_files_by_size([paths[i] for i in nonempty], num_shards,
                            [sizes[i] for i in nonempty])


# What one process reads for training: make_dataset(files, ...,
# num_shards=record_shards, shard_index=record_shard_index).
TrainingShare = collections.namedtuple(
    "TrainingShare", "files record_shards record_shard_index")


def training_share(paths, num_shards, shard_index):
  """What one of `num_shards` processes reads of the training files.

  With at least as many non-empty files as processes, each process reads
  whole files of its own (`split_files_by_size`): reading does not grow with
  the number of processes. With fewer, every process reads every file and
  keeps record i when i % num_shards == shard_index.

  Returns:
    A `TrainingShare`: files, and the record split to apply to them
    (record_shards 1 when the files are this process's own).
  """
  if num_shards > 1:
    shares = split_files_by_size(paths, num_shards)
    if shares is not None:
      return TrainingShare(shares[shard_index], 1, 0)
  return TrainingShare(list(paths), num_shards, shard_index)


# The input pipelines' fixed parallelism (see `without_autotune`): records
# parsed by this many threads, batches made ahead of the model.
PARALLEL_CALLS = 2
PREFETCH_BATCHES = 2


def without_autotune(dataset):
  """`dataset` with tf.data's autotuning off (its parallelism as given).

  With autotuning on, reaching the end of an iterator (or deleting one)
  waited for the autotuner's thread, up to 19 s on a busy machine: stage IV
  with two processes on 2 cores finished 6 of 16 files 3-19 s late, none of
  24 with autotuning off. These pipelines parse small records for a model
  that costs far more, so fixed parallelism (PARALLEL_CALLS,
  PREFETCH_BATCHES) loses nothing.
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return dataset.with_options(options)


def parse_fn(lengths):
  """A function parsing a batch of serialised examples into int32/float32."""
  spec = feature_spec(lengths)

  def _parse(serialized):
    parsed = tf.io.parse_example(serialized, spec)
    for name, n in lengths.items():
      if isinstance(n, Packed):  # float16 -> float32, uint16 -> int32
        values = tf.io.decode_raw(parsed[name], tf.as_dtype(n.dtype.type),
                                  little_endian=True)
        parsed[name] = tf.cast(tf.reshape(values, [-1, int(n)]),
                               tf.float32 if n.dtype.kind == "f" else tf.int64)
    return {k: (tf.cast(v, tf.int32) if v.dtype == tf.int64 else v)
            for k, v in parsed.items()}

  return _parse




def make_dataset(paths, lengths, batch_size, is_training, num_shards=1,
                 shard_index=0, shuffle_buffer=10000, seed=None,
                 drop_remainder=None, repeat=None, skip_batches=0):
  """A batched, parsed tf.data pipeline over TFRecord files.

  Training: files shuffled and read interleaved, records shuffled, repeated,
  fixed-size batches. Evaluation: files in order, no shuffle, one pass.

  Args:
    paths: TFRecord files.
    lengths: feature name -> length (stage3_lengths / stage4_lengths).
    batch_size: examples per batch.
    is_training: see above.
    num_shards, shard_index: read only records i with i % num_shards ==
      shard_index of all `paths` (disjoint shares whose union is all; see
      `training_share` for Horovod ranks, which read whole files of their
      own when there are enough files).
    shuffle_buffer: records in the shuffle buffer when training.
    seed: shuffle seed (None: random).
    drop_remainder: defaults to is_training.
    repeat: defaults to is_training.
    skip_batches: batches to drop from the start, before they are parsed
      (resuming a run: with a fixed seed the pipeline then continues exactly
      where the interrupted run stopped).
  """
  if drop_remainder is None:
    drop_remainder = is_training
  if repeat is None:
    repeat = is_training
  files = tf.data.Dataset.from_tensor_slices(list(paths))
  if num_shards > 1:
    # Shard records (not files) so each rank gets a disjoint share even when
    # there are fewer files than ranks. Files are read in their given order
    # so that the shares do not depend on any shuffle; records are shuffled
    # after sharding.
    ds = files.flat_map(tf.data.TFRecordDataset).shard(num_shards,
                                                       shard_index)
  elif is_training:
    files = files.shuffle(len(paths), seed=seed,
                          reshuffle_each_iteration=True)
    cycle_length = min(4, len(paths))
    ds = files.interleave(tf.data.TFRecordDataset,
                          cycle_length=cycle_length,
                          num_parallel_calls=min(PARALLEL_CALLS,
                                                 cycle_length),
                          deterministic=seed is not None)
  else:
    ds = files.flat_map(tf.data.TFRecordDataset)
  if is_training:
    # Shuffle before repeating: each epoch is a fresh permutation, so every
    # record is read once per epoch (a buffer larger than the data would
    # otherwise mix epochs and repeat some records before others are read).
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  if skip_batches:
    ds = ds.skip(skip_batches)
  ds = ds.map(parse_fn(lengths), num_parallel_calls=PARALLEL_CALLS)
  return without_autotune(ds.prefetch(PREFETCH_BATCHES))
