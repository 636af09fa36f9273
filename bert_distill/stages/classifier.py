"""Fine-tuning and evaluating BERT on a GLUE-format task (stage VIII).

What run_classifier.py (one process) and run_classifier_distributed.py
(Horovod) run: `run(options, distribution)`. The task's files are read and
checked by glue.py, the model trained by finetuning.FineTuner; this module
adds Google's classifier head and writes Google's outputs under
--output_dir:

  model.ckpt-<step>.*, checkpoint   the fine-tuned model: the encoder
                                    (bert/...) + output_weights
                                    [num_labels, hidden] and output_bias
                                    [num_labels], with the optimizer state
  eval_results.txt                  --do_eval: eval_accuracy (and the task's
                                    other metrics: eval_f1, eval_matthews_corr,
                                    eval_pearson, eval_spearman), eval_loss,
                                    global_step, loss, eval_examples and
                                    eval_sequences_per_sec (inference speed);
                                    MNLI's mismatched dev set adds the same
                                    keys with "eval_mismatched_"
  test_results.tsv                  --do_predict: one line per test example,
                                    the class probabilities tab-separated
                                    (the prediction, for STS-B); MNLI adds
                                    test_mismatched_results.tsv
"""

import collections
import dataclasses
import os

from absl import logging
import numpy as np
import tensorflow as tf

from bert_distill import cli
from bert_distill.stages import finetuning
from bert_distill.lib import glue
from bert_distill.lib import outputs
from bert_distill.lib import results
from bert_distill.stages import training

TEST_RESULTS_FILE = "test_results.tsv"
# Google's classifier head initialiser (stddev 0.02, whatever the config).
HEAD_INITIALIZER_STDDEV = 0.02


@dataclasses.dataclass
class ClassifierOptions(finetuning.Options):
  """Fine-tuning options plus the classifier's flags (classifier_flags.py)."""
  task_name: str
  data_dir: str
  do_eval: bool
  eval_batch_size: int


class ClassifierHead(tf.Module):
  """Google's run_classifier.py head on the pooled [CLS] output.

  logits = dropout(pooled_output) @ output_weights^T + output_bias, with
  output_weights [num_labels, hidden] (truncated normal, stddev 0.02) and
  output_bias [num_labels] (zeros). Dropout: the config's
  hidden_dropout_prob (0.1 in Google's configs, the rate Google's script
  uses). Loss: softmax cross-entropy on label_ids; for a regression task
  (num_labels 1), the squared error of logits[:, 0] against the score.
  """

  def __init__(self, hidden_size, num_labels, dropout_prob=0.1,
               is_regression=False, seed=12345):
    """Creates the variables.

    Args:
      hidden_size: the encoder's hidden size H.
      num_labels: outputs (1 for regression).
      dropout_prob: dropout rate on the pooled output during training.
      is_regression: squared-error loss on one output.
      seed: seeds output_weights' initialisation (stateless: the same
        weights whatever ran before).
    """
    super(ClassifierHead, self).__init__(name="classifier_head")
    self.num_labels = num_labels
    self.dropout_prob = dropout_prob
    self.is_regression = is_regression
    self.output_weights = tf.Variable(
        tf.random.stateless_truncated_normal(
            [num_labels, hidden_size], seed=[seed, 0],
            stddev=HEAD_INITIALIZER_STDDEV),
        name="output_weights")
    self.output_bias = tf.Variable(tf.zeros([num_labels]),
                                   name="output_bias")

  def variables_by_name(self):
    """output_weights, output_bias (Google's names)."""
    return collections.OrderedDict([("output_weights", self.output_weights),
                                    ("output_bias", self.output_bias)])

  def __call__(self, sequence_output, pooled_output, features, dropout):
    """Outputs for pooled_output [B, H].

    Returns:
      {"logits": float32 [B, num_labels], "probabilities": [B, num_labels]}
      (classification) or {"predictions": float32 [B]} (regression).
    """
    del sequence_output, features
    x = dropout(pooled_output, self.dropout_prob)
    logits = tf.matmul(tf.cast(x, tf.float32), self.output_weights,
                       transpose_b=True)
    logits = tf.nn.bias_add(logits, self.output_bias)
    if self.is_regression:
      return {"predictions": logits[:, 0]}
    return {"logits": logits, "probabilities": tf.nn.softmax(logits,
                                                              axis=-1)}

  def loss(self, outputs, features):
    """Per-example loss [B] against features["label_ids"]."""
    if self.is_regression:
      labels = tf.cast(features["label_ids"], tf.float32)
      return tf.square(outputs["predictions"] - labels)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(features["label_ids"], tf.int32),
        logits=outputs["logits"])

  def soft_loss(self, outputs, teacher_outputs, features, temperature):
    """Per-example loss [B] against a fine-tuned teacher's outputs: the
    temperature-softened cross-entropy of the class distributions
    (finetuning.soft_cross_entropy, T^2-scaled), or the squared difference
    of the scores for regression (the temperature does not apply)."""
    del features  # the whole sentence's output, one per example
    if self.is_regression:
      return tf.square(outputs["predictions"] -
                       teacher_outputs["predictions"])
    return finetuning.soft_cross_entropy(
        outputs["logits"], teacher_outputs["logits"], temperature)


