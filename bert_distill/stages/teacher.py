"""The teacher's soft labels: batched BERT inference at the masked positions.

Used by produce_teacher_labels.py (stage IV), which writes the labels to disk,
and usable by any training loop that runs the teacher online (stage V):

  labeler = teacher.TeacherLabeler(config, "uncased_L-12_H-768_A-12/"
                                   "bert_model.ckpt", truncation_factor=10)
  probs, indices = labeler(features)     # a parsed stage-III batch

`probs` is the teacher's softmax (float32) at each masked position: with
K = truncation_factor > 0 its K largest entries in descending order, float32
[B, P, K], and `indices` their vocabulary ids, int32 [B, P, K]; with K = 0 the
whole distribution, float32 [B, P, vocab_size], and `indices` is None.
Padding positions (masked_lm_weights 0) are labelled like the others: the
labels are the teacher's distribution at whatever position they point to.

`soft_labels(model, ...)` is the same computation as a plain function of a
`modeling.BertPretrainingModel`, to call inside another `tf.function`;
`load_teacher_checkpoint` loads a teacher and checks that every variable the
labels depend on (embeddings, encoder, masked-LM head) came from the
checkpoint.

`label_records` is stage IV's loop: a tf.data pipeline reads and parses the
records in fixed-size batches (the last one padded, so the compiled function
is traced once), the teacher labels each batch, and a writer thread turns the
previous batch into output records while the next one is computed. Each
output record is the input record's own serialized example, parsed and
re-serialised with the teacher features added, so every input feature is
copied value for value.
"""

import collections
import concurrent.futures
import hashlib
import json
import os
import re
import typing

from absl import logging
import numpy as np
import tensorflow as tf

from bert_distill.lib import checkpoints
from bert_distill import cli
from bert_distill.lib import hardware
import modeling
from bert_distill.lib import outputs
from bert_distill.lib import record_format
from bert_distill.lib import records

# The features the teacher reads from a stage-III record.
TEACHER_INPUTS = record_format.SEQUENCE_FEATURES + ("masked_lm_positions",)

# Variables the labels depend on; all must come from the checkpoint. The
# pooler and the next-sentence head (bert/pooler, cls/seq_relationship) do
# not influence the masked-LM distribution and may be absent (e.g. a model
# converted from a Hugging Face BertForMaskedLM).
NEEDED_VARIABLE_PREFIXES = ("bert/embeddings/", "bert/encoder/",
                            "cls/predictions/")

# Batches handed to the writer thread and not yet written.
_WRITE_QUEUE_DEPTH = 2

# A bfloat16 teacher's K labels come from the K + _CANDIDATE_MARGIN words with
# the highest bfloat16 logits, whose logits are then computed in float32
# (`top_k_two_pass`). bfloat16 rounds products below _ROUGH_LIMIT = 32 to
# within 1/16: a word outside the rough best K + 16 has at least 16 words
# within 1/8 of its logit, so about the same probability. Batches with larger
# products take the float32 projection; so do K + 16 above vocab_size / 64
# (the candidates' float32 embeddings, [B * P, K + 16, H], would outgrow the
# logits they save).
_CANDIDATE_MARGIN = 16
_ROUGH_LIMIT = 32.0


def two_pass_applies(truncation_factor, vocab_size):
  """Whether `top_k_two_pass` serves a bfloat16 teacher with this K."""
  return 0 < truncation_factor <= vocab_size // 64 - _CANDIDATE_MARGIN


def check_truncation_factor(truncation_factor, vocab_size,
                            flag_name="--truncation_factor"):
  """Raises a `cli.UserError` unless 0 <= K <= vocab_size."""
  if truncation_factor < 0:
    raise cli.UserError("%s must not be negative, got %d" %
                        (flag_name, truncation_factor))
  if truncation_factor > vocab_size:
    raise cli.UserError(
        "%s=%d is larger than the teacher's vocabulary (vocab_size %d): at "
        "most vocab_size words can be kept per position (0 keeps the whole "
        "distribution)" % (flag_name, truncation_factor, vocab_size))


