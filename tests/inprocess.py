"""Running a stage script's `main` inside the test process (tests only).

A subprocess per command line costs a Python start and a TensorFlow import
(seconds each on 2 cores); where the process itself is not what a test
checks (exit status, mpirun, kill, signals), the tests call the script's
`main` here instead.

The scripts define their flags at import on absl's global FLAGS (through
distillation_flags.py, classifier_flags.py, squad_flags.py...), and several
define the same names (--output_dir, --max_seq_length, ...), so `load` first
removes every flag a project module defined (TensorFlow's and absl's stay)
and imports the script afresh: each call sees only that script's flags, with
their defaults.
"""

import contextlib
import dataclasses
import importlib
import os
import sys

from absl import flags
from absl import logging

from bert_distill import cli

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIKIEXTRACTOR = os.path.join(REPO, "wikiextractor")

FLAGS_PACKAGE = "bert_distill.flags"
# Modules that define flags when imported: imported afresh by every `load`.
FLAG_MODULES = tuple(
    FLAGS_PACKAGE + "." + name
    for name in ("stage_flags", "record_flags", "layer_loss_flags",
                 "distillation_flags",
                 "finetuning_flags", "classifier_flags", "squad_flags"))


def _is_project_module(name):
  module = sys.modules.get(name)
  path = os.path.abspath(getattr(module, "__file__", None) or "")
  return os.path.dirname(path) in (REPO, WIKIEXTRACTOR) or path.startswith(
      os.path.join(REPO, "bert_distill") + os.sep)


def full_name(module_name):
  """A script's name as it is ("run_classifier"), a flag module's short
  name ("classifier_flags") in its package."""
  in_package = FLAGS_PACKAGE + "." + module_name
  return in_package if in_package in FLAG_MODULES else module_name


def _forget_module(name):
  """Removes `name` from sys.modules and from its package's attributes, so
  that `from package import name` imports it afresh."""
  sys.modules.pop(name, None)
  package, _, attribute = name.rpartition(".")
  if package in sys.modules and hasattr(sys.modules[package], attribute):
    delattr(sys.modules[package], attribute)


def project_flags():
  """name -> Flag of every flag that a module of this project defined."""
  return {flag.name: flag
          for module_name, module_flags in FLAGS.flags_by_module_dict().items()
          if _is_project_module(module_name) for flag in module_flags}


def _unparse_flags():
  """FLAGS.unparse_flags(), keeping absl's logger at its level (unparsing
  --verbosity sets it to WARNING, which would hide the INFO logs that tests
  read)."""
  absl_logger = logging.get_absl_logger()
  level = absl_logger.level
  FLAGS.unparse_flags()
  absl_logger.setLevel(level)


def _forget_project_flags():
  for name in project_flags():
    if name in FLAGS:
      delattr(FLAGS, name)


def load(module_name):
  """Imports `module_name` (see `full_name`) afresh with only its own flags
  (and absl's)."""
  _unparse_flags()
  _forget_project_flags()
  module_name = full_name(module_name)
  for name in (module_name,) + FLAG_MODULES:
    _forget_module(name)
  return importlib.import_module(module_name)


def options(flags_module_name, **values):
  """The options a script gets from the flags of `flags_module_name` with
  an empty command line (their defaults), with `values` replaced.

  E.g. options("distillation_flags", do_train=True) is a distillation.Options.
  """
  module = load(flags_module_name)
  from bert_distill.flags import stage_flags  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(
      stage_flags.options_from_flags(module.OPTIONS), **values)


@contextlib.contextmanager
def parsed(argv):
  """absl's FLAGS parsed from `argv` (program name first) inside the block;
  yields the words that are not flags.

  As absl's app.run, an unset --verbosity means INFO. On leaving, the flags
  are unparsed and absl's logger gets back its level (parsing --verbosity
  sets it), so that the tests that read logs at INFO level see them.
  """
  absl_logger = logging.get_absl_logger()
  level = absl_logger.level
  try:
    remaining = FLAGS(argv)
    if FLAGS["verbosity"].using_default_value:
      FLAGS.verbosity = 0  # INFO, as absl's app.run sets it
    yield remaining
  finally:
    FLAGS.unparse_flags()
    absl_logger.setLevel(level)


def run_main(module_name, args):
  """Parses `args` as the command line of `module_name` and calls its main.

  As `cli.run` does: boolean values written apart are joined first, and
  words that are not flags are an error. Returns what main returns; the
  errors that `cli.run` reports as one `error:` line propagate (see
  `error_line`).
  """
  module = load(module_name)
  argv = cli.join_boolean_values([module_name] + [str(a) for a in args])
  with parsed(argv) as remaining:
    cli.check_no_arguments(remaining)
    return module.main(remaining)


def error_line(module_name, args, status=1):
  """Runs a script's main in this process; it must fail with an error that
  `cli.run` reports as one line and exit `status`: returns that line
  ("error: ...").

  (The process level of that contract, the exit status and no traceback on
  stderr, is tested on processes.)
  """
  try:
    run_main(module_name, args)
  except BaseException as exc:  # pylint: disable=broad-except
    reported = cli.error_line(exc)
    if reported is None:
      raise
    message, exit_status = reported
    assert exit_status == status, (exit_status, message)
    return "error: " + message
  raise AssertionError("%s %s ran without an error" % (module_name, args))
