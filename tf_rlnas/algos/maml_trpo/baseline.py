"""LinearFeatureBaseline, batched over tasks (TF): a ridge regression of returns on
``[o, o^2, t, t^2, t^3, 1]`` (t = step / 100), fit on each task's own episodes and evaluated on them.

Padded steps (after an episode ended) are masked out of the fit and the prediction (early ports fit
the zero padding too, which made the normal equations singular). The ridge term starts at
``reg`` and is multiplied by 10 when a solve fails, up to 5 tries, per task: all five solves are
computed at once and the first good one is kept (a fixed-shape graph, no Python loop over tasks).

The solve goes through a float64 eigendecomposition of X^T X, not ``tf.linalg.solve``: on an
exactly singular design (Ant episodes with constant or linearly dependent observation columns)
the LU solve RAISES "Input matrix is not invertible" instead of returning NaN, which stopped an
AntDir run; ``eigh`` never raises, and a try counts as failed when lambda_min + reg <= 0 or the
weights are not finite.
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
    x64, y64 = tf.cast(x, tf.float64), tf.cast(y, tf.float64)
    lam, vecs = tf.linalg.eigh(tf.matmul(x64, x64, transpose_a=True))  # [K, F], [K, F, F]
    proj = tf.matmul(vecs, tf.matmul(x64, y64, transpose_a=True), transpose_a=True)  # V^T X^T y
    chosen = tf.zeros_like(proj)                                   # [K, F, 1]
    found = tf.zeros([k, 1, 1], tf.bool)
    for i in range(tries):  # the first good solve per task, ridge x1, x10, x100 ...
        denom = lam + reg * 10.0 ** i
        w = tf.matmul(vecs, proj / denom[..., None])
        ok = tf.logical_and(tf.reduce_all(tf.math.is_finite(w), axis=[1, 2], keepdims=True),
                            tf.reduce_min(denom, axis=1)[:, None, None] > 0)
        chosen = tf.where(tf.logical_and(ok, tf.logical_not(found)), w, chosen)
        found = tf.logical_or(found, ok)
    chosen = tf.cast(chosen, x.dtype)
    values = tf.matmul(x, chosen)[..., 0]
    return tf.reshape(values, tf.shape(returns)) * mask
