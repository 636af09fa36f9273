"""What a newcomer reads works as written.

- Every script's --help renders as its docstring says: examples keep one
  flag group per line, and the program name appears only where a sentence
  names the program (absl formats "% s" in a docstring into the name).
- The README's sample track (the blocks marked `<!-- sample-track -->`) runs
  as written, in order, offline, from a folder that holds the repository's
  files; its outputs are then read back.
"""

import os
import re
import subprocess
import sys

from conftest import REPO, script_env

# Every script a user runs, relative to the repository root.
SCRIPTS = (
    "sample_data.py", "convert_hf_bert_checkpoint.py",
    "wikiextractor/wiki_to_text.py", "create_pretraining_data.py",
    "produce_teacher_labels.py",
    "network_distillation_single_machine_truncated.py",
    "network_distillation_distributed_truncated.py", "run_classifier.py",
    "run_classifier_distributed.py", "run_squad.py",
    "run_squad_distributed.py", "export_bert_checkpoint.py",
    "scripts/demo_summary.py")


def _help_outputs(scripts, env, cwd):
  """script -> (exit status, stdout) of `python script --help`, 2 at a time."""
  out = {}
  for i in range(0, len(scripts), 2):
    procs = {s: subprocess.Popen([sys.executable, os.path.join(REPO, s),
                                  "--help"], cwd=cwd, env=env,
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
             for s in scripts[i:i + 2]}
    for script, proc in procs.items():
      stdout, _ = proc.communicate(timeout=300)
      out[script] = (proc.returncode, stdout)
  return out


def test_every_scripts_help_reads_as_written(tmp_path):
  # From another folder and without PYTHONPATH: each script finds its
  # modules itself.
  env = script_env()
  env.pop("PYTHONPATH", None)
  outputs = _help_outputs(SCRIPTS, env, str(tmp_path))
  for script, (status, text) in outputs.items():
    # absl's --help exits with status 1 after printing the help.
    assert status in (0, 1) and text.strip(), (script, status, text[-2000:])
    # The docstring part: absl lists the flags after it.
    doc = text.split("\nflags:\n")[0]
    assert len(doc.strip().splitlines()) >= 3, (script, text[:500])
    # A continuation line that Python joined (a "\" not doubled in the
    # docstring) leaves a run of spaces before the next flag.
    joined = [l for l in doc.splitlines() if re.search(r"\S {3,}--\w", l)]
    assert not joined, (script, joined)
    name = os.path.basename(script)
    for m in re.finditer(re.escape(name), doc):
      before = doc[max(0, m.start() - 1):m.start()]
      after = doc[m.end():m.end() + 1]
      assert before in ("", " ", "/", "`", "(", "\n"), (
          script, doc[max(0, m.start() - 60):m.end() + 20])
      assert not re.match(r"\w", after), (
          script, doc[max(0, m.start() - 60):m.end() + 20])
  examples = outputs["create_pretraining_data.py"][1]
  assert "  python create_pretraining_data.py --input_dir" in examples
  assert "\n      --output_dir" in examples
  sample_help = outputs["sample_data.py"][1]
  assert "usage: python sample_data.py {" in sample_help
  assert "  wikipedia " in sample_help and "  small_bert " in sample_help
  assert "--demo_dir" in outputs["scripts/demo_summary.py"][1]