def require_checkpoint(checkpoint, flag_name="--init_checkpoint"):
  """Raises a `cli.UserError` if no teacher checkpoint is given."""
  if not checkpoint:
    raise cli.UserError(
        "%s is required: the teacher's checkpoint (e.g. "
        "uncased_L-12_H-768_A-12/bert_model.ckpt); a teacher with random "
        "weights gives meaningless labels" % flag_name)


def load_teacher_checkpoint(model, checkpoint, flag_name="--init_checkpoint"):
  """Loads a teacher's variables; all the labels depend on must be there.

  Args:
    model: a `modeling.BertPretrainingModel`.
    checkpoint: a checkpoint prefix (e.g. ".../bert_model.ckpt") or a
      directory (its newest checkpoint).
    flag_name: named in errors.

  Returns:
    The names of the variables initialised from the checkpoint.

  Raises:
    cli.UserError: no checkpoint given or found, a variable whose shape
      disagrees with the config, or needed variables missing from the
      checkpoint (one line, naming the checkpoint and an example).
  """
  require_checkpoint(checkpoint, flag_name)
  with cli.blame_flag(flag_name):  # errors.CheckpointError
    initialized, missing = checkpoints.load_checkpoint(
        model.variables_by_name(), checkpoint)
  require_masked_lm_variables(missing, checkpoint, flag_name, "teacher")
  return initialized


def require_masked_lm_variables(missing, checkpoint, flag_name, whose):
  """Raises unless the checkpoint gave every variable the masked LM needs.

  The embeddings, the encoder and the masked-LM head must all come from the
  checkpoint (the pooler and next-sentence head may not: a converted
  BertForMaskedLM has none). A foreign checkpoint, whose names match
  nothing, would otherwise leave a randomly initialised model.

  Args:
    missing: the model's variables the checkpoint did not have.
    checkpoint: the checkpoint, named in the message.
    flag_name: the flag that gave it.
    whose: "teacher" or "student", named in the message.

  Raises:
    cli.UserError: one line naming how many are missing and some of them.
  """
  needed = [name for name in missing
            if name.startswith(NEEDED_VARIABLE_PREFIXES)]
  if needed:
    raise cli.UserError(
        "%s: checkpoint %s lacks %d of the %s's variables, e.g. %s (does "
        "--bert_config_file describe this checkpoint's model?)" %
        (flag_name, checkpoint, len(needed), whose,
         ", ".join(needed[:3])))


class SoftLabels(typing.NamedTuple):
  """The teacher's distribution at the masked positions (`soft_labels`).

    probs      K > 0: float32 [B, P, K], descending; K = 0: [B, P, V].
    indices    K > 0: int32 [B, P, K] vocabulary ids; K = 0: None.
    internals  the teacher's `modeling.EncoderInternals` of the same
               forward pass with return_internals=True, else None.
  """
  probs: tf.Tensor
  indices: typing.Optional[tf.Tensor]
  internals: typing.Optional[modeling.EncoderInternals]


