"""What a run reports: eval_results.txt and TensorBoard scalars.

The writers serve the training and evaluation loops (stages V to VIII); the
readers serve whoever looks at a run afterwards (the demo's summary, the
tests). docs/formats.md lists the keys and tags.

  write_eval_results("out", {"masked_lm_accuracy": 0.41, ...})
  read_eval_results("out")["masked_lm_accuracy"]        # 0.41
  read_scalars("out", "loss")                            # {step: loss}
"""

import os

from absl import logging
import tensorflow as tf

from bert_distill.lib import outputs

EVAL_RESULTS_FILE = "eval_results.txt"


def write_eval_results(output_dir, results):
  """Writes output_dir/eval_results.txt (sorted `key = value` lines).

  The file appears complete or not at all (written under a temporary name,
  then renamed); the values are logged too. `output_dir` may be any path
  tf.io.gfile writes (gs://..., s3://...).

  Returns:
    The path of the file.
  """
  path = os.path.join(output_dir, EVAL_RESULTS_FILE)
  with outputs.atomic_output(path) as tmp:
    with tf.io.gfile.GFile(tmp, "w") as f:
      for key in sorted(results):
        f.write("%s = %s\n" % (key, results[key]))
  logging.info("***** Eval results (%s) *****", path)
  for key in sorted(results):
    logging.info("  %s = %s", key, results[key])
  return path


def read_eval_results(output_dir):
  """Reads output_dir/eval_results.txt into a dict.

  Values are floats (global_step and eval_examples too), or strings where a
  value is not a number.
  """
  values = {}
  with tf.io.gfile.GFile(os.path.join(output_dir, EVAL_RESULTS_FILE)) as f:
    for line in f:
      if "=" not in line:
        continue
      key, value = (s.strip() for s in line.split("=", 1))
      try:
        values[key] = float(value)
      except ValueError:
        values[key] = value
  return values


def write_scalars(writer, values, step):
  """Writes TensorBoard scalars (tag -> float) at `step`.

  Uses tf.summary.write with the scalar plugin's metadata, so that the
  `tensorboard` package is not needed to write the events TensorBoard reads.
  """
  metadata = tf.compat.v1.SummaryMetadata(
      plugin_data=tf.compat.v1.SummaryMetadata.PluginData(
          plugin_name="scalars"))
  with writer.as_default():
    for tag, value in values.items():
      tf.summary.write(tag, tf.constant(value, tf.float32), step=step,
                       metadata=metadata)


def read_scalars(event_dir, tag):
  """{step: value} of a TensorBoard scalar in the event files of event_dir.

  Only the files directly in `event_dir` are read (a distillation run's
  evaluation writes its events in the `eval` subfolder).
  """
  points = {}
  pattern = os.path.join(event_dir, "events.out.tfevents.*")
  for path in sorted(tf.io.gfile.glob(pattern)):
    # The records read as tf.Event protos (summary_iterator would log a
    # deprecation warning on every call).
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag != tag:
          continue
        if value.HasField("tensor"):
          points[event.step] = float(tf.make_ndarray(value.tensor))
        else:
          points[event.step] = value.simple_value
  return points
