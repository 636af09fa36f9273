# coding=utf-8
"""SQuAD v1.1 and v2.0 for BERT: reading, windows, answers and scoring.

The data side of stage VIII's question answering (`run_squad.py`,
`run_squad_distributed.py`), with no flags and no TensorFlow, in the order a
run uses it:

  1. `read_squad_file`: the SQuAD JSON (`data` -> `paragraphs` -> `qas`) into
     `SquadExample`s. A context is split into words on whitespace as Google's
     run_squad.py does, and each answer's character offset `answer_start` is
     mapped to the words it covers. An answer whose text is not found at its
     `answer_start` is counted and dropped (with a warning); a question left
     without answers (and not marked impossible) is skipped.
  2. `convert_examples_to_features`: each question with one window of its
     context: `[CLS] question [SEP] window [SEP]`, questions cut to
     `max_query_length` word pieces, windows of at most
     `max_seq_length - len(question) - 3` pieces starting every `doc_stride`
     pieces until the end of the context is covered. For training, the
     answer's first and last word pieces in the window are the labels; a
     window that does not hold the whole answer (and every window of an
     impossible v2.0 question) points both labels at [CLS] (position 0), as
     Google's.
  3. `postprocess_predictions`: from the model's start and end logits of each
     window back to answer text: the `n_best_size` best starts and ends of
     every window, spans of at most `max_answer_length` pieces inside the
     context part of a window that has the most context around their first
     piece, ranked by start + end logit, mapped back to the original context
     characters (`final_text`). For v2.0 the null answer ([CLS], [CLS]) of
     the window where it scores best competes, and the question is answered
     "" when null score - best span score > `null_score_diff_threshold`.
  4. `evaluate`: exact match and F1 of the official SQuAD v1.1 / v2.0
     evaluation scripts (answers lower-cased, punctuation and the articles
     a/an/the removed, whitespace collapsed; the best over a question's gold
     answers; percentages).
"""

import collections
import dataclasses
import json
import math
import re
import string

from absl import logging
import numpy as np

from bert_distill.lib import errors

import tokenization

# The unique_id of a question's first window, as Google's.
FIRST_UNIQUE_ID = 1000000000


class SquadFormatError(errors.InputError):
  """The file is not SQuAD JSON (a key missing, a value of the wrong type)."""


def is_whitespace(char):
  """Whitespace of Google's SQuAD word split: space, tab, CR, LF, U+202F."""
  return char in " \t\r\n\u202f"


@dataclasses.dataclass
class SquadExample:
  """One question and its context, split into whitespace words.

  Attributes:
    qas_id: the question's `id`.
    question_text: the question.
    doc_tokens: the context's whitespace-separated words (shared by the
      questions of a paragraph).
    answers: the gold answer texts (every valid one; [] for unanswerable or
      unlabelled questions).
    orig_answer_text: the training answer (the first valid one), or None.
    start_position, end_position: indices in doc_tokens of its first and last
      word, or None.
    is_impossible: v2.0 question without an answer.
  """
  qas_id: str
  question_text: str
  doc_tokens: list
  answers: list
  orig_answer_text: str = None
  start_position: int = None
  end_position: int = None
  is_impossible: bool = False

  @property
  def has_gold(self):
    """True when the question can be scored (answers, or impossible)."""
    return bool(self.answers) or self.is_impossible


@dataclasses.dataclass
class ReadStats:
  """What `read_squad_file` found."""
  articles: int = 0
  questions: int = 0
  mismatched_answers: int = 0
  skipped_questions: int = 0
  marked_impossible: int = 0  # questions with "is_impossible": true
  first_mismatches: list = dataclasses.field(default_factory=list)


def split_context(context):
  """Splits a context into whitespace words.

  Args:
    context: the paragraph text.

  Returns:
    (words, char_to_word): char_to_word[i] is the index of the word holding
    character i (for whitespace, the word before it; -1 before the first).
  """
  words = []
  char_to_word = []
  in_word = False
  for char in context:
    if is_whitespace(char):
      in_word = False
    elif in_word:
      words[-1] += char
    else:
      words.append(char)
      in_word = True
    char_to_word.append(len(words) - 1)
  return words, char_to_word


