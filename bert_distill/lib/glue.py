"""GLUE-format classification tasks: readers, features and metrics.

The tasks of Google's run_classifier.py and the GLUE benchmark, read from
the TSV files users download (the folder of one task, --data_dir):

  task    files (header?)                          text_a, text_b -> label
  cola    train/dev.tsv (no header), test.tsv      sentence -> 0/1
  sst-2   train/dev.tsv, test.tsv                  sentence -> 0/1
  mrpc    train/dev.tsv, test.tsv                  #1 String, #2 String -> 0/1
  sts-b   train/dev.tsv, test.tsv                  sentence1, sentence2 -> score
                                                   (regression, 0-5)
  qqp     train/dev.tsv, test.tsv                  question1, question2 -> 0/1
  mnli    train, dev_matched, dev_mismatched,      sentence1, sentence2 ->
          test_matched, test_mismatched .tsv       contradiction/entailment/
                                                   neutral
  qnli    train/dev.tsv, test.tsv                  question, sentence ->
                                                   entailment/not_entailment
  rte     train/dev.tsv, test.tsv                  sentence1, sentence2 ->
                                                   entailment/not_entailment
  wnli    train/dev.tsv, test.tsv                  sentence1, sentence2 -> 0/1
  xnli    multinli/multinli.train.zh.tsv,          premise, hypothesis ->
          xnli.dev.tsv, xnli.test.tsv (rows of     contradiction/entailment/
          language zh, as Google's)                neutral

Every file is read as Google reads it (tab-separated, no quoting) and checked
line by line: a line with the wrong number of columns, or a label outside the
task's set, raises `DataError` naming the file and the line. (QQP's train and
dev files are known to hold a few short lines; those are skipped with a
warning, as Google's reader skips them.)

Metrics, as GLUE reports them (computed here, without scikit-learn):
accuracy; F1 of class "1" and accuracy for MRPC and QQP; Matthews
correlation for CoLA; Pearson and Spearman correlations for STS-B.
"""

import collections
import csv
import dataclasses
import math
import os
import sys
from typing import Optional, Tuple

from absl import logging
import numpy as np

from bert_distill.lib import errors


class DataError(errors.InputError):
  """A task's data folder or file is not in the expected format."""


@dataclasses.dataclass(frozen=True)
class TsvFormat(object):
  """Where one split of a task is, and which columns hold what.

  Attributes:
    file_name: path relative to the data folder.
    columns: the number of columns of every line (at least this many when
      `exact` is False).
    text_a, text_b, label: column indices (text_b / label None if absent).
    header: whether the first line is a header.
    exact: whether `columns` is exact.
    language: (column, value): keep only lines whose column has that value.
  """
  file_name: str
  columns: int
  text_a: int
  text_b: Optional[int] = None
  label: Optional[int] = None
  header: bool = True
  exact: bool = True
  language: Optional[Tuple[int, str]] = None


@dataclasses.dataclass(frozen=True)
class Task(object):
  """A classification (or regression) task in GLUE's file formats.

  Attributes:
    name: the --task_name.
    labels: the label strings, in the order of the model's outputs; None
      for a regression task (one output, float labels).
    train: the training file's format.
    dev: (split name, format) of each evaluation file; the first one's
      metrics are reported unprefixed, the others' prefixed with the name.
    test: (split name, format) of each prediction file.
    metrics: the metric names reported (see `compute_metrics`).
    label_aliases: label spellings mapped to the task's (XNLI's training
      file says "contradictory").
    skip_short_lines: skip lines with too few columns (with a warning)
      instead of failing.
  """
  name: str
  labels: Optional[Tuple[str, ...]]
  train: TsvFormat
  dev: Tuple[Tuple[str, TsvFormat], ...]
  test: Tuple[Tuple[str, TsvFormat], ...]
  metrics: Tuple[str, ...] = ("accuracy",)
  label_aliases: Tuple[Tuple[str, str], ...] = ()
  skip_short_lines: bool = False

  @property
  def is_regression(self):
    return self.labels is None

  @property
  def num_labels(self):
    """Outputs of the model: the number of labels, 1 for regression."""
    return 1 if self.is_regression else len(self.labels)


def _pair_task(name, labels, columns, a, b, label, test_columns, test_a,
               test_b, metrics=("accuracy",), **kwargs):
  """A task with train.tsv, dev.tsv and test.tsv, all with headers."""
  fmt = TsvFormat("train.tsv", columns, a, b, label)
  return Task(
      name, labels, fmt, (("dev", dataclasses.replace(
          fmt, file_name="dev.tsv")),),
      (("test", TsvFormat("test.tsv", test_columns, test_a, test_b)),),
      metrics, **kwargs)


