# coding=utf-8
"""Masked-LM / next-sentence pre-training data: the generator of stage III.

The algorithm is that of Google's BERT data generator, step for step and
random draw for random draw:

  * documents are blank-line-separated runs of sentences, one sentence per
    line; the documents of an input file are shuffled;
  * for each of `dupe_factor` passes over the documents, each document is cut
    into instances: a target length of max_seq_length - 3 tokens (with
    probability short_seq_prob a random shorter one), sentences gathered
    until the target is reached, a random prefix of them as segment A, the
    rest as segment B or (with probability 1/2, always when there is a
    single sentence) a random span of another document as B, the unused
    sentences being put back; the longer segment is trimmed from a random
    end until the pair fits; the tokens are `[CLS] A [SEP] B [SEP]`;
  * 15% of the tokens (at least 1, at most max_predictions_per_seq; never
    [CLS] or [SEP]) are chosen in random order for prediction, and each is
    replaced by [MASK] (80%), kept (10%) or replaced by a random vocabulary
    token (10%); with whole-word masking the word pieces of a word are chosen
    together, as the later BERT release does;
  * the instances are shuffled.

Differences from the original script, all by design:

  * Each input file is processed on its own, with a random generator seeded
    with `random_seed + file_index`, and gives one output file. "Random next"
    segments are therefore drawn from the documents of the same input file
    (the original draws from all input files at once). This is what lets
    files be processed in parallel with a result that does not depend on the
    number of workers, in memory bounded by one file per worker. With a
    single input file the records are the original script's records.
  * Tokens are handled as vocabulary ids from the start, and the draws of
    `random.Random.shuffle` are made inline; both give exactly the same
    values and leave the generator in exactly the same state as the
    original's code.
  * Records are serialised here, as tf.train.Example protocol buffers in
    TFRecord files, without importing TensorFlow (its import alone costs
    seconds, and building Example objects feature by feature costs more
    than generating the instance). The bytes are checked in the tests
    against TensorFlow's own parser and TFRecord reader.
"""

import multiprocessing
import os
import random
import re
import signal
import struct

import numpy as np

import cli


# Stage-III features in the order of docs/formats.md (the order of
# records.STAGE3_FEATURES, which the tests check).
FEATURE_NAMES = ("input_ids", "input_mask", "segment_ids",
                 "masked_lm_positions", "masked_lm_ids", "masked_lm_weights",
                 "next_sentence_labels")


class InputError(ValueError):
  """An input text file that cannot be used (binary, not UTF-8)."""


# A "random next" segment B comes from another document of the same input
# file. With fewer documents than this in a file, the negatives of the
# next-sentence task come from a handful of articles (from the same article
# when the file holds one), and the task stops meaning what it should.
MIN_DOCUMENTS_PER_FILE = 10


# --------------------------------------------------------------------------
# Reading the text.


def read_documents(path, tokenizer):
  """Reads a text file into documents of tokenized sentences.

  Lines are split on "\\n" (as TensorFlow's GFile reads them) and stripped;
  an empty line ends a document; a line that gives no tokens is skipped.

  Args:
    path: a UTF-8 text file, one sentence per line, blank lines between
      documents.
    tokenizer: a tokenization.FullTokenizer.

  Returns:
    (documents, stats): documents as lists of sentences, each a list of
    token ids, without empty documents; stats a dict with "bytes", "lines",
    "sentences", "tokens".

  Raises:
    InputError: if the file holds NUL bytes (binary) or is not UTF-8.
  """
  with open(path, "rb") as f:
    data = f.read()
  if b"\x00" in data:
    raise InputError("%s: binary file (NUL byte at offset %d), expected "
                     "UTF-8 text with one sentence per line" %
                     (path, data.index(b"\x00")))
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as exc:
    raise InputError("%s: not UTF-8 text (invalid byte 0x%02x at offset "
                     "%d), expected UTF-8 text with one sentence per line" %
                     (path, data[exc.start], exc.start))
  documents = [[]]
  sentences = tokens = 0
  lines = text.split("\n")
  if lines and not lines[-1]:
    lines.pop()
  tokenize = tokenizer.tokenize_to_ids
  for line in lines:
    line = line.strip()
    if not line:
      documents.append([])
      continue
    ids = tokenize(line)
    if ids:
      documents[-1].append(ids)
      sentences += 1
      tokens += len(ids)
  documents = [d for d in documents if d]
  stats = {"bytes": len(data), "lines": len(lines), "sentences": sentences,
           "tokens": tokens, "documents": len(documents)}
  return documents, stats