def _require(obj, key, where, source, kind):
  """obj[key], which must be of `kind`; else a SquadFormatError."""
  if not isinstance(obj, dict):
    raise SquadFormatError(
        "%s is not SQuAD JSON: %s is a %s, expected an object with key %r" %
        (source, where or "the top level", type(obj).__name__, key))
  if key not in obj:
    raise SquadFormatError("%s is not SQuAD JSON: %s has no key %r" %
                           (source, where or "the top level", key))
  value = obj[key]
  if not isinstance(value, kind):
    raise SquadFormatError(
        "%s is not SQuAD JSON: %s[%r] is a %s, expected a %s" %
        (source, where or "the top level", key, type(value).__name__,
         kind.__name__ if isinstance(kind, type) else kind[0].__name__))
  return value


def _answer_words(context, char_to_word, answer, where, source):
  """Word span (start, end) of an answer dict, or None if it does not match.

  The answer matches when its text is found in the context at answer_start;
  the span covers the words of the text without its surrounding whitespace.
  """
  text = _require(answer, "text", where, source, str)
  start = _require(answer, "answer_start", where, source, int)
  if isinstance(start, bool) or start < 0:
    return None
  stripped = text.strip(" \t\r\n\u202f")
  if not stripped:
    return None
  if context[start:start + len(text)] != text:
    return None
  first = start + text.index(stripped)
  return char_to_word[first], char_to_word[first + len(stripped) - 1]


def parse_squad(data, source, version_2_with_negative=False):
  """SquadExamples of parsed SQuAD JSON (see `read_squad_file`).

  Args:
    data: the parsed JSON object.
    source: the file's name, for messages.
    version_2_with_negative: read `is_impossible` (v2.0); a v1.1 question
      must have an answer unless it is unlabelled.

  Returns:
    (examples, ReadStats).

  Raises:
    SquadFormatError: a key is missing or a value has the wrong type.
  """
  stats = ReadStats()
  examples = []
  first_seen = {}  # question id -> where it was first read
  articles = _require(data, "data", "", source, list)
  for a, article in enumerate(articles):
    where = "data[%d]" % a
    paragraphs = _require(article, "paragraphs", where, source, list)
    stats.articles += 1
    for p, paragraph in enumerate(paragraphs):
      where = "data[%d].paragraphs[%d]" % (a, p)
      context = _require(paragraph, "context", where, source, str)
      qas = _require(paragraph, "qas", where, source, list)
      words, char_to_word = split_context(context)
      for q, qa in enumerate(qas):
        where = "data[%d].paragraphs[%d].qas[%d]" % (a, p, q)
        qas_id = _require(qa, "id", where, source, (str, int))
        if str(qas_id) in first_seen:
          raise SquadFormatError(
              "%s: question id %s is used twice (%s and %s); predictions "
              "and scores are keyed by id" % (source, qas_id,
                                              first_seen[str(qas_id)], where))
        first_seen[str(qas_id)] = where
        question = _require(qa, "question", where, source, str)
        answers = qa.get("answers", [])
        if not isinstance(answers, list):
          raise SquadFormatError("%s is not SQuAD JSON: %s['answers'] is a "
                                 "%s, expected a list" %
                                 (source, where, type(answers).__name__))
        marked = bool(qa.get("is_impossible", False))
        impossible = False
        if version_2_with_negative:
          impossible = bool(qa.get("is_impossible", not answers))
        stats.questions += 1
        stats.marked_impossible += marked
        example = SquadExample(qas_id=str(qas_id), question_text=question,
                               doc_tokens=words, answers=[],
                               is_impossible=impossible)
        if impossible:
          examples.append(example)
          continue
        for n, answer in enumerate(answers):
          span = _answer_words(context, char_to_word, answer,
                               "%s.answers[%d]" % (where, n), source)
          if span is None:
            stats.mismatched_answers += 1
            if len(stats.first_mismatches) < 3:
              stats.first_mismatches.append(str(qas_id))
            continue
          example.answers.append(answer["text"])
          if example.orig_answer_text is None:
            example.orig_answer_text = answer["text"]
            example.start_position, example.end_position = span
        if answers and not example.answers:
          stats.skipped_questions += 1
          continue
        examples.append(example)
  if stats.mismatched_answers:
    logging.warning(
        "%s: %d answer(s) whose text is not at their answer_start in the "
        "context were skipped (e.g. question %s); %d question(s) were left "
        "without an answer and skipped", source, stats.mismatched_answers,
        ", ".join(stats.first_mismatches), stats.skipped_questions)
  return examples, stats


