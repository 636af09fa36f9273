# coding=utf-8
"""WordPiece tokenization compatible with Google's BERT release.

The public names are those BERT users know (`FullTokenizer`,
`BasicTokenizer`, `WordpieceTokenizer`, `load_vocab`, `convert_to_unicode`,
`printable_text`, `convert_by_vocab`, `whitespace_tokenize`), and the tokens
produced are the same as those of Google's tokenizer for any input text:

  1. Basic tokenization of a text: drop NUL, U+FFFD and control characters
     (categories Cc and Cf, except tab, newline and carriage return), turn
     whitespace (those three, the space and category Zs) into spaces, put
     spaces around CJK ideographs, and split on whitespace.
  2. For each whitespace-separated word: lower-case it and strip accents
     (decompose to NFD, drop category Mn) when `do_lower_case`; then split it
     into runs of non-punctuation characters and single punctuation
     characters (all non-alphanumeric printable ASCII counts as punctuation,
     as does every Unicode category P*).
  3. WordPiece: split each piece greedily into the longest prefix found in
     the vocabulary, continuing with "##"-prefixed pieces; a word that cannot
     be covered, or that is longer than `max_input_chars_per_word` (200)
     characters, becomes "[UNK]".

Tokenization is the bulk of the work of making pre-training data, so the
implementation is organised for speed without changing any result: a text is
cleaned with one `str.translate` (ASCII texts with a fixed table, others
with a per-character table filled on first sight), and the result of steps 2
and 3 is cached per whitespace-separated word, since the words of natural
text repeat heavily. Each step is a pure function of its word, so the cache
cannot change the output.
"""

import collections
import re
import unicodedata

from bert_distill.lib import errors
from bert_distill.lib import outputs

# Words whose tokens are cached, per tokenizer; the cache is emptied when it
# grows past this many words, which bounds its memory (a few hundred MB at
# most) on arbitrarily large inputs.
_CACHE_LIMIT = 500000

_UNUSED_TOKEN_RE = re.compile(r"^\[unused\d+\]$")

# Runs of ASCII letters and digits, or any other single character: the
# punctuation split of a cleaned ASCII word (such a word holds no whitespace
# or control characters, so every other character is ASCII punctuation).
_ASCII_PUNCT_SPLIT_RE = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9]")

# Cleaning of ASCII text: drop NUL and the other control characters except
# tab, newline and carriage return (which str.split() treats as spaces).
_ASCII_CLEAN_TABLE = {cp: None for cp in list(range(0, 9)) + [11, 12] +
                      list(range(14, 32)) + [127]}


# Released checkpoints whose name tells the casing of their vocabulary.
_UNCASED_MODELS = ("uncased_L-24_H-1024_A-16", "uncased_L-12_H-768_A-12",
                   "multilingual_L-12_H-768_A-12", "chinese_L-12_H-768_A-12")
_CASED_MODELS = ("cased_L-12_H-768_A-12", "cased_L-24_H-1024_A-16",
                 "multi_cased_L-12_H-768_A-12")


def validate_case_matches_checkpoint(do_lower_case, init_checkpoint):
  """Raises ValueError if do_lower_case contradicts a released model's name.

  Only checkpoints under a folder named as one of Google's releases (e.g.
  ".../uncased_L-12_H-768_A-12/bert_model.ckpt") are checked; any other
  path passes.
  """
  if not init_checkpoint:
    return
  match = re.match(r"^.*?([A-Za-z0-9_-]+)/bert_model.ckpt", init_checkpoint)
  if match is None:
    return
  model = match.group(1)
  if model in _UNCASED_MODELS and not do_lower_case:
    expected = True
  elif model in _CASED_MODELS and do_lower_case:
    expected = False
  else:
    return
  raise errors.InputError(
      "--do_lower_case=%s does not match --init_checkpoint=%s: %s is a%s "
      "model, use --do_lower_case=%s" %
      (do_lower_case, init_checkpoint, model,
       "n uncased" if expected else " cased", expected))


def convert_to_unicode(text):
  """Returns `text` as `str`, decoding bytes as UTF-8 (bad bytes dropped)."""
  if isinstance(text, str):
    return text
  if isinstance(text, bytes):
    return text.decode("utf-8", "ignore")
  raise ValueError("Unsupported string type: %s" % type(text))


def printable_text(text):
  """Returns `text` as a `str` suitable for printing or logging."""
  return convert_to_unicode(text)


def load_vocab(vocab_file):
  """Loads a vocabulary file (one token per line) into an ordered dict.

  Each line is stripped of surrounding whitespace; a token seen again keeps
  its first id, and ids count distinct tokens in file order.

  Args:
    vocab_file: path of the vocabulary file (local, or any that
      tf.io.gfile opens).

  Returns:
    collections.OrderedDict token -> id.

  Raises:
    OSError: if the file cannot be read.
    ValueError: if a line is not valid UTF-8.
  """
  vocab = collections.OrderedDict()
  data = outputs.read_bytes(vocab_file)  # a local or gs://... path
  lines = data.split(b"\n")
  if lines and not lines[-1]:
    lines.pop()
  for number, raw in enumerate(lines, start=1):
    try:
      token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
      raise errors.InputError("%s: line %d is not valid UTF-8 text" %
                              (vocab_file, number))
    if token not in vocab:
      vocab[token] = len(vocab)
  return vocab