# --------------------------------------------------------------------------
# Random draws, as random.Random makes them.


def randbelow(getrandbits, n):
  """random.Random._randbelow(n), n > 0: the same value from the same draws."""
  k = n.bit_length()
  r = getrandbits(k)
  while r >= n:
    r = getrandbits(k)
  return r


def shuffle(items, rng):
  """rng.shuffle(items), inline: the same permutation and the same draws.

  `random.Random.shuffle` swaps item i (from the last down to the second)
  with item `_randbelow(i + 1)`; this does the same without a Python call
  per draw, which halves its cost.
  """
  getrandbits = rng.getrandbits
  for i in range(len(items) - 1, 0, -1):
    n = i + 1
    k = n.bit_length()
    j = getrandbits(k)
    while j >= n:
      j = getrandbits(k)
    items[i], items[j] = items[j], items[i]


# --------------------------------------------------------------------------
# Instances.


class Instance(object):
  """One training instance: a masked sentence pair.

  Attributes:
    input_ids: token ids of `[CLS] A [SEP] B [SEP]`, masks applied.
    len_a, len_b: the lengths of segments A and B.
    masked_lm_positions: positions chosen for prediction, ascending.
    masked_lm_ids: the original token ids at those positions.
    is_random_next: whether B is a random span (label 1) or A's actual
      continuation (label 0).
  """

  __slots__ = ("input_ids", "len_a", "len_b", "masked_lm_positions",
               "masked_lm_ids", "is_random_next")

  def __init__(self, input_ids, len_a, len_b, masked_lm_positions,
               masked_lm_ids, is_random_next):
    self.input_ids = input_ids
    self.len_a = len_a
    self.len_b = len_b
    self.masked_lm_positions = masked_lm_positions
    self.masked_lm_ids = masked_lm_ids
    self.is_random_next = is_random_next

  @property
  def segment_ids(self):
    """0 for [CLS], A and the first [SEP]; 1 for B and the last [SEP]."""
    return [0] * (self.len_a + 2) + [1] * (self.len_b + 1)