def read_squad_file(path, version_2_with_negative=False):
  """Reads a SQuAD v1.1 / v2.0 JSON file into SquadExamples.

  Every question is kept (for prediction); `answers` lists the texts of its
  valid answers, and the first of them is the training answer. A question
  without `answers` (an unlabelled test file) is kept with answers [].

  Args:
    path: the JSON file.
    version_2_with_negative: the file is SQuAD v2.0 (questions may be
      `is_impossible`).

  Returns:
    (examples, ReadStats).

  Raises:
    OSError: unreadable file.
    SquadFormatError: not JSON, or not SQuAD (names the missing key).
  """
  with open(path, "rb") as f:
    raw = f.read()
  try:
    data = json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as exc:
    raise SquadFormatError("%s is not SQuAD JSON: %s" % (path, exc))
  return parse_squad(data, path, version_2_with_negative)


# ---------------------------------------------------------------------------
# Features: [CLS] question [SEP] window of the context [SEP].
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class InputFeatures:
  """One window of one question.

  Attributes:
    unique_id: the window's id (FIRST_UNIQUE_ID, +1, ...).
    example_index: index of its SquadExample.
    doc_span_index: which window of the example (0, 1, ...).
    tokens: the word pieces, [CLS] question [SEP] window [SEP], unpadded.
    token_to_orig_map: position in tokens -> index of its context word.
    token_is_max_context: position in tokens -> True when this window has
      the most context around that piece of all windows holding it.
    input_ids, input_mask, segment_ids: int lists [max_seq_length].
    start_position, end_position: answer positions in tokens (training; 0
      when the window does not hold the answer), else 0.
    is_impossible: the question has no answer in this window (training).
  """
  unique_id: int
  example_index: int
  doc_span_index: int
  tokens: list
  token_to_orig_map: dict
  token_is_max_context: dict
  input_ids: list
  input_mask: list
  segment_ids: list
  start_position: int = 0
  end_position: int = 0
  is_impossible: bool = False


def window_starts(num_tokens, window_length, doc_stride):
  """(start, length) of the windows over num_tokens context pieces.

  A window starts every doc_stride pieces (or right after the previous one
  when it is shorter), until a window reaches the last piece.
  """
  if window_length <= 0 or doc_stride <= 0:
    raise ValueError("window length (%d) and doc stride (%d) must be > 0" %
                     (window_length, doc_stride))
  spans = []
  start = 0
  while True:
    length = min(window_length, num_tokens - start)
    spans.append((start, length))
    if start + length >= num_tokens:
      return spans
    start += min(length, doc_stride)


def _max_context_score(span, position):
  """How well `span` (start, length) centres `position`.

  The fewer pieces on its shorter side, the worse; ties go to the longer
  span (min(left, right) + 0.01 * length, as Google's).
  """
  start, length = span
  left = position - start
  right = start + length - 1 - position
  return min(left, right) + 0.01 * length


def _best_span_for(spans, position):
  """Index of the span holding `position` with the most context around it."""
  best, best_score = None, None
  for index, span in enumerate(spans):
    start, length = span
    if not start <= position < start + length:
      continue
    score = _max_context_score(span, position)
    if best_score is None or score > best_score:
      best, best_score = index, score
  return best


def _refine_answer_span(pieces, start, end, answer_pieces):
  """The tightest span within [start, end] whose pieces are the answer's.

  The answer's word span covers whole whitespace words; its word pieces may
  name less (e.g. "1854" in "(1854)"). Returns the input span when no
  sub-span matches.
  """
  for new_start in range(start, end + 1):
    for new_end in range(end, new_start - 1, -1):
      if pieces[new_start:new_end + 1] == answer_pieces:
        return new_start, new_end
  return start, end


def convert_examples_to_features(examples, tokenizer, max_seq_length,
                                 doc_stride, max_query_length, is_training,
                                 first_unique_id=FIRST_UNIQUE_ID):
  """The list of `iter_features(...)`."""
  return list(iter_features(examples, tokenizer, max_seq_length, doc_stride,
                            max_query_length, is_training, first_unique_id))


