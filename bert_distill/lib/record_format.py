"""The stage files' record format: feature names, and a writer without TF.

The names of the features of the records that pass between the stages
(their dtypes and lengths are in docs/formats.md), and a writer of
tf.train.Example protocol buffers in TFRecord files that needs only NumPy:
stage III's worker processes serialise millions of records without paying
for TensorFlow's import (seconds), and stage IV adds its float features as
packed bytes. The bytes are checked in the tests against TensorFlow's own
parser and TFRecord reader.
"""

import struct

import numpy as np

SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids")
PREDICTION_FEATURES = ("masked_lm_positions", "masked_lm_ids",
                       "masked_lm_weights")
NEXT_SENTENCE_LABELS = "next_sentence_labels"
# Stage-III features, in the order ExampleEncoder writes them.
STAGE3_FEATURES = SEQUENCE_FEATURES + PREDICTION_FEATURES + (
    NEXT_SENTENCE_LABELS,)
TRUNCATED_PROBS = "truncated_masked_lm_probs"
TOP_K_INDICES = "top_k_indices"
FULL_PROBS = "masked_lm_probs"
TEACHER_FEATURES = (TRUNCATED_PROBS, TOP_K_INDICES, FULL_PROBS)
FLOAT_FEATURES = ("masked_lm_weights", TRUNCATED_PROBS, FULL_PROBS)
# Compact stage-IV labels (produce_teacher_labels.py --compact_labels): the
# teacher features as one bytes value each, the raw little-endian array of
# this dtype (about 0.8 KB per record at K = 10 instead of 1.3 KB).
COMPACT_DTYPES = {TRUNCATED_PROBS: "<f2", FULL_PROBS: "<f2",
                  TOP_K_INDICES: "<u2"}
# Word ids above this do not fit a compact top_k_indices.
COMPACT_MAX_VOCAB_SIZE = 1 << 16


def varint(value):
  """Protocol-buffer base-128 varint of a non-negative integer."""
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


class ExampleEncoder(object):
  """Serialises stage-III instances as tf.train.Example protocol buffers.

  An instance (pretraining_data.Instance) has input_ids, len_a, len_b,
  masked_lm_positions, masked_lm_ids and is_random_next; the encoder pads
  them to the fixed lengths of docs/formats.md.

  An Example is `features` (field 1) holding one map entry (field 1) per
  feature: key (field 1) and a Feature (field 2) whose int64_list (field 3)
  or float_list (field 2) holds the packed values (field 1). Entries are
  written in STAGE3_FEATURES order.
  """

  def __init__(self, max_seq_length, max_predictions_per_seq, vocab_size):
    self.max_seq_length = max_seq_length
    self.max_predictions_per_seq = max_predictions_per_seq
    limit = max(vocab_size, max_seq_length, 1 << 14)
    self._varints = [varint(v) for v in range(limit)]
    self._keys = {}
    for name in STAGE3_FEATURES:
      key = name.encode("ascii")
      self._keys[name] = b"\n" + varint(len(key)) + key

  def _length(self, n):
    varints = self._varints
    return varints[n] if n < len(varints) else varint(n)

  def _entry(self, name, payload, is_float):
    length = self._length
    values = b"\n" + length(len(payload)) + payload
    feature = (b"\x12" if is_float else b"\x1a") + length(len(values)) + values
    body = self._keys[name] + b"\x12" + length(len(feature)) + feature
    return b"\n" + length(len(body)) + body

  def encode(self, instance):
    """The serialised tf.train.Example of an Instance."""
    varints = self._varints
    seq = self.max_seq_length
    preds = self.max_predictions_per_seq
    n = len(instance.input_ids)
    m = len(instance.masked_lm_positions)
    pad = b"\x00" * (seq - n)
    pred_pad = b"\x00" * (preds - m)
    entry = self._entry
    body = b"".join((
        entry("input_ids", b"".join([varints[t] for t in instance.input_ids])
              + pad, False),
        entry("input_mask", b"\x01" * n + pad, False),
        entry("segment_ids", b"\x00" * (instance.len_a + 2) +
              b"\x01" * (instance.len_b + 1) + pad, False),
        entry("masked_lm_positions",
              b"".join([varints[p] for p in instance.masked_lm_positions]) +
              pred_pad, False),
        entry("masked_lm_ids",
              b"".join([varints[t] for t in instance.masked_lm_ids]) +
              pred_pad, False),
        entry("masked_lm_weights",
              b"\x00\x00\x80\x3f" * m + b"\x00\x00\x00\x00" * (preds - m),
              True),
        entry("next_sentence_labels",
              b"\x01" if instance.is_random_next else b"\x00", False),
    ))
    return b"\n" + self._length(len(body)) + body


