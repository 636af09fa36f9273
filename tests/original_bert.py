"""Google's original BERT scripts, made runnable here as a reference and peer.

Measurement and test glue, not project code: the original TF1 scripts (the
`bert_reference` sample, from the bert-tensorflow wheel) are run unchanged
from the sample's cache folder, never copied.

  load_tokenization()   the original tokenization.py as a module, imported
                        with a stand-in for `tensorflow.compat.v1` that
                        provides only what it uses (`gfile.GFile`, reading
                        lines split on "\\n" as GFile does), so that tests
                        need not import TensorFlow for it.
  create_pretraining_data_args(...)
                        the arguments running the original
                        create_pretraining_data.py as a script. TensorFlow
                        2.21 still ships `tf.compat.v1.gfile`, `.logging`,
                        `.python_io`, `.flags` and `.app`, which map to
                        tf.io.gfile, absl logging, tf.io.TFRecordWriter and
                        absl flags/app; the script only needs its package
                        (`bert`) on the Python path, which
                        `reference_env()` provides.
"""

import importlib.util
import os
import sys
import types

import sample_data

_TF_MODULES = ("tensorflow", "tensorflow.compat", "tensorflow.compat.v1")


def reference_dir():
  """The folder holding the original `bert` package."""
  return os.path.dirname(sample_data.fetch("bert_reference"))


class _GFile(object):
  """tf.gfile.GFile for reading text: lines end at "\\n" only."""

  def __init__(self, path, mode="r"):
    self._f = open(path, mode, encoding="utf-8", newline="\n")

  def __enter__(self):
    return self._f

  def __exit__(self, *unused):
    self._f.close()


def load_tokenization():
  """Imports the original tokenization.py; returns the module.

  Its absl flag --preserve_unused_tokens is read from `module.FLAGS`, which
  is replaced here by a plain namespace holding the flag's default (False),
  so that absl's global flags need not be parsed; set
  `module.FLAGS.preserve_unused_tokens` to change it.
  """
  name = "original_bert_tokenization"
  if name in sys.modules:
    return sys.modules[name]
  v1 = types.ModuleType("tensorflow.compat.v1")
  v1.gfile = types.SimpleNamespace(GFile=_GFile)
  compat = types.ModuleType("tensorflow.compat")
  compat.v1 = v1
  tf = types.ModuleType("tensorflow")
  tf.compat = compat
  saved = {k: sys.modules.get(k) for k in _TF_MODULES}
  sys.modules.update({"tensorflow": tf, "tensorflow.compat": compat,
                      "tensorflow.compat.v1": v1})
  try:
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(reference_dir(), "bert", "tokenization.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    # Put back whatever TensorFlow modules were there (or none).
    for key, value in saved.items():
      if value is None:
        sys.modules.pop(key, None)
      else:
        sys.modules[key] = value
  module.FLAGS = types.SimpleNamespace(preserve_unused_tokens=False)
  sys.modules[name] = module
  return module


def reference_env(base=None):
  """Environment for running an original script in a subprocess."""
  env = dict(os.environ if base is None else base)
  env["PYTHONPATH"] = reference_dir() + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env.setdefault("CUDA_VISIBLE_DEVICES", "")
  return env


def create_pretraining_data_args(input_files, output_file, vocab_file,
                                 **flag_values):
  """Script and flags running the original create_pretraining_data.py.

  Run it as `[sys.executable] + args` with `reference_env()`. The input
  files are given as a comma-separated list, so that they are read in the
  given order (its glob does not sort).
  """
  cmd = [os.path.join(reference_dir(), "bert", "create_pretraining_data.py"),
         "--input_file=" + ",".join(input_files),
         "--output_file=" + output_file, "--vocab_file=" + vocab_file]
  for key, value in sorted(flag_values.items()):
    cmd.append("--%s=%s" % (key, value))
  return cmd
