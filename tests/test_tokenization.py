# coding=utf-8
"""Tests of tokenization.py: hand-checked rules, and identity with Google's
original tokenizer on all of the real Wikipedia text and on random text."""

import glob
import os
import random

import pytest

import original_bert
import tokenization

# A small vocabulary for the hand-checked cases.
SMALL_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused1]",
               "un", "##aff", "##able", "want", "##want", "##ed", "wa", "runn",
               "##ing", ",", ".", "!", "?", "hello", "world", "cafe", "café",
               "中", "a", "##a", "b", "##b", "hi", "$", "5", "¿", "que",
               "qué", "Qué", "the", "The", "—", "ab", "##c", "abc"]


@pytest.fixture(scope="module")
def small_vocab_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  path.write_text("".join(t + "\n" for t in SMALL_VOCAB), encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def original():
  return original_bert.load_tokenization()


def basic(text, lower=True):
  return tokenization.BasicTokenizer(do_lower_case=lower).tokenize(text)


# --- hand-checked rules -----------------------------------------------------


def test_cleaning_drops_nul_replacement_and_control_chars():
  # NUL, U+FFFD, BEL (Cc) and zero-width space / BOM (Cf) vanish without
  # splitting the word they are in.
  assert basic("ab\x00c d\ufffde f\x07g h\u200bi j\ufeffk") == [
      "abc", "de", "fg", "hi", "jk"]
  # \x0b and \x1f are control characters (removed), not whitespace.
  assert basic("a\x0bb c\x1fd") == ["ab", "cd"]


def test_whitespace_characters_split():
  # Tab, newline, carriage return, no-break space and ideographic space
  # (category Zs) separate words.
  assert basic("a\tb\nc\rd\u00a0e\u3000f  g") == list("abcdefg")
  assert basic("   ") == []
  assert basic("") == []


def test_cjk_characters_become_words():
  assert basic("ab中文cd") == ["ab", "中", "文", "cd"]
  # Hiragana is not in the CJK ideograph blocks: it stays in its word.
  assert basic("あい") == ["あい"]
  # Extension B ideograph (outside the BMP).
  assert basic("x\U00020001y") == ["x", "\U00020001", "y"]


def test_lower_case_strips_accents_only_when_lower_casing():
  assert basic("Héllo WÖRLD Café") == ["hello", "world", "cafe"]
  assert basic("Héllo WÖRLD Café", lower=False) == [
      "Héllo", "WÖRLD", "Café"]
  # A decomposed accent (e + U+0301) is stripped too.
  assert basic("Cafe\u0301") == ["cafe"]


def test_punctuation_is_split_off():
  assert basic("Hello, world!") == ["hello", ",", "world", "!"]
  # All non-alphanumeric ASCII counts as punctuation, even $, ^ and `.
  assert basic("a$b^c`d~e") == ["a", "$", "b", "^", "c", "`", "d", "~", "e"]
  # Unicode punctuation (categories P*): inverted question mark, em dash.
  assert basic("¿Qué?—sí") == ["¿", "que", "?", "—", "si"]
  assert basic("...") == [".", ".", "."]


def test_wordpiece_greedy_longest_match_with_continuations(small_vocab_file):
  tok = tokenization.FullTokenizer(small_vocab_file, do_lower_case=True)
  assert tok.tokenize("unwanted running") == ["un", "##want", "##ed",
                                              "runn", "##ing"]
  assert tok.tokenize("UNwantÉD,running") == ["un", "##want", "##ed", ",",
                                              "runn", "##ing"]
  # Longest match first: "abc" is in the vocabulary, so not "ab" + "##c".
  assert tok.tokenize("abc abcc") == ["abc", "abc", "##c"]
  # A word that cannot be covered by pieces becomes [UNK], whole.
  assert tok.tokenize("unaffablex hello") == ["[UNK]", "hello"]
  assert tok.tokenize("unaffable") == ["un", "##aff", "##able"]
  ids = tok.convert_tokens_to_ids(["un", "##aff", "##able"])
  assert ids == [SMALL_VOCAB.index(t) for t in ["un", "##aff", "##able"]]
  assert tok.convert_ids_to_tokens(ids) == ["un", "##aff", "##able"]
  assert tok.tokenize_to_ids("unwanted, running") == tok.convert_tokens_to_ids(
      tok.tokenize("unwanted, running"))


def test_words_longer_than_200_chars_are_unknown(small_vocab_file):
  # Google's WordpieceTokenizer has max_input_chars_per_word=200.
  tok = tokenization.FullTokenizer(small_vocab_file, do_lower_case=True)
  assert tok.tokenize("a" * 200) == ["a"] + ["##a"] * 199
  assert tok.tokenize("a" * 201) == ["[UNK]"]
  assert tok.tokenize("ab" * 101 + " hi") == ["[UNK]", "hi"]
  wordpiece = tokenization.WordpieceTokenizer(tok.vocab,
                                              max_input_chars_per_word=3)
  assert wordpiece.tokenize("abc abab") == ["abc", "[UNK]"]


def test_cased_tokenizer_keeps_case(small_vocab_file):
  tok = tokenization.FullTokenizer(small_vocab_file, do_lower_case=False)
  assert tok.tokenize("The the Qué qué") == ["The", "the", "Qué", "qué"]
  assert tok.tokenize("Café") == ["[UNK]"]


def test_preserve_unused_tokens(small_vocab_file):
  tok = tokenization.FullTokenizer(small_vocab_file, do_lower_case=True,
                                   preserve_unused_tokens=True)
  assert tok.tokenize("hi [unused1] [unused2]") == [
      "hi", "[unused1]", "[UNK]", "[UNK]", "[UNK]"]
  plain = tokenization.FullTokenizer(small_vocab_file, do_lower_case=True)
  assert plain.tokenize("[unused1]") == ["[UNK]", "[UNK]", "[UNK]"]


def test_load_vocab(tmp_path):
  path = tmp_path / "v.txt"
  path.write_bytes(b"[PAD]\r\n a \nb\na\n\nc")
  vocab = tokenization.load_vocab(str(path))
  # Stripped lines; a repeated token keeps its first id; ids count
  # distinct tokens; the empty line is a token; no final newline needed.
  assert list(vocab.items()) == [("[PAD]", 0), ("a", 1), ("b", 2), ("", 3),
                                 ("c", 4)]
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"ok\n\xff\xfe\n")
  with pytest.raises(ValueError, match=r"bad\.txt: line 2 is not valid UTF-8"):
    tokenization.load_vocab(str(bad))
  with pytest.raises(OSError):
    tokenization.load_vocab(str(tmp_path / "missing.txt"))


