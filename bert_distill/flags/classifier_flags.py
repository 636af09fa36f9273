"""The flags of run_classifier.py and run_classifier_distributed.py, defined
once: the fine-tuning flags every stage VIII script shares
(finetuning_flags.py) and the classifier's own, with Google's names and
defaults. stage_flags.options_from_flags reads them into a
`classifier.ClassifierOptions` (OPTIONS): one field per flag, the TPU flags
aside; tests/test_flags.py checks that the two stay in step.
"""

from absl import flags

from bert_distill.stages import classifier
from bert_distill.flags import finetuning_flags
from bert_distill.lib import glue

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "data_dir", None,
    "The input data dir. Should contain the .tsv files (or other data "
    "files) for the task.")
flags.DEFINE_string("task_name", None, "The name of the task to train: "
                    "%s." % ", ".join(glue.TASKS))
flags.DEFINE_bool("do_eval", False, "Whether to run eval on the dev set.")
flags.DEFINE_integer("eval_batch_size", 8, "Total batch size for eval.")

flags.adopt_module_key_flags(finetuning_flags)  # list them in --help

# What these flags fill (stage_flags.options_from_flags).
OPTIONS = classifier.ClassifierOptions
