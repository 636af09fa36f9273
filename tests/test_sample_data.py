"""The real samples resolve from their packages, into an empty cache.

Every sample comes out of a package on the index, and a package can leave
it (bigbench 1.0.0 did). The suite's other tests use the cache the machine
already has, which hides that; the first test here downloads every sample
into a new, empty cache through the command line a user types, so a
vanished source fails CI the day it vanishes, naming itself.
"""

import filecmp
import hashlib
import os
import subprocess
import sys

import pytest

import conftest
import helpers
import sample_data

sys.path.insert(0, conftest.FIXTURES)
import make_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position


def _names_from_help():
  """The sample names as `python sample_data.py --help` lists them."""
  result = subprocess.run([sys.executable, "sample_data.py", "--help"],
                          cwd=conftest.REPO, capture_output=True, text=True,
                          check=True)
  usage = result.stdout.strip().splitlines()[-1]
  assert usage.startswith("usage: python sample_data.py {"), usage
  return usage[usage.index("{") + 1:usage.rindex("}")].split("|")


def test_every_sample_resolves_into_an_empty_cache(tmp_path, monkeypatch):
  cache = tmp_path / "cache"
  env = dict(os.environ, BERT_DISTILL_SAMPLES=str(cache))
  names = _names_from_help()
  assert set(names) == set(sample_data.all_names())
  failed = []
  for name in names:
    result = subprocess.run([sys.executable, "sample_data.py", name],
                            cwd=conftest.REPO, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    path = result.stdout.strip()
    if result.returncode != 0 or not os.path.exists(path):
      errors = [l for l in result.stderr.splitlines() if l.startswith("error")]
      failed.append("%s: %s" % (name, (errors or [result.stderr[-300:]])[-1]))
  assert not failed, "\n".join(failed)
  # No download or extraction left anything behind.
  assert not [n for n in os.listdir(cache) if n.startswith(".")]

  # Every file a sample is made of has its pinned digest (checked while it
  # was extracted; read again here from what the cache holds).
  monkeypatch.setenv("BERT_DISTILL_SAMPLES", str(cache))
  for name, (_, member) in sample_data.SAMPLES.items():
    path = sample_data.fetch(name)
    files = ([os.path.join(path, f) for f in
              sample_data._FOLDER_FILES[name]]  # pylint: disable=protected-access
             if member.endswith("/") else [path])
    for f in files:
      with open(f, "rb") as data:
        digest = hashlib.sha256(data.read()).hexdigest()
      archive_path = member + os.path.basename(f) if member.endswith(
          "/") else member
      assert digest == sample_data.SHA256[archive_path], f

  # The committed excerpts are what make_fixtures.py cuts from these.
  made = tmp_path / "fixtures"
  make_fixtures.squad_excerpt(str(made))
  make_fixtures.stsb_excerpt(str(made))
  for folder, files in (("squad", ["dev-v1.1-excerpt.json"]),
                        ("sts-b", ["train.tsv", "dev.tsv", "test.tsv"])):
    match, mismatch, errors = filecmp.cmpfiles(
        made / folder, os.path.join(conftest.FIXTURES, folder), files,
        shallow=False)
    assert (mismatch, errors) == ([], []), folder


def _fetch_fails(monkeypatch, tmp_path, name, requirement=None, digest=None):
  """fetch(name) into an empty cache, with a changed source or pin."""
  monkeypatch.setenv("BERT_DISTILL_SAMPLES", str(tmp_path))
  old_requirement, member = sample_data.SAMPLES[name]
  if requirement:
    monkeypatch.setitem(sample_data.SAMPLES, name, (requirement, member))
    monkeypatch.setattr(sample_data, "_SDISTS", (requirement,)
                        if old_requirement in sample_data._SDISTS  # pylint: disable=protected-access
                        else ())
  if digest:
    monkeypatch.setitem(sample_data.SHA256, member, digest)
  with pytest.raises(OSError) as info:
    sample_data.fetch(name)
  assert not os.path.exists(
      sample_data._sample_path(name)[1])  # pylint: disable=protected-access
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]
  return str(info.value)


def test_a_file_unlike_its_pin_is_not_kept(monkeypatch, tmp_path):
  message = _fetch_fails(monkeypatch, tmp_path, "stsbenchmark",
                         digest="0" * 64)
  assert message.startswith(
      "sample stsbenchmark: text2vec==1.0.4: text2vec-1.0.4/text2vec/data/"
      "English-STS-B/stsbenchmark.tsv.gz has sha256 aa3ae9b0060f")
  assert "expected %s (sample_data.SHA256)" % ("0" * 64) in message
  assert "\n" not in message


def test_a_package_the_index_lacks_fails_in_one_line(monkeypatch, tmp_path):
  message = _fetch_fails(monkeypatch, tmp_path, "stsbenchmark",
                         requirement="text2vec==0.0.999")
  assert message.startswith(
      "sample stsbenchmark: pip could not download text2vec==0.0.999 from "
      "the package index (")
  assert message.endswith("name another source for it in "
                          "sample_data.SAMPLES")
  assert "\n" not in message


def test_test_labels_follow_the_test_files():
  """The labels a derived test.tsv leaves out, in its order: looked up here
  by sentence in the source files (the polarity CSV, the STS Benchmark)."""
  import gzip  # pylint: disable=g-import-not-at-top
  expected = helpers.polarity_test_labels(conftest.sample("polarity_sst2"),
                                          conftest.sample("movie_reviews"))
  assert sample_data.test_labels("polarity_sst2") == expected
  stsb = conftest.sample("stsb_glue")
  with gzip.open(conftest.sample("stsbenchmark"), "rt", encoding="utf-8") as f:
    score_of = {(row[6].strip(), row[7].strip()): float(row[5]) for row in
                (line.split("\t") for line in list(f)[1:])
                if row[0] == "test"}
  with open(os.path.join(stsb, "test.tsv"), encoding="utf-8") as f:
    pairs = [tuple(line.rstrip("\n").split("\t")[7:9])
             for line in list(f)[1:]]
  assert len(pairs) == 1379
  assert sample_data.test_labels("stsb_glue") == [score_of[p] for p in pairs]
  with pytest.raises(ValueError, match="no test labels for sample 'vocab'"):
    sample_data.test_labels("vocab")
