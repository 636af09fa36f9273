"""Task data augmentation for task-specific distillation (TinyBERT's).

A teacher teaches on the task's sentences; with few of them, the student
sees little of what the teacher knows. TinyBERT (Jiao et al., 2020) grows
the training split first: every sentence gets N variants in which each word
is, with probability p, replaced by one of the K words a pre-trained masked
LM predicts in its place. The variants keep the original's label, so they
are meant for the soft loss alone (`--hard_label_weight 0`): the fine-tuned
teacher labels each one in the student's step.

Here, for one GLUE-format task:

  1. the text columns of train.tsv are split into words (BERT's basic
     tokenizer, as the model sees them); a word that is one WordPiece with a
     letter in it is a candidate for replacement (TinyBERT takes GloVe
     neighbours for the other words; those are kept here);
  2. for every candidate word, the masked LM sees its text with that word
     masked and gives its 2K + 20 most probable tokens there; the first K
     of them that are whole words (no "##" piece, no special token, a
     letter in them) and not the word itself are the word's candidates
     (fewer if fewer pass; a word with none is kept);
  3. each row of train.tsv is written as it was, followed by N variants:
     the same row with each candidate word of its text columns replaced,
     with probability p, by one of its candidates (uniformly), the words
     joined by single spaces (lower-cased with an uncased model's
     tokenizer).

Every other split file (dev, test) is copied unchanged, so the output
folder is a --data_dir for run_classifier.py whose dev and test are the
original's. The cost is one masked-LM forward pass per candidate word of
train.tsv (batched, sorted by length).
"""

import json
import os
import shutil
import typing

from absl import logging
import numpy as np

from bert_distill import cli
from bert_distill.lib import glue
from bert_distill.lib import outputs
from bert_distill.stages import teacher

SETTINGS_FILE = "augmentation.json"
# Queries are padded to a multiple of this many tokens (one trace each).
LENGTH_STEP = 16


class Options(typing.NamedTuple):
  """The settings of an augmentation (the flags of augment_task_data.py)."""
  task_name: str
  data_dir: str
  output_dir: str
  bert_config_file: str
  init_checkpoint: str
  vocab_file: str
  do_lower_case: bool
  max_seq_length: int
  num_augmented: int
  candidates: int
  replace_prob: float
  batch_size: int
  random_seed: int
  compute_dtype: str
  overwrite: bool


def check_options(opts):
  """Raises cli.UserError (one line) for settings that cannot work."""
  if opts.num_augmented < 1:
    raise cli.UserError("--num_augmented must be at least 1, found %d" %
                        opts.num_augmented)
  if opts.candidates < 1:
    raise cli.UserError("--candidates must be at least 1, found %d" %
                        opts.candidates)
  if not 0.0 < opts.replace_prob <= 1.0:
    raise cli.UserError("--replace_prob must be in (0, 1], found %g" %
                        opts.replace_prob)
  if opts.batch_size < 1:
    raise cli.UserError("--batch_size must be at least 1, found %d" %
                        opts.batch_size)
  if opts.max_seq_length < 3:
    raise cli.UserError("--max_seq_length must be at least 3 ([CLS], a "
                        "word, [SEP]), found %d" % opts.max_seq_length)
  if opts.random_seed < 0:
    raise cli.UserError("--random_seed must not be negative, found %d" %
                        opts.random_seed)
  for name in ("data_dir", "output_dir", "init_checkpoint"):
    if not getattr(opts, name):
      raise cli.UserError("--%s is required" % name)
  if not os.path.isdir(opts.data_dir):
    raise cli.UserError("--data_dir %s is not a folder" % opts.data_dir)
  if os.path.exists(opts.output_dir) and cli.same_file(opts.output_dir,
                                                       opts.data_dir):
    raise cli.UserError("--output_dir %s is --data_dir: the augmented copy "
                        "goes to another folder" % opts.output_dir)
  if os.path.lexists(opts.output_dir) and not os.path.isdir(opts.output_dir):
    raise cli.UserError("--output_dir %s is a file, not a folder" %
                        opts.output_dir)
  inside = os.path.realpath(opts.output_dir) + os.sep
  for name in ("data_dir", "init_checkpoint", "vocab_file",
               "bert_config_file"):
    value = getattr(opts, name)
    if value and os.path.realpath(value).startswith(inside):
      raise cli.UserError("--output_dir %s holds --%s %s, which the new "
                          "folder would replace" % (opts.output_dir, name,
                                                    value))
  if (os.path.isdir(opts.output_dir) and os.listdir(opts.output_dir) and
      not opts.overwrite):
    raise cli.UserError("--output_dir %s exists and is not empty (choose "
                        "another folder, or --overwrite to replace it)" %
                        opts.output_dir)