def _crc32c_tables():
  """Slice-by-4 lookup tables of CRC-32C (Castagnoli, reflected 0x82F63B78)."""
  table0 = np.zeros(256, np.uint32)
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table0[byte] = crc
  tables = [table0]
  for _ in range(3):
    prev = tables[-1]
    tables.append(table0[prev & 0xFF] ^ (prev >> 8))
  return tables


_CRC_TABLES = None


def crc32c_batch(chunks):
  """CRC-32C of each byte string of `chunks`, as a numpy uint32 array.

  The CRCs of all chunks advance together, four bytes per step of numpy
  operations (slice-by-4), which makes a pure-numpy CRC fast for the many
  small records of a file.
  """
  global _CRC_TABLES
  if _CRC_TABLES is None:
    _CRC_TABLES = _crc32c_tables()
  t0, t1, t2, t3 = _CRC_TABLES
  count = len(chunks)
  if count == 0:
    return np.zeros(0, np.uint32)
  lengths = np.fromiter((len(c) for c in chunks), np.int64, count)
  order = np.argsort(-lengths, kind="stable")
  sorted_lengths = lengths[order]
  longest = int(sorted_lengths[0])
  width = (longest + 3) // 4 * 4
  # Row r of `data` (in length order) holds a chunk, zero-padded; stored
  # column-major so that one byte position of all chunks is contiguous.
  data = np.zeros((count, width), np.uint8)
  for row, index in enumerate(order):
    chunk = chunks[index]
    data[row, :len(chunk)] = np.frombuffer(chunk, np.uint8)
  words = np.ascontiguousarray(data.view("<u4").T)  # [width / 4, count]
  columns = np.ascontiguousarray(data.T)  # [width, count]
  # Number of chunks still running at byte position p, and with a full
  # word at word position w.
  negated = -sorted_lengths
  crc = np.full(count, 0xFFFFFFFF, np.uint32)
  for w in range(width // 4):
    full = int(np.searchsorted(negated, -(4 * w + 4), side="right"))
    if full:
      c = crc[:full] ^ words[w, :full]
      crc[:full] = (t3[c & 0xFF] ^ t2[(c >> 8) & 0xFF] ^
                    t1[(c >> 16) & 0xFF] ^ t0[c >> 24])
    # Chunks ending inside this word advance byte by byte.
    for p in range(4 * w, 4 * w + 4):
      running = int(np.searchsorted(negated, -(p + 1), side="right"))
      if running <= full:
        break
      c = crc[full:running]
      crc[full:running] = t0[(c ^ columns[p, full:running]) & 0xFF] ^ (c >> 8)
  crc ^= np.uint32(0xFFFFFFFF)
  result = np.empty(count, np.uint32)
  result[order] = crc
  return result


def _masked(crc):
  """TFRecord's masked CRC: rotate right by 15 bits, add 0xa282ead8."""
  crc = crc.astype(np.uint64)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# Records whose CRCs are computed in one batch (bounds the batch's memory).
_CRC_BATCH = 4096


def write_tfrecords(f, records):
  """Writes serialised `records`, in order, to the binary file object `f`.

  Each record is framed as TFRecord files frame them: its length (uint64,
  little-endian), the masked CRC-32C of those 8 bytes, the data, and the
  masked CRC-32C of the data.

  Returns:
    The number of bytes written.
  """
  written = 0
  for start in range(0, len(records), _CRC_BATCH):
    batch = records[start:start + _CRC_BATCH]
    headers = [struct.pack("<Q", len(r)) for r in batch]
    header_crcs = _masked(crc32c_batch(headers)).tolist()
    data_crcs = _masked(crc32c_batch(batch)).tolist()
    parts = []
    for header, hcrc, record, dcrc in zip(headers, header_crcs, batch,
                                          data_crcs):
      parts.append(header)
      parts.append(struct.pack("<I", hcrc))
      parts.append(record)
      parts.append(struct.pack("<I", dcrc))
    chunk = b"".join(parts)
    f.write(chunk)
    written += len(chunk)
  return written


def packed_float_list(values):
  """A serialized tf.train.FloatList holding float32 `values`.

  FloatList has one field, `repeated float value = 1 [packed = true]`: tag
  byte 0x0A (field 1, length-delimited), the byte length, then the
  little-endian float32 values. Encoding the bytes directly is ~40x faster
  than filling the repeated field from Python for full distributions
  (P * vocab_size floats per record).
  """
  payload = np.ascontiguousarray(values, dtype="<f4").tobytes()
  return b"\x0a" + varint(len(payload)) + payload
