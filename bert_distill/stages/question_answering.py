"""Fine-tuning and evaluating BERT on SQuAD v1.1 / v2.0 (stage VIII).

What run_squad.py (one process) and run_squad_distributed.py (Horovod) run:
`run(options, distribution)`. squad.py reads the JSON files, cuts the
contexts into windows and turns logits back into answers; the model is
trained by finetuning.FineTuner; this module adds Google's span head and
writes Google's outputs under --output_dir:

  model.ckpt-<step>.*, checkpoint   the fine-tuned model: the encoder
                                    (bert/...) + cls/squad/output_weights
                                    [2, hidden] and cls/squad/output_bias [2],
                                    with the optimizer state
  predictions.json                  --do_predict: question id -> answer text
                                    ("" = no answer, v2.0)
  nbest_predictions.json            question id -> the n best answers (text,
                                    probability, start_logit, end_logit)
  null_odds.json                    v2.0: question id -> null score minus the
                                    best answer's score
  eval_results.txt                  when --predict_file has answers:
                                    exact_match and f1 (official SQuAD
                                    scoring; v2.0 adds HasAns_*, NoAns_* and
                                    best_* with the threshold that reaches
                                    them), eval_loss (the training loss on
                                    the predict file's windows, when every
                                    question has an answer or is
                                    impossible), predict_examples,
                                    predict_sequences_per_sec, global_step
"""

import collections
import dataclasses
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from bert_distill import cli
from bert_distill.stages import finetuning
from bert_distill.lib import outputs
from bert_distill.lib import results
from bert_distill.lib import squad
from bert_distill.stages import training

PREDICTIONS_FILE = "predictions.json"
NBEST_FILE = "nbest_predictions.json"
NULL_ODDS_FILE = "null_odds.json"
# Google's span head initialiser (stddev 0.02, whatever the config).
HEAD_INITIALIZER_STDDEV = 0.02

@dataclasses.dataclass
class SquadOptions(finetuning.Options):
  """Fine-tuning options plus run_squad's own flags (squad_flags.py)."""
  train_file: str
  predict_file: str
  doc_stride: int
  max_query_length: int
  n_best_size: int
  max_answer_length: int
  verbose_logging: bool
  version_2_with_negative: bool
  null_score_diff_threshold: float


# Added to the logits of padding positions in the soft loss: no probability
# there, whatever the temperature (BERT's attention mask value).
PADDING_LOGIT = -10000.0


class SquadHead(tf.Module):
  """Google's run_squad.py head: start and end logits at every position.

  [start_logits, end_logits] = sequence_output @ output_weights^T +
  output_bias, with output_weights [2, hidden] (truncated normal, stddev
  0.02) and output_bias [2] (zeros), no dropout (as Google's). Loss: the
  mean of the softmax cross-entropies of the start and the end position.
  """

  def __init__(self, hidden_size, seed=12345):
    """Creates the variables.

    Args:
      hidden_size: the encoder's hidden size.
      seed: seeds output_weights' initialisation (stateless: the same seed
        gives the same weights whatever ran before).
    """
    super(SquadHead, self).__init__(name="squad_head")
    self.output_weights = tf.Variable(
        tf.random.stateless_truncated_normal(
            [2, hidden_size], seed=[seed, 0],
            stddev=HEAD_INITIALIZER_STDDEV),
        name="cls/squad/output_weights")
    self.output_bias = tf.Variable(tf.zeros([2]),
                                   name="cls/squad/output_bias")

  def variables_by_name(self):
    """cls/squad/output_weights, cls/squad/output_bias (Google's names)."""
    return collections.OrderedDict([
        ("cls/squad/output_weights", self.output_weights),
        ("cls/squad/output_bias", self.output_bias)])

  def __call__(self, sequence_output, pooled_output, features, dropout):
    """Logits for sequence_output [B, S, H].

    Returns:
      {"start_logits": float32 [B, S], "end_logits": float32 [B, S]}.
    """
    del pooled_output, features, dropout
    logits = tf.einsum("bsh,kh->bsk", tf.cast(sequence_output, tf.float32),
                       self.output_weights)
    logits = tf.nn.bias_add(logits, self.output_bias)
    return {"start_logits": logits[:, :, 0], "end_logits": logits[:, :, 1]}

  def loss(self, outputs, features):
    """Per-example loss [B] against start_positions / end_positions [B]."""
    start = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(features["start_positions"], tf.int32),
        logits=outputs["start_logits"])
    end = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(features["end_positions"], tf.int32),
        logits=outputs["end_logits"])
    return (start + end) / 2.0

  def soft_loss(self, outputs, teacher_outputs, features, temperature):
    """Per-example loss [B] against a fine-tuned teacher's outputs: the mean
    of the temperature-softened cross-entropies of the start and the end
    distributions over the window's real positions (padding gets no
    probability on either side; finetuning.soft_cross_entropy,
    T^2-scaled), as DistilBERT's SQuAD distillation."""
    padding = (1.0 - tf.cast(features["input_mask"], tf.float32)) * (
        PADDING_LOGIT)
    return sum(finetuning.soft_cross_entropy(
        outputs[name] + padding, teacher_outputs[name] + padding,
        temperature) for name in ("start_logits", "end_logits")) / 2.0


