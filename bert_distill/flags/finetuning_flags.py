"""The flags every fine-tuning script (stage VIII) shares, defined once.

classifier_flags.py and squad_flags.py import this module: the shared flags
are defined here at import, with Google's names and run_classifier.py's
defaults (squad_flags.py sets run_squad.py's defaults of --max_seq_length and
--train_batch_size), and are the one source of every shared setting and its
default (finetuning.Options holds their values; tests/test_flags.py checks
that the two stay in step).

For the Horovod scripts: `note_horovod_flags()` adds to the --help of the
flags whose meaning Horovod changes, and `horovod_main(options_class, run)`
is their main.
"""

from absl import flags
from absl import logging

from bert_distill.flags import layer_loss_flags
from bert_distill.flags import stage_flags

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "bert_config_file", None,
    "The config json file corresponding to the pre-trained BERT model. "
    "This specifies the model architecture.")
flags.DEFINE_string("vocab_file", None,
                    "The vocabulary file that the BERT model was trained on.")
flags.DEFINE_string(
    "output_dir", None,
    "The output directory where the model checkpoints and results will be "
    "written. A run resumes from the newest checkpoint found here.")
flags.DEFINE_string(
    "init_checkpoint", None,
    "Initial checkpoint (usually from a pre-trained BERT model): Google's "
    "release, a converted Hugging Face model or a distilled student. "
    "Without it the model starts from random weights.")
flags.DEFINE_bool(
    "do_lower_case", True,
    "Whether to lower case the input text. Should be True for uncased "
    "models and False for cased models.")
flags.DEFINE_integer(
    "max_seq_length", 128,
    "The maximum total input sequence length after WordPiece tokenization. "
    "Sequences longer than this will be truncated, and sequences shorter "
    "than this will be padded.")
flags.DEFINE_bool("do_train", False, "Whether to run training.")
flags.DEFINE_bool("do_predict", False,
                  "Whether to run the model in inference mode on the test "
                  "set.")
flags.DEFINE_integer("train_batch_size", 32,
                     "Total batch size for training.")
flags.DEFINE_integer("predict_batch_size", 8, "Total batch size for "
                     "predict.")
flags.DEFINE_float("learning_rate", 5e-5,
                   "The initial learning rate for Adam.")
flags.DEFINE_float("num_train_epochs", 3.0,
                   "Total number of training epochs to perform.")
flags.DEFINE_float(
    "warmup_proportion", 0.1,
    "Proportion of training to perform linear learning rate warmup for. "
    "E.g., 0.1 = 10% of training.")
flags.DEFINE_integer("save_checkpoints_steps", 1000,
                     "How often to save the model checkpoint.")
flags.DEFINE_integer(
    "iterations_per_loop", 1000,
    "How many steps run inside one device loop (one tf.function call) "
    "before control returns to Python.")
flags.DEFINE_integer("keep_checkpoint_max", 5,
                     "How many recent checkpoints to keep in output_dir.")
flags.DEFINE_integer("log_every_n_steps", 100,
                     "Log a progress line (step, loss, learning rate, "
                     "examples/s, ETA) every this many steps.")
flags.DEFINE_integer(
    "random_seed", 12345,
    "Seed of the head's (and a checkpoint-less model's) initialisation, "
    "the data order and the dropout masks.")
# Task-specific distillation: a teacher fine-tuned on the same task.
flags.DEFINE_string(
    "teacher_init_checkpoint", None,
    "Task-specific distillation: a teacher fine-tuned on this task (the "
    "--output_dir of an earlier run of this script on the same task, or "
    "one of its checkpoints), run in each training step; the model then "
    "learns from the teacher's outputs as well as the gold labels (see "
    "--soft_label_weight, --hard_label_weight, --temperature and the layer "
    "losses). Empty: ordinary fine-tuning.")
flags.DEFINE_string(
    "teacher_bert_config_file", None,
    "The config json file of the --teacher_init_checkpoint model.")
flags.DEFINE_enum(
    "teacher_compute_dtype", "auto", ["auto", "float32", "bfloat16"],
    "Compute type of the teacher: auto is bfloat16 where the machine has "
    "bfloat16 units (faster; the softmax in float32), else float32.")
flags.DEFINE_float(
    "temperature", 1.0,
    "Softens the teacher's and the model's class (SQuAD: start and end) "
    "distributions in the soft loss: softmax(logits / T) on both sides, the "
    "loss multiplied by T^2 (Hinton et al.). Not used for regression.")
flags.DEFINE_float(
    "soft_label_weight", 1.0,
    "With a teacher: weight of the soft loss, the cross-entropy from the "
    "teacher's distribution to the model's (the squared difference of the "
    "two scores for regression, e.g. STS-B).")
flags.DEFINE_float(
    "hard_label_weight", 1.0,
    "With a teacher: weight of the ordinary loss on the gold labels (0: "
    "the teacher's outputs only).")
flags.adopt_module_key_flags(stage_flags)  # list them in --help
flags.adopt_module_key_flags(layer_loss_flags)


def note_horovod_flags(unit="examples"):
  """Adds to the --help of the flags whose meaning Horovod changes.

  For the _distributed scripts, after their flags are defined.

  Args:
    unit: what a training batch holds ("examples", SQuAD's "windows").
  """
  FLAGS["learning_rate"].help += (
      " Multiplied by the number of Horovod processes (hvd.size()).")
  FLAGS["train_batch_size"].help += (
      " Under Horovod this is per process: a step trains on "
      "train_batch_size * hvd.size() %s." % unit)


def horovod_main(options_class, run):
  """The main of a Horovod fine-tuning script.

  Args:
    options_class: the task's options dataclass, read from the flags.
    run: the task's run(options, distribution).

  Returns:
    main(argv) for cli.run: starts Horovod (horovod_distribution.start),
    logs the job's shape on rank 0 and calls `run`.
  """

  def main(argv):
    del argv
    # Imported here: the one-process scripts do not need Horovod installed.
    from bert_distill.stages import horovod_distribution  # pylint: disable=g-import-not-at-top
    distribution, device = horovod_distribution.start()
    options = stage_flags.options_from_flags(options_class, FLAGS)
    logging.info(
        "Horovod: %d processes, rank %d on %s; batch %d per process, "
        "learning rate %g (x%d)", distribution.size, distribution.rank,
        device, options.train_batch_size,
        options.learning_rate * distribution.size, distribution.size)
    run(options, distribution)

  return main
