"""What the flag modules of stages V to VIII share.

distillation_flags.py (stages V, VI), classifier_flags.py and squad_flags.py
(stage VIII) import this module, which defines at import the flags of the
original scripts that only made sense on Cloud TPUs. They are accepted so
that old command lines parse, and rejected with a clear message when given
another value than their (the original's) default.

`options_from_flags(options_class)` reads the flags into a stage's options
dataclass, one field per flag of the same name.
"""

import dataclasses

from absl import flags

from bert_distill import cli

FLAGS = flags.FLAGS

flags.DEFINE_bool("use_tpu", False,
                  "Not supported (TPUEstimator is gone from TensorFlow 2); "
                  "kept so that old command lines parse.")
flags.DEFINE_string("tpu_name", None, "Not supported; see --use_tpu.")
flags.DEFINE_string("tpu_zone", None, "Not supported; see --use_tpu.")
flags.DEFINE_string("gcp_project", None, "Not supported; see --use_tpu.")
flags.DEFINE_string("master", None, "Not supported; see --use_tpu.")
flags.DEFINE_integer("num_tpu_cores", 8, "Not supported; see --use_tpu.")

TPU_FLAGS = ("use_tpu", "tpu_name", "tpu_zone", "gcp_project", "master",
             "num_tpu_cores")


def options_from_flags(options_class, flag_values=FLAGS):
  """The flags' values as an `options_class` (a dataclass, a field per flag).

  Raises:
    cli.UserError: a TPU flag was given a value other than its default.
  """
  for name in TPU_FLAGS:
    flag = flag_values[name]
    if flag.value != flag.default:
      raise cli.UserError(
          "--%s=%s: TPUs are not supported; this TensorFlow 2 version runs "
          "on CPUs and GPUs (one machine here, Horovod for several GPUs), "
          "leave the TPU flags unset" % (name, flag.value))
  return options_class(**{
      field.name: flag_values[field.name].value
      for field in dataclasses.fields(options_class)})