def convert_by_vocab(vocab, items):
  """Maps each item of `items` through `vocab` (tokens -> ids or back)."""
  return [vocab[item] for item in items]


def convert_tokens_to_ids(vocab, tokens):
  """Maps tokens to their ids."""
  return convert_by_vocab(vocab, tokens)


def convert_ids_to_tokens(inv_vocab, ids):
  """Maps ids to their tokens."""
  return convert_by_vocab(inv_vocab, ids)


def whitespace_tokenize(text):
  """Splits `text` on whitespace (no empty tokens)."""
  return text.split()


def _is_whitespace(char):
  """True for space, tab, newline, carriage return and category Zs."""
  if char in " \t\n\r":
    return True
  return unicodedata.category(char) == "Zs"


def _is_control(char):
  """True for categories Cc and Cf, except tab, newline, carriage return."""
  if char in "\t\n\r":
    return False
  return unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char):
  """True for non-alphanumeric printable ASCII and Unicode category P*."""
  cp = ord(char)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(char).startswith("P")


def _is_chinese_char(cp):
  """True if code point `cp` is in one of the CJK ideograph blocks."""
  return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or
          0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F or
          0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or
          0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class _CleaningTable(dict):
  """A `str.translate` table for cleaning text, filled per new character.

  Maps a code point to None (dropped: NUL, U+FFFD, control characters), to
  " " (whitespace), to " c " (CJK ideographs) or to itself.
  """

  def __missing__(self, cp):
    char = chr(cp)
    if cp == 0 or cp == 0xFFFD or _is_control(char):
      value = None
    elif _is_whitespace(char):
      value = " "
    elif _is_chinese_char(cp):
      value = " %s " % char
    else:
      value = cp
    self[cp] = value
    return value


def _split_text(text, table):
  """Cleans `text`, spaces out CJK ideographs and splits on whitespace."""
  if text.isascii():
    return text.translate(_ASCII_CLEAN_TABLE).split()
  return text.translate(table).split()


def _is_unused_token(token, vocab):
  return token in vocab and _UNUSED_TOKEN_RE.search(token) is not None


def _map_words_cached(words, cache, word_fn):
  """Concatenates word_fn(word) over `words`, memoised in `cache`.

  Text repeats words a lot, so each distinct word is tokenized once; the
  cache is emptied when it reaches _CACHE_LIMIT entries to bound memory.
  """
  output = []
  for word in words:
    pieces = cache.get(word)
    if pieces is None:
      if len(cache) >= _CACHE_LIMIT:
        cache.clear()
      pieces = word_fn(word)
      cache[word] = pieces
    output.extend(pieces)
  return output


class BasicTokenizer(object):
  """Basic tokenization: cleaning, lower casing, accents, punctuation."""

  def __init__(self, do_lower_case=True, vocab=tuple(),
               preserve_unused_tokens=False):
    """Constructs a BasicTokenizer.

    Args:
      do_lower_case: whether to lower-case the input and strip accents.
      vocab: the vocabulary; only consulted for `preserve_unused_tokens`.
      preserve_unused_tokens: if True, words that are "[unusedN]" tokens of
        the vocabulary are kept as they are (as the original's
        --preserve_unused_tokens flag).
    """
    self.do_lower_case = do_lower_case
    self.vocab = vocab
    self.preserve_unused_tokens = preserve_unused_tokens
    self._table = _CleaningTable()
    self._cache = {}

  def tokenize(self, text):
    """Tokenizes a piece of text into a list of words and punctuation."""
    return _map_words_cached(self.split_text(text), self._cache,
                             self.tokenize_word)

  def split_text(self, text):
    """Cleans text, spaces out CJK ideographs, splits it on whitespace."""
    return _split_text(convert_to_unicode(text), self._table)

  def tokenize_word(self, word):
    """Basic tokens of one cleaned, whitespace-free word."""
    if self.preserve_unused_tokens and _is_unused_token(word, self.vocab):
      return [word]
    if word.isascii():
      if self.do_lower_case:
        word = word.lower()
      return _ASCII_PUNCT_SPLIT_RE.findall(word)
    if self.do_lower_case:
      word = self._run_strip_accents(word.lower())
    # Lower casing can in principle produce new whitespace; splitting the
    # joined pieces again drops it, and drops empty pieces.
    return " ".join(self._run_split_on_punc(word)).split()

  def _clean_text(self, text):
    """Drops invalid and control characters and normalises whitespace."""
    output = []
    for c in text:
      if c in ("\x00", "\ufffd") or _is_control(c):
        continue
      output.append(" " if _is_whitespace(c) else c)
    return "".join(output)

  def _tokenize_chinese_chars(self, text):
    """Adds whitespace around any CJK ideograph."""
    return "".join(" %s " % c if _is_chinese_char(ord(c)) else c
                   for c in text)

  def _is_chinese_char(self, cp):
    """True if code point `cp` is in one of the CJK ideograph blocks."""
    return _is_chinese_char(cp)

  def _run_strip_accents(self, text):
    """Strips accents: NFD decomposition without nonspacing marks (Mn)."""
    if text.isascii():
      return text
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn")

  def _run_split_on_punc(self, text):
    """Splits text into non-punctuation runs and punctuation characters."""
    pieces = []
    run = []
    for c in text:
      if _is_punctuation(c):
        if run:
          pieces.append("".join(run))
          run = []
        pieces.append(c)
      else:
        run.append(c)
    if run:
      pieces.append("".join(run))
    return pieces


