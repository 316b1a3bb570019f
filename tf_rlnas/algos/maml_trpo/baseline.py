"""LinearFeatureBaseline, batched over tasks (TF): a ridge regression of returns on
``[o, o^2, t, t^2, t^3, 1]`` (t = step / 100), fit on each task's own episodes and evaluated on them.

Padded steps (after an episode ended) are masked out of the fit and the prediction (early ports fit
the zero padding too, which made the normal equations singular). The ridge term starts at
``reg`` and is multiplied by 10 when a solve is not finite, up to 5 tries, per task: all five
solves are computed at once and the first finite one is kept (a fixed-shape graph, no Python loop
over tasks).
"""

from __future__ import annotations

import tensorflow as tf


def features(obs: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """obs [K, E, T, D], mask [K, E, T] -> [K, E, T, 2D + 4] (zero on padded steps)."""
    obs = tf.clip_by_value(obs, -10.0, 10.0)
    t = tf.cast(tf.range(tf.shape(obs)[2]), obs.dtype) / 100.0
    t = tf.broadcast_to(t[None, None, :, None], tf.concat([tf.shape(obs)[:3], [1]], 0))
    f = tf.concat([obs, obs * obs, t, t * t, t * t * t, tf.ones_like(t)], axis=-1)
    return f * mask[..., None]


def fit_predict(obs: tf.Tensor, mask: tf.Tensor, returns: tf.Tensor, reg: float = 1e-5,
                tries: int = 5) -> tf.Tensor:
    """Per-task ridge fit of ``returns`` [K, E, T]; returns the predicted values [K, E, T] (0 where masked)."""
    f = features(obs, mask)
    k, nf = tf.shape(f)[0], tf.shape(f)[-1]
    x = tf.reshape(f, [k, -1, nf])
    y = tf.reshape(returns * mask, [k, -1, 1])
    xtx = tf.matmul(x, x, transpose_a=True)
    xty = tf.matmul(x, y, transpose_a=True)
    eye = tf.eye(nf, dtype=f.dtype)
    chosen = tf.zeros_like(xty)                                    # [K, F, 1]
    found = tf.zeros([k, 1, 1], tf.bool)
    for i in range(tries):  # the first finite solve per task, ridge x1, x10, x100 ...
        w = tf.linalg.solve(xtx + (reg * 10.0 ** i) * eye, xty)
        ok = tf.reduce_all(tf.math.is_finite(w), axis=[1, 2], keepdims=True)
        chosen = tf.where(tf.logical_and(ok, tf.logical_not(found)), w, chosen)
        found = tf.logical_or(found, ok)
    values = tf.matmul(x, chosen)[..., 0]
    return tf.reshape(values, tf.shape(returns)) * mask