class CandidateFinder(object):
  """Finds the masked LM's replacement words for the words of texts."""

  def __init__(self, labeler, tokenizer, max_seq_length, candidates,
               batch_size):
    """Args:

      labeler: a `teacher.TeacherLabeler` over a pre-trained masked LM whose
        truncation factor leaves room for the filtered-out tokens.
      tokenizer: the model's `tokenization.FullTokenizer`.
      max_seq_length: tokens per query at most ([CLS] text [SEP]); words
        beyond are not replaced.
      candidates: K, candidates kept per word.
      batch_size: queries per forward pass.
    """
    self.labeler = labeler
    self.tokenizer = tokenizer
    self.max_seq_length = max_seq_length
    self.candidates = candidates
    self.batch_size = batch_size
    vocab = tokenizer.vocab
    self.tokens = list(vocab)
    absent = [t for t in ("[CLS]", "[SEP]", "[MASK]") if t not in vocab]
    if absent:
      raise cli.UserError("--vocab_file has no %s token" % ", ".join(absent))
    self.mask_id = vocab["[MASK]"]
    self.cls_id, self.sep_id = vocab["[CLS]"], vocab["[SEP]"]
    self.whole_word = np.array([is_whole_word(t) for t in self.tokens])

  def words(self, text):
    """The text's words, as the model's basic tokenizer splits them."""
    return self.tokenizer.basic_tokenizer.tokenize(text)

  def queries(self, words):
    """(input ids, [(word index, its position)]): the text's ids ([CLS] ...
    [SEP], at most max_seq_length) and each word that may be replaced: one
    WordPiece, a letter in it, and within the ids."""
    vocab = self.tokenizer.vocab
    ids, starts, single = [self.cls_id], [], []
    for word in words:
      pieces = self.tokenizer.wordpiece_tokenizer.tokenize(word)
      starts.append(len(ids))
      single.append(len(pieces) == 1 and pieces[0] in vocab and
                    self.whole_word[vocab[pieces[0]]])
      ids.extend(vocab.get(p, vocab.get("[UNK]", 0)) for p in pieces)
    ids = ids[:self.max_seq_length - 1] + [self.sep_id]
    return ids, [(index, start)
                 for index, (start, ok) in enumerate(zip(starts, single))
                 if ok and start < len(ids) - 1]

  def find(self, texts):
    """Candidates of every word of `texts`.

    Args:
      texts: strings.

    Returns:
      A list, per text, of (words, candidates): candidates[i] is the list
      of word i's replacements (empty for a word that is kept).
    """
    per_text = [(words, [[] for _ in words])
                for words in (self.words(t) for t in texts)]
    # Each text's ids are kept once; a query masks one word of them.
    text_ids, queries = [], []
    for text_index, (words, _) in enumerate(per_text):
      ids, replaceable = self.queries(words)
      text_ids.append(ids)
      queries.extend((len(ids), text_index, word_index, position)
                     for word_index, position in replaceable)
    queries.sort(key=lambda q: q[0])
    progress = cli.Progress("candidate words", unit="words",
                            total=len(queries))
    for start in range(0, len(queries), self.batch_size):
      batch = queries[start:start + self.batch_size]
      top = self._top_tokens([text_ids[q[1]] for q in batch],
                             [q[3] for q in batch])
      for (_, text_index, word_index, _), ids in zip(batch, top):
        words, candidates = per_text[text_index]
        original = words[word_index]
        kept = [self.tokens[i] for i in ids
                if self.whole_word[i] and self.tokens[i] != original]
        candidates[word_index] = kept[:self.candidates]
      progress.update(len(batch))
    progress.done()
    return per_text

  def _top_tokens(self, id_lists, positions):
    """The masked LM's tokens at each position (masked here), most
    probable first."""
    n = len(id_lists)
    longest = max(len(ids) for ids in id_lists)
    length = min(self.max_seq_length,
                 -(-longest // LENGTH_STEP) * LENGTH_STEP)
    rows = self.batch_size  # one batch shape per length: one trace
    input_ids = np.zeros([rows, length], np.int32)
    input_mask = np.zeros([rows, length], np.int32)
    for row, (ids, position) in enumerate(zip(id_lists, positions)):
      input_ids[row, :len(ids)] = ids
      input_ids[row, position] = self.mask_id
      input_mask[row, :len(ids)] = 1
    masked = np.zeros([rows, 1], np.int32)
    masked[:n, 0] = positions
    _, indices = self.labeler({
        "input_ids": input_ids, "input_mask": input_mask,
        "segment_ids": np.zeros_like(input_ids),
        "masked_lm_positions": masked})
    return indices.numpy()[:n, 0]


def is_whole_word(token):
  """True for a vocabulary token that can stand for a word: not a "##"
  continuation, not a special token ("[MASK]", "[unused0]"), a letter in
  it."""
  return (not token.startswith("##") and
          not (token.startswith("[") and token.endswith("]")) and
          any(c.isalpha() for c in token))


def variants(words, candidates, num_augmented, replace_prob, rng):
  """`num_augmented` variants of a text: each word with candidates replaced,
  with probability replace_prob, by one of them (uniformly).

  Args:
    words: the text's words.
    candidates: per word, its replacements (may be empty).
    num_augmented: N.
    replace_prob: p.
    rng: a numpy Generator.

  Returns:
    N strings (the words joined by single spaces).
  """
  out = []
  for _ in range(num_augmented):
    new = []
    for word, options in zip(words, candidates):
      if options and rng.random() < replace_prob:
        word = options[int(rng.integers(len(options)))]
      new.append(word)
    out.append(" ".join(new))
  return out


def augment(opts, config, tokenizer):
  """Writes the augmented copy of the task's folder to opts.output_dir.

  Args:
    opts: `Options` (checked with `check_options`).
    config: the masked LM's modeling.BertConfig.
    tokenizer: its tokenization.FullTokenizer.

  Returns:
    (rows read, rows written) of train.tsv.

  Raises:
    cli.UserError: an unknown task, a folder without the task's train file,
      a bad line, or a checkpoint without a masked-LM head.
  """
  try:
    task = glue.get_task(opts.task_name)
  except glue.DataError as exc:
    raise cli.UserError("--task_name: %s" % exc)
  with cli.blame_flag("--data_dir"):
    header, rows = glue.read_rows(task, opts.data_dir, task.train)
  if not rows:
    raise cli.UserError("--data_dir: %s has no rows" % task.train.file_name)
  fmt = task.train
  columns = [c for c in (fmt.text_a, fmt.text_b) if c is not None]
  # Room for the tokens the filter drops (pieces, specials, the word).
  room = min(config.vocab_size, 2 * opts.candidates + 20)
  labeler = teacher.TeacherLabeler(
      config, opts.init_checkpoint, room, flag_name="--init_checkpoint",
      compute_dtype=opts.compute_dtype)
  finder = CandidateFinder(labeler, tokenizer, opts.max_seq_length,
                           opts.candidates, opts.batch_size)
  logging.info("Finding the candidates of the words of %d rows of %s "
               "(%d text columns)", len(rows), fmt.file_name, len(columns))
  found = finder.find([row[c] for _, row in rows for c in columns])
  rng = np.random.default_rng(opts.random_seed)
  written = 0
  with outputs.atomic_output_dir(opts.output_dir) as tmp:
    train_path = os.path.join(tmp, fmt.file_name)
    os.makedirs(os.path.dirname(train_path), exist_ok=True)
    with open(train_path, "w", encoding="utf-8", newline="") as f:
      if header is not None:
        f.write("\t".join(header) + "\n")
      for n, (_, row) in enumerate(rows):
        f.write("\t".join(row) + "\n")
        texts = [variants(*found[n * len(columns) + k], opts.num_augmented,
                          opts.replace_prob, rng)
                 for k in range(len(columns))]
        for v in range(opts.num_augmented):
          new = list(row)
          for k, column in enumerate(columns):
            new[column] = texts[k][v]
          f.write("\t".join(new) + "\n")
        written += 1 + opts.num_augmented
    copied = []
    for split in glue.all_formats(task)[1:]:
      source = os.path.join(opts.data_dir, split.file_name)
      if os.path.isfile(source):
        target = os.path.join(tmp, split.file_name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
        copied.append(split.file_name)
    settings = dict(opts._asdict(), rows_read=len(rows), rows_written=written,
                    copied=copied)
    del settings["overwrite"]
    with open(os.path.join(tmp, SETTINGS_FILE), "w") as f:
      json.dump(settings, f, indent=2, sort_keys=True)
  logging.info("Wrote %d rows of %s (%d read, %d variants each) to %s; "
               "copied %s", written, fmt.file_name, len(rows),
               opts.num_augmented, opts.output_dir,
               ", ".join(copied) or "no other split")
  return len(rows), written
