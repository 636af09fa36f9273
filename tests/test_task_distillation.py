"""Task-specific distillation in stage VIII: a fine-tuned teacher teaches.

run_classifier.py / run_squad.py with --teacher_init_checkpoint: the loss
is hard_label_weight * (gold-label loss) + soft_label_weight * T^2 * (soft
cross-entropy from the teacher's softened distribution), the squared
difference of the scores for regression, plus the layer losses of stage V.
Checked against NumPy on fixed logits; on real polarity sentences, a
student that learns only from the teacher's outputs learns the task from a
fine-tuned teacher and not from one with random weights; under mpirun the
two ranks' step equals one process's step on the union of their examples.
"""

import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from bert_distill.lib import checkpoints
from bert_distill.stages import classifier
from bert_distill.stages import finetuning
from bert_distill.stages import question_answering
from bert_distill.stages import training
import conftest
import helpers
import inprocess
import modeling
import sample_data
import test_classifier

SEQ = 32


def np_log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def np_soft(student, teacher, t):
  """T^2 * cross-entropy from softmax(teacher / T) to softmax(student / T)."""
  p = np.exp(np_log_softmax(teacher / t))
  return -(p * np_log_softmax(student / t)).sum(-1) * t * t


def test_soft_losses_equal_hand_computations():
  """The heads' soft losses on fixed logits: classes and SQuAD positions
  with the temperature (T^2-scaled), regression without it."""
  rng = np.random.RandomState(3)
  student = rng.randn(4, 3).astype(np.float32) * 2
  teacher = rng.randn(4, 3).astype(np.float32) * 2
  head = classifier.ClassifierHead(8, 3)
  for t in (1.0, 2.0, 4.0):
    got = head.soft_loss({"logits": student}, {"logits": teacher}, {}, t)
    np.testing.assert_allclose(got.numpy(), np_soft(student, teacher, t),
                               rtol=1e-5)
  # By hand for one row, T = 2: targets softmax([1, 0] / 2), log-probs of
  # [0, 2] / 2.
  p = np.exp([0.5, 0.0]) / np.exp([0.5, 0.0]).sum()
  logq = np.array([0.0, 1.0]) - np.log(np.exp([0.0, 1.0]).sum())
  got = classifier.ClassifierHead(8, 2).soft_loss(
      {"logits": np.array([[0.0, 2.0]], np.float32)},
      {"logits": np.array([[1.0, 0.0]], np.float32)}, {}, 2.0)
  assert float(got[0]) == pytest.approx(-4 * (p * logq).sum(), rel=1e-6)
  # Regression: the squared difference of the scores; T plays no part.
  regression = classifier.ClassifierHead(8, 1, is_regression=True)
  got = regression.soft_loss({"predictions": np.float32([1.5, 3.0])},
                             {"predictions": np.float32([1.0, 4.0])}, {},
                             3.0)
  np.testing.assert_allclose(got.numpy(), [0.25, 1.0])
  # SQuAD: the mean of the start and the end positions' soft losses, over
  # each window's real positions (7 and 10 of 10): the padding's logits,
  # whatever they are, take no part.
  starts = [rng.randn(2, 10).astype(np.float32) for _ in range(2)]
  ends = [rng.randn(2, 10).astype(np.float32) for _ in range(2)]
  lengths = (7, 10)
  mask = (np.arange(10)[None] < np.array(lengths)[:, None]).astype(np.int32)
  got = question_answering.SquadHead(8).soft_loss(
      {"start_logits": starts[0], "end_logits": ends[0]},
      {"start_logits": starts[1], "end_logits": ends[1]},
      {"input_mask": mask}, 2.0)
  for row, n in enumerate(lengths):
    want = (np_soft(starts[0][row, :n], starts[1][row, :n], 2.0) +
            np_soft(ends[0][row, :n], ends[1][row, :n], 2.0)) / 2
    assert float(got[row]) == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------------------
# Teachers written in the tests.
# ---------------------------------------------------------------------------


