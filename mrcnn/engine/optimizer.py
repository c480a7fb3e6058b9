"""Matterport's optimizer: SGD with momentum and global-norm gradient clipping.

The update is Keras' ``SGD`` exactly (``m = momentum * m - lr * g; w += m``, the
gradients first scaled by ``min(1, clip / global_norm)``); only how TensorFlow runs it
changes. Keras writes the update in ``keras.ops``, which on TensorFlow is about eight
elementwise passes over every weight-sized tensor per step (square and sum for the
norm, the clip multiply, two multiplies and a subtract for the momentum, two
assignments). For a ResNet-50 FPN that is ~44 M values per pass, ~10% of a training
step at 128 px on a 2-core CPU. Here, on TensorFlow:

- the global norm is ``sqrt(2 * sum(l2_loss(g)))``: TF's ``L2Loss`` reduces in one
  pass without writing the squares;
- the clip factor, a scalar common to all gradients, multiplies the learning rate
  instead of every gradient (``(lr * c) * g`` against ``lr * (c * g)``: equal up to
  float rounding);
- the momentum update is TF's fused ``ResourceApplyKerasMomentum`` kernel, the same
  formula as Keras' in one pass.

Other backends (JAX compiles the step with XLA, which fuses these passes itself),
``tf.distribute`` replicas, Nesterov momentum, gradient accumulation, EMA and
non-float32 weights run Keras' own code.
"""
from __future__ import annotations

from typing import Any, List, Optional

import keras
from keras import ops

__all__ = ["MatterportSGD"]


def _on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


@keras.saving.register_keras_serializable(package="mrcnn")
class MatterportSGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` (momentum, ``global_clipnorm``) with a fused TF update.

    Same constructor, config and variables as ``keras.optimizers.SGD`` (checkpoints and
    ``get_config`` are interchangeable); see the module docstring for what differs in
    how TensorFlow runs it.
    """

    def _fused(self, variables: List[Any]) -> bool:
        if not _on_tensorflow() or self.nesterov or self.momentum == 0:
            return False
        if self.gradient_accumulation_steps or self.use_ema:
            return False
        import tensorflow as tf
        if tf.distribute.has_strategy():  # replicas: Keras' per-replica update path
            return False
        return all(v.dtype == "float32" for v in variables)

    def _clip_factor(self, grads: List[Any]) -> Optional[Any]:
        """``min(1, clip / norm)`` over all gradients (NaN when the norm is not finite,
        as Keras' ``clip_by_global_norm`` gives), or None without global clipping."""
        if not self.global_clipnorm or self.global_clipnorm <= 0:
            return None
        import tensorflow as tf
        half_squares = [tf.nn.l2_loss(tf.cast(g, tf.float32)) for g in grads if g is not None]
        norm = tf.sqrt(2.0 * tf.add_n(half_squares))
        clip = float(self.global_clipnorm)
        return clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)

    def _backend_apply_gradients(self, grads, trainable_variables):
        if self.clipnorm or self.clipvalue or not self._fused(list(trainable_variables)):
            return super()._backend_apply_gradients(grads, trainable_variables)
        factor = self._clip_factor(grads)
        self._apply_weight_decay(trainable_variables)
        learning_rate = self.learning_rate
        if factor is not None:
            learning_rate = ops.cast(learning_rate, "float32") * factor
        self._backend_update_step(grads, trainable_variables, learning_rate)

    def update_step(self, gradient, variable, learning_rate):
        if not (_on_tensorflow() and self._fused([variable])):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf
        m = self.momentums[self._get_variable_index(variable)]
        handle = getattr(variable, "handle", None)
        if handle is None:
            handle = variable.value.handle
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=handle, accum=m.value.handle, lr=tf.cast(learning_rate, tf.float32),
            grad=tf.cast(gradient, tf.float32), momentum=tf.constant(self.momentum, tf.float32),
            use_locking=False, use_nesterov=False)