_BINARY = ("0", "1")
_NLI = ("contradiction", "entailment", "neutral")
_ENTAILMENT = ("entailment", "not_entailment")
_MNLI_DEV = TsvFormat("dev_matched.tsv", 16, 8, 9, 15)
_MNLI_TEST = TsvFormat("test_matched.tsv", 10, 8, 9)
_XNLI_DEV = TsvFormat("xnli.dev.tsv", 8, 6, 7, 1, exact=False,
                      language=(0, "zh"))

TASKS = collections.OrderedDict((t.name, t) for t in [
    Task("cola", _BINARY, TsvFormat("train.tsv", 4, 3, None, 1, header=False),
         (("dev", TsvFormat("dev.tsv", 4, 3, None, 1, header=False)),),
         (("test", TsvFormat("test.tsv", 2, 1)),),
         metrics=("matthews_corr", "accuracy")),
    Task("sst-2", _BINARY, TsvFormat("train.tsv", 2, 0, None, 1),
         (("dev", TsvFormat("dev.tsv", 2, 0, None, 1)),),
         (("test", TsvFormat("test.tsv", 2, 1)),)),
    _pair_task("mrpc", _BINARY, 5, 3, 4, 0, 5, 3, 4,
               metrics=("f1", "accuracy")),
    _pair_task("sts-b", None, 10, 7, 8, 9, 9, 7, 8,
               metrics=("pearson", "spearman")),
    _pair_task("qqp", _BINARY, 6, 3, 4, 5, 3, 1, 2,
               metrics=("f1", "accuracy"), skip_short_lines=True),
    Task("mnli", _NLI, TsvFormat("train.tsv", 12, 8, 9, 11),
         (("dev_matched", _MNLI_DEV),
          ("dev_mismatched", dataclasses.replace(
              _MNLI_DEV, file_name="dev_mismatched.tsv"))),
         (("test_matched", _MNLI_TEST),
          ("test_mismatched", dataclasses.replace(
              _MNLI_TEST, file_name="test_mismatched.tsv")))),
    _pair_task("qnli", _ENTAILMENT, 4, 1, 2, 3, 3, 1, 2),
    _pair_task("rte", _ENTAILMENT, 4, 1, 2, 3, 3, 1, 2),
    _pair_task("wnli", _BINARY, 4, 1, 2, 3, 3, 1, 2),
    Task("xnli", _NLI,
         TsvFormat("multinli/multinli.train.zh.tsv", 3, 0, 1, 2),
         (("dev", _XNLI_DEV),),
         (("test", dataclasses.replace(_XNLI_DEV, file_name="xnli.test.tsv",
                                       label=None)),),
         label_aliases=(("contradictory", "contradiction"),)),
])

# Names users may also type (GLUE's folder names, Google's spellings).
_ALIASES = {"sst2": "sst-2", "stsb": "sts-b", "sts": "sts-b"}


def get_task(name):
  """The Task called `name` (case-insensitive).

  Raises:
    DataError: an unknown name (the message lists the known ones).
  """
  key = (name or "").strip().lower()
  key = _ALIASES.get(key, key)
  if key not in TASKS:
    raise DataError("unknown task %r; known tasks: %s" %
                    (name, ", ".join(TASKS)))
  return TASKS[key]


@dataclasses.dataclass
class InputExample(object):
  """One example: its id (file:line), texts and label (None if unlabelled).

  The label is the label string for classification, a float for regression.
  """
  guid: str
  text_a: str
  text_b: Optional[str] = None
  label: object = None


def split_file(task, data_dir, fmt):
  """The path of a split's file, checking that it exists.

  Raises:
    DataError: the file is missing (naming the folder and the task).
  """
  path = os.path.join(data_dir, fmt.file_name)
  if not os.path.isfile(path):
    raise DataError(
        "%s: no %s in this folder (task %s expects %s)" %
        (data_dir, fmt.file_name, task.name,
         ", ".join(f.file_name for f in all_formats(task))))
  return path


def all_formats(task):
  """The TsvFormat of every split of `task`: train, dev, then test."""
  return [task.train] + [f for _, f in task.dev] + [f for _, f in task.test]