def write_fine_tuned(folder, config_path, head, seed=7):
  """A checkpoint of a fine-tuning model (encoder + `head`) with random
  weights, as run_classifier.py / run_squad.py name its variables: a teacher
  that has learned nothing."""
  tf.random.set_seed(seed)
  config = modeling.BertConfig.from_json_file(config_path)
  model = finetuning.FineTuningModel(config, head(config.hidden_size))
  os.makedirs(folder, exist_ok=True)
  prefix = os.path.join(str(folder), "model.ckpt-1")
  checkpoints.save_checkpoint(model.variables_by_name(), prefix)
  checkpoints.write_checkpoint_index(str(folder), prefix)
  return prefix


def tiny_features(teacher_dir, n=6):
  """Real polarity sentences as classifier features (seq SEQ)."""
  import tokenization  # pylint: disable=g-import-not-at-top
  from bert_distill.lib import glue  # pylint: disable=g-import-not-at-top
  task = glue.get_task("sst-2")
  examples = glue.read_examples(task, sample_data.fetch("polarity_sst2"),
                                task.train, True)[:n]
  tokenizer = tokenization.FullTokenizer(
      os.path.join(teacher_dir, "vocab.txt"), do_lower_case=True)
  return glue.convert_examples_to_features(examples, task, SEQ, tokenizer)


def test_the_loss_mixes_gold_and_teacher_as_the_flags_say(tmp_path,
                                                           teacher_dir):
  """FineTuner's training loss with a teacher: hard_label_weight * CE on
  the labels + soft_label_weight * T^2 * soft CE, from the two models'
  logits (no dropout), recomputed in NumPy; a layer loss adds its weighted
  value and trains a projection between the widths."""
  student_config = helpers.write_bert_config(tmp_path / "s.json", teacher_dir,
                                hidden_size=32, intermediate_size=64,
                                num_hidden_layers=1,
                                hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0)
  teacher_config = helpers.write_bert_config(tmp_path / "t.json", teacher_dir,
                                hidden_size=48, intermediate_size=96,
                                num_attention_heads=4)
  make_head = lambda h: classifier.ClassifierHead(h, 2, dropout_prob=0.0)
  prefix = write_fine_tuned(tmp_path / "teacher", teacher_config, make_head)
  features = {k: tf.constant(v, tf.int32) for k, v in
              tiny_features(teacher_dir).items()}
  for weights, hidden in (((0.3, 2.0), 0.0), ((1.0, 0.0), 0.5)):
    opts = inprocess.options(
        "classifier_flags", vocab_file=os.path.join(teacher_dir, "vocab.txt"),
        bert_config_file=student_config, max_seq_length=SEQ,
        output_dir=str(tmp_path / ("out%g" % hidden)), do_train=True,
        teacher_init_checkpoint=str(tmp_path / "teacher"),
        teacher_bert_config_file=teacher_config,
        teacher_compute_dtype="float32", temperature=2.0,
        hard_label_weight=weights[0], soft_label_weight=weights[1],
        hidden_loss_weight=hidden)
    config = modeling.BertConfig.from_json_file(student_config)
    teacher = finetuning.TaskTeacher(opts, make_head, config)
    assert teacher.checkpoint == prefix
    tuner = finetuning.FineTuner(opts, config, make_head(32),
                                 num_train_examples=64, teacher=teacher)
    got = float(tuner._loss(features, tf.constant([1, 2], tf.int64),  # pylint: disable=protected-access
                            tuner._teacher_outputs(features)))  # pylint: disable=protected-access
    student = tuner.model(features)["logits"].numpy()
    teacher_logits = teacher.model(features)["logits"].numpy()
    labels = features["label_ids"].numpy()
    hard = -np_log_softmax(student)[np.arange(len(labels)), labels]
    want = np.mean(weights[0] * hard +
                   weights[1] * np_soft(student, teacher_logits, 2.0))
    if hidden:
      assert list(tuner.layer_losses.variables_by_name()) == [
          "distillation/hidden_projection/kernel",
          "distillation/hidden_projection/bias"]
      assert "distillation/hidden_projection/kernel" in tuner.extra_state
      _, student_internals = tuner.model.run(features,
                                             return_internals=True)
      _, teacher_internals = teacher(features, return_internals=True)
      layer = tuner.layer_losses(student_internals, teacher_internals,
                                 features["input_mask"])
      assert list(layer) == ["hidden_loss"] and float(layer["hidden_loss"]) > 0
      want += hidden * float(layer["hidden_loss"])
    else:
      assert tuner.layer_losses is None
    assert got == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------------------
