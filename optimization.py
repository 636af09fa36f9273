# coding=utf-8
"""BERT's optimizer: Adam with decoupled weight decay, warmup, linear decay.

A TensorFlow 2 re-creation of Google's BERT `optimization.py`:

  * learning rate: linear warmup from 0 over `num_warmup_steps`, otherwise
    linear (polynomial, power 1) decay from `init_lr` to 0 at
    `num_train_steps`, both computed from the global step *before* the
    update, as the original;
  * gradients clipped to a global norm of 1.0;
  * Adam moments without bias correction, and weight decay added to the
    update (not to the loss) for every variable whose name matches none of
    "LayerNorm", "layer_norm", "bias" (`re.search`);
  * slots named "<variable>/adam_m" and "<variable>/adam_v", and an int64
    "global_step", so checkpoints carry the same names as the original's.

Usage:
  optimizer = create_optimizer(init_lr, num_train_steps, num_warmup_steps)
  optimizer.build(model.variables_by_name())
  ...
  grads = tape.gradient(loss, list(model.variables_by_name().values()))
  optimizer.apply_gradients(grads, model.variables_by_name())
"""

import collections
import re

import tensorflow as tf


class LinearWarmupLinearDecay(object):
  """init_lr * step / warmup while step < warmup, else linear decay to 0."""

  def __init__(self, init_lr, num_train_steps, num_warmup_steps):
    """Checks and keeps the schedule's settings.

    Args:
      init_lr: the peak learning rate.
      num_train_steps: the step at which the rate reaches 0. With 0 the
        decay is complete from the start (rate 0 after any warmup).
      num_warmup_steps: steps of linear warmup (0: none).

    Raises:
      ValueError: a negative setting.
    """
    if init_lr < 0:
      raise ValueError("learning rate must be >= 0, found %r" % (init_lr,))
    if num_train_steps < 0:
      raise ValueError("num_train_steps must be >= 0, found %r" %
                       (num_train_steps,))
    if num_warmup_steps < 0:
      raise ValueError("num_warmup_steps must be >= 0, found %r" %
                       (num_warmup_steps,))
    self.init_lr = float(init_lr)
    self.num_train_steps = int(num_train_steps)
    self.num_warmup_steps = int(num_warmup_steps)

  def __call__(self, step):
    """The learning rate (float32 scalar tensor) at global step `step`."""
    step = tf.cast(step, tf.float32)
    if self.num_train_steps > 0:
      done = tf.minimum(step, float(self.num_train_steps)) / float(
          self.num_train_steps)
    else:
      done = tf.constant(1.0)
    learning_rate = self.init_lr * (1.0 - done)
    if self.num_warmup_steps:
      warmup_learning_rate = self.init_lr * (
          step / float(self.num_warmup_steps))
      learning_rate = tf.where(step < float(self.num_warmup_steps),
                               warmup_learning_rate, learning_rate)
    return learning_rate


def create_optimizer(init_lr, num_train_steps, num_warmup_steps):
  """The optimizer BERT was pre-trained with (as Google's create_optimizer).

  Args:
    init_lr: peak learning rate.
    num_train_steps: steps of linear decay to 0.
    num_warmup_steps: steps of linear warmup.

  Returns:
    An `AdamWeightDecayOptimizer` (weight decay 0.01, betas 0.9/0.999,
    epsilon 1e-6, LayerNorm/layer_norm/bias excluded from weight decay,
    gradients clipped to global norm 1.0). Call `.build(variables_by_name)`
    before the first step.
  """
  return AdamWeightDecayOptimizer(
      learning_rate=LinearWarmupLinearDecay(init_lr, num_train_steps,
                                            num_warmup_steps),
      weight_decay_rate=0.01,
      beta_1=0.9,
      beta_2=0.999,
      epsilon=1e-6,
      exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"],
      clip_norm=1.0)