def read_rows(task, data_dir, fmt):
  """Reads one split of a task as rows of columns, checking their number.

  Args:
    task: a Task.
    data_dir: the task's folder.
    fmt: the TsvFormat of the split.

  Returns:
    (header, rows): the header row (None without one) and a list of
    (line_number, row) pairs, in file order: blank lines, lines of other
    languages (fmt.language) and, for tasks that allow it, short lines
    (with a warning) left out.

  Raises:
    DataError: a missing file, a file that is not UTF-8, or a line with the
      wrong number of columns (file and line named).
  """
  path = split_file(task, data_dir, fmt)
  header, rows, short = None, [], []
  # Some GLUE sentences are very long (e.g. in QNLI): lift csv's 128 kB cap.
  csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
  try:
    with open(path, encoding="utf-8", newline="") as f:
      for line_number, row in enumerate(
          csv.reader(f, delimiter="\t", quotechar=None), start=1):
        if fmt.header and line_number == 1:
          header = row
          continue
        if not row or row == [""]:
          continue  # blank line (e.g. at the end)
        if (len(row) != fmt.columns if fmt.exact else len(row) < fmt.columns):
          if task.skip_short_lines and len(row) < fmt.columns:
            short.append(line_number)
            continue
          raise DataError(
              "%s:%d: %d tab-separated columns, expected %s%d for task %s "
              "(%s)" % (path, line_number, len(row),
                        "" if fmt.exact else "at least ", fmt.columns,
                        task.name, fmt.file_name))
        if fmt.language and row[fmt.language[0]] != fmt.language[1]:
          continue
        rows.append((line_number, row))
  except UnicodeDecodeError:
    raise DataError(_not_utf8(path))
  if short:
    logging.warning("%s: skipped %d lines with fewer than %d columns "
                    "(first: line %d)", path, len(short), fmt.columns,
                    short[0])
  return header, rows


def read_examples(task, data_dir, fmt, with_labels=True):
  """Reads one split of a task.

  Args:
    task: a Task.
    data_dir: the task's folder.
    fmt: the TsvFormat of the split (task.train, or from task.dev/test).
    with_labels: read and check the labels (False for test files).

  Returns:
    A list of InputExample, in file order.

  Raises:
    DataError: a missing file, a line with the wrong number of columns or a
      label outside the task's set (file and line named).
  """
  path = split_file(task, data_dir, fmt)
  aliases = dict(task.label_aliases)
  examples = []
  for line_number, row in read_rows(task, data_dir, fmt)[1]:
    label = None
    if with_labels and fmt.label is not None:
      label = _parse_label(task, row[fmt.label], aliases, path, line_number)
    examples.append(InputExample(
        guid="%s:%d" % (fmt.file_name, line_number),
        text_a=row[fmt.text_a],
        text_b=row[fmt.text_b] if fmt.text_b is not None else None,
        label=label))
  if not examples:
    raise DataError("%s: no examples (task %s)" % (path, task.name))
  return examples


