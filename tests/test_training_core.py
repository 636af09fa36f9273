"""The training core (training.py) as fine-tuning gets it, and its guards.

Fine-tuning (stage VIII) once had a copy of the distillation loop without
the output lock, the stop-on-signal checkpoint, the stall watchdog and the
eval-only check; these tests hold it to what stage V does (stage V's own
cases are in test_hardening_outputs.py). Real processes where the process
is what is tested (signals, a frozen Horovod rank); the rest through `run` in this
process. The data: the STS-B excerpt in tests/fixtures (real pairs).
"""

import os
import re
import signal

import pytest

from bert_distill.lib import checkpoints
from bert_distill.stages import classifier
from bert_distill import cli
import conftest
from bert_distill.stages import distillation
import helpers
import inprocess
from bert_distill.stages import question_answering
import test_hardening
import test_hardening_outputs as th

STSB = os.path.join(conftest.FIXTURES, "sts-b")
SQUAD_EXCERPT = os.path.join(conftest.FIXTURES, "squad",
                             "dev-v1.1-excerpt.json")


@pytest.fixture(scope="module")
def tiny_config(teacher_dir, tmp_path_factory):
  """A 1-layer, hidden-32 BERT of the teacher's vocabulary (random init)."""
  return helpers.write_bert_config(
      tmp_path_factory.mktemp("config") / "bert_config.json", teacher_dir,
      hidden_size=32, intermediate_size=64, num_hidden_layers=1,
      num_attention_heads=2)


def stsb_flags(teacher_dir, config):
  """run_classifier.py's flags for the STS-B excerpt (no output_dir)."""
  return ["--task_name", "sts-b", "--data_dir", STSB,
          "--vocab_file", os.path.join(teacher_dir, "vocab.txt"),
          "--bert_config_file", config, "--max_seq_length", 32,
          "--train_batch_size", 8]


def stsb_options(teacher_dir, config, out, **kwargs):
  values = dict(
      task_name="sts-b", data_dir=STSB,
      vocab_file=os.path.join(teacher_dir, "vocab.txt"),
      bert_config_file=config, output_dir=str(out), max_seq_length=32,
      train_batch_size=8, eval_batch_size=50, learning_rate=1e-4,
      num_train_epochs=0.1, save_checkpoints_steps=2, log_every_n_steps=1)
  values.update(kwargs)
  return inprocess.options("classifier_flags", **values)


def test_fine_tuning_takes_the_output_lock(tmp_path, teacher_dir,
                                           tiny_config):
  out = tmp_path / "out"
  out.mkdir()
  with conftest.lock_held_elsewhere(out) as pid:
    with pytest.raises(cli.UserError, match=r"--output_dir: \S*out is in use "
                       r"by process %d" % pid):
      classifier.run(stsb_options(teacher_dir, tiny_config, out,
                                  do_train=True))
  assert not [n for n in os.listdir(out) if not n.startswith(".")]
  classifier.run(stsb_options(teacher_dir, tiny_config, out, do_train=True))
  assert (out / "model.ckpt-4.index").exists()  # int(360 / 8 * 0.1) steps
  assert not (out / ".lock").exists()


def test_evaluation_alone_needs_a_checkpoint(tmp_path, teacher_dir,
                                            tiny_config):
  """Eval or predict only, into a folder without checkpoints and with no
  --init_checkpoint: an error (it would score random weights)."""
  empty = tmp_path / "empty"
  with pytest.raises(cli.UserError, match=(
      r"^--do_train=false: nothing to evaluate or predict with: "
      r"--output_dir \S*empty holds no checkpoint and no --init_checkpoint "
      r"is given \(a mistyped --output_dir\?\)$")):
    classifier.run(stsb_options(teacher_dir, tiny_config, empty,
                                do_eval=True))
  with pytest.raises(cli.UserError, match="nothing to evaluate or predict"):
    question_answering.run(inprocess.options(
        "squad_flags", bert_config_file=tiny_config,
        vocab_file=os.path.join(teacher_dir, "vocab.txt"),
        output_dir=str(empty), do_predict=True, predict_file=SQUAD_EXCERPT,
        max_seq_length=64, doc_stride=32, max_query_length=16))
  assert not empty.exists() or not os.listdir(empty)


