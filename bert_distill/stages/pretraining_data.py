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
  * Records are serialised by `record_format`, as tf.train.Example
    protocol buffers in TFRecord files, without importing TensorFlow (its
    import alone costs seconds, and building Example objects feature by
    feature costs more than generating the instance).
"""

import multiprocessing
import os
import random
import re
import signal



from bert_distill import cli
from bert_distill.lib import errors
from bert_distill.lib import outputs
from bert_distill.lib import record_format


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
    errors.InputError: if the file holds NUL bytes (binary) or is not UTF-8.
  """
  data = outputs.read_bytes(path)
  if b"\x00" in data:
    raise errors.InputError("%s: binary file (NUL byte at offset %d), expected "
                     "UTF-8 text with one sentence per line" %
                     (path, data.index(b"\x00")))
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as exc:
    raise errors.InputError("%s: not UTF-8 text (invalid byte 0x%02x at offset "
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
        raise errors.InputError("the vocabulary has no %s token" % token)
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
    self.encoder = record_format.ExampleEncoder(
        max_seq_length, max_predictions_per_seq, len(vocab))

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
    with outputs.open_for_writing(output_path) as f:
      stats["output_bytes"] = record_format.write_tfrecords(f, records)
    stats["instances"] = len(records)
    # next_sentence_labels is the last feature: its value is a record's
    # last byte.
    stats["random_next"] = sum(1 for r in records if r[-1] == 1)
    return stats


def list_input_files(input_dir):
  """The regular, non-hidden files of `input_dir`, in sorted order (any
  file system: see outputs.is_remote)."""
  names = sorted(outputs.listdir(input_dir))
  paths = [os.path.join(input_dir, n) for n in names if not n.startswith(".")]
  if outputs.is_remote(input_dir):
    return [p for p in paths if not outputs.isdir(p)]
  return [p for p in paths if os.path.isfile(p)]


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
  outputs.claim_temporary(tmp_path)  # never written through a planted link
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
  for name in sorted(outputs.listdir(output_dir)):
    if pattern.match(name) and name not in keep:
      outputs.remove_quietly(os.path.join(output_dir, name))
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
  tmps = [outputs.temporary_name(f) for f in finals]
  # Largest files first: the workers then finish at about the same time.
  tasks = sorted(((i, input_files[i], tmps[i]) for i in range(len(finals))),
                 key=lambda t: (-outputs.file_size(t[1]), t[0]))
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
      # Remote paths go through TensorFlow's file systems, which must not
      # be used in a child forked from a parent that has loaded them: the
      # workers are then started afresh.
      context = multiprocessing.get_context(
          "spawn" if any(outputs.is_remote(p) for p in input_files + finals)
          else None)
      with context.Pool(num_workers, initializer=_init_pool_worker,
                        initargs=(job, os.getpid())) as pool:
        for index, file_stats in pool.imap_unordered(_run_task, tasks):
          stats[index] = file_stats
          if progress is not None:
            progress.update(1, extra=_progress_note(stats))
    if not any(s["documents"] for s in stats):
      raise errors.InputError(
          "no text in the input files (%s%s): expected UTF-8 text, one "
          "sentence per line" % (", ".join(input_files[:3]),
                                 ", ..." if len(input_files) > 3 else ""))
  except BaseException:
    for tmp in tmps:
      outputs.remove_quietly(tmp)
    raise
  for tmp, final in zip(tmps, finals):
    outputs.replace(tmp, final)
  return finals, stats


def _progress_note(stats):
  done = [s for s in stats if s is not None]
  return "%d instances" % sum(s["instances"] for s in done)