class WordpieceTokenizer(object):
  """WordPiece tokenization: greedy longest-match-first over a vocabulary."""

  def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=200):
    """Constructs a WordpieceTokenizer.

    Args:
      vocab: container of the vocabulary's tokens (a dict token -> id).
      unk_token: the token for words that cannot be split.
      max_input_chars_per_word: longer words become `unk_token`.
    """
    self.vocab = vocab
    self.unk_token = unk_token
    self.max_input_chars_per_word = max_input_chars_per_word
    # The longest vocabulary entries bound the substrings worth looking up
    # (a longer one cannot be in the vocabulary), for the first piece of a
    # word and for "##" continuation pieces.
    self._max_first = max((len(t) for t in vocab), default=0)
    self._max_next = max((len(t) - 2 for t in vocab if t.startswith("##")),
                         default=0)
    self._cache = {}

  def tokenize(self, text):
    """Tokenizes whitespace-separated words into their word pieces.

    For example, "unaffable" -> ["un", "##aff", "##able"].

    Args:
      text: one word or whitespace-separated words, normally the output of
        `BasicTokenizer`.

    Returns:
      A list of word pieces.
    """
    text = convert_to_unicode(text)
    output = []
    for word in text.split():
      output.extend(self.tokenize_word(word))
    return output

  def tokenize_word(self, word):
    """Word pieces of one word without whitespace (a cached list)."""
    pieces = self._cache.get(word)
    if pieces is None:
      if len(self._cache) >= _CACHE_LIMIT:
        self._cache.clear()
      pieces = self._split_word(word)
      self._cache[word] = pieces
    return pieces

  def _split_word(self, word):
    n = len(word)
    if n > self.max_input_chars_per_word:
      return [self.unk_token]
    vocab = self.vocab
    pieces = []
    start = 0
    while start < n:
      if start == 0:
        end = min(n, self._max_first)
      else:
        end = min(n, start + self._max_next)
      piece = None
      while end > start:
        candidate = word[start:end]
        if start > 0:
          candidate = "##" + candidate
        if candidate in vocab:
          piece = candidate
          break
        end -= 1
      if piece is None:
        return [self.unk_token]
      pieces.append(piece)
      start = end
    return pieces


class FullTokenizer(object):
  """End-to-end tokenization: basic tokenization, then WordPiece."""

  def __init__(self, vocab_file, do_lower_case=True,
               preserve_unused_tokens=False):
    """Constructs a FullTokenizer.

    Args:
      vocab_file: the vocabulary file (one token per line).
      do_lower_case: whether to lower-case the input and strip accents
        (True for uncased models).
      preserve_unused_tokens: keep "[unusedN]" vocabulary tokens whole.
    """
    self.vocab = load_vocab(vocab_file)
    self.inv_vocab = {v: k for k, v in self.vocab.items()}
    self.basic_tokenizer = BasicTokenizer(
        do_lower_case=do_lower_case, vocab=self.vocab,
        preserve_unused_tokens=preserve_unused_tokens)
    self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab)
    self.preserve_unused_tokens = preserve_unused_tokens
    self._cache = {}
    self._id_cache = {}

  def tokenize(self, text):
    """Tokenizes a piece of text into word pieces."""
    return _map_words_cached(self.basic_tokenizer.split_text(text),
                             self._cache, self._tokenize_word)

  def tokenize_to_ids(self, text):
    """`convert_tokens_to_ids(tokenize(text))`, faster (cached per word)."""
    return _map_words_cached(
        self.basic_tokenizer.split_text(text), self._id_cache,
        lambda word: convert_by_vocab(self.vocab, self._tokenize_word(word)))

  def _tokenize_word(self, word):
    """Word pieces of one cleaned, whitespace-free word."""
    pieces = []
    for token in self.basic_tokenizer.tokenize_word(word):
      if self.preserve_unused_tokens and _is_unused_token(token, self.vocab):
        pieces.append(token)
      else:
        pieces.extend(self.wordpiece_tokenizer.tokenize_word(token))
    return pieces

  def convert_tokens_to_ids(self, tokens):
    """Maps tokens to their ids."""
    return convert_by_vocab(self.vocab, tokens)

  def convert_ids_to_tokens(self, ids):
    """Maps ids to their tokens."""
    return convert_by_vocab(self.inv_vocab, ids)
