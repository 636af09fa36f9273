"""The flags of run_squad.py and run_squad_distributed.py, defined once: the
fine-tuning flags every stage VIII script shares (finetuning_flags.py) and
run_squad's own, with Google's names and defaults. stage_flags.options_from_flags
reads them into a `question_answering.SquadOptions` (OPTIONS): one field per
flag, the TPU flags aside; tests/test_flags.py checks that the two stay in
step.
"""

from absl import flags

from bert_distill.flags import finetuning_flags
from bert_distill.stages import question_answering

FLAGS = flags.FLAGS

# Google's run_squad.py defaults, where they differ from run_classifier.py's
# (the defaults of finetuning_flags.py).
FLAGS.set_default("max_seq_length", 384)
FLAGS.set_default("train_batch_size", 12)

flags.DEFINE_string("train_file", None,
                    "SQuAD json for training. E.g., train-v1.1.json")
flags.DEFINE_string(
    "predict_file", None,
    "SQuAD json for predictions. E.g., dev-v1.1.json or test-v1.1.json. "
    "When its questions have answers, exact match and F1 are computed "
    "and written to eval_results.txt.")
flags.DEFINE_integer(
    "doc_stride", 128,
    "When splitting up a long document into chunks, how much stride to "
    "take between chunks.")
flags.DEFINE_integer(
    "max_query_length", 64,
    "The maximum number of tokens for the question. Questions longer than "
    "this will be truncated to this length.")
flags.DEFINE_integer(
    "n_best_size", 20,
    "The total number of n-best predictions to generate in the "
    "nbest_predictions.json output file.")
flags.DEFINE_integer(
    "max_answer_length", 30,
    "The maximum length of an answer that can be generated. This is needed "
    "because the start and end predictions are not conditioned on one "
    "another.")
flags.DEFINE_bool(
    "verbose_logging", False,
    "If true, all of the warnings related to data processing will be "
    "printed: answers that could not be mapped back to the original "
    "context exactly.")
flags.DEFINE_bool(
    "version_2_with_negative", False,
    "If true, the SQuAD examples contain some that do not have an answer.")
flags.DEFINE_float(
    "null_score_diff_threshold", 0.0,
    "If null_score - best_non_null is greater than the threshold predict "
    "null.")

flags.adopt_module_key_flags(finetuning_flags)  # list them in --help

# What these flags fill (stage_flags.options_from_flags).
OPTIONS = question_answering.SquadOptions