class AdamWeightDecayOptimizer(tf.Module):
  """Adam with "correct" (decoupled) L2 weight decay, no bias correction."""

  def __init__(self,
               learning_rate,
               weight_decay_rate=0.0,
               beta_1=0.9,
               beta_2=0.999,
               epsilon=1e-6,
               exclude_from_weight_decay=None,
               clip_norm=None,
               name="AdamWeightDecayOptimizer"):
    """Constructs an AdamWeightDecayOptimizer.

    Args:
      learning_rate: a float, or a callable global_step -> learning rate.
      weight_decay_rate: decoupled weight decay factor.
      beta_1: decay of the first moment.
      beta_2: decay of the second moment.
      epsilon: added to sqrt(v).
      exclude_from_weight_decay: regular expressions; a variable whose name
        matches one (re.search) gets no weight decay.
      clip_norm: if set, gradients are clipped to this global norm first.
      name: module name.
    """
    super(AdamWeightDecayOptimizer, self).__init__(name=name)
    self.learning_rate = learning_rate
    self.weight_decay_rate = weight_decay_rate
    self.beta_1 = beta_1
    self.beta_2 = beta_2
    self.epsilon = epsilon
    self.exclude_from_weight_decay = list(exclude_from_weight_decay or [])
    self.clip_norm = clip_norm
    self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                   name="global_step")
    self._names = None
    self._m = []
    self._v = []
    self._decay = []

  def learning_rate_at(self, step):
    """The learning rate (float32 scalar tensor) used at global step `step`."""
    if callable(self.learning_rate):
      return tf.cast(self.learning_rate(step), tf.float32)
    return tf.constant(self.learning_rate, tf.float32)

  def _do_use_weight_decay(self, param_name):
    """Whether to use L2 weight decay for `param_name`."""
    if not self.weight_decay_rate:
      return False
    for r in self.exclude_from_weight_decay:
      if re.search(r, param_name) is not None:
        return False
    return True

  @property
  def built(self):
    return self._names is not None

  def build(self, model_variables_by_name):
    """Creates the zero-initialised adam_m / adam_v slots of every variable.

    Calling it again with the same names does nothing.

    Raises:
      ValueError: already built for other variables.
    """
    names = tuple(model_variables_by_name.keys())
    if self._names is not None:
      if names != self._names:
        raise ValueError("the optimizer was built for other variables")
      return
    with tf.init_scope():
      for name, var in model_variables_by_name.items():
        shape = var.shape
        self._m.append(tf.Variable(tf.zeros(shape, tf.float32),
                                   trainable=False, name=name + "/adam_m"))
        self._v.append(tf.Variable(tf.zeros(shape, tf.float32),
                                   trainable=False, name=name + "/adam_v"))
        self._decay.append(self._do_use_weight_decay(name))
    self._names = names

  def variables_by_name(self):
    """OrderedDict: "global_step" then "<name>/adam_m", "<name>/adam_v"."""
    result = collections.OrderedDict([("global_step", self.global_step)])
    for name, m, v in zip(self._names or (), self._m, self._v):
      result[name + "/adam_m"] = m
      result[name + "/adam_v"] = v
    return result

  @tf.autograph.experimental.do_not_convert
  def apply_gradients(self, grads, model_variables_by_name):
    """One update of every variable; then global_step += 1.

    Args:
      grads: gradients in the order of `model_variables_by_name.values()`;
        None entries are skipped (as the original).
      model_variables_by_name: the dict `build` was called with.

    Returns:
      The learning rate used (float32 scalar tensor).
    """
    if not self.built:
      if not tf.executing_eagerly():
        raise ValueError("AdamWeightDecayOptimizer.build() must be called "
                         "before apply_gradients() inside a tf.function")
      self.build(model_variables_by_name)
    names = tuple(model_variables_by_name.keys())
    if names != self._names:
      raise ValueError("apply_gradients: the variables differ from those "
                       "the optimizer was built for")
    grads = list(grads)
    if len(grads) != len(names):
      raise ValueError("apply_gradients: %d gradients for %d variables" %
                       (len(grads), len(names)))
    grads = [None if g is None else tf.convert_to_tensor(g) for g in grads]
    if self.clip_norm is not None:
      present = [i for i, g in enumerate(grads) if g is not None]
      clipped, _ = tf.clip_by_global_norm([grads[i] for i in present],
                                          clip_norm=self.clip_norm)
      for i, g in zip(present, clipped):
        grads[i] = g
    learning_rate = self.learning_rate_at(self.global_step.read_value())
    params = list(model_variables_by_name.values())
    for grad, param, m, v, decay in zip(grads, params, self._m, self._v,
                                        self._decay):
      if grad is None:
        continue
      grad = tf.cast(grad, tf.float32)
      next_m = self.beta_1 * m + (1.0 - self.beta_1) * grad
      next_v = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grad)
      update = next_m / (tf.sqrt(next_v) + self.epsilon)
      if decay:
        update += self.weight_decay_rate * param
      param.assign_sub(learning_rate * update)
      m.assign(next_m)
      v.assign(next_v)
    self.global_step.assign_add(1)
    return learning_rate