def test_a_lost_or_broken_state_file_still_finds_the_checkpoints(
    tmp_path, teacher_dir, tiny_config, caplog, small_stage4):
  """Without TensorFlow's `checkpoint` file (deleted, or garbage), the
  newest model.ckpt-N on disk is used: fine-tuning evaluates and resumes
  it, stage V resumes it; neither starts again from step 0."""
  caplog.set_level("WARNING", logger="absl")
  out = tmp_path / "out"
  classifier.run(stsb_options(teacher_dir, tiny_config, out, do_train=True))
  for state in (None, b"garbage {{ \x00\x01"):
    (out / "checkpoint").unlink(missing_ok=True)
    if state:
      (out / "checkpoint").write_bytes(state)
    assert checkpoints.latest_checkpoint(str(out)) == str(
        out / "model.ckpt-4")
    metrics = classifier.run(stsb_options(teacher_dir, tiny_config, out,
                                          do_eval=True))
    assert metrics["global_step"] == 4
  assert "using the checkpoint with the highest step on disk" in caplog.text
  # Training resumes from step 4 (with a warning: the batch size changed).
  (out / "checkpoint").unlink()
  caplog.clear()
  classifier.run(stsb_options(teacher_dir, tiny_config, out, do_train=True,
                              train_batch_size=4))
  assert (out / "model.ckpt-9.index").exists()
  assert re.search(r"Resuming \S+out with other settings than it was "
                   r"started with: .*train_batch_size 8 -> 4", caplog.text)

  # Stage V the same.
  student = tmp_path / "student"
  config = th.tiny_config(tmp_path / "s.json")
  distillation.run(th.student_options(config, small_stage4, student))
  (student / "checkpoint").unlink()
  caplog.clear()
  caplog.set_level("INFO", logger="absl")
  distillation.run(th.student_options(config, small_stage4, student,
                                      num_train_steps=4))
  assert re.search(r"Resuming from \S+student/model\.ckpt-2 \(global_step 2\)",
                   caplog.text)
  assert (student / "model.ckpt-4.index").exists()


@pytest.fixture
def small_stage4(tmp_path, stage4_file):
  return th.copy_records(stage4_file, tmp_path / "small.tfrecord", 40)


def test_a_length_without_room_for_text_is_refused(tmp_path, teacher_dir,
                                                  tiny_config):
  for task, least in (("sts-b", 5), ("sst-2", 3)):
    with pytest.raises(cli.UserError, match=(
        r"^--max_seq_length=%d leaves no room for text: task %s needs at "
        r"least %d" % (least - 1, task, least))):
      classifier.run(stsb_options(teacher_dir, tiny_config, tmp_path / "o",
                                  task_name=task, do_train=True,
                                  max_seq_length=least - 1))


def test_sigterm_in_fine_tuning_saves_a_checkpoint(tmp_path, teacher_dir,
                                                   tiny_config):
  """As stage V: the current step ends, a checkpoint is written, one line,
  exit status 128 + SIGTERM (test_hardening_outputs.stop_training_with)."""
  th.stop_training_with(
      signal.SIGTERM,
      ["run_classifier.py"] + stsb_flags(teacher_dir, tiny_config)
      + ["--do_train=true", "--num_train_epochs", 100000], tmp_path)


def test_a_frozen_rank_ends_a_fine_tuning_job_naming_it(tmp_path,
                                                       teacher_dir,
                                                       tiny_config):
  """mpirun -np 2 run_classifier_distributed.py, rank 1 stopped (kill -STOP)
  after the first checkpoint: the core's watchdog ends the job with one
  line naming the rank, as in stage VI."""
  out = tmp_path / "out"
  flags = stsb_flags(teacher_dir, tiny_config) + [
      "--output_dir", out, "--do_train=true", "--num_train_epochs", 100000,
      "--save_checkpoints_steps", 2, "--iterations_per_loop", 1]
  test_hardening.freeze_a_rank("run_classifier_distributed.py", [flags, flags], out)