def check_options(opts):
  """Raises cli.UserError on bad settings (one line naming the flag)."""
  if not (opts.do_train or opts.do_predict):
    raise cli.UserError(
        "At least one of `do_train` or `do_predict` must be True.")
  finetuning.check_options(opts)
  if opts.do_train:
    cli.require_file(opts.train_file, "--train_file", "SQuAD file")
  if opts.do_predict:
    cli.require_file(opts.predict_file, "--predict_file", "SQuAD file")
  for name in ("doc_stride", "max_query_length", "n_best_size",
               "max_answer_length"):
    if getattr(opts, name) <= 0:
      raise cli.UserError("--%s must be positive, got %s" %
                          (name, getattr(opts, name)))
  if opts.max_seq_length <= opts.max_query_length + 3:
    raise cli.UserError(
        "--max_seq_length=%d must be greater than --max_query_length=%d + 3 "
        "([CLS] and two [SEP]), to leave room for the context" %
        (opts.max_seq_length, opts.max_query_length))


def read_examples(path, flag_name, opts, for_training):
  """SquadExamples of a SQuAD file; errors name the flag.

  Raises:
    cli.UserError: not SQuAD, a v2.0 file without --version_2_with_negative,
      a training question without an answer, or no question at all.
  """
  with cli.blame_flag(flag_name):
    examples, stats = squad.read_squad_file(path,
                                            opts.version_2_with_negative)
  if stats.marked_impossible and not opts.version_2_with_negative:
    raise cli.UserError(
        "%s %s is SQuAD v2.0 (%d questions have \"is_impossible\": true): "
        "add --version_2_with_negative" %
        (flag_name, path, stats.marked_impossible))
  if not examples:
    raise cli.UserError("%s %s holds no question" % (flag_name, path))
  if for_training:
    for example in examples:
      if not example.is_impossible and example.orig_answer_text is None:
        raise cli.UserError(
            "%s %s: question %s has no answer to train on" %
            (flag_name, path, example.qas_id))
  logging.info("%s: %d articles, %d questions%s", path, stats.articles,
               len(examples),
               ", %d answers skipped (answer_start does not match the text)"
               % stats.mismatched_answers if stats.mismatched_answers else "")
  return examples


