"""The layering of the code, as a checked rule.

  scripts (top level) -> flags -> stages -> cli -> lib

The folders are the layers (bert_distill/__init__.py says what each holds):
bert_distill/flags, bert_distill/stages, bert_distill/cli.py,
bert_distill/lib, plus the three libraries that keep Google's names at the
top level (modeling, optimization, tokenization). A module imports only from
its own layer and the layers to its right; nothing imports a script, tests/
or bench/. Imports are read from the source (AST), those inside functions
included. Every top-level module is either a script (it has a `__main__`
block) or one of those three libraries, so the top level stays what a user
runs.
"""

import ast
import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "bert_distill")

# Libraries outside bert_distill/lib: Google's names at the top level, and
# the chart library beside the demo's scripts.
TOP_LEVEL_LIBRARIES = {"modeling", "optimization", "tokenization"}
OTHER_LIBRARIES = {"svg_chart"}
# The layers, left to right (a module may import from its own and those
# after it).
LAYER_ORDER = ("flags", "stages", "cli", "lib")
# The top level: at most this many Python files; no module (tests included)
# over this many lines.
MAX_TOP_LEVEL_FILES = 18
MAX_MODULE_LINES = 900


def _source(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def _package_modules(folder):
  return {os.path.splitext(os.path.basename(p))[0]: p
          for p in glob.glob(os.path.join(PACKAGE, folder, "*.py"))
          if not p.endswith("__init__.py")}


def _modules():
  """name -> path of every module: the top level's, the scripts' in
  folders, the package's."""
  paths = glob.glob(os.path.join(REPO, "*.py"))
  paths += glob.glob(os.path.join(REPO, "wikiextractor", "*.py"))
  paths += glob.glob(os.path.join(REPO, "scripts", "*.py"))
  modules = {os.path.splitext(os.path.basename(p))[0]: p for p in paths}
  for layer in LAYER_ORDER:
    if layer == "cli":
      modules["cli"] = os.path.join(PACKAGE, "cli.py")
    else:
      modules.update(_package_modules(layer))
  return modules


def _is_script(path):
  tree = ast.parse(_source(path), path)
  for node in tree.body:
    if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and
        isinstance(node.test.left, ast.Name) and
        node.test.left.id == "__name__"):
      return True
  return False


def imported_modules(path):
  """The names of the modules `path` imports, at any depth: the top-level
  name, or for this project's package the module's own name
  (`from bert_distill.lib import records` -> "records")."""
  names = set()
  for node in ast.walk(ast.parse(_source(path), path)):
    if isinstance(node, ast.Import):
      names.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      if node.module.split(".")[0] == "bert_distill":
        names.update(alias.name for alias in node.names)
      else:
        names.add(node.module.split(".")[0])
  return names


MODULES = _modules()
SCRIPTS = {name for name, path in MODULES.items() if _is_script(path)}
LAYERS = {
    "flags": set(_package_modules("flags")),
    "stages": set(_package_modules("stages")),
    "cli": {"cli"},
    "lib": set(_package_modules("lib")) | TOP_LEVEL_LIBRARIES |
           OTHER_LIBRARIES,
}
LAYER_OF = {name: layer for layer, names in LAYERS.items() for name in names}


def test_every_module_has_a_layer():
  assert len(LAYER_OF) == sum(map(len, LAYERS.values())), "a name twice"
  assert set(LAYER_OF) <= set(MODULES), sorted(set(LAYER_OF) - set(MODULES))
  assert not SCRIPTS & set(LAYER_OF), sorted(SCRIPTS & set(LAYER_OF))
  unplaced = set(MODULES) - SCRIPTS - set(LAYER_OF)
  assert not unplaced, ("modules that are neither a script nor in the "
                        "package: %s" % ", ".join(sorted(unplaced)))


@pytest.mark.parametrize("name", sorted(LAYER_OF))
def test_a_module_imports_only_its_layer_and_those_below(name):
  layer = LAYER_ORDER.index(LAYER_OF[name])
  above = {other for other, its_layer in LAYER_OF.items()
           if LAYER_ORDER.index(its_layer) < layer}
  bad = imported_modules(MODULES[name]) & (
      above | SCRIPTS | {"tests", "bench"})
  assert not bad, "%s (%s) imports %s" % (name, LAYER_OF[name],
                                          ", ".join(sorted(bad)))


def test_the_top_level_holds_what_users_run():
  top = {os.path.basename(p) for p in glob.glob(os.path.join(REPO, "*.py"))}
  assert len(top) <= MAX_TOP_LEVEL_FILES, sorted(top)
  assert {name + ".py" for name in TOP_LEVEL_LIBRARIES} <= top


def test_no_module_is_too_long_to_read():
  paths = list(MODULES.values()) + glob.glob(
      os.path.join(REPO, "tests", "*.py")) + glob.glob(
          os.path.join(REPO, "bench", "*.py"))
  for path in paths:
    with open(path, encoding="utf-8") as f:
      lines = sum(1 for _ in f)
    assert lines <= MAX_MODULE_LINES, "%s has %d lines" % (
        os.path.relpath(path, REPO), lines)


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
  path.write_text("from bert_distill.lib import records, outputs as o\n"
                  "from absl import flags\n")
  assert imported_modules(str(path)) == {"records", "outputs", "absl"}
  script = tmp_path / "s.py"
  script.write_text("x = 1\nif __name__ == \"__main__\":\n  print(x)\n")
  assert _is_script(str(script)) and not _is_script(str(path))