def test_unicode_helpers():
  assert tokenization.convert_to_unicode(b"caf\xc3\xa9\xff") == "café"
  assert tokenization.convert_to_unicode("x") == "x"
  assert tokenization.printable_text(b"a\xc3\xa9") == "aé"
  with pytest.raises(ValueError):
    tokenization.convert_to_unicode(3)
  assert tokenization.whitespace_tokenize("  a \t b\n") == ["a", "b"]
  assert tokenization.whitespace_tokenize("") == []


# --- identity with the original --------------------------------------------


def _wiki_lines(wiki_text_dir):
  lines = []
  for path in sorted(glob.glob(os.path.join(wiki_text_dir, "*.txt"))):
    with open(path, encoding="utf-8") as f:
      lines.extend(line.rstrip("\n") for line in f)
  return lines


@pytest.mark.parametrize("lower", [True, False])
def test_identical_to_original_on_all_wikipedia_text(wiki_text_dir,
                                                     vocab_file, original,
                                                     lower):
  lines = _wiki_lines(wiki_text_dir)
  assert sum(len(l) for l in lines) > 2000000
  ours = tokenization.FullTokenizer(vocab_file, do_lower_case=lower)
  theirs = original.FullTokenizer(vocab_file, do_lower_case=lower)
  assert ours.vocab == theirs.vocab
  assert ours.inv_vocab == theirs.inv_vocab
  mismatches = []
  total = 0
  for line in lines:
    expected = theirs.tokenize(line)
    total += len(expected)
    if ours.tokenize(line) != expected:
      mismatches.append(line)
  assert not mismatches, mismatches[:3]
  assert total > 500000
  # The id path gives the ids of the tokens.
  for line in lines[:2000]:
    assert ours.tokenize_to_ids(line) == theirs.convert_tokens_to_ids(
        theirs.tokenize(line))