def iter_features(examples, tokenizer, max_seq_length, doc_stride,
                  max_query_length, is_training,
                  first_unique_id=FIRST_UNIQUE_ID):
  """Windows of every example as InputFeatures (see the module docstring).

  Args:
    examples: SquadExamples.
    tokenizer: a tokenization.FullTokenizer.
    max_seq_length: length of a window with its question ([CLS], 2 [SEP]).
    doc_stride: distance between the starts of consecutive windows.
    max_query_length: questions are cut to this many word pieces.
    is_training: set the answer positions.
    first_unique_id: unique_id of the first window.

  Yields:
    InputFeatures, in example order.
  """
  if max_seq_length - min(max_query_length, max_seq_length) - 3 <= 0:
    raise ValueError(
        "max_seq_length %d leaves no room for the context after a question "
        "of up to %d pieces, [CLS] and two [SEP]" %
        (max_seq_length, max_query_length))
  vocab = tokenizer.vocab
  cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
  unique_id = first_unique_id
  doc_cache = {}
  for example_index, example in enumerate(examples):
    query = tokenizer.tokenize(example.question_text)[:max_query_length]
    key = id(example.doc_tokens)
    if key not in doc_cache:
      doc_cache.clear()  # examples of a paragraph come together
      piece_to_word, word_to_piece, pieces = [], [], []
      for w, word in enumerate(example.doc_tokens):
        word_to_piece.append(len(pieces))
        for piece in tokenizer.tokenize(word):
          piece_to_word.append(w)
          pieces.append(piece)
      doc_cache[key] = (piece_to_word, word_to_piece, pieces)
    piece_to_word, word_to_piece, pieces = doc_cache[key]

    answer_start = answer_end = None
    if is_training and not example.is_impossible:
      answer_start = word_to_piece[example.start_position]
      if example.end_position + 1 < len(example.doc_tokens):
        answer_end = word_to_piece[example.end_position + 1] - 1
      else:
        answer_end = len(pieces) - 1
      answer_start, answer_end = _refine_answer_span(
          pieces, answer_start, answer_end,
          tokenizer.tokenize(example.orig_answer_text))

    window_length = max_seq_length - len(query) - 3
    spans = window_starts(len(pieces), window_length, doc_stride)
    offset = len(query) + 2  # [CLS] question [SEP]
    for span_index, (span_start, span_length) in enumerate(spans):
      tokens = ["[CLS]"] + query + ["[SEP]"]
      token_to_orig_map = {}
      token_is_max_context = {}
      for i in range(span_length):
        piece_index = span_start + i
        token_to_orig_map[len(tokens)] = piece_to_word[piece_index]
        token_is_max_context[len(tokens)] = (
            _best_span_for(spans, piece_index) == span_index)
        tokens.append(pieces[piece_index])
      tokens.append("[SEP]")
      input_ids = tokenizer.convert_tokens_to_ids(tokens)
      segment_ids = [0] * offset + [1] * (span_length + 1)
      input_mask = [1] * len(tokens)
      padding = max_seq_length - len(tokens)
      input_ids += [0] * padding
      input_mask += [0] * padding
      segment_ids += [0] * padding
      assert input_ids[0] == cls_id and input_ids[len(tokens) - 1] == sep_id

      start_position = end_position = 0
      impossible = example.is_impossible
      if is_training and not example.is_impossible:
        span_end = span_start + span_length - 1
        if span_start <= answer_start and answer_end <= span_end:
          start_position = answer_start - span_start + offset
          end_position = answer_end - span_start + offset
        else:
          impossible = True
      yield InputFeatures(
          unique_id=unique_id, example_index=example_index,
          doc_span_index=span_index, tokens=tokens,
          token_to_orig_map=token_to_orig_map,
          token_is_max_context=token_is_max_context, input_ids=input_ids,
          input_mask=input_mask, segment_ids=segment_ids,
          start_position=start_position, end_position=end_position,
          is_impossible=impossible)
      unique_id += 1


