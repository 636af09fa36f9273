"""Stage V: trains a smaller BERT student on a teacher's soft labels.

One machine (CPU or one GPU). Reads stage-IV records (produce_teacher_labels.py:
the teacher's top-K probabilities at every masked position, or its whole
distribution with --truncation_factor=0) and trains the student described by
--bert_config_file on the soft cross-entropy against them plus the
next-sentence loss, as the original. Checkpoints (model.ckpt-<step>, Google's
variable names), eval_results.txt and TensorBoard events go to --output_dir;
a run that is stopped resumes from its newest checkpoint there.

Example:
  python network_distillation_single_machine_truncated.py \\
    --bert_config_file=student/bert_config.json \\
    --input_file='data/record_distill/*.tfrecord' --output_dir=output_dir \\
    --truncation_factor=10 --do_train=true --do_eval=true
"""

from absl import flags

from bert_distill import cli
cli.import_tensorflow_quietly()
# pylint: disable=g-import-not-at-top,wrong-import-position
from bert_distill.stages import distillation
from bert_distill.flags import distillation_flags
from bert_distill.flags import stage_flags
from bert_distill.stages import training
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(distillation_flags)  # list them in --help


def main(argv):
  del argv
  options = stage_flags.options_from_flags(distillation.Options, FLAGS)
  distillation.run(options, training.Distribution())


if __name__ == "__main__":
  cli.run(main)
