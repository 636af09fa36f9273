"""What a newcomer reads works as written.

- Every script's --help renders as its docstring says: examples keep one
  flag group per line, and the program name appears only where a sentence
  names the program (absl formats "% s" in a docstring into the name).
- The README's sample track (the blocks marked `<!-- sample-track -->`) runs
  as written, in order, offline, from a folder that holds the repository's
  files (its `python` and `.venv/bin/python` are tests/python_fork.py's,
  which saves a TensorFlow import per command and per mpirun rank); its
  outputs are then read back.
"""

import os
import re
import subprocess
import sys

import tensorflow as tf

from conftest import REPO, forked_python, run_two_at_a_time, script_env

# Every script a user runs, relative to the repository root.
SCRIPTS = (
    "sample_data.py", "convert_hf_bert_checkpoint.py",
    "wikiextractor/wiki_to_text.py", "create_pretraining_data.py",
    "produce_teacher_labels.py",
    "network_distillation_single_machine_truncated.py",
    "network_distillation_distributed_truncated.py", "run_classifier.py",
    "run_classifier_distributed.py", "run_squad.py",
    "run_squad_distributed.py", "export_bert_checkpoint.py",
    "scripts/demo_summary.py", "scripts/demo_finetune.py")


def test_every_scripts_help_reads_as_written(tmp_path):
  # From another folder and without PYTHONPATH: each script finds its
  # modules itself.
  env = script_env()
  env.pop("PYTHONPATH", None)
  outputs = {script: (status, stdout) for script, (status, stdout, _) in zip(
      SCRIPTS, run_two_at_a_time([[os.path.join(REPO, s), "--help"]
                                  for s in SCRIPTS], env, str(tmp_path)))}
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


# A README block of the sample track: the marker line, then a bash fence.
_SAMPLE_BLOCK = re.compile(r"^<!-- sample-track -->\n```bash\n(.*?)^```$",
                           re.S | re.M)


def sample_track_blocks():
  """The sample track's command blocks, in README order."""
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    return _SAMPLE_BLOCK.findall(f.read())


def repository_view(folder, python):
  """`folder` made to hold the repository: a link to each top-level entry,
  except that its `.venv/bin/python` is `python`.

  Commands run there as from the repository folder, and their outputs
  (sample/) stay out of the repository.
  """
  for name in sorted(os.listdir(REPO)):
    if name in (".git", ".pytest_cache", ".venv", "sample") or name.endswith(
        "_output"):
      continue
    os.symlink(os.path.join(REPO, name), os.path.join(folder, name))
  os.makedirs(os.path.join(folder, ".venv", "bin"))
  os.symlink(python, os.path.join(folder, ".venv", "bin", "python"))


def read_results(path):
  with open(path) as f:
    return dict(line.strip().split(" = ") for line in f if " = " in line)


def test_readme_sample_track_runs_as_written(tmp_path):
  blocks = sample_track_blocks()
  assert len(blocks) == 6, blocks
  work = tmp_path / "repo"
  work.mkdir()
  # `python` and `.venv/bin/python` (mpirun's ranks) are the project's
  # environment through tests/python_fork.py (TensorFlow imported once).
  repository_view(str(work), forked_python())
  env = script_env()
  env.pop("PYTHONPATH", None)
  env["PATH"] = os.pathsep.join([os.path.dirname(forked_python()),
                                 os.path.dirname(sys.executable),
                                 env["PATH"]])
  if os.getuid() == 0:
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
  script = "set -euo pipefail\n" + "\n".join(blocks)
  result = subprocess.run(["bash", "-c", script], cwd=str(work), env=env,
                          capture_output=True, text=True, timeout=900,
                          check=False)
  assert result.returncode == 0, (result.stdout[-3000:],
                                  result.stderr[-5000:])
  sample = work / "sample"
  assert sorted(os.listdir(sample / "wiki_text")) == [
      "wiki_%03d.txt" % i for i in range(4)]
  assert sorted(os.listdir(sample / "data" / "record")) == [
      "wiki_%d.tfrecord" % i for i in range(4)]
  # Each labelled file, and beside it the record of what made it.
  assert sorted(os.listdir(sample / "data" / "record_distill")) == [
      ".heldout_k10.tfrecord.made-by.json", ".wiki_k10.tfrecord.made-by.json",
      "heldout_k10.tfrecord", "wiki_k10.tfrecord"]
  # Stage V: 100 steps, evaluated on every record of the held-out file.
  student = read_results(sample / "output_dir" / "eval_results.txt")
  assert student["global_step"] == "100"
  heldout = sum(1 for _ in tf.data.TFRecordDataset(str(
      sample / "data" / "record_distill" / "heldout_k10.tfrecord")))
  assert student["eval_examples"] == str(heldout)
  assert heldout > 800  # more than the default evaluation reads
  assert set(student) >= {"masked_lm_accuracy", "masked_lm_loss",
                          "masked_lm_hard_label_loss", "loss",
                          "next_sentence_accuracy", "next_sentence_loss",
                          "teacher_top1_agreement"}
  assert "teacher_top1_agreement = " in result.stdout  # the `cat`
  # Stage VI: 20 steps over 2 processes, 10 each.
  assert os.path.exists(sample / "output_dir_horovod" /
                        "model.ckpt-10.index")
  # Stage VIII: int(7030 / 32 * 0.1) = 21 steps, 1,000 dev sentences.
  finetuned = read_results(sample / "sst2_student" / "eval_results.txt")
  assert finetuned["global_step"] == "21"
  assert finetuned["eval_examples"] == "1000"
  assert 0.0 <= float(finetuned["eval_accuracy"]) <= 1.0
  # Export: the student as a Hugging Face folder.
  assert sorted(os.listdir(sample / "student_hf")) == [
      "config.json", "model.safetensors", "tokenizer_config.json",
      "vocab.txt"]