class Generator(object):
  """Makes the instances of one input file.

  Args:
    vocab_size: number of vocabulary ids (random replacements are drawn
      uniformly from them).
    cls_id, sep_id, mask_id: ids of [CLS], [SEP] and [MASK].
    max_seq_length: length of input_ids.
    short_seq_prob: probability of a shorter target length.
    masked_lm_prob: fraction of tokens chosen for prediction.
    max_predictions_per_seq: most predictions per instance.
    subword: for whole-word masking, a sequence telling for each id whether
      its token is a "##" continuation piece; None for per-piece masking.
  """

  def __init__(self, vocab_size, cls_id, sep_id, mask_id, max_seq_length,
               short_seq_prob, masked_lm_prob, max_predictions_per_seq,
               subword=None):
    self.vocab_size = vocab_size
    self.cls_id = cls_id
    self.sep_id = sep_id
    self.mask_id = mask_id
    self.max_seq_length = max_seq_length
    self.max_num_tokens = max_seq_length - 3  # room for [CLS], 2 x [SEP]
    self.short_seq_prob = short_seq_prob
    self.masked_lm_prob = masked_lm_prob
    self.max_predictions_per_seq = max_predictions_per_seq
    self.subword = subword

  def file_instances(self, documents, dupe_factor, rng, emit):
    """Makes all instances of a file's documents, in the original's order.

    Args:
      documents: lists of sentences (lists of ids); shuffled in place.
      dupe_factor: passes over the documents.
      rng: random.Random.
      emit: called with each Instance; its results are collected.

    Returns:
      The results of `emit`, shuffled as the original shuffles instances.
    """
    rng.shuffle(documents)
    results = []
    for _ in range(dupe_factor):
      for index in range(len(documents)):
        self.document_instances(documents, index, rng, emit, results)
    rng.shuffle(results)
    return results

  def document_instances(self, documents, document_index, rng, emit, out):
    """Appends emit(instance) for the instances of one document to `out`."""
    document = documents[document_index]
    max_num_tokens = self.max_num_tokens
    getrandbits = rng.getrandbits
    random_ = rng.random

    target_seq_length = max_num_tokens
    if random_() < self.short_seq_prob:
      target_seq_length = 2 + randbelow(getrandbits, max_num_tokens - 1)

    chunk = []
    chunk_length = 0
    num_sentences = len(document)
    i = 0
    while i < num_sentences:
      sentence = document[i]
      chunk.append(sentence)
      chunk_length += len(sentence)
      if i == num_sentences - 1 or chunk_length >= target_seq_length:
        # `chunk` is never empty here.
        a_end = 1
        if len(chunk) >= 2:
          a_end = 1 + randbelow(getrandbits, len(chunk) - 1)
        tokens_a = []
        for j in range(a_end):
          tokens_a.extend(chunk[j])

        tokens_b = []
        if len(chunk) == 1 or random_() < 0.5:
          is_random_next = True
          target_b_length = target_seq_length - len(tokens_a)
          # Another document, if one can be found in 10 draws.
          for _ in range(10):
            random_index = randbelow(getrandbits, len(documents))
            if random_index != document_index:
              break
          random_document = documents[random_index]
          start = randbelow(getrandbits, len(random_document))
          for j in range(start, len(random_document)):
            tokens_b.extend(random_document[j])
            if len(tokens_b) >= target_b_length:
              break
          # Put back the sentences that were not used.
          i -= len(chunk) - a_end
        else:
          is_random_next = False
          for j in range(a_end, len(chunk)):
            tokens_b.extend(chunk[j])

        # Trim the longer segment, from a random end, until the pair fits.
        while len(tokens_a) + len(tokens_b) > max_num_tokens:
          longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
          if random_() < 0.5:
            del longer[0]
          else:
            longer.pop()

        out.append(emit(self._masked_instance(tokens_a, tokens_b,
                                              is_random_next, rng)))
        chunk = []
        chunk_length = 0
      i += 1

  def _masked_instance(self, tokens_a, tokens_b, is_random_next, rng):
    """Builds `[CLS] A [SEP] B [SEP]` and chooses the masked positions."""
    len_a = len(tokens_a)
    len_b = len(tokens_b)
    ids = [self.cls_id]
    ids.extend(tokens_a)
    ids.append(self.sep_id)
    ids.extend(tokens_b)
    ids.append(self.sep_id)
    num_tokens = len_a + len_b + 3

    # Candidates: every position but [CLS] and the two [SEP]s.
    if self.subword is None:
      candidates = list(range(1, len_a + 1))
      candidates.extend(range(len_a + 2, len_a + len_b + 2))
    else:
      candidates = self._whole_word_candidates(ids, len_a, len_b)
    shuffle(candidates, rng)

    num_to_predict = min(self.max_predictions_per_seq,
                         max(1, int(round(num_tokens * self.masked_lm_prob))))
    original = list(ids)
    positions = []
    random_ = rng.random
    getrandbits = rng.getrandbits
    mask_id = self.mask_id
    vocab_size = self.vocab_size
    if self.subword is None:
      # Candidates are distinct positions: take the first num_to_predict.
      for index in candidates[:num_to_predict]:
        if random_() < 0.8:
          ids[index] = mask_id
        elif random_() < 0.5:
          pass  # keep the original token
        else:
          ids[index] = randbelow(getrandbits, vocab_size)
        positions.append(index)
    else:
      for index_set in candidates:
        if len(positions) >= num_to_predict:
          break
        # A word that would exceed the budget is skipped whole.
        if len(positions) + len(index_set) > num_to_predict:
          continue
        for index in index_set:
          if random_() < 0.8:
            ids[index] = mask_id
          elif random_() < 0.5:
            pass
          else:
            ids[index] = randbelow(getrandbits, vocab_size)
          positions.append(index)
    positions.sort()
    return Instance(ids, len_a, len_b, positions,
                    [original[p] for p in positions], is_random_next)

  def _whole_word_candidates(self, ids, len_a, len_b):
    """Candidate position groups: each word's pieces together.

    As in the later BERT release, a "##" piece joins the group before it,
    even when a [SEP] lies between them (B starting inside a word).
    """
    subword = self.subword
    groups = []
    for index in range(1, len_a + len_b + 2):
      if index == len_a + 1:
        continue  # the first [SEP]
      if groups and subword[ids[index]]:
        groups[-1].append(index)
      else:
        groups.append([index])
    return groups


