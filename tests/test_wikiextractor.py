# coding=utf-8
"""Tests of stage II (wikiextractor/wiki_to_text.py) on the real Wikipedia
excerpt: documents whole and balanced, one sentence per line, no titles."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import run_script

SCRIPT = "wikiextractor/wiki_to_text.py"
MIN_CHARS = 200  # the script's default --min_article_chars


def read_documents(path):
  """Documents of a stage-II file: lists of lines between blank lines."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  assert text.endswith("\n") and not text.endswith("\n\n"), path
  assert not text.startswith("\n"), path
  docs = text[:-1].split("\n\n")
  return [d.split("\n") for d in docs]


@pytest.fixture(scope="module")
def articles(wiki_dump):
  """The articles as wikiextractor extracts them, run here independently."""
  result = subprocess.run(
      [sys.executable, "-m", "wikiextractor.WikiExtractor", "--json", "-o",
       "-", wiki_dump], capture_output=True, text=True, check=True,
      cwd=os.path.dirname(wiki_dump))
  return [json.loads(line) for line in result.stdout.splitlines()
          if line.strip()]


def squash(text):
  return " ".join(text.split())


def test_files_are_named_sorted_and_balanced(wiki_text_dir):
  names = sorted(os.listdir(wiki_text_dir))
  assert names == ["wiki_000.txt", "wiki_001.txt", "wiki_002.txt",
                   "wiki_003.txt"]
  sizes = [os.path.getsize(os.path.join(wiki_text_dir, n)) for n in names]
  largest_doc = max(
      len("\n".join(d).encode("utf-8")) + 2
      for n in names for d in read_documents(os.path.join(wiki_text_dir, n)))
  # Greedy least-loaded placement: sizes differ by at most one document.
  assert max(sizes) - min(sizes) <= largest_doc
  assert min(sizes) > 0.75 * max(sizes)


def test_documents_are_whole_articles_without_titles(wiki_text_dir,
                                                     articles):
  docs = []
  for name in sorted(os.listdir(wiki_text_dir)):
    docs.extend(read_documents(os.path.join(wiki_text_dir, name)))
  kept = [a for a in articles if len(squash(a["text"])) >= MIN_CHARS + 50]
  dropped = [a for a in articles if len(a["text"].strip()) < MIN_CHARS - 50]
  assert len(articles) == 106 and len(dropped) >= 5
  # Every document comes from exactly one article, all of whose text it
  # holds, in order; each kept article is one document.
  by_first_sentence = {}
  for article in articles:
    by_first_sentence.setdefault(squash(article["text"])[:60], []).append(
        article)
  matched = []
  for doc in docs:
    assert all(line == line.strip() and line for line in doc)
    joined = " ".join(doc)
    owners = [a for a in articles if joined[:60] == squash(a["text"])[:60]]
    assert len(owners) == 1, doc[0]
    article = owners[0]
    assert joined == squash(article["text"])
    assert doc[0] != article["title"]
    matched.append(article["id"])
  assert len(matched) == len(set(matched))
  assert set(a["id"] for a in kept) <= set(matched)
  assert not set(a["id"] for a in dropped) & set(matched)
  assert 90 <= len(docs) <= 106


def test_one_sentence_per_line(wiki_text_dir):
  lines = []
  for name in sorted(os.listdir(wiki_text_dir)):
    for doc in read_documents(os.path.join(wiki_text_dir, name)):
      lines.extend(doc)
  assert len(lines) > 15000
  # Paragraphs were split: lines are sentence-sized, and most end with
  # sentence punctuation followed by the next line.
  assert max(len(l) for l in lines) < 3000
  assert sum(len(l) for l in lines) / len(lines) < 200
  ends = sum(1 for l in lines if re.search(r"[.!?][\"')\]]*$", l))
  assert ends > 0.8 * len(lines)
  # A known paragraph of the Anarchism article, split into its sentences.
  assert ("Anarchism is a political philosophy that advocates self-governed "
          "societies based on voluntary institutions.") in lines
  assert ("These are often described as stateless societies, although "
          "several authors have defined them more specifically as "
          "institutions based on non-hierarchical free associations.") in lines


def test_max_bytes_per_file(tmp_path, wiki_dump):
  out = tmp_path / "out"
  out.mkdir()
  (out / "wiki_099.txt").write_text("stale\n")
  (out / "notes.txt").write_text("keep me\n")
  result = run_script([SCRIPT, "--input", wiki_dump, "--output_dir", out,
                       "--max_bytes_per_file", 300000, "--processes", 1])
  assert "sentences" in result.stderr and "wrote" in result.stderr
  names = sorted(os.listdir(out))
  assert "notes.txt" in names and "wiki_099.txt" not in names
  outputs = [n for n in names if n.startswith("wiki_")]
  assert len(outputs) >= 9
  assert outputs == ["wiki_%03d.txt" % i for i in range(len(outputs))]
  for name in outputs:
    docs = read_documents(str(out / name))
    size = os.path.getsize(out / name)
    assert size <= 300000 or len(docs) == 1


def bad_run(args):
  result = run_script([SCRIPT] + args, check=False)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  return last


def test_bad_input(tmp_path, wiki_dump):
  out = tmp_path / "out"
  msg = bad_run(["--input", tmp_path / "missing.xml.bz2", "--output_dir",
                 out, "--num_files", 2])
  assert "--input" in msg and "missing.xml.bz2" in msg
  text = tmp_path / "notes.xml"
  text.write_text("just some text\n")
  msg = bad_run(["--input", text, "--output_dir", out, "--num_files", 2])
  assert "notes.xml" in msg and "not a Wikipedia XML dump" in msg
  msg = bad_run(["--input", wiki_dump, "--output_dir", out, "--num_files", 2,
                 "--max_bytes_per_file", 1000])
  assert "--num_files" in msg and "--max_bytes_per_file" in msg
  blocker = tmp_path / "file"
  blocker.write_text("x")
  msg = bad_run(["--input", wiki_dump, "--output_dir", blocker / "sub",
                 "--num_files", 2])
  assert "--output_dir" in msg
  msg = bad_run(["--input", wiki_dump, "--output_dir", out, "--num_files", 2,
                 "--min_article_chars", 10 ** 9])
  assert "--min_article_chars" in msg
  # Nothing was left behind under a final name (nor a temporary folder).
  assert not out.exists() or os.listdir(out) == []