# Real polarity sentences: the signal comes from the teacher.
# ---------------------------------------------------------------------------

TRAIN = 1280


@pytest.fixture(scope="module")
def polarity_small(tmp_path_factory):
  """The polarity set's first TRAIN training sentences, dev and test."""
  return helpers.write_polarity_subset(sample_data.fetch("polarity_sst2"),
                                       tmp_path_factory.mktemp("polarity"),
                                       TRAIN)


def polarity_options(teacher_dir, data_dir, output_dir, **values):
  """test_classifier's fine-tuning options of the small real BERT, at this
  file's sequence length, with evaluation."""
  settings = dict(max_seq_length=SEQ, eval_batch_size=200, do_eval=True)
  settings.update(values)
  return test_classifier.options(teacher_dir, data_dir, output_dir,
                                 **settings)


def test_a_student_learns_the_task_from_a_fine_tuned_teacher_only(
    tmp_path, teacher_dir, polarity_small):
  """With the gold labels' weight at 0, a one-layer student (the small real
  BERT's first layer) learns polarity from the fine-tuned small BERT and
  not from the same model with random weights: what it learns comes from
  the teacher."""
  teacher_out = tmp_path / "teacher"
  teacher_metrics = classifier.run(polarity_options(
      teacher_dir, polarity_small, teacher_out, do_train=True))
  student_config = helpers.write_bert_config(tmp_path / "student.json", teacher_dir,
                                num_hidden_layers=1)
  blind = tmp_path / "blind_teacher"
  write_fine_tuned(blind, os.path.join(teacher_dir, "bert_config.json"),
                   lambda h: classifier.ClassifierHead(h, 2))
  accuracy = {}
  for name, teacher in (("fine-tuned", teacher_out), ("blind", blind)):
    metrics = classifier.run(polarity_options(
        teacher_dir, polarity_small, tmp_path / ("student_" + name),
        do_train=True,
        bert_config_file=student_config, teacher_init_checkpoint=str(teacher),
        teacher_bert_config_file=os.path.join(teacher_dir,
                                              "bert_config.json"),
        teacher_compute_dtype="float32", temperature=2.0,
        hard_label_weight=0.0))
    accuracy[name] = metrics["eval_accuracy"]
  print("dev accuracy: teacher %.3f; student from it %.3f, from a blind "
        "teacher %.3f" % (teacher_metrics["eval_accuracy"],
                          accuracy["fine-tuned"], accuracy["blind"]))
  assert teacher_metrics["eval_accuracy"] > 0.6
  assert accuracy["fine-tuned"] > accuracy["blind"] + 0.08
  assert accuracy["blind"] < 0.58
  settings = json.loads((tmp_path / "student_blind" /
                         training.RUN_SETTINGS_FILE).read_text())
  assert settings["temperature"] == 2.0
  assert settings["teacher_checkpoint"].startswith(str(blind))