def features_to_arrays(features, is_training):
  """The model inputs of `features` (any iterable) as NumPy arrays.

  Returns:
    dict: input_ids, input_mask, segment_ids int32 [N, max_seq_length];
    unique_ids int64 [N]; with is_training also start_positions and
    end_positions int32 [N].
  """
  names = ["input_ids", "input_mask", "segment_ids", "unique_ids"]
  if is_training:
    names += ["start_positions", "end_positions"]
  rows = {name: [] for name in names}
  for f in features:
    rows["input_ids"].append(np.array(f.input_ids, np.int32))
    rows["input_mask"].append(np.array(f.input_mask, np.int32))
    rows["segment_ids"].append(np.array(f.segment_ids, np.int32))
    rows["unique_ids"].append(f.unique_id)
    if is_training:
      rows["start_positions"].append(f.start_position)
      rows["end_positions"].append(f.end_position)
  if not rows["unique_ids"]:
    raise SquadFormatError("no features: the SQuAD file has no question")
  arrays = {}
  for name, values in rows.items():
    if name in ("input_ids", "input_mask", "segment_ids"):
      arrays[name] = np.stack(values)
    else:
      arrays[name] = np.array(values, np.int64 if name == "unique_ids"
                              else np.int32)
  return arrays


# ---------------------------------------------------------------------------
# From logits back to answer text.
# ---------------------------------------------------------------------------


def _strip_spaces_with_map(text):
  """(text without spaces, map: index there -> index in text)."""
  kept, index_map = [], []
  for i, char in enumerate(text):
    if char != " ":
      kept.append(char)
      index_map.append(i)
  return "".join(kept), index_map


def final_text(pred_text, orig_text, do_lower_case, verbose=False):
  """The part of orig_text that the de-tokenized prediction covers.

  pred_text is the prediction's word pieces joined ("the 1850 ##s" ->
  "the 1850s"), lower-cased and split at punctuation by the tokenizer;
  orig_text is the original words it lies in ("The 1850s,"). The prediction
  is found in the tokenized original, and both are aligned character by
  character ignoring spaces, which gives the original characters ("The
  1850s"). When the alignment fails (unknown or dropped characters),
  orig_text is returned whole (logged with `verbose`).
  """
  basic = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
  tok_text = " ".join(basic.tokenize(orig_text))
  start = tok_text.find(pred_text)
  if start < 0:
    if verbose:
      logging.info("Could not find %r in %r", pred_text, orig_text)
    return orig_text
  end = start + len(pred_text) - 1
  orig_ns, orig_map = _strip_spaces_with_map(orig_text)
  tok_ns, tok_map = _strip_spaces_with_map(tok_text)
  if len(orig_ns) != len(tok_ns):
    if verbose:
      logging.info("Length not equal after stripping spaces: %r vs %r",
                   orig_ns, tok_ns)
    return orig_text
  tok_to_ns = {position: ns for ns, position in enumerate(tok_map)}
  if start not in tok_to_ns or end not in tok_to_ns:
    return orig_text
  return orig_text[orig_map[tok_to_ns[start]]:orig_map[tok_to_ns[end]] + 1]


def _top_indices(logits, n):
  """Indices of the n largest logits, largest first (ties: lower index)."""
  logits = np.asarray(logits)
  order = np.argsort(-logits, kind="stable")
  return order[:n].tolist()


def _softmax(scores):
  if not scores:
    return []
  top = max(scores)
  exps = [math.exp(s - top) for s in scores]
  total = sum(exps)
  return [e / total for e in exps]


RawResult = collections.namedtuple("RawResult",
                                   ["unique_id", "start_logits", "end_logits"])


