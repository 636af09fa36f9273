"""Shared fixtures: the real sample inputs and the small real pipeline runs.

Every fixture here uses real data: the English Wikipedia excerpt from the
gensim wheel, the uncased BERT vocab, the small real BERT (converted to
Google's format). Stage outputs are made once per test session by running the
stage scripts with a user's flags: stages II and III (no TensorFlow) as
processes, the TensorFlow stages through their `main` in this process
(tests/inprocess.py; it saves a TensorFlow start each).

The harness's contract, for whoever adds a test (`make test` runs two
pytest-xdist workers on 2 cores; tests/cores.py and tests/python_fork.py
say how, at their tops):
- a script whose process is not what the test checks: `run_main` (its
  `main` in this process); a script as a process: `run_script` (the forked
  `python`, TensorFlow already imported), `fresh=True` or `sys.executable`
  only where the start, a signal or a kill is the subject;
- an mpirun job: `mpirun_command` with `mpi_env()` (the job takes both
  cores while it runs; the other worker's test waits);
- two processes at once: `run_two_at_a_time` (never more TensorFlow
  processes than cores);
- a file that runs longer than about 30 s goes into FILES_FIRST by its
  measured time, so that the two workers end together.
One file in one process (`pytest tests/test_modeling.py`) uses none of the
core sharing. A simpler arrangement (no core pool, no fork server, xdist's
own file order) measured 21% slower on the 2-core machine, with two tests
failing under its oversubscription (the README's Tests section).
"""

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import cores  # pylint: disable=wrong-import-position
from helpers import script_env  # pylint: disable=wrong-import-position
import inprocess  # pylint: disable=wrong-import-position
import python_fork  # pylint: disable=wrong-import-position
import sample_data  # pylint: disable=wrong-import-position

if "PYTEST_XDIST_WORKER" in os.environ:
  # A worker has one core (tests/cores.py): one TensorFlow thread for each
  # op of its tests (set before TensorFlow makes its thread pools). The
  # processes a test starts keep TensorFlow's default: the worker waits for
  # them, and the other worker's test often waits for an mpirun job's cores.
  import tensorflow as _tf  # pylint: disable=g-import-not-at-top
  _tf.config.threading.set_intra_op_parallelism_threads(1)

# Small sizes for tests (the real ones are 128 / 20).
MAX_SEQ_LENGTH = 64
MAX_PREDICTIONS = 10
TRUNCATION_FACTOR = 10
# The stage III files that the stage4_file fixture labels: the first two of
# four (about 4,800 records, more than any test reads; half the labelling).
STAGE4_INPUTS = "wiki_[01].tfrecord"


def run_script(args, check=True, timeout=900, fresh=False, **kwargs):
  """Runs `python <args...>` from the repository root; returns the result.

  The python is `forked_python()`, for runs that check a script's outputs
  and exit status; fresh=True starts a fresh interpreter, for what only its
  start shows (TensorFlow's import notices). With check=True a non-zero
  exit fails the test, showing the stderr tail.
  """
  cmd = [sys.executable if fresh else forked_python()] + [str(a)
                                                          for a in args]
  result = subprocess.run(cmd, cwd=REPO, env=kwargs.pop("env", script_env()),
                          capture_output=True, text=True, timeout=timeout,
                          check=False, **kwargs)
  if check and result.returncode != 0:
    pytest.fail("%s exited %d:\n%s" % (" ".join(cmd), result.returncode,
                                       result.stderr[-4000:]))
  return result


def run_main(args):
  """`run_script` for runs whose process is not what a test checks: the
  script's `main` in this process (tests/inprocess.py; no Python start nor
  TensorFlow import). args[0] is the script, e.g. "run_classifier.py".
  """
  script = str(args[0])
  assert script.endswith(".py") and os.sep not in script, script
  return inprocess.run_main(script[:-3], args[1:])


