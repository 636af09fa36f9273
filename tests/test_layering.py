"""The layering of the code, as a checked rule.

  scripts (flags, thin)  ->  stage modules  ->  libraries

A library imports neither `cli` (the scripts' side) nor a stage module nor
a script; a stage module imports no script. Imports are read from the
source (AST), those inside functions included. Every top-level module is
either a script (it has a `__main__` block) or named in one of the lists
below, so a new module has to be placed in a layer.
"""

import ast
import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LIBRARIES = {
    "checkpoints", "errors", "glue", "hardware", "hf_bert", "layer_losses",
    "modeling", "optimization", "outputs", "record_format", "records",
    "results", "squad", "svg_chart", "tokenization",
}
# The work of one stage, under its script(s).
STAGE_MODULES = {
    "classifier", "distillation", "distillation_objective", "exporter",
    "finetuning",
    "horovod_distribution", "pretraining_data", "question_answering",
    "teacher", "training",
}
# The scripts' side that is not a script itself: the command line and the
# flag modules (each script family's flags, defined once at import).
SCRIPT_SIDE = {"cli", "stage_flags", "record_flags", "distillation_flags",
               "finetuning_flags", "classifier_flags", "squad_flags"}


def _source(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def _modules():
  """name -> path of the top-level modules and of the scripts in folders."""
  paths = glob.glob(os.path.join(REPO, "*.py"))
  paths += glob.glob(os.path.join(REPO, "wikiextractor", "*.py"))
  paths += glob.glob(os.path.join(REPO, "scripts", "*.py"))
  return {os.path.splitext(os.path.basename(p))[0]: p for p in paths}


def _is_script(path):
  tree = ast.parse(_source(path), path)
  for node in tree.body:
    if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and
        isinstance(node.test.left, ast.Name) and
        node.test.left.id == "__name__"):
      return True
  return False


def imported_modules(path):
  """The top-level names of every module `path` imports, at any depth."""
  names = set()
  for node in ast.walk(ast.parse(_source(path), path)):
    if isinstance(node, ast.Import):
      names.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module.split(".")[0])
  return names


MODULES = _modules()
SCRIPTS = {name for name, path in MODULES.items() if _is_script(path)}


def test_every_module_has_a_layer():
  layered = LIBRARIES | STAGE_MODULES | SCRIPT_SIDE
  assert len(layered) == len(LIBRARIES) + len(STAGE_MODULES) + len(
      SCRIPT_SIDE), "a module is in two layers"
  assert layered <= set(MODULES), sorted(layered - set(MODULES))
  assert not SCRIPTS & layered, sorted(SCRIPTS & layered)
  unplaced = set(MODULES) - SCRIPTS - layered
  assert not unplaced, ("modules in no layer (add them to a list in this "
                        "test): %s" % ", ".join(sorted(unplaced)))


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_library_imports_no_cli_stage_or_script(name):
  forbidden = SCRIPTS | STAGE_MODULES | SCRIPT_SIDE | {"tests", "bench"}
  bad = imported_modules(MODULES[name]) & forbidden
  assert not bad, "%s.py imports %s" % (name, ", ".join(sorted(bad)))


@pytest.mark.parametrize("name", sorted(STAGE_MODULES))
def test_stage_module_imports_no_script(name):
  bad = imported_modules(MODULES[name]) & (SCRIPTS | {"tests", "bench"})
  assert not bad, "%s.py imports %s" % (name, ", ".join(sorted(bad)))


# The two training stages share training.py; neither imports the other's
# modules (fine-tuning once imported distillation for its loop's parts).
DISTILLATION_SIDE = {"distillation", "distillation_objective", "teacher",
                     "layer_losses"}
FINE_TUNING_SIDE = {"finetuning", "classifier", "question_answering"}


@pytest.mark.parametrize("name", sorted(DISTILLATION_SIDE | FINE_TUNING_SIDE))
def test_training_stages_share_only_the_core(name):
  other = (FINE_TUNING_SIDE if name in DISTILLATION_SIDE
           else {"distillation"})
  assert not imported_modules(MODULES[name]) & other


def test_tests_import_nothing_from_bench():
  """Test glue lives in tests/ (bench/ may import it, not the reverse)."""
  for path in glob.glob(os.path.join(REPO, "tests", "*.py")):
    assert "bench" not in imported_modules(path), path


def test_the_reader_sees_every_kind_of_import(tmp_path):
  path = tmp_path / "m.py"
  path.write_text("import os\nimport a.b as c\n\n\ndef f():\n"
                  "  from cli import UserError\n  import teacher as t\n"
                  "  from . import relative\n")
  assert imported_modules(str(path)) == {"os", "a", "cli", "teacher"}
  script = tmp_path / "s.py"
  script.write_text("x = 1\nif __name__ == \"__main__\":\n  print(x)\n")
  assert _is_script(str(script)) and not _is_script(str(path))
