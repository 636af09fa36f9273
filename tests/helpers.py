"""Test glue shared by the tests and the benchmarks (bench/ imports it).

  REPO          the repository root.
  script_env()  the environment for running the project's scripts in a
                subprocess (the repository on PYTHONPATH, TensorFlow quiet,
                no GPU).
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_env():
  """Environment for running the project's scripts in a subprocess."""
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env.setdefault("CUDA_VISIBLE_DEVICES", "")
  return env