def _random_texts(count, seed):
  """Random strings over characters that exercise every rule."""
  pool = list("abcXYZ019 .,;'\"#$^`~-_\t\n\r") + [
      "\x00", "\x01", "\x0b", "\x0c", "\x1c", "\x7f", "\x85", "\xa0",
      "\xad", "é", "É", "\u0301", "\u2028", "\u2029", "\u200b", "\u200d",
      "\u3000", "\ufffd", "中", "文", "\uf900", "あ", "ß", "İ", "Σ", "ς",
      "\u212a", "¿", "—", "“", "\ufeff", "\U00020001", "\U0001F600", "ﬁ",
      "Ⅻ", "①", "ǅ"]
  rng = random.Random(seed)
  texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40)))
           for _ in range(count)]
  # Word-length limits, the unknown-word path and bytes input.
  texts += ["a" * 200, "a" * 201, "é" * 201, "ab" * 150, "xq" * 30,
            b"caf\xc3\xa9 \xff bytes", "Σίσυφος ΣΑΣ"]
  return texts


@pytest.mark.parametrize("lower", [True, False])
def test_identical_to_original_on_random_text(vocab_file, original, lower):
  texts = _random_texts(5000, seed=7 if lower else 8)
  ours = tokenization.FullTokenizer(vocab_file, do_lower_case=lower)
  theirs = original.FullTokenizer(vocab_file, do_lower_case=lower)
  for text in texts:
    assert ours.tokenize(text) == theirs.tokenize(text), repr(text)
  ours_basic = tokenization.BasicTokenizer(do_lower_case=lower)
  theirs_basic = original.BasicTokenizer(do_lower_case=lower)
  ours_wp = tokenization.WordpieceTokenizer(ours.vocab)
  theirs_wp = original.WordpieceTokenizer(theirs.vocab)
  for text in texts:
    assert ours_basic.tokenize(text) == theirs_basic.tokenize(text)
    assert ours_wp.tokenize(text) == theirs_wp.tokenize(text), repr(text)
    if isinstance(text, str):
      for name in ("_clean_text", "_tokenize_chinese_chars",
                   "_run_strip_accents", "_run_split_on_punc"):
        assert (getattr(ours_basic, name)(text) ==
                getattr(theirs_basic, name)(text)), (name, repr(text))


def test_identical_to_original_preserving_unused_tokens(vocab_file,
                                                        original):
  texts = ["[unused1] x [UNUSED2] [unused99]x [unused0]", "a[unused5]b"]
  texts += _random_texts(300, seed=9)
  ours = tokenization.FullTokenizer(vocab_file, do_lower_case=True,
                                    preserve_unused_tokens=True)
  original.FLAGS.preserve_unused_tokens = True
  try:
    theirs = original.FullTokenizer(vocab_file, do_lower_case=True)
    for text in texts:
      assert ours.tokenize(text) == theirs.tokenize(text), repr(text)
  finally:
    original.FLAGS.preserve_unused_tokens = False
  assert ours.tokenize(texts[0])[0] == "[unused1]"


def test_validate_case_matches_checkpoint():
  check = tokenization.validate_case_matches_checkpoint
  check(True, "/m/uncased_L-12_H-768_A-12/bert_model.ckpt")
  check(False, "/m/cased_L-12_H-768_A-12/bert_model.ckpt")
  check(False, "/m/my_model/bert_model.ckpt")
  check(True, None)
  with pytest.raises(ValueError, match="uncased_L-12_H-768_A-12"):
    check(False, "/m/uncased_L-12_H-768_A-12/bert_model.ckpt")
  with pytest.raises(ValueError, match="--do_lower_case=False"):
    check(True, "gs://b/multi_cased_L-12_H-768_A-12/bert_model.ckpt")
