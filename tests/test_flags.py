"""The flags are the one source of the stages' settings (stages V to VIII).

Each script family defines its flags once, at import (distillation_flags.py,
classifier_flags.py, squad_flags.py, with finetuning_flags.py and
stage_flags.py), and its options dataclass holds their values without
defaults of its own. These tests tie the two: every flag of a script is a
field of its options and every field a flag, of the same type, and
stage_flags.options_from_flags takes each flag's value (its default when the command line
does not give it).
"""

import dataclasses
import importlib

from absl import flags
import pytest

from bert_distill import cli
import inprocess
import modeling

FLAGS = flags.FLAGS

# (script, its flags module, the name of its options class)
SCRIPTS = [
    ("network_distillation_single_machine_truncated", "distillation_flags",
     "distillation.Options"),
    ("network_distillation_distributed_truncated", "distillation_flags",
     "distillation.Options"),
    ("run_classifier", "classifier_flags", "classifier.ClassifierOptions"),
    ("run_classifier_distributed", "classifier_flags",
     "classifier.ClassifierOptions"),
    ("run_squad", "squad_flags", "question_answering.SquadOptions"),
    ("run_squad_distributed", "squad_flags",
     "question_answering.SquadOptions"),
]
TPU_FLAGS = {"use_tpu", "tpu_name", "tpu_zone", "gcp_project", "master",
             "num_tpu_cores"}
# The Python type of a field for each kind of flag (absl's flag_type()).
FIELD_TYPES = {"bool": bool, "int": int, "float": float, "string": str,
               "string enum": str}


@pytest.mark.parametrize("script,flags_module,options_name", SCRIPTS)
def test_every_flag_is_an_option_and_every_option_a_flag(
    script, flags_module, options_name):
  """The flags a script defines (all listed in its --help) are its options'
  fields plus the TPU flags; each field has its flag's type; with an empty
  command line the options hold the flags' defaults."""
  module = inprocess.load(script)
  defined = inprocess.project_flags()
  key_flags = {f.name for f in FLAGS.get_key_flags_for_module(module)}
  assert set(defined) == key_flags  # --help lists every one of them
  stage_module, class_name = options_name.split(".")
  options_class = getattr(
      importlib.import_module("bert_distill.stages." + stage_module),
      class_name)
  fields = {f.name: f for f in dataclasses.fields(options_class)}
  assert set(fields) == set(defined) - TPU_FLAGS
  assert TPU_FLAGS <= set(defined)
  for name, field in fields.items():
    assert field.default is dataclasses.MISSING, name  # one set of defaults
    assert field.type is FIELD_TYPES[defined[name].flag_type()], name
  from bert_distill.flags import stage_flags  # pylint: disable=g-import-not-at-top
  assert getattr(module, flags_module).OPTIONS is options_class
  opts = stage_flags.options_from_flags(options_class)
  assert type(opts) is options_class
  for name in fields:
    assert getattr(opts, name) == defined[name].default, name


@pytest.mark.parametrize("flags_module", ["distillation_flags",
                                          "classifier_flags", "squad_flags"])
def test_options_take_the_command_line_and_reject_tpu_flags(flags_module):
  """A value given on the command line is the option's value; a TPU flag
  given another value than its default stops with one line naming it."""
  module = inprocess.load(flags_module)
  from bert_distill.flags import stage_flags  # pylint: disable=g-import-not-at-top
  with inprocess.parsed(["test", "--learning_rate", "0.25", "--do_train",
                         "--random_seed", "7"]):
    opts = stage_flags.options_from_flags(module.OPTIONS)
    assert (opts.learning_rate, opts.do_train, opts.random_seed) == (
        0.25, True, 7)
    FLAGS["num_tpu_cores"].value = 4
    with pytest.raises(cli.UserError, match=r"^--num_tpu_cores=4: TPUs are "
                       "not supported"):
      stage_flags.options_from_flags(module.OPTIONS)


def test_run_squad_keeps_googles_defaults():
  """run_squad.py's --max_seq_length and --train_batch_size defaults are
  Google's run_squad.py ones (384, 12), run_classifier.py's Google's
  run_classifier.py ones (128, 32)."""
  squad = inprocess.options("squad_flags")
  assert (squad.max_seq_length, squad.train_batch_size) == (384, 12)
  glue_opts = inprocess.options("classifier_flags")
  assert (glue_opts.max_seq_length, glue_opts.train_batch_size) == (128, 32)


def test_distiller_gets_the_loss_settings_of_the_flags():
  """The options are LossSettings (what Distiller reads): --temperature on
  the command line reaches the objective in one step."""
  from bert_distill.stages import distillation  # pylint: disable=g-import-not-at-top
  from bert_distill.stages import distillation_objective  # pylint: disable=g-import-not-at-top
  inprocess.load("distillation_flags")
  from bert_distill.flags import stage_flags  # pylint: disable=g-import-not-at-top
  with inprocess.parsed(["test", "--temperature", "2.5",
                         "--hard_label_weight", "0.5"]):
    opts = stage_flags.options_from_flags(distillation.Options)
  assert isinstance(opts, distillation_objective.LossSettings)
  config = modeling.BertConfig(vocab_size=30, hidden_size=8,
                               num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=16)
  settings = distillation_objective.Distiller(opts, config).settings
  assert (settings.temperature, settings.hard_label_weight) == (2.5, 0.5)
  assert settings.truncation_factor == FLAGS["truncation_factor"].default


def test_the_teacher_settings_defaults_are_the_flags():
  """finetuning.TEACHER_SETTINGS (a teacher's flag at another value without
  a teacher is an error) holds the flags' defaults, None read as empty."""
  from bert_distill.stages import finetuning  # pylint: disable=g-import-not-at-top
  inprocess.load("classifier_flags")
  for name, default in finetuning.TEACHER_SETTINGS.items():
    assert (FLAGS[name].default or type(default)()) == default, name