def postprocess_predictions(examples, features, results, n_best_size,
                            max_answer_length, do_lower_case,
                            version_2_with_negative=False,
                            null_score_diff_threshold=0.0, verbose=False):
  """Answer texts from the start/end logits of every window.

  Args:
    examples: the SquadExamples.
    features: their InputFeatures (convert_examples_to_features).
    results: RawResults (unique_id, start_logits [max_seq_length],
      end_logits [max_seq_length]), one per feature (any order).
    n_best_size: candidates kept per window and in the n-best list.
    max_answer_length: longest answer, in word pieces.
    do_lower_case: as the tokenizer (for mapping back to the original).
    version_2_with_negative: compete with the null answer.
    null_score_diff_threshold: v2.0: answer "" when null score - best
      non-null score exceeds it.
    verbose: log the answers that could not be mapped back to the original
      text exactly.

  Returns:
    (predictions, nbest, null_odds): OrderedDicts keyed by question id:
    the answer text; the n-best list of dicts (text, probability,
    start_logit, end_logit); v2.0 only, the score difference (else {}).
  """
  by_unique_id = {r.unique_id: r for r in results}
  features_of = collections.defaultdict(list)
  for feature in features:
    features_of[feature.example_index].append(feature)
  predictions = collections.OrderedDict()
  nbest_json = collections.OrderedDict()
  null_odds = collections.OrderedDict()
  for example_index, example in enumerate(examples):
    candidates = []  # (score, start_logit, end_logit, feature, start, end)
    null = None  # (score, start_logit, end_logit)
    for feature in features_of[example_index]:
      result = by_unique_id.get(feature.unique_id)
      if result is None:
        raise ValueError("no model output for window %d of question %s" %
                         (feature.unique_id, example.qas_id))
      start_logits = np.asarray(result.start_logits, np.float64)
      end_logits = np.asarray(result.end_logits, np.float64)
      if version_2_with_negative:
        score = start_logits[0] + end_logits[0]
        if null is None or score < null[0]:
          null = (score, start_logits[0], end_logits[0])
      num_tokens = len(feature.tokens)
      for start in _top_indices(start_logits, n_best_size):
        if start >= num_tokens or start not in feature.token_to_orig_map:
          continue
        if not feature.token_is_max_context.get(start, False):
          continue
        for end in _top_indices(end_logits, n_best_size):
          if end >= num_tokens or end not in feature.token_to_orig_map:
            continue
          if end < start or end - start + 1 > max_answer_length:
            continue
          candidates.append((start_logits[start] + end_logits[end],
                             start_logits[start], end_logits[end], feature,
                             start, end))
    if null is not None:
      candidates.append((null[0], null[1], null[2], None, 0, 0))
    candidates.sort(key=lambda c: c[0], reverse=True)

    nbest = []  # (text, start_logit, end_logit)
    seen = set()
    for _, start_logit, end_logit, feature, start, end in candidates:
      if len(nbest) >= n_best_size:
        break
      if feature is None:
        text = ""
      else:
        pieces = " ".join(feature.tokens[start:end + 1])
        pieces = " ".join(pieces.replace(" ##", "").replace("##", "").split())
        first = feature.token_to_orig_map[start]
        last = feature.token_to_orig_map[end]
        words = " ".join(example.doc_tokens[first:last + 1])
        text = final_text(pieces, words, do_lower_case, verbose)
      if text in seen:
        continue
      seen.add(text)
      nbest.append((text, float(start_logit), float(end_logit)))
    if version_2_with_negative and "" not in seen:
      nbest.append(("", float(null[1]), float(null[2])))
    if not nbest:
      nbest.append(("empty", 0.0, 0.0))
    probabilities = _softmax([s + e for _, s, e in nbest])
    nbest_json[example.qas_id] = [
        collections.OrderedDict([("text", text), ("probability", p),
                                 ("start_logit", s), ("end_logit", e)])
        for (text, s, e), p in zip(nbest, probabilities)]
    if not version_2_with_negative:
      predictions[example.qas_id] = nbest[0][0]
      continue
    best = next((entry for entry in nbest if entry[0]), None)
    if best is None:
      predictions[example.qas_id] = ""
      null_odds[example.qas_id] = float("inf")
      continue
    diff = float(null[0] - best[1] - best[2])
    null_odds[example.qas_id] = diff
    predictions[example.qas_id] = (
        "" if diff > null_score_diff_threshold else best[0])
  return predictions, nbest_json, null_odds