def run(opts, distribution=None):
  """Trains and predicts as the options say.

  Every input file is read and checked before training starts (the predict
  file on the chief only, which alone predicts and scores).

  Returns:
    The eval results dict (chief, with --do_predict on a file with answers),
    else None.

  Raises:
    cli.UserError: bad flags or inputs (one line).
  """
  distribution = distribution or training.Distribution()
  check_options(opts)
  config, tokenizer = finetuning.load_model_inputs(opts)
  train_arrays = None
  if opts.do_train:
    examples = read_examples(opts.train_file, "--train_file", opts, True)
    # The windows go straight into arrays (a training set holds many).
    train_arrays = squad.features_to_arrays(
        squad.iter_features(examples, tokenizer, opts.max_seq_length,
                            opts.doc_stride, opts.max_query_length,
                            is_training=True), is_training=True)
    del train_arrays["unique_ids"]
    logging.info("Training on %d windows of %d questions",
                 len(train_arrays["input_ids"]), len(examples))
  predict_examples = predict_features = None
  labelled = False
  if opts.do_predict and distribution.is_chief:
    predict_examples = read_examples(opts.predict_file, "--predict_file",
                                     opts, False)
    # With every answer known, the windows also get the answer positions
    # (the windows themselves do not change), to report the held-out loss.
    labelled = all(e.is_impossible or e.orig_answer_text is not None
                   for e in predict_examples)
    predict_features = squad.convert_examples_to_features(
        predict_examples, tokenizer, opts.max_seq_length, opts.doc_stride,
        opts.max_query_length, is_training=labelled)

  make_head = lambda hidden_size: SquadHead(hidden_size,
                                            seed=opts.random_seed)
  teacher = None
  if opts.has_teacher and opts.do_train:
    teacher = finetuning.TaskTeacher(opts, make_head, config, distribution)
  num_train = len(train_arrays["input_ids"]) if train_arrays else 0
  with training.output_lock(opts.output_dir, distribution, opts.do_train):
    tuner = finetuning.FineTuner(opts, config, make_head(config.hidden_size),
                                 distribution, num_train_examples=num_train,
                                 teacher=teacher)
    if opts.do_train:
      tuner.train(train_arrays)
    if not (opts.do_predict and distribution.is_chief):
      return None
    return _predict(opts, tuner, predict_examples, predict_features,
                    labelled)


def _predict(opts, tuner, predict_examples, predict_features, labelled):
  """The chief's predictions, written and (with answers) scored."""
  arrays = squad.features_to_arrays(predict_features, is_training=labelled)
  unique_ids = arrays.pop("unique_ids")
  outputs = tuner.predict(arrays, opts.predict_batch_size, with_loss=labelled,
                          name="predict %s" % os.path.basename(
                              opts.predict_file))
  raw_results = [squad.RawResult(int(u), s, e) for u, s, e in zip(
      unique_ids, outputs["start_logits"], outputs["end_logits"])]
  predictions, nbest, null_odds = squad.postprocess_predictions(
      predict_examples, predict_features, raw_results, opts.n_best_size,
      opts.max_answer_length, opts.do_lower_case,
      opts.version_2_with_negative, opts.null_score_diff_threshold,
      opts.verbose_logging)
  write_json(os.path.join(opts.output_dir, PREDICTIONS_FILE), predictions)
  write_json(os.path.join(opts.output_dir, NBEST_FILE), nbest)
  if opts.version_2_with_negative:
    write_json(os.path.join(opts.output_dir, NULL_ODDS_FILE), null_odds)

  scores = squad.evaluate(predict_examples, predictions,
                          opts.version_2_with_negative, null_odds)
  if not scores:
    logging.info("%s has no answers: predictions written, nothing scored",
                 opts.predict_file)
    return None
  if labelled:
    scores["eval_loss"] = float(np.mean(outputs["per_example_loss"]))
  scores["predict_examples"] = len(predict_examples)
  scores["predict_sequences_per_sec"] = tuner.last_predict_rate
  scores["global_step"] = tuner.global_step
  results.write_eval_results(opts.output_dir, scores)
  print(json.dumps({k: scores[k] for k in ("exact_match", "f1")}))
  return scores


def write_json(path, value):
  """Writes `value` as indented JSON (UTF-8) under `path`, atomically."""
  with outputs.atomic_output(path) as tmp:
    # GFile writes UTF-8 (str in text mode).
    with tf.io.gfile.GFile(tmp, "w") as f:
      json.dump(value, f, indent=4, ensure_ascii=False)
      f.write("\n")
  logging.info("Wrote %s", path)
  return path