def top_k_two_pass(model, hidden, k, rough_table):
  """The top-k of the masked-LM distribution, searched in bfloat16.

  Every word's logit is computed from bfloat16 operands (the head's
  float32 transform of `hidden` rounded, and `rough_table`), the
  k + _CANDIDATE_MARGIN highest again in float32 from the float32 word
  embeddings. The labels are the k best of those exact logits; the softmax's
  normaliser sums the candidates' exact terms and every other word's rough
  one. A batch whose bfloat16 products reach _ROUGH_LIMIT in magnitude
  takes the float32 projection instead. Against a float64 head on the same
  hidden states the tests find the same top K and probabilities within
  2e-3; the test's bfloat16 teacher agreed with float32 labels as closely
  as with a float32 projection (top-1 word 0.9941, top-10 overlap 0.9936 of
  19,968 real positions, both ways). `TeacherLabeler` uses it for bfloat16
  teachers (`two_pass_applies`; the projection is 5% of BERT-Base's work).

  Args:
    model: a `modeling.BertPretrainingModel` whose head_compute_dtype is
      float32.
    hidden: the encoder's output at the masked positions, [B, P, H].
    k: K > 0, K + _CANDIDATE_MARGIN <= vocab_size.
    rough_table: the word embeddings [V, H] in bfloat16.

  Returns:
    (probs float32 [B, P, k] descending, indices int32 [B, P, k]).
  """
  x = model.masked_lm_transform(hidden)
  table, bias = model.bert.embedding_table, model.output_bias
  products = tf.cast(tf.matmul(tf.cast(x, rough_table.dtype), rough_table,
                               transpose_b=True), tf.float32)

  def two_pass():
    rough = tf.nn.bias_add(products, bias)
    _, candidates = tf.math.top_k(rough, k=k + _CANDIDATE_MARGIN)
    exact = tf.einsum("nh,nch->nc", x, tf.gather(table, candidates))
    exact += tf.gather(bias, candidates)
    peak = tf.reduce_max(exact, axis=-1, keepdims=True)

    def total(logits):
      return tf.reduce_sum(tf.exp(logits - peak), axis=-1, keepdims=True)

    normaliser = (total(rough) - total(tf.gather(rough, candidates,
                                                 batch_dims=1)) +
                  total(exact))
    log_probs, best = tf.math.top_k(exact - peak - tf.math.log(normaliser),
                                    k=k)
    return tf.exp(log_probs), tf.gather(candidates, best, batch_dims=1)

  def float32_projection():
    logits = tf.nn.bias_add(tf.matmul(x, table, transpose_b=True), bias)
    probs, indices = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=k)
    return probs, indices

  probs, indices = tf.cond(
      tf.reduce_max(tf.abs(products)) < _ROUGH_LIMIT,
      two_pass, float32_projection)
  shape = tf.concat([tf.shape(hidden)[:2], [k]], axis=0)
  return tf.reshape(probs, shape), tf.reshape(indices, shape)


def soft_labels(model, input_ids, input_mask, segment_ids,
                masked_lm_positions, truncation_factor,
                return_internals=False, rough_table=None):
  """The teacher's distribution at the masked positions of a batch.

  The vocabulary projection is computed only at the gathered positions (the
  model does that). Call it inside a `tf.function`.

  Args:
    model: a `modeling.BertPretrainingModel`.
    input_ids, input_mask, segment_ids: int [B, S].
    masked_lm_positions: int [B, P].
    truncation_factor: K; 0 for the whole distribution.
    return_internals: also keep the teacher's `modeling.EncoderInternals`
      of the same forward pass (for layer-wise distillation).
    rough_table: (optional) the word embeddings in bfloat16: without
      internals and where `two_pass_applies`, the top K is found by
      `top_k_two_pass`.

  Returns:
    `SoftLabels`.
  """
  if rough_table is not None and not return_internals and two_pass_applies(
      truncation_factor, model.config.vocab_size):
    encoder = model.bert(input_ids, input_mask, segment_ids, training=False,
                         output_positions=masked_lm_positions)
    probs, indices = top_k_two_pass(model, encoder.sequence_output,
                                    truncation_factor, rough_table)
    return SoftLabels(probs, indices, None)
  # Without internals, the last layer runs at the masked positions only.
  outputs = model(input_ids, input_mask, segment_ids, masked_lm_positions,
                  training=False, return_internals=return_internals,
                  masked_lm_only=not return_internals)
  probs = tf.nn.softmax(tf.cast(outputs.masked_lm_logits, tf.float32),
                        axis=-1)
  indices = None
  if truncation_factor > 0:
    probs, indices = tf.math.top_k(probs, k=truncation_factor, sorted=True)
  return SoftLabels(probs, indices, outputs.internals)