# ---------------------------------------------------------------------------
# Scoring, as the official SQuAD v1.1 and v2.0 evaluation scripts.
# ---------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text):
  """Lower case, no punctuation, no articles (a, an, the), single spaces."""
  text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def exact_match_score(prediction, ground_truth):
  """1.0 when both normalise to the same text, else 0.0."""
  return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction, ground_truth, version_2=False):
  """Token-overlap F1 of the normalised texts.

  With version_2 (the v2.0 script), an empty side scores 1.0 when both are
  empty and 0.0 otherwise; the v1.1 script scores 0.0 whenever nothing is
  shared.
  """
  pred_tokens = normalize_answer(prediction).split()
  gold_tokens = normalize_answer(ground_truth).split()
  if version_2 and (not pred_tokens or not gold_tokens):
    return float(pred_tokens == gold_tokens)
  common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
  num_same = sum(common.values())
  if num_same == 0:
    return 0.0
  precision = num_same / len(pred_tokens)
  recall = num_same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def _gold_answers(example, version_2):
  """The texts a prediction is scored against ([""] when unanswerable)."""
  if version_2:
    answers = [a for a in example.answers if normalize_answer(a)]
    return answers or [""]
  return example.answers


def evaluate(examples, predictions, version_2_with_negative=False,
             null_odds=None):
  """Exact match and F1 (percent) of `predictions` against the gold answers.

  Each question scores the best over its gold answers; questions without
  gold (unlabelled) are not scored; a scored question without a prediction
  scores 0.

  Args:
    examples: SquadExamples (their `answers` and `is_impossible`).
    predictions: question id -> answer text ("" = no answer).
    version_2_with_negative: the v2.0 rules (also reports HasAns_* and
      NoAns_* over answerable and unanswerable questions).
    null_odds: (optional, v2.0) question id -> null score difference; adds
      best_exact / best_f1 and the thresholds that reach them (the official
      script's "best" figures).

  Returns:
    OrderedDict: exact_match, f1, total (and the v2.0 keys); empty when no
    question has gold answers.
  """
  exact, f1, has_answer = {}, {}, {}
  missing = 0
  for example in examples:
    if not example.has_gold:
      continue
    golds = _gold_answers(example, version_2_with_negative)
    has_answer[example.qas_id] = bool(example.answers)
    if example.qas_id not in predictions:
      missing += 1
      exact[example.qas_id] = f1[example.qas_id] = 0.0
      continue
    prediction = predictions[example.qas_id]
    exact[example.qas_id] = max(exact_match_score(prediction, g)
                                for g in golds)
    f1[example.qas_id] = max(f1_score(prediction, g, version_2_with_negative)
                             for g in golds)
  if missing:
    logging.warning("%d scored question(s) have no prediction: they score 0",
                    missing)
  results = collections.OrderedDict()
  if not exact:
    return results

  def _mean(scores, ids):
    return 100.0 * sum(scores[i] for i in ids) / len(ids) if ids else 0.0

  ids = list(exact)
  results["exact_match"] = _mean(exact, ids)
  results["f1"] = _mean(f1, ids)
  results["total"] = len(ids)
  if version_2_with_negative:
    for name, subset in (("HasAns", [i for i in ids if has_answer[i]]),
                         ("NoAns", [i for i in ids if not has_answer[i]])):
      if subset:
        results[name + "_exact"] = _mean(exact, subset)
        results[name + "_f1"] = _mean(f1, subset)
        results[name + "_total"] = len(subset)
    if null_odds:
      for name, scores in (("exact", exact), ("f1", f1)):
        best, threshold = _best_threshold(scores, null_odds, has_answer,
                                          predictions)
        results["best_" + name] = best
        results["best_%s_thresh" % name] = threshold
  return results


def _best_threshold(scores, null_odds, has_answer, predictions):
  """The null threshold maximising the mean score (official v2.0 search).

  A question is answered "" when its null odds exceed the threshold. From
  a threshold below every odds (all "": each unanswerable question scores
  1), questions switch to their prediction in increasing order of their
  odds: an answerable one gains its score, an unanswerable one with a
  non-empty prediction loses 1.
  """
  ids = list(scores)
  current = sum(1.0 for i in ids if not has_answer[i])
  best, best_threshold = current, 0.0
  for qid in sorted(ids, key=lambda i: null_odds.get(i, 0.0)):
    if qid not in null_odds:
      continue
    if has_answer[qid]:
      gain = scores[qid] if predictions.get(qid, "") else 0.0
    else:
      gain = -1.0 if predictions.get(qid, "") else 0.0
    current += gain
    if current > best:
      best, best_threshold = current, null_odds[qid]
  return 100.0 * best / len(ids), best_threshold
