"""Keras models of REINFORCE: the Gaussian actor (mu, sigma > 0) and the optional V(s) baseline."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tf_rlnas.nn.mlp import mlp


def softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class GaussianActor(keras.Model):
    """obs -> (mu, sigma). Output kernels start at zero so that mu = init_mu, sigma = init_sigma.

    sigma = softplus(.) + min_sigma, either from the network (state dependent) or from a learned
    vector (state independent).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden, activation="relu", init_mu=0.0, init_sigma=1.0,
                 min_sigma=1e-4, state_dependent_sigma=True, name="actor"):
        super().__init__(name=name)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.min_sigma = float(min_sigma)
        self.state_dependent_sigma = state_dependent_sigma
        self.body = mlp(hidden, activation, name="actor_body")
        sigma_bias = softplus_inverse(init_sigma - min_sigma)
        self.mu_head = keras.layers.Dense(act_dim, kernel_initializer="zeros",
                                          bias_initializer=keras.initializers.Constant(init_mu), name="mu")
        if state_dependent_sigma:
            self.sigma_head = keras.layers.Dense(act_dim, kernel_initializer="zeros",
                                                 bias_initializer=keras.initializers.Constant(sigma_bias),
                                                 name="sigma")
        else:
            self.sigma_param = self.add_weight(shape=(act_dim,), initializer=keras.initializers.Constant(sigma_bias),
                                               name="sigma_param")
        self(tf.zeros((1, obs_dim)))  # create the variables now (checkpoints, optimizers)

    def call(self, obs):
        h = self.body(obs)
        mu = self.mu_head(h)
        if self.state_dependent_sigma:
            pre = self.sigma_head(h)
        else:
            pre = tf.broadcast_to(self.sigma_param, tf.shape(mu))
        return mu, tf.nn.softplus(pre) + self.min_sigma


def value_network(obs_dim: int, hidden, activation="tanh") -> keras.Model:
    model = keras.Sequential([mlp(hidden, activation, name="value_body"),
                              keras.layers.Dense(1, name="value")], name="value_net")
    model(tf.zeros((1, obs_dim)))
    return model