class TeacherLabeler(tf.Module):
  """A loaded teacher and its compiled labelling function.

  Attributes:
    config: the teacher's `modeling.BertConfig`.
    model: the `modeling.BertPretrainingModel`.
    truncation_factor: K (0: whole distribution).
    compute_dtype: tf.float32 or tf.bfloat16 (the model's matmuls).
  """

  def __init__(self, config, checkpoint, truncation_factor, use_xla=False,
               flag_name="--init_checkpoint", compute_dtype=tf.float32):
    """Builds the teacher and loads its checkpoint.

    Args:
      config: a `modeling.BertConfig`.
      checkpoint: the teacher's checkpoint prefix or directory (required).
      truncation_factor: K, 0 <= K <= config.vocab_size.
      use_xla: compile the labelling function with XLA (jit_compile).
      flag_name: the flag named in checkpoint errors.
      compute_dtype: tf.float32, or tf.bfloat16 to run the encoder and the
        vocabulary projection in bfloat16 (the softmax and top-K stay
        float32, and so do the labels). Without bfloat16 units (see
        `hardware`) it works, slower, and a warning is logged once.

    Raises:
      cli.UserError: see `check_truncation_factor` and
        `load_teacher_checkpoint`.
    """
    super(TeacherLabeler, self).__init__(name="teacher_labeler")
    check_truncation_factor(truncation_factor, config.vocab_size)
    self.config = config
    self.truncation_factor = truncation_factor
    self.compute_dtype = tf.as_dtype(compute_dtype)
    if self.compute_dtype not in (tf.float32, tf.bfloat16):
      raise ValueError("the teacher computes in float32 or bfloat16, not %s"
                       % self.compute_dtype.name)
    if self.compute_dtype == tf.bfloat16:
      support = hardware.warn_if_bfloat16_is_slow("The teacher")
      logging.info("The teacher computes in bfloat16 (%s)", support.what)
    # The masked-LM head stays float32 (its vocabulary search aside, see
    # below): with bfloat16 logits (8-bit mantissa) the top-1 word changed
    # at 1.3% of the real positions measured, against 0.6% with float32 ones.
    # (Zeros until the checkpoint is loaded, a line below: drawing random
    # values first cost seconds of every start at BERT-Base size. The
    # pooler and next-sentence head, which no label uses, may stay zero.)
    self.model = modeling.BertPretrainingModel(
        config, compute_dtype=self.compute_dtype,
        head_compute_dtype=tf.float32, random_init=False)
    load_teacher_checkpoint(self.model, checkpoint, flag_name)
    self.model.bert.freeze_kernels()
    # A bfloat16 teacher searches its top K in bfloat16 (`top_k_two_pass`):
    # this is the table for that search (None: no such search).
    self.rough_table = None
    if self.compute_dtype == tf.bfloat16 and two_pass_applies(
        truncation_factor, config.vocab_size):
      self.rough_table = tf.Variable(
          tf.cast(self.model.bert.embedding_table, tf.bfloat16),
          trainable=False, name="rough_word_embeddings")
    self._label = tf.function(self._label_batch, jit_compile=use_xla,
                              autograph=False)

  def _label_batch(self, input_ids, input_mask, segment_ids,
                   masked_lm_positions):
    labels = soft_labels(self.model, input_ids, input_mask, segment_ids,
                         masked_lm_positions, self.truncation_factor,
                         rough_table=self.rough_table)
    return labels.probs, labels.indices

  def __call__(self, features):
    """The teacher's soft labels for a parsed batch.

    Args:
      features: dict with int input_ids, input_mask, segment_ids [B, S] and
        masked_lm_positions [B, P] (other keys are ignored), e.g. a batch of
        `records.make_dataset`.

    Returns:
      (probs, indices) as in `SoftLabels`. The function is traced once per
      batch shape.
    """
    return self._label(*[tf.convert_to_tensor(features[name])
                         for name in TEACHER_INPUTS])

  def tracing_count(self):
    """How many times the labelling function has been traced."""
    return self._label.experimental_get_tracing_count()


def manifest_path(output_path):
  """The file beside a stage IV output that records what made it."""
  head, tail = os.path.split(output_path)
  return os.path.join(head, ".%s.made-by.json" % tail)


def _file_identity(path):
  """(real path, size, modification time in ns) of a local or remote file."""
  if "://" in path:
    stat = tf.io.gfile.stat(path)
    return [path, stat.length, stat.mtime_nsec]
  stat = os.stat(path)
  return [os.path.realpath(path), stat.st_size, stat.st_mtime_ns]


def teacher_fingerprint(checkpoint, bert_config_file):
  """What identifies a teacher: the sha256 of its checkpoint's .index (which
  holds every tensor's checksum, so it changes with any weight) and of its
  config file. A pair of hex strings."""
  prefix = checkpoints.resolve_checkpoint(checkpoint)
  with tf.io.gfile.GFile(prefix + ".index", "rb") as f:
    index_digest = hashlib.sha256(f.read()).hexdigest()
  with tf.io.gfile.GFile(bert_config_file, "rb") as f:
    config_digest = hashlib.sha256(f.read()).hexdigest()
  return index_digest, config_digest


