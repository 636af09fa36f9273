"""Small record files for the tests and the benchmarks (bench/ imports it).

`make_example` builds a tf.train.Example feature by feature with
TensorFlow's own classes: an independent reference for the project's
TF-free writer (record_format.py), and a quick way to write small record
files of any shape, valid or not.
"""

import collections

import numpy as np
import tensorflow as tf

from bert_distill.lib import record_format


def make_example(features):
  """Serialises a dict name -> values into a tf.train.Example string.

  Float features (record_format.FLOAT_FEATURES) are written as float lists,
  the rest as int64 lists. Feature order follows the dict.
  """
  feats = collections.OrderedDict()
  for name, values in features.items():
    if name in record_format.FLOAT_FEATURES:
      feats[name] = tf.train.Feature(float_list=tf.train.FloatList(
          value=np.asarray(values, np.float32)))
    else:
      feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(
          value=[int(v) for v in values]))
  return tf.train.Example(features=tf.train.Features(
      feature=feats)).SerializeToString()