def google_variable_shapes(config):
  """Google's variable names and shapes for `config` (docs/formats.md)."""
  h, i = config["hidden_size"], config["intermediate_size"]
  names = {
      "bert/embeddings/word_embeddings": [config["vocab_size"], h],
      "bert/embeddings/position_embeddings":
          [config["max_position_embeddings"], h],
      "bert/embeddings/token_type_embeddings": [config["type_vocab_size"],
                                                h],
      "bert/embeddings/LayerNorm/gamma": [h],
      "bert/embeddings/LayerNorm/beta": [h],
      "bert/pooler/dense/kernel": [h, h],
      "bert/pooler/dense/bias": [h],
      "cls/predictions/transform/dense/kernel": [h, h],
      "cls/predictions/transform/dense/bias": [h],
      "cls/predictions/transform/LayerNorm/gamma": [h],
      "cls/predictions/transform/LayerNorm/beta": [h],
      "cls/predictions/output_bias": [config["vocab_size"]],
      "cls/seq_relationship/output_weights": [2, h],
      "cls/seq_relationship/output_bias": [2],
  }
  for n in range(config["num_hidden_layers"]):
    p = "bert/encoder/layer_%d/" % n
    for part in ("query", "key", "value"):
      names[p + "attention/self/%s/kernel" % part] = [h, h]
      names[p + "attention/self/%s/bias" % part] = [h]
    names[p + "attention/output/dense/kernel"] = [h, h]
    names[p + "attention/output/dense/bias"] = [h]
    names[p + "intermediate/dense/kernel"] = [h, i]
    names[p + "intermediate/dense/bias"] = [i]
    names[p + "output/dense/kernel"] = [i, h]
    names[p + "output/dense/bias"] = [h]
    for part in ("attention/output", "output"):
      names[p + part + "/LayerNorm/gamma"] = [h]
      names[p + part + "/LayerNorm/beta"] = [h]
  return names


def fine_tuned_checkpoint_shapes(prefix, teacher_dir):
  """(shapes of a fine-tuning checkpoint's model variables, the shapes of
  the encoder of the teacher's config).

  The checkpoint's optimizer state (`*/adam_m`, `*/adam_v`, `global_step`)
  is left out, so the first dict is the encoder plus the task head.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shapes = {name: shape for name, shape in tf.train.list_variables(prefix)
            if "/adam_" not in name and name != "global_step"}
  with open(os.path.join(teacher_dir, "bert_config.json")) as f:
    config = json.load(f)
  encoder = {n: s for n, s in google_variable_shapes(config).items()
             if n.startswith("bert/")}
  return shapes, encoder


_python_server = []


def python_server():
  """The tests' python_fork.Server, started on the first call (it stops
  with the tests)."""
  if not _python_server:
    folder = tempfile.mkdtemp(prefix="python_fork")
    _python_server.append(python_fork.Server(folder, script_env()))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    atexit.register(_python_server[0].stop)
  return _python_server[0]


def forked_python():
  """The path of a `python` that runs scripts with TensorFlow imported
  once (tests/python_fork.py), for processes whose start is not what a test
  checks."""
  return python_server().python


def run_two_at_a_time(commands, env=None, cwd=REPO, timeout=300):
  """Runs `python <argv>` for each argv of `commands`, two at a time (one
  per core of the 2-core test machines; under pytest-xdist only while the
  other worker's core is free, see tests/cores.py); returns (exit status,
  stdout, stderr) of each, in order. env: default `script_env()`.

  The runs go through `forked_python()`: what they check is a script's
  output and exit status, not its interpreter's start.
  """
  results = []
  with cores.extra_core() as side_by_side:
    for i in range(0, len(commands), side_by_side):
      procs = [subprocess.Popen([forked_python()] + [str(a) for a in args],
                                cwd=cwd, env=env or script_env(),
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for args in commands[i:i + side_by_side]]
      for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        results.append((proc.returncode, stdout, stderr))
  return results


def check_error_runs(commands, timeout=300):
  """Runs bad command lines (run_two_at_a_time); each must fail with one
  clear line.

  Args:
    commands: name -> (argv after the python executable, text that the
      `error:` line must contain).
  Returns:
    name -> that error line. Fails the test unless each run exits 1 with
    exactly one `error:` line on stderr and no traceback.
  """
  names = list(commands)
  results = run_two_at_a_time([commands[name][0] for name in names],
                              timeout=timeout)
  lines = {}
  for name, (status, _, stderr) in zip(names, results):
    errors = [l for l in stderr.splitlines() if l.startswith("error:")]
    assert status == 1, (name, stderr[-2000:])
    assert len(errors) == 1, (name, stderr[-2000:])
    assert commands[name][1] in errors[0], (name, errors[0])
    assert "Traceback" not in stderr, name
    lines[name] = errors[0]
  return lines


def check_main_errors(module_name, commands):
  """Runs bad command lines of a script through its `main`, in this process.

  For error messages, where the process is not what is tested: each must
  fail with an error that `cli.run` reports as one `error:` line and exit
  status 1 (inprocess.error_line); a script's process-level contract (exit
  1, one line, no traceback) is checked with `check_error_runs`.

  Args:
    module_name: the script's module, e.g. "run_classifier".
    commands: name -> (its flags, text that the `error:` line must contain).
  Returns:
    name -> that error line.
  """
  lines = {}
  for name, (args, text) in commands.items():
    lines[name] = inprocess.error_line(module_name, args)
    assert text in lines[name], (name, lines[name])
  return lines


# What an mpirun test job passes to its ranks.
MPI_ENV_NAMES = ("PATH", "PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL",
                 "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
                 "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def mpi_env():
  """The environment of an mpirun test job: one TensorFlow thread per rank."""
  env = script_env()
  env.update(OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1",
             TF_NUM_INTEROP_THREADS="1")
  return env


def mpirun_command(script, per_rank_args, env_names=(), python=None):
  """mpirun on localhost, one rank per item of per_rank_args.

  Rank r runs `python script per_rank_args[r]...`; MPI_ENV_NAMES and
  env_names are passed to every rank. python: `forked_python()` unless
  given (a test that signals a rank process gives sys.executable: a
  forked rank's `python` process only passes signals on).
  """
  python = python or forked_python()
  cmd = ["mpirun"] + (["--allow-run-as-root"] if os.getuid() == 0 else [])
  cmd += ["-H", "localhost:%d" % len(per_rank_args), "-bind-to", "none",
          "-map-by", "slot", "-mca", "pml", "ob1", "-mca", "btl", "^openib"]
  for name in MPI_ENV_NAMES + tuple(env_names):
    cmd += ["-x", name]
  for rank, args in enumerate(per_rank_args):
    cmd += ([":"] if rank else []) + ["-np", "1", python, script]
    cmd += [str(a) for a in args]
  return cmd


_cores_folder = []


def rank_process(mpirun_pid, rank, script):
  """The psutil.Process of `script`'s given rank under an mpirun process."""
  import psutil  # pylint: disable=g-import-not-at-top
  for child in psutil.Process(mpirun_pid).children(recursive=True):
    try:
      if (script in " ".join(child.cmdline()) and
          child.environ().get("OMPI_COMM_WORLD_RANK") == str(rank)):
        return child
    except psutil.Error:
      continue
  return None


@contextlib.contextmanager
def lock_held_elsewhere(folder):
  """Yields the pid of another process that holds `folder`'s training lock
  (cli.DirectoryLock); the process is killed (SIGKILL) afterwards, so its
  lock file stays behind, as a killed run's does."""
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from bert_distill import cli; "
       "cli.DirectoryLock(sys.argv[1]).acquire(); print('held', flush=True);"
       " time.sleep(600)", str(folder)],
      cwd=REPO, env=script_env(), stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline() == "held\n"
    yield holder.pid
  finally:
    holder.kill()
    holder.wait()