def labels_manifest(input_files, fingerprint, truncation_factor,
                    compute_dtype, max_seq_length, max_predictions_per_seq,
                    compact=False):
  """What a stage IV output is made of (a dict of JSON values).

  The inputs by identity (path, size, modification time); the teacher by
  its `teacher_fingerprint`; and the settings the labels depend on. Two
  runs whose manifests are equal write the same labels.
  """
  return collections.OrderedDict([
      ("inputs", [_file_identity(p) for p in input_files]),
      ("teacher_checkpoint_index_sha256", fingerprint[0]),
      ("teacher_config_sha256", fingerprint[1]),
      ("truncation_factor", truncation_factor),
      ("compute_dtype", tf.as_dtype(compute_dtype).name),
      ("max_seq_length", max_seq_length),
      ("max_predictions_per_seq", max_predictions_per_seq),
      ("compact_labels", bool(compact))])


# Manifest keys added after the first release, and the value that a record
# written before them implies.
_LATER_KEYS = {"compact_labels": False}
_NO_RECORD = "no record of what made it"


def read_manifest(output_path):
  """The manifest recorded beside a stage IV output, or None (none, not
  readable, or not a JSON object)."""
  try:
    with tf.io.gfile.GFile(manifest_path(output_path)) as f:
      recorded = json.load(f)
  except (tf.errors.OpError, ValueError):
    return None
  return recorded if isinstance(recorded, dict) else None


def manifest_differences(output_path, manifest, recorded=None):
  """What differs between `manifest` and the one recorded for the output
  (`recorded`, read from beside it if not given): a list of its keys,
  [_NO_RECORD] when there is none."""
  if recorded is None:
    recorded = read_manifest(output_path)
  if recorded is None:
    return [_NO_RECORD]
  names = {"inputs": "the input files",
           "teacher_checkpoint_index_sha256": "the teacher checkpoint",
           "teacher_config_sha256": "the teacher config"}
  return [names.get(key, key) for key, value in manifest.items()
          if json.loads(json.dumps(value)) !=
          recorded.get(key, _LATER_KEYS.get(key))]


def why_relabel(output_path, manifest):
  """Why the output cannot be kept for `manifest`; None when it can.

  An output is renamed into place whole and its manifest after it, so an
  output whose manifest matches was complete when written; it is kept if
  it still has the size recorded then (nothing is read but the manifest).
  """
  if not tf.io.gfile.exists(output_path):
    return "missing"
  recorded = read_manifest(output_path)
  if recorded is None:
    return _NO_RECORD
  differences = manifest_differences(output_path, manifest, recorded)
  if differences:
    return "made by other settings: " + ", ".join(differences)
  size = tf.io.gfile.stat(output_path).length
  if recorded.get("output_bytes") != size:
    return "%d bytes, %s when written" % (size,
                                         recorded.get("output_bytes", "?"))
  return None


def write_manifest(path, manifest):
  """Writes `manifest` as JSON to `path` (a temporary: see atomic_outputs)."""
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(manifest, f, indent=1)
    f.write("\n")


def write_labelled_file(labeler, input_files, output_path, manifest,
                        max_seq_length, max_predictions_per_seq, batch_size,
                        total, compact=False):
  """Labels `input_files` into `output_path`, its manifest beside it.

  Both are written under temporary names and renamed when complete, the
  output first: an output without its manifest is labelled again (an older
  manifest is removed before anything is written). The manifest records
  `manifest`, the records written and the output's size (`why_relabel`).

  Returns:
    The number of records written (`total`).

  Raises:
    cli.UserError: see `label_records`; or fewer or more records than
      `total` were read.
  """
  if tf.io.gfile.exists(manifest_path(output_path)):
    try:
      tf.io.gfile.remove(manifest_path(output_path))
    except tf.errors.OpError as exc:
      raise cli.UserError("%s: cannot remove the old record of what made "
                          "it: %s" % (manifest_path(output_path),
                                      exc.message.splitlines()[0]))
  with outputs.atomic_outputs([output_path, manifest_path(output_path)]) as (
      tmp, tmp_manifest):
    written = label_records(labeler, input_files, tmp, max_seq_length,
                            max_predictions_per_seq, batch_size, total=total,
                            compact=compact)
    if written != total:
      raise cli.UserError("%s: wrote %d records but the input holds %d" %
                          (output_path, written, total))
    write_manifest(tmp_manifest, dict(
        manifest, records=written,
        output_bytes=tf.io.gfile.stat(tmp).length))
  return written