def _not_utf8(path):
  """The message for a file that is not UTF-8: where the first bad byte is."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    data.decode("utf-8")
  except UnicodeDecodeError as exc:
    return ("%s:%d: not UTF-8 text (invalid byte 0x%02x at offset %d); "
            "GLUE's files are UTF-8: convert this one (e.g. iconv -f latin1 "
            "-t utf-8)" % (path, data.count(b"\n", 0, exc.start) + 1,
                           data[exc.start], exc.start))
  return "%s: not UTF-8 text" % path


def _parse_label(task, text, aliases, path, line_number):
  text = text.strip()
  if task.is_regression:
    try:
      value = float(text)
    except ValueError:
      value = float("nan")
    if not math.isfinite(value):
      raise DataError("%s:%d: label %r is not a number (task %s is a "
                      "regression)" % (path, line_number, text, task.name))
    return value
  text = aliases.get(text, text)
  if text not in task.labels:
    raise DataError("%s:%d: label %r is not one of the labels of task %s "
                    "(%s)" % (path, line_number, text, task.name,
                              ", ".join(task.labels)))
  return text


# ---------------------------------------------------------------------------
# Examples -> model inputs.
# ---------------------------------------------------------------------------


def truncate_seq_pair(tokens_a, tokens_b, max_length):
  """Truncates the longer of the two lists, one token at a time, in place."""
  while len(tokens_a) + len(tokens_b) > max_length:
    if len(tokens_a) > len(tokens_b):
      tokens_a.pop()
    else:
      tokens_b.pop()


def convert_examples_to_features(examples, task, max_seq_length, tokenizer):
  """Tokenizes examples into BERT inputs, as Google's run_classifier.py.

  `[CLS] a [SEP]` (segment 0) and `b [SEP]` (segment 1), the pair truncated
  to max_seq_length - 3 tokens (a single sentence to max_seq_length - 2),
  zero-padded.

  Returns:
    dict of NumPy arrays: input_ids, input_mask, segment_ids (int32
    [N, max_seq_length]); label_ids (int32 [N], the index in task.labels;
    float32 for regression; 0 for unlabelled examples).
  """
  n = len(examples)
  input_ids = np.zeros([n, max_seq_length], np.int32)
  input_mask = np.zeros([n, max_seq_length], np.int32)
  segment_ids = np.zeros([n, max_seq_length], np.int32)
  labels = np.zeros([n], np.float32 if task.is_regression else np.int32)
  label_index = {} if task.is_regression else {
      label: i for i, label in enumerate(task.labels)}
  cls_id, sep_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
  truncated = 0
  for i, example in enumerate(examples):
    ids_a = tokenizer.tokenize_to_ids(example.text_a)
    ids_b = (tokenizer.tokenize_to_ids(example.text_b)
             if example.text_b is not None else None)
    length = len(ids_a) + (len(ids_b) + 3 if ids_b is not None else 2)
    if length > max_seq_length:
      truncated += 1
    if ids_b is not None:
      truncate_seq_pair(ids_a, ids_b, max_seq_length - 3)
      ids = [cls_id] + ids_a + [sep_id] + ids_b + [sep_id]
      segments = [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
    else:
      ids = [cls_id] + ids_a[:max_seq_length - 2] + [sep_id]
      segments = [0] * len(ids)
    input_ids[i, :len(ids)] = ids
    input_mask[i, :len(ids)] = 1
    segment_ids[i, :len(ids)] = segments
    if example.label is not None:
      labels[i] = (example.label if task.is_regression else
                   label_index[example.label])
  if truncated:
    logging.info("%d of %d examples were longer than max_seq_length %d and "
                 "were truncated", truncated, n, max_seq_length)
  return {"input_ids": input_ids, "input_mask": input_mask,
          "segment_ids": segment_ids, "label_ids": labels}


# ---------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------


def accuracy(predictions, labels):
  """Fraction of predictions equal to the labels."""
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  return float(np.mean(predictions == labels))


def _confusion(predictions, labels):
  """(tp, tn, fp, fn) for the positive class 1, as floats."""
  p = np.asarray(predictions) == 1
  y = np.asarray(labels) == 1
  return (float(np.sum(p & y)), float(np.sum(~p & ~y)),
          float(np.sum(p & ~y)), float(np.sum(~p & y)))


def f1_score(predictions, labels):
  """F1 of the positive class 1: 2 tp / (2 tp + fp + fn) (0 if undefined)."""
  tp, _, fp, fn = _confusion(predictions, labels)
  return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews_corrcoef(predictions, labels):
  """Matthews correlation of binary predictions (0 when undefined).

  (tp * tn - fp * fn) / sqrt((tp + fp)(tp + fn)(tn + fp)(tn + fn)).
  """
  tp, tn, fp, fn = _confusion(predictions, labels)
  denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return (tp * tn - fp * fn) / denominator if denominator else 0.0


def pearson(x, y):
  """Pearson correlation of two equally long sequences (0 if undefined)."""
  x = np.asarray(x, np.float64) - np.mean(x)
  y = np.asarray(y, np.float64) - np.mean(y)
  denominator = math.sqrt(float(np.sum(x * x) * np.sum(y * y)))
  return float(np.sum(x * y)) / denominator if denominator else 0.0


def ranks(values):
  """Ranks 1..n of `values`, ties given the mean of their ranks."""
  values = np.asarray(values, np.float64)
  order = np.argsort(values, kind="mergesort")
  result = np.empty(len(values), np.float64)
  i = 0
  while i < len(values):
    j = i
    while j + 1 < len(values) and values[order[j + 1]] == values[order[i]]:
      j += 1
    result[order[i:j + 1]] = (i + j) / 2.0 + 1.0
    i = j + 1
  return result


def spearman(x, y):
  """Spearman rank correlation: Pearson's of the (tie-averaged) ranks."""
  return pearson(ranks(x), ranks(y))


def compute_metrics(task, outputs, label_ids):
  """The task's metrics on model outputs.

  Args:
    task: a Task.
    outputs: logits [N, num_labels] (classification) or predictions [N] /
      [N, 1] (regression).
    label_ids: label indices [N] (float scores for regression).

  Returns:
    OrderedDict: for each of task.metrics, "eval_<metric>" (accuracy,
    f1, matthews_corr, pearson, spearman), plus "eval_corr" (the mean of
    Pearson and Spearman) for regression.
  """
  outputs = np.asarray(outputs)
  results = collections.OrderedDict()
  if task.is_regression:
    predictions = outputs.reshape(-1)
  else:
    predictions = np.argmax(outputs, axis=-1)
  functions = {"accuracy": accuracy, "f1": f1_score,
               "matthews_corr": matthews_corrcoef, "pearson": pearson,
               "spearman": spearman}
  for metric in task.metrics:
    results["eval_" + metric] = functions[metric](predictions, label_ids)
  if task.is_regression:
    results["eval_corr"] = (results["eval_pearson"] +
                            results["eval_spearman"]) / 2.0
  return results