def test_regression_distils_the_teachers_score(tmp_path, teacher_dir,
                                               caplog):
  """STS-B (the fixture's real pairs) with a teacher of another width and
  the hidden-state loss: the run trains the projection and saves it in the
  companion checkpoint, apart from the encoder and head (init from the
  output folder ignores it; a resumed run takes it back)."""
  stsb = os.path.join(conftest.FIXTURES, "sts-b")
  teacher_config = helpers.write_bert_config(tmp_path / "t.json", teacher_dir,
                                hidden_size=48, intermediate_size=96,
                                num_attention_heads=4)
  write_fine_tuned(tmp_path / "teacher", teacher_config,
                   lambda h: classifier.ClassifierHead(h, 1,
                                                       is_regression=True))
  out = tmp_path / "out"
  metrics = classifier.run(polarity_options(
      teacher_dir, stsb, out, task_name="sts-b", do_train=True,
      teacher_init_checkpoint=str(tmp_path / "teacher"),
      teacher_bert_config_file=teacher_config,
      teacher_compute_dtype="float32", hidden_loss_weight=1.0,
      eval_batch_size=50))
  assert np.isfinite(metrics["eval_loss"])
  steps = int(360 / 32)
  prefix = str(out / ("model.ckpt-%d" % steps))
  shapes = dict(tf.train.list_variables(prefix))
  assert shapes["output_weights"] == [1, 128]
  assert not any(name.startswith("distillation/") for name in shapes)
  companion = dict(tf.train.list_variables(prefix + ".distillation"))
  assert companion["distillation/hidden_projection/kernel"] == [128, 48]
  assert "distillation/hidden_projection/kernel/adam_m" in companion
  # Another run starts from the folder as from any fine-tuned model.
  again = classifier.run(polarity_options(
      teacher_dir, stsb, tmp_path / "again", task_name="sts-b",
      init_checkpoint=str(out), eval_batch_size=50))
  assert again["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)
  # A resumed run takes the projection back from the companion.
  caplog.set_level("INFO", logger="absl")
  resumed = classifier.run(polarity_options(
      teacher_dir, stsb, out, task_name="sts-b", do_train=True,
      num_train_epochs=2.0, teacher_init_checkpoint=str(tmp_path / "teacher"),
      teacher_bert_config_file=teacher_config,
      teacher_compute_dtype="float32", hidden_loss_weight=1.0,
      eval_batch_size=50))
  assert resumed["global_step"] == int(360 / 32 * 2)
  assert "Resuming from %s" % prefix in caplog.text
  assert "start from their initialisation" not in caplog.text
  # Only the longer schedule is a changed setting, not the teacher's.
  changed = [line for line in caplog.text.splitlines()
             if "other settings than it was started with" in line]
  assert len(changed) == 1 and changed[0].endswith(
      "num_train_epochs 1.0 -> 2.0, num_train_steps 11 -> 22")


# ---------------------------------------------------------------------------
# Horovod: the two ranks' step is one process's step on the union.
# ---------------------------------------------------------------------------


def test_mpirun_averages_the_distilled_gradients_exactly(tmp_path,
                                                         teacher_dir):
  """As test_classifier's exact-averaging test, with a teacher of another
  size and both losses: one 2-rank step (4 sentences each, learning rate
  1e-3 x 2) equals one single-process step on the 8 (2e-3). Dropout off,
  same random start, the teacher in float32."""
  data = tmp_path / "data"
  data.mkdir()
  helpers.write_polarity_subset(sample_data.fetch("polarity_sst2"), data, 8)
  config_path = helpers.write_bert_config(tmp_path / "config.json", teacher_dir,
                             hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0,
                             hidden_size=32, intermediate_size=64,
                             num_hidden_layers=1)
  teacher_config = helpers.write_bert_config(tmp_path / "t.json", teacher_dir,
                                hidden_size=48, intermediate_size=96,
                                num_attention_heads=4)
  write_fine_tuned(tmp_path / "teacher", teacher_config,
                   lambda h: classifier.ClassifierHead(h, 2))
  common = dict(task_name="sst-2", data_dir=str(data),
                vocab_file=os.path.join(teacher_dir, "vocab.txt"),
                bert_config_file=config_path, max_seq_length=SEQ,
                num_train_epochs=1, random_seed=5,
                teacher_init_checkpoint=str(tmp_path / "teacher"),
                teacher_bert_config_file=teacher_config,
                teacher_compute_dtype="float32", temperature=2.0,
                soft_label_weight=0.7, hard_label_weight=0.3)
  flags = []
  for name, value in common.items():
    flags += ["--" + name, value]
  hvd_flags = flags + ["--do_train=true", "--train_batch_size", 4,
                       "--learning_rate", 1e-3]
  cmd = conftest.mpirun_command(
      "run_classifier_distributed.py",
      [hvd_flags + ["--output_dir", tmp_path / out]
       for out in ("hvd", "hvd_rank1")])
  result = subprocess.run(cmd, cwd=conftest.REPO, env=conftest.mpi_env(),
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-5000:]
  assert "Teacher: " in result.stderr
  single = tmp_path / "single"
  classifier.run(inprocess.options(
      "classifier_flags", do_train=True, train_batch_size=8,
      learning_rate=2e-3, output_dir=str(single), **common))
  hvd = tf.train.load_checkpoint(str(tmp_path / "hvd" / "model.ckpt-1"))
  one = tf.train.load_checkpoint(str(single / "model.ckpt-1"))
  names = sorted(one.get_variable_to_shape_map())
  assert names == sorted(hvd.get_variable_to_shape_map())
  for name in names:
    a, b = hvd.get_tensor(name), one.get_tensor(name)
    atol = 1e-5 * np.abs(b).max() + 1e-12 if "/adam_" in name else 1e-6
    np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=name)
  assert np.abs(one.get_tensor("output_weights/adam_m")).max() > 0