def add_teacher_features(serialized, probs, indices=None, compact=False):
  """The record `serialized` with the teacher features added.

  Args:
    serialized: a serialized tf.train.Example (a stage-III record).
    probs: float32 [P, K] (with `indices`) or [P, V].
    indices: int [P, K] or None (full distribution).
    compact: store each feature as one bytes value, the little-endian array
      of record_format.COMPACT_DTYPES (float16 probabilities, uint16 ids;
      ids must be below 65536), instead of float32 and int64 lists.

  Returns:
    The serialized tf.train.Example: every feature of `serialized` with its
    values unchanged, plus truncated_masked_lm_probs and top_k_indices (or
    masked_lm_probs), flattened position-major. Teacher features already in
    the input are replaced.
  """
  example = tf.train.Example.FromString(serialized)
  feature = example.features.feature
  if indices is not None:
    probs_name = record_format.TRUNCATED_PROBS
    index_feature = feature[record_format.TOP_K_INDICES]
    index_feature.Clear()
    if compact:
      index_feature.bytes_list.value.append(np.asarray(
          indices, record_format.COMPACT_DTYPES[
              record_format.TOP_K_INDICES]).tobytes())
    else:
      index_feature.int64_list.value.extend(np.asarray(indices).reshape(-1))
  else:
    probs_name = record_format.FULL_PROBS
  probs_feature = feature[probs_name]
  probs_feature.Clear()
  if compact:
    probs_feature.bytes_list.value.append(np.asarray(
        probs, record_format.COMPACT_DTYPES[probs_name]).tobytes())
  else:
    probs_feature.float_list.MergeFromString(
        record_format.packed_float_list(np.asarray(probs).reshape(-1)))
  return example.SerializeToString()


def _pad_rows(tensor, rows):
  """Pads a [n, d] tensor with zero rows to [rows, d]."""
  padded = tf.pad(tensor, [[0, rows - tf.shape(tensor)[0]], [0, 0]])
  padded.set_shape([rows, tensor.shape[1]])
  return padded


def _range_check(values, files, name, limit, what):
  """An assertion that 0 <= values < limit in every row, naming the file."""
  ok = tf.reduce_all((values >= 0) & (values < limit), axis=1)
  first_bad = tf.argmin(tf.cast(ok, tf.int32))
  return tf.debugging.Assert(
      tf.reduce_all(ok),
      [files[first_bad], "%s holds a value outside [0, %d) (%s)" %
       (name, limit, what)])


def _describe_input_error(exc):
  """One line from a tf.data error: the failed range check, or the cause."""
  text = " ".join(exc.message.split())
  m = re.search(r"assertion failed: \[(.*?)\] \[(.*?)\]", text)
  if m:
    return "%s: a record's %s" % (m.group(1), m.group(2))
  text = re.sub(r"\{\{.*?\}\}|\[\[.*?\]\]|\[Op:.*$", "", text)
  return text.strip()