def pytest_configure(config):
  if (getattr(config.option, "numprocesses", None) and
      not hasattr(config, "workerinput")):
    _cores_folder.append(cores.start_controller())


def pytest_unconfigure(config):
  del config  # unused
  while _cores_folder:
    cores.stop_controller(_cores_folder.pop())


# Under pytest-xdist (`make test`: -n 2 --dist loadfile --no-loadscope-reorder)
# each worker takes whole files, in this order first: the longest (measured
# on the 2-core machine), so that the run ends with short files on both
# workers; the two long pipeline tests (test_demo, test_docs) beside files
# without mpirun jobs, since an mpirun job waits for the other worker's
# test to end.
FILES_FIRST = ("test_demo.py", "test_distillation.py", "test_docs.py",
               "test_produce_teacher_labels.py", "test_export.py",
               "test_layer_losses.py", "test_squad.py", "test_hardening.py",
               "test_hardening_outputs.py", "test_task_distillation.py",
               "test_distributed.py", "test_classifier.py")


def pytest_collection_modifyitems(items):
  if "PYTEST_XDIST_WORKER" in os.environ:
    rank = lambda item: (FILES_FIRST.index(item.path.name)
                         if item.path.name in FILES_FIRST
                         else len(FILES_FIRST))
    items.sort(key=rank)  # stable: the rest keep their order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  """Under pytest-xdist, each test holds its cores (tests/cores.py)."""
  del nextitem  # unused
  with cores.held():
    yield


