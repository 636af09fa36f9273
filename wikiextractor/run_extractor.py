# coding=utf-8
"""Runs wikiextractor's command line as a child of wiki_to_text.py.

  python wikiextractor/run_extractor.py PARENT_PID [wikiextractor args ...]

The same as `python -m wikiextractor.WikiExtractor ARGS`, except that this
process and the extraction workers it forks get SIGKILL when their parent
dies (even by SIGKILL: nothing is left running), and Ctrl-C is left to
wiki_to_text.py, which stops them (one line instead of a traceback from
every worker).

This folder has no __init__.py, so `wikiextractor` below is the PyPI package
(a regular package wins over a namespace folder of the same name).
"""

import os
import runpy
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bert_distill import cli  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  parent = int(sys.argv[1])
  cli.die_with_parent(parent)
  cli.die_with_parent_after_fork()
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the workers
  sys.argv = ["wikiextractor"] + sys.argv[2:]
  runpy.run_module("wikiextractor.WikiExtractor", run_name="__main__",
                   alter_sys=True)


if __name__ == "__main__":
  main()
