"""Augments a task's training split for task-specific distillation.

TinyBERT's data augmentation: each row of the task's train.tsv is kept and
followed by --num_augmented variants, in which every word (of one
WordPiece) is replaced, with probability --replace_prob, by one of the
--candidates words a pre-trained masked LM (--init_checkpoint: the teacher
before fine-tuning, e.g. Google's BERT-Base) predicts in its place. The
other splits are copied, so --output_dir is a --data_dir for
run_classifier.py (or its _distributed twin) with a fine-tuned teacher
(--teacher_init_checkpoint) and --hard_label_weight 0: the variants keep
their original's label, which may no longer hold; the teacher's soft labels
of each variant are what the student learns. See
bert_distill/stages/augmentation.py for the method.

Example (the sample polarity task, the demo's adapted teacher as the
masked LM):
  python augment_task_data.py --task_name sst-2 \\
    --data_dir "$(python sample_data.py polarity_sst2)" \\
    --output_dir polarity_augmented \\
    --bert_config_file demo_output/teacher/bert_config.json \\
    --init_checkpoint demo_output/teacher_adapted \\
    --vocab_file demo_output/teacher/vocab.txt --num_augmented 4
"""

from absl import flags

from bert_distill import cli
cli.import_tensorflow_quietly()
from bert_distill.stages import augmentation
from bert_distill.stages import finetuning

FLAGS = flags.FLAGS

flags.DEFINE_string("task_name", None,
                    "The GLUE-format task (sst-2, cola, mrpc, sts-b, qqp, "
                    "mnli, qnli, rte, wnli, xnli), as run_classifier.py's.")
flags.DEFINE_string("data_dir", None,
                    "The task's folder (its train.tsv, dev.tsv, test.tsv).")
flags.DEFINE_string(
    "output_dir", None,
    "The folder to write: the augmented train split, the other splits "
    "copied, and augmentation.json (the settings). It appears only when "
    "complete; it must not exist or be empty, unless --overwrite.")
flags.DEFINE_string("bert_config_file", None,
                    "The masked LM's bert_config.json.")
flags.DEFINE_string(
    "init_checkpoint", None,
    "A pre-trained masked LM (a prefix or a folder): a checkpoint with the "
    "masked-LM head, such as the teacher before fine-tuning.")
flags.DEFINE_string("vocab_file", None, "The masked LM's vocab.txt.")
flags.DEFINE_bool("do_lower_case", True,
                  "Whether the model's tokenizer lower-cases its input.")
flags.DEFINE_integer(
    "max_seq_length", 128,
    "Tokens of a text the masked LM sees at most; words beyond are kept.")
flags.DEFINE_integer("num_augmented", 20,
                     "Variants written after each row (TinyBERT's N).")
flags.DEFINE_integer("candidates", 15,
                     "Replacements kept per word: the masked LM's most "
                     "probable whole words (TinyBERT's K).")
flags.DEFINE_float("replace_prob", 0.4,
                   "Probability that a word of a variant is replaced "
                   "(TinyBERT's p).")
flags.DEFINE_integer("batch_size", 128, "Masked texts per forward pass.")
flags.DEFINE_integer("random_seed", 12345,
                     "Seed of the choices of words and replacements.")
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                  "The masked LM's matmul precision.")
flags.DEFINE_bool("overwrite", False,
                  "Replace --output_dir if it holds files (only once the "
                  "new folder is complete).")


def main(argv):
  del argv  # cli.run rejects leftover words
  opts = augmentation.Options(**{name: FLAGS[name].value
                                 for name in augmentation.Options._fields})
  augmentation.check_options(opts)
  config, tokenizer = finetuning.load_model_inputs(opts)
  augmentation.augment(opts, config, tokenizer)


if __name__ == "__main__":
  cli.run(main)