def made_once(tmp_path_factory, name, make):
  """The folder `name` after make(folder) ran in it, once per test run.

  Under pytest-xdist the first worker that asks makes it in the folder that
  the workers share (the others wait, then use it); in one process it is an
  ordinary temporary folder.
  """
  if "PYTEST_XDIST_WORKER" not in os.environ:
    folder = tmp_path_factory.mktemp(name)
    make(folder)
    return str(folder)
  root = tmp_path_factory.getbasetemp().parent
  folder, done = root / name, root / (name + ".done")
  with open(str(root / (name + ".lock")), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(str(folder), ignore_errors=True)
      folder.mkdir()
      make(folder)
      done.touch()
  return str(folder)


# Small real excerpts committed with the tests (fixtures/README.md says
# where each comes from); tests that need only a little real data read these.
FIXTURES = os.path.join(REPO, "tests", "fixtures")


def sample(name):
  """sample_data.fetch(name); a failed download fails the test in one line.

  The line names the sample and the package that could not be fetched (a
  package can leave the index: sample_data.SAMPLES names each source).
  """
  try:
    return sample_data.fetch(name)
  except OSError as e:
    pytest.fail("%s; `python sample_data.py %s` tries again" % (e, name),
                pytrace=False)


@pytest.fixture(scope="session")
def wiki_dump():
  """The real English Wikipedia XML export (.xml.bz2) from the gensim wheel."""
  return sample("wikipedia")


@pytest.fixture(scope="session")
def vocab_file():
  """The real 30,522-line uncased BERT vocab."""
  return sample("vocab")


@pytest.fixture(scope="session")
def small_bert_hf_dir():
  """The real small BertForMaskedLM (Hugging Face format)."""
  return sample("small_bert")


@pytest.fixture(scope="session")
def wiki_text_dir(tmp_path_factory, wiki_dump):
  """Stage II output: sentence-per-line text files from the real dump."""
  return made_once(tmp_path_factory, "wiki_text", lambda out: run_script([
      "wikiextractor/wiki_to_text.py", "--input", wiki_dump, "--output_dir",
      out, "--num_files", 4, "--processes", 2]))


def stage3_command(input_dir, output_dir, vocab_file, *extra):
  """A stage III command line at the tests' sizes, two workers, and
  `extra` flags."""
  return ["create_pretraining_data.py", "--input_dir", input_dir,
          "--output_dir", output_dir, "--output_base_name", "wiki",
          "--vocab_file", vocab_file, "--max_seq_length", MAX_SEQ_LENGTH,
          "--max_predictions_per_seq", MAX_PREDICTIONS, "--num_workers",
          2] + list(extra)


@pytest.fixture(scope="session")
def stage3_dir(tmp_path_factory, wiki_text_dir, vocab_file):
  """Stage III output: masked-LM TFRecords (seq 64, 10 predictions)."""
  return made_once(tmp_path_factory, "stage3", lambda out: run_script(
      stage3_command(wiki_text_dir, out, vocab_file, "--do_lower_case=true",
                     "--dupe_factor", 1, "--random_seed", 12345)))


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory, small_bert_hf_dir):
  """The small real BERT converted to Google's format (config, vocab, ckpt)."""
  return made_once(tmp_path_factory, "teacher", lambda out: inprocess.run_main(
      "convert_hf_bert_checkpoint",
      ["--hf_dir", small_bert_hf_dir, "--output_dir", out]))


@pytest.fixture(scope="session")
def stage4_file(tmp_path_factory, stage3_dir, teacher_dir):
  """Stage IV output: the records of STAGE4_INPUTS + the real teacher's
  top-10 labels."""
  name = "wiki_teacher_k10.tfrecord"
  folder = made_once(tmp_path_factory, "stage4", lambda out: inprocess.run_main(
      "produce_teacher_labels", [
          "--bert_config_file", os.path.join(teacher_dir, "bert_config.json"),
          "--init_checkpoint", os.path.join(teacher_dir, "bert_model.ckpt"),
          "--input_file", os.path.join(stage3_dir, STAGE4_INPUTS),
          "--output_file", out / name,
          "--truncation_factor", TRUNCATION_FACTOR,
          "--max_seq_length", MAX_SEQ_LENGTH,
          "--max_predictions_per_seq", MAX_PREDICTIONS,
          "--batch_size", 32]))
  return os.path.join(folder, name)