def check_options(opts):
  """Raises cli.UserError on bad settings (one line naming the flag)."""
  if not (opts.do_train or opts.do_eval or opts.do_predict):
    raise cli.UserError(
        "At least one of `do_train`, `do_eval` or `do_predict' must be True.")
  finetuning.check_options(opts)
  for name in ("task_name", "data_dir"):
    if not getattr(opts, name):
      raise cli.UserError("--%s is required" % name)
  if not os.path.isdir(opts.data_dir):
    raise cli.UserError("--data_dir: not a folder: %s" % opts.data_dir)
  if opts.do_eval and opts.eval_batch_size <= 0:
    raise cli.UserError("--eval_batch_size must be positive, got %s" %
                        opts.eval_batch_size)


def _read(task, opts, fmt, with_labels, tokenizer):
  with cli.blame_flag("--data_dir"):
    examples = glue.read_examples(task, opts.data_dir, fmt, with_labels)
  features = glue.convert_examples_to_features(examples, task,
                                               opts.max_seq_length, tokenizer)
  logging.info("%s: %d examples", os.path.join(opts.data_dir, fmt.file_name),
               len(examples))
  return features


def run(opts, distribution=None):
  """Trains, evaluates and predicts as the options say.

  Every input file is read and checked before training starts (the dev and
  test files on the chief only, which alone evaluates and predicts).

  Returns:
    The eval results dict (chief, with do_eval), else None.

  Raises:
    cli.UserError: bad flags or inputs (one line).
  """
  distribution = distribution or training.Distribution()
  with cli.blame_flag("--task_name"):
    task = glue.get_task(opts.task_name)
  check_options(opts)
  # [CLS] a [SEP] (b [SEP]) with at least one word piece of each text.
  least = 5 if task.train.text_b is not None else 3
  if opts.max_seq_length < least:
    raise cli.UserError(
        "--max_seq_length=%d leaves no room for text: task %s needs at "
        "least %d ([CLS], %s)" % (opts.max_seq_length, task.name, least,
                                  "a piece of each sentence and 2 [SEP]"
                                  if least == 5 else "a word piece, [SEP]"))
  config, tokenizer = finetuning.load_model_inputs(opts)
  train_features = None
  if opts.do_train:
    train_features = _read(task, opts, task.train, True, tokenizer)
  dev, test = [], []
  if distribution.is_chief:
    if opts.do_eval:
      dev = [(name, _read(task, opts, fmt, True, tokenizer))
             for name, fmt in task.dev]
    if opts.do_predict:
      test = [(name, _read(task, opts, fmt, False, tokenizer))
              for name, fmt in task.test]

  make_head = lambda hidden_size: ClassifierHead(
      hidden_size, task.num_labels, dropout_prob=config.hidden_dropout_prob,
      is_regression=task.is_regression, seed=opts.random_seed)
  teacher = None
  if opts.has_teacher and opts.do_train:
    teacher = finetuning.TaskTeacher(opts, make_head, config, distribution)
  num_train = len(train_features["input_ids"]) if train_features else 0
  with training.output_lock(opts.output_dir, distribution, opts.do_train):
    tuner = finetuning.FineTuner(opts, config, make_head(config.hidden_size),
                                 distribution, num_train_examples=num_train,
                                 teacher=teacher)
    if opts.do_train:
      tuner.train(train_features)
    if not distribution.is_chief:
      return None
    return _evaluate_and_predict(opts, task, tuner, dev, test)


def _evaluate_and_predict(opts, task, tuner, dev, test):
  """The chief's part after training: eval_results.txt and test results."""
  metrics = None
  if opts.do_eval:
    metrics = collections.OrderedDict()
    for i, (name, features) in enumerate(dev):
      outputs = tuner.predict(features, opts.eval_batch_size, with_loss=True,
                              name="eval " + name)
      part = glue.compute_metrics(
          task, outputs["predictions" if task.is_regression else "logits"],
          features["label_ids"])
      part["eval_loss"] = float(np.mean(outputs["per_example_loss"]))
      part["eval_examples"] = len(features["input_ids"])
      part["eval_sequences_per_sec"] = tuner.last_predict_rate
      prefix = "eval_" + name.replace("dev_", "") + "_" if i else "eval_"
      for key, value in part.items():
        metrics[prefix + key[len("eval_"):]] = value
    metrics["global_step"] = tuner.global_step
    metrics["loss"] = metrics["eval_loss"]
    results.write_eval_results(opts.output_dir, metrics)
  for i, (name, features) in enumerate(test):
    outputs = tuner.predict(features, opts.predict_batch_size, name=name)
    file_name = TEST_RESULTS_FILE if i == 0 else "%s_results.tsv" % name
    write_test_results(os.path.join(opts.output_dir, file_name),
                       outputs["predictions"][:, None]
                       if task.is_regression else outputs["probabilities"])
  return metrics


def write_test_results(path, rows):
  """Writes one line per example: its values [N, C] tab-separated."""
  with outputs.atomic_output(path) as tmp:
    with tf.io.gfile.GFile(tmp, "w") as f:
      for row in rows:
        f.write("\t".join("%.9g" % v for v in row) + "\n")
  logging.info("Wrote %d predictions to %s", len(rows), path)
  return path
