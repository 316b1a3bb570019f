"""Cross-entropy-method planning over action sequences (model-predictive control).

``cem(objective, ...)`` starts from N(0, I) over [horizon, act_dim], draws ``candidates``
sequences per iteration (clipped to the action bounds), scores them with ``objective(actions
[J, H, A], seed) -> returns [J]``, refits mean and std to the ``top_k`` best, and returns the final
mean sequence (the caller executes its first action). Everything is TF ops: it runs inside one
``tf.function`` with the world model's imagination as the objective.
"""

from __future__ import annotations

import tensorflow as tf


def cem(objective, act_dim: int, horizon: int, iterations: int, candidates: int, top_k: int, seed,
        low: float = -1.0, high: float = 1.0):
    seeds = tf.random.experimental.stateless_split(seed, 2 * iterations)
    mean = tf.zeros([horizon, act_dim])
    std = tf.ones([horizon, act_dim])
    for i in range(iterations):  # a small constant: unrolled, traced once
        eps = tf.random.stateless_normal([candidates, horizon, act_dim], seeds[2 * i])
        actions = tf.clip_by_value(mean[None] + std[None] * eps, low, high)
        returns = objective(actions, seeds[2 * i + 1])
        _, idx = tf.math.top_k(returns, top_k)
        elite = tf.gather(actions, idx)
        mean, var = tf.nn.moments(elite, axes=[0])
        std = tf.sqrt(var + 1e-12)
    return mean
