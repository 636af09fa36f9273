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
"""

import bz2
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