# --------------------------------------------------------------------------
# Serialisation: tf.train.Example protocol buffers in TFRecord files.


def varint(value):
  """Protocol-buffer base-128 varint of a non-negative integer."""
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


class ExampleEncoder(object):
  """Serialises instances as tf.train.Example protocol buffers.

  An Example is `features` (field 1) holding one map entry (field 1) per
  feature: key (field 1) and a Feature (field 2) whose int64_list (field 3)
  or float_list (field 2) holds the packed values (field 1). Entries are
  written in FEATURE_NAMES order.
  """

  def __init__(self, max_seq_length, max_predictions_per_seq, vocab_size):
    self.max_seq_length = max_seq_length
    self.max_predictions_per_seq = max_predictions_per_seq
    limit = max(vocab_size, max_seq_length, 1 << 14)
    self._varints = [varint(v) for v in range(limit)]
    self._keys = {}
    for name in FEATURE_NAMES:
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


# --------------------------------------------------------------------------
# One file, end to end.


class FileJob(object):
  """Everything a worker needs to turn one input file into one output file.

  The tokenizer and generator are built once per process and shared by all
  files of that process.
  """

  def __init__(self, tokenizer, max_seq_length, max_predictions_per_seq,
               masked_lm_prob, short_seq_prob, dupe_factor, random_seed,
               do_whole_word_mask):
    vocab = tokenizer.vocab
    for token in ("[CLS]", "[SEP]", "[MASK]"):
      if token not in vocab:
        raise ValueError("the vocabulary has no %s token" % token)
    subword = None
    if do_whole_word_mask:
      subword = bytearray(len(vocab))
      for token, index in vocab.items():
        if token.startswith("##"):
          subword[index] = 1
    self.tokenizer = tokenizer
    self.dupe_factor = dupe_factor
    self.random_seed = random_seed
    self.generator = Generator(
        vocab_size=len(vocab), cls_id=vocab["[CLS]"], sep_id=vocab["[SEP]"],
        mask_id=vocab["[MASK]"], max_seq_length=max_seq_length,
        short_seq_prob=short_seq_prob, masked_lm_prob=masked_lm_prob,
        max_predictions_per_seq=max_predictions_per_seq, subword=subword)
    self.encoder = ExampleEncoder(max_seq_length, max_predictions_per_seq,
                                  len(vocab))

  def rng_for(self, file_index):
    """The random generator of file `file_index`."""
    return random.Random(self.random_seed + file_index)

  def run(self, input_path, file_index, output_path):
    """Converts one text file into a TFRecord file; returns statistics.

    The output is written under `output_path` (the caller renames it).
    """
    documents, stats = read_documents(input_path, self.tokenizer)
    records = self.generator.file_instances(
        documents, self.dupe_factor, self.rng_for(file_index),
        self.encoder.encode)
    with open(output_path, "wb") as f:
      stats["output_bytes"] = write_tfrecords(f, records)
    stats["instances"] = len(records)
    # next_sentence_labels is the last feature: its value is a record's
    # last byte.
    stats["random_next"] = sum(1 for r in records if r[-1] == 1)
    return stats