# ---------------------------------------------------------------------------
# Bad input: one line each.
# ---------------------------------------------------------------------------


def test_bad_teachers_and_settings_are_one_line(tmp_path, teacher_dir):
  stsb = os.path.join(conftest.FIXTURES, "sts-b")
  config = os.path.join(teacher_dir, "bert_config.json")
  small = helpers.write_bert_config(tmp_path / "small.json", teacher_dir, hidden_size=48,
                       intermediate_size=96, num_attention_heads=4)
  three = write_fine_tuned(tmp_path / "mnli", config,
                           lambda h: classifier.ClassifierHead(h, 3))
  squad_teacher = write_fine_tuned(tmp_path / "squad", config,
                                   question_answering.SquadHead)
  other_vocab = helpers.write_bert_config(tmp_path / "vocab.json", teacher_dir,
                             vocab_size=1000)

  def error(**values):
    args = []
    for name, value in dict(
        task_name="sts-b", data_dir=stsb, do_train="true",
        vocab_file=os.path.join(teacher_dir, "vocab.txt"),
        bert_config_file=config, max_seq_length=SEQ,
        output_dir=tmp_path / "out", **values).items():
      args += ["--" + name, value]
    return inprocess.error_line("run_classifier", args)

  assert error(teacher_init_checkpoint=three,
               teacher_bert_config_file=config) == (
      "error: --teacher_init_checkpoint %s is fine-tuned on another task: "
      "its head output_weights has 3 outputs, this task's 1" % three)
  assert error(teacher_init_checkpoint=squad_teacher,
               teacher_bert_config_file=config).startswith(
                   "error: --teacher_init_checkpoint %s is not fine-tuned on "
                   "a task of this kind: it lacks the head's output_weights"
                   % squad_teacher)
  assert error(teacher_init_checkpoint=three,
               teacher_bert_config_file=small).startswith(
                   "error: --teacher_init_checkpoint %s does not match "
                   "--teacher_bert_config_file: bert/embeddings/"
                   "word_embeddings has shape [30522, 128] in the "
                   "checkpoint, the config makes [30522, 48]" % three)
  assert error(teacher_init_checkpoint=three,
               teacher_bert_config_file=other_vocab).startswith(
                   "error: --teacher_bert_config_file: vocab_size 1000 "
                   "differs from the student's 30522")
  assert error(teacher_init_checkpoint=three) == (
      "error: --teacher_init_checkpoint needs --teacher_bert_config_file "
      "(the teacher's bert_config.json)")
  assert error(temperature=2) == (
      "error: --temperature=2.0: a teacher's setting, but no "
      "--teacher_init_checkpoint is given (the fine-tuned teacher to distil "
      "from)")
  assert error(hidden_loss_weight=1).startswith(
      "error: --hidden_loss_weight=1.0: a teacher's setting")
  assert error(teacher_init_checkpoint=three, teacher_bert_config_file=config,
               temperature=0) == (
                   "error: --temperature must be positive, got 0.0")
  assert error(teacher_init_checkpoint=three, teacher_bert_config_file=config,
               soft_label_weight=0, hard_label_weight=0).startswith(
                   "error: --soft_label_weight=0 and --hard_label_weight=0")
  assert not os.path.exists(tmp_path / "out")
