"""SAC networks: a tanh-Gaussian actor and twin critics fused into one batched matmul per layer."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tf_rlnas.distributions import TanhNormal
from tf_rlnas.nn import mlp


class EnsembleDense(keras.layers.Layer):
    """``n`` independent dense layers evaluated as one batched matmul: [n, B, in] -> [n, B, out]."""

    def __init__(self, n: int, units: int, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.n, self.units = n, units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        bound = math.sqrt(6.0 / (fan_in + self.units))  # Glorot-uniform per member
        self.kernel = self.add_weight(shape=(self.n, fan_in, self.units), name="kernel",
                                      initializer=keras.initializers.RandomUniform(-bound, bound))
        self.bias = self.add_weight(shape=(self.n, 1, self.units), name="bias", initializer="zeros")

    def call(self, x):
        return self.activation(tf.matmul(x, self.kernel) + self.bias)


class TwinCritic(keras.Model):
    """Q_i(s, a) for i < n (n = 2): returns [n, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden, n: int = 2, name="critic"):
        super().__init__(name=name)
        self.n = n
        self.hidden_layers = [EnsembleDense(n, h, "relu", name=f"q_dense{i}") for i, h in enumerate(hidden)]
        self.out = EnsembleDense(n, 1, name="q_out")
        self(tf.zeros((1, obs_dim)), tf.zeros((1, act_dim)))

    def call(self, obs, act):
        x = tf.concat([obs, act], axis=-1)
        x = tf.broadcast_to(x[None], tf.concat([[self.n], tf.shape(x)], 0))
        for layer in self.hidden_layers:
            x = layer(x)
        return tf.squeeze(self.out(x), -1)


class TanhGaussianActor(keras.Model):
    """obs -> (mean, log_std) of the pre-tanh Gaussian; log_std clipped to [min, max]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden, log_std_min=-20.0, log_std_max=2.0, name="actor"):
        super().__init__(name=name)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)
        self.body = mlp(hidden, "relu", name="actor_body")
        self.mean = keras.layers.Dense(act_dim, name="mean")
        self.log_std = keras.layers.Dense(act_dim, name="log_std")
        self(tf.zeros((1, obs_dim)))

    def call(self, obs):
        h = self.body(obs)
        return self.mean(h), tf.clip_by_value(self.log_std(h), self.log_std_min, self.log_std_max)

    def dist(self, obs) -> TanhNormal:
        mean, log_std = self(obs)
        return TanhNormal(mean, tf.exp(log_std))

    def dense_layers(self):
        return [l for l in self.body.layers if isinstance(l, keras.layers.Dense)] + [self.mean, self.log_std]