def list_input_files(input_dir):
  """The regular, non-hidden files of `input_dir`, in sorted order."""
  names = sorted(os.listdir(input_dir))
  return [os.path.join(input_dir, n) for n in names
          if not n.startswith(".") and
          os.path.isfile(os.path.join(input_dir, n))]


# --------------------------------------------------------------------------
# All files, in parallel.

# The job of a worker process (set by _init_worker).
_WORKER_JOB = None


def _init_worker(job):
  global _WORKER_JOB
  _WORKER_JOB = job


def _init_pool_worker(job, parent_pid):
  cli.die_with_parent(parent_pid)  # a parent killed with SIGKILL too
  _init_worker(job)
  # Ctrl-C reaches every process of the terminal's group: the parent stops
  # the pool (one line); a worker would print a traceback of its own.
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_task(task):
  index, input_path, tmp_path = task
  return index, _WORKER_JOB.run(input_path, index, tmp_path)


def output_path(output_dir, output_base_name, index):
  """The output file of input file number `index`."""
  return os.path.join(output_dir, "%s_%d.tfrecord" % (output_base_name,
                                                      index))


def remove_stale_outputs(output_dir, output_base_name, keep):
  """Removes <base>_<digits>.tfrecord files of an earlier run not in `keep`.

  Later stages read <base>_*.tfrecord; files left by an earlier run with
  more input files would otherwise be read with this run's.
  """
  pattern = re.compile(r"^%s_\d+\.tfrecord$" % re.escape(output_base_name))
  keep = set(os.path.basename(p) for p in keep)
  removed = []
  for name in sorted(os.listdir(output_dir)):
    if pattern.match(name) and name not in keep:
      os.remove(os.path.join(output_dir, name))
      removed.append(name)
  return removed


def create_files(job, input_files, output_dir, output_base_name, num_workers,
                 progress=None):
  """Converts each input file into <output_dir>/<base>_<index>.tfrecord.

  Files are processed by `num_workers` processes (in this process when 1).
  Each output is written under a temporary name; all are renamed to their
  final names only when every file has succeeded, so a failure leaves no
  output under a final name.

  Args:
    job: a FileJob.
    input_files: text files; file i gives output i.
    output_dir: an existing, writable folder.
    output_base_name: prefix of the output names.
    num_workers: processes to use.
    progress: optional cli.Progress counting files; its update() receives
      the statistics of each finished file as `extra`.

  Returns:
    (output_paths, stats): the final paths, and a list of the per-file
    statistics dicts (see FileJob.run) in input order.
  """
  finals = [output_path(output_dir, output_base_name, i)
            for i in range(len(input_files))]
  tmps = [cli.temporary_name(f) for f in finals]
  # Largest files first: the workers then finish at about the same time.
  tasks = sorted(((i, input_files[i], tmps[i]) for i in range(len(finals))),
                 key=lambda t: (-os.path.getsize(t[1]), t[0]))
  stats = [None] * len(finals)
  num_workers = max(1, min(num_workers, len(tasks)))
  try:
    if num_workers == 1:
      _init_worker(job)
      results = map(_run_task, tasks)
      for index, file_stats in results:
        stats[index] = file_stats
        if progress is not None:
          progress.update(1, extra=_progress_note(stats))
    else:
      with multiprocessing.Pool(num_workers, initializer=_init_pool_worker,
                                initargs=(job, os.getpid())) as pool:
        for index, file_stats in pool.imap_unordered(_run_task, tasks):
          stats[index] = file_stats
          if progress is not None:
            progress.update(1, extra=_progress_note(stats))
    if not any(s["documents"] for s in stats):
      raise InputError("no text in the input files (%s%s): expected UTF-8 "
                       "text, one sentence per line" %
                       (", ".join(input_files[:3]),
                        ", ..." if len(input_files) > 3 else ""))
  except BaseException:
    for tmp in tmps:
      try:
        os.remove(tmp)
      except OSError:
        pass
    raise
  for tmp, final in zip(tmps, finals):
    os.replace(tmp, final)
  return finals, stats


def _progress_note(stats):
  done = [s for s in stats if s is not None]
  return "%d instances" % sum(s["instances"] for s in done)