def teacher_input_dataset(input_files, max_seq_length, max_predictions_per_seq,
                          batch_size, config=None):
  """Batches of (serialized records, number of records, padded features).

  Files are read in order, records in order. Every batch of parsed features
  holds exactly `batch_size` rows: the last, partial batch is padded with
  all-zero rows (their labels are computed and dropped), so a compiled
  labelling function sees one shape only.

  With a teacher `config`, ids are checked against its vocab_size and
  type_vocab_size and positions against max_seq_length (an error when
  iterating, instead of an out-of-range gather, which XLA would clamp
  silently).
  """
  lengths = records.stage3_lengths(max_seq_length, max_predictions_per_seq)
  parse = records.parse_fn(collections.OrderedDict(
      (name, lengths[name]) for name in TEACHER_INPUTS))
  limits = [("masked_lm_positions", max_seq_length, "--max_seq_length")]
  if config is not None:
    limits += [("input_ids", config.vocab_size, "vocab_size of the teacher"),
               ("segment_ids", config.type_vocab_size,
                "type_vocab_size of the teacher")]

  def _prepare(files, serialized):
    parsed = parse(serialized)
    checks = [_range_check(parsed[name], files, name, limit, what)
              for name, limit, what in limits]
    with tf.control_dependencies(checks):
      features = {name: _pad_rows(parsed[name], batch_size)
                  for name in TEACHER_INPUTS}
    return serialized, tf.shape(serialized)[0], features

  def _read(path):
    records_of_file = tf.data.TFRecordDataset(path, buffer_size=8 << 20)
    return records_of_file.map(lambda record: (path, record))

  ds = tf.data.Dataset.from_tensor_slices(list(input_files)).flat_map(_read)
  ds = ds.batch(batch_size)
  ds = ds.map(_prepare, num_parallel_calls=records.PARALLEL_CALLS,
              deterministic=True)
  return records.without_autotune(ds.prefetch(records.PREFETCH_BATCHES))


class _BatchWriter(object):
  """Serialises labelled batches into a TFRecord file on a worker thread."""

  def __init__(self, path, progress, compact=False):
    self._writer = tf.io.TFRecordWriter(path)
    self._progress = progress
    self._compact = compact
    self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self._pending = collections.deque()
    self.count = 0

  def _write(self, serialized, probs, indices):
    for i, raw in enumerate(serialized):
      self._writer.write(add_teacher_features(
          raw, probs[i], None if indices is None else indices[i],
          self._compact))
    self.count += len(serialized)
    self._progress.update(len(serialized))

  def submit(self, serialized, probs, indices):
    """Queues one batch; waits while too many batches are queued."""
    self._pending.append(self._executor.submit(self._write, serialized,
                                               probs, indices))
    while len(self._pending) > _WRITE_QUEUE_DEPTH:
      self._pending.popleft().result()

  def close(self, wait=True):
    """Writes what is queued (if `wait`), then closes the file."""
    try:
      while self._pending:
        future = self._pending.popleft()
        if wait:
          future.result()
        else:
          future.cancel()
    finally:
      self._executor.shutdown(wait=True)
      self._writer.close()


def label_records(labeler, input_files, output_path, max_seq_length,
                  max_predictions_per_seq, batch_size, total=None,
                  compact=False):
  """Writes every input record with the teacher's labels to one file.

  Args:
    labeler: a `TeacherLabeler`.
    input_files: stage-III TFRecord files, read in this order.
    output_path: the TFRecord file to write (use a temporary name and
      rename it when this returns; see `outputs.atomic_output`).
    max_seq_length, max_predictions_per_seq: the records' feature lengths.
    batch_size: records per teacher batch.
    total: number of input records if known (for the ETA).
    compact: write compact labels (see `add_teacher_features`).

  Returns:
    The number of records written (one per input record, in input order).

  Raises:
    cli.UserError: a record that cannot be parsed with these lengths or
      holds ids out of the teacher's range.
  """
  dataset = teacher_input_dataset(input_files, max_seq_length,
                                  max_predictions_per_seq, batch_size,
                                  labeler.config)
  progress = cli.Progress("teacher labels", unit="seq", total=total)
  writer = _BatchWriter(output_path, progress, compact)
  ok = False
  try:
    for serialized, count, features in dataset:
      probs, indices = labeler(features)
      n = int(count)
      writer.submit(serialized.numpy(), probs.numpy()[:n],
                    None if indices is None else indices.numpy()[:n])
    ok = True
  except tf.errors.DataLossError as exc:
    raise records.find_damaged_file(input_files, exc)
  except tf.errors.InvalidArgumentError as exc:
    raise cli.UserError(
        "--input_file: cannot label a record with --max_seq_length=%d, "
        "--max_predictions_per_seq=%d and this teacher: %s" %
        (max_seq_length, max_predictions_per_seq,
         _describe_input_error(exc)))
  finally:
    writer.close(wait=ok)
  progress.done()
  return writer.count
