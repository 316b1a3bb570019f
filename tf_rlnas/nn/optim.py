"""Adam with one fused kernel per variable.

Keras 3's Adam builds each update from ~10 small ops per variable (moment updates, bias correction,
the step); in a small-network RL update such as SAC's (16 variables, three optimizers) that op
dispatch costs more than the matmuls. ``tf.raw_ops.ResourceApplyAdam`` does the same arithmetic in
one kernel per variable (and has an XLA lowering, so it also works under ``jit_compile``):

    lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)
    m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2;  theta <- theta - lr_t m / (sqrt(v) + eps)

The moments and the step count are checkpointable variables; ``reset_moments()`` clears them (ACE's
soft reset).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import keras
import tensorflow as tf


class FusedAdam(tf.Module):
    def __init__(self, learning_rate: float, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, name: str = "adam"):
        super().__init__(name=name)
        self.learning_rate = float(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.m: list[tf.Variable] = []
        self.v: list[tf.Variable] = []
        self._index: dict[int, int] = {}

    def build(self, variables: Sequence[tf.Variable]) -> None:
        for var in variables:
            if id(var) in self._index:
                continue
            self._index[id(var)] = len(self.m)
            base = var.name.split(":")[0].replace("/", "_")
            self.m.append(tf.Variable(tf.zeros_like(var), trainable=False, name=f"{base}_m"))
            self.v.append(tf.Variable(tf.zeros_like(var), trainable=False, name=f"{base}_v"))

    def apply_gradients(self, grads_and_vars: Iterable) -> None:
        grads_and_vars = list(grads_and_vars)
        t = tf.cast(self.iterations + 1, tf.float32)
        b1_power, b2_power = tf.pow(self.beta_1, t), tf.pow(self.beta_2, t)
        for g, var in grads_and_vars:
            i = self._index[id(var)]
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle, m=self.m[i].handle, v=self.v[i].handle, beta1_power=b1_power,
                beta2_power=b2_power, lr=tf.constant(self.learning_rate), beta1=tf.constant(self.beta_1),
                beta2=tf.constant(self.beta_2), epsilon=tf.constant(self.epsilon), grad=g)
        self.iterations.assign_add(1)

    def reset_moments(self) -> None:
        for var in self.m + self.v:
            var.assign(tf.zeros_like(var))
        self.iterations.assign(0)


class NesterovSGD(tf.Module):
    """SGD with Nesterov momentum and L2 weight decay on kernels (rank >= 2 variables):

        g <- g + l2 * theta;  m <- mu m - lr g;  theta <- theta + mu m - lr g

    (the Keras/TF Nesterov form), one fused ``ResourceApplyKerasMomentum`` kernel per variable (the
    same update from ``assign`` ops is ~6 small ops per variable; a 12-layer ENAS child has ~450
    variables). A mirrored variable's update goes through
    ``strategy.extended.update``, which runs it on every copy of a mirrored variable with the
    all-reduced gradient. ``learning_rate`` is a variable: the cosine schedule assigns it.
    """

    def __init__(self, learning_rate: float, momentum: float = 0.9, l2: float = 0.0, name: str = "sgd"):
        super().__init__(name=name)
        self.learning_rate = tf.Variable(float(learning_rate), trainable=False, name="learning_rate")
        self.momentum, self.l2 = float(momentum), float(l2)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.m: list[tf.Variable] = []
        self._index: dict[int, int] = {}

    def build(self, variables: Sequence[tf.Variable]) -> None:
        for var in variables:
            if id(var) not in self._index:
                self._index[id(var)] = len(self.m)
                base = var.name.split(":")[0].replace("/", "_")
                self.m.append(tf.Variable(tf.zeros(var.shape, var.dtype), trainable=False, name=f"{base}_m"))

    def _apply_one(self, var, g, m, lr):
        if self.l2 and len(var.shape) >= 2:
            g = g + self.l2 * tf.convert_to_tensor(var)
        tf.raw_ops.ResourceApplyKerasMomentum(var=var.handle, accum=m.handle, lr=lr, grad=g,
                                              momentum=tf.constant(self.momentum, var.dtype),
                                              use_nesterov=True)

    def apply_gradients(self, grads_and_vars: Iterable) -> None:
        lr = tf.convert_to_tensor(self.learning_rate)
        for g, var in grads_and_vars:
            if g is None:
                continue
            m = self.m[self._index[id(var)]]
            var = var.value if isinstance(var, keras.Variable) else var  # Keras 3 wraps the tf.Variable
            if isinstance(var, tf.distribute.DistributedValues):  # a mirrored variable: every copy
                var.distribute_strategy.extended.update(
                    var, lambda v, g, m: self._apply_one(v, g, m, lr), args=(g, m), group=False)
            else:
                self._apply_one(var, g, m, lr)
        self.iterations.assign_add(1)
