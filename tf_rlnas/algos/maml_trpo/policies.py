"""MAML policies with a functional forward pass ``forward(params, obs)``.

The meta-parameters live in a Keras model (variables, checkpoints, Xavier-uniform init, zero
biases, log-std 0); the inner loop never assigns them: adapted parameters are tensors
``theta' = theta - alpha * grad`` and every forward pass takes the parameter list explicitly.

Batched over tasks: ``params`` may carry a leading task axis K (``[K, in, out]`` kernels), and obs
is ``[K, N, obs_dim]``; one einsum per layer runs all tasks of a meta-batch, each with its own
adapted parameters, in one call (no Python loop over 20-40 tasks).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tf_rlnas.distributions import categorical, diag_gaussian


class MetaPolicy(keras.Model):
    """Parameters of an MLP policy: hidden layers (ReLU by default), an output layer of
    ``act_dim`` units (Gaussian mean or categorical logits) and, for Gaussian policies, a
    state-independent log-std vector adapted in the inner loop too."""

    def __init__(self, obs_dim: int, act_dim: int, hidden, gaussian: bool = True, activation: str = "relu",
                 min_std: float = 1e-6, init_log_std: float = 0.0, name: str = "policy"):
        super().__init__(name=name)
        self.obs_dim, self.act_dim, self.gaussian = int(obs_dim), int(act_dim), bool(gaussian)
        self.activation = keras.activations.get(activation)
        self.activation_name = activation
        self.min_log_std = math.log(min_std)
        sizes = [self.obs_dim, *[int(h) for h in hidden], self.act_dim]
        glorot = keras.initializers.GlorotUniform()
        self.layer_params = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            w = self.add_weight(shape=(a, b), initializer=glorot, name=f"w{i}")
            bias = self.add_weight(shape=(b,), initializer="zeros", name=f"b{i}")
            setattr(self, f"w{i}", w)  # attributes: tf.train.Checkpoint does not see a Python list's items
            setattr(self, f"b{i}", bias)
            self.layer_params += [w, bias]
        if self.gaussian:
            self.log_std = self.add_weight(shape=(self.act_dim,),
                                           initializer=keras.initializers.Constant(init_log_std), name="log_std")

    @property
    def params(self) -> list:
        return list(self.layer_params) + ([self.log_std] if self.gaussian else [])

    def forward(self, params, obs: tf.Tensor):
        """Distribution parameters for ``obs``: (mean, std) or (logits, None).

        Unbatched: params as in :attr:`params`, obs [..., obs_dim]. Batched over K tasks: every
        parameter with a leading K axis and obs [K, N, obs_dim]."""
        n_layers = len(self.layer_params) // 2
        batched = len(params[0].shape) == 3
        h = obs
        for i in range(n_layers):
            w, b = params[2 * i], params[2 * i + 1]
            if batched:
                h = tf.einsum("kni,kio->kno", h, w) + b[:, None, :]
            else:
                h = tf.matmul(h, w) + b
            if i < n_layers - 1:
                h = self.activation(h)
        if not self.gaussian:
            return h, None
        log_std = tf.maximum(params[-1], self.min_log_std)
        std = tf.exp(log_std)
        std = std[:, None, :] if batched else std
        return h, tf.broadcast_to(std, tf.shape(h))

    def dist(self, params, obs):
        a, b = self.forward(params, obs)
        return diag_gaussian(a, b) if self.gaussian else categorical(a)

    def tiled(self, k: int, params=None) -> list[tf.Tensor]:
        """The meta-parameters (or ``params``) repeated for K tasks: every task's adaptation starts there."""
        return [tf.tile(p[None], [k] + [1] * len(p.shape)) for p in (self.params if params is None else params)]
