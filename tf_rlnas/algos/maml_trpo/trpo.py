"""TRPO's numerical core for the MAML meta-update: conjugate gradient, flat parameter vectors and
the backtracking line search.

The Hessian-vector product of the mean KL is computed by the caller by double differentiation
(exact, Pearlmutter's trick: grad of <grad KL, v>) plus ``damping * v``; here it is just a function
``Avp(v) -> H v`` so that conjugate gradient can be tested against a matrix solve.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf


def flat_concat(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten(flat: tf.Tensor, like: Sequence) -> list[tf.Tensor]:
    out, i = [], 0
    for v in like:
        n = int(np.prod(v.shape))
        out.append(tf.reshape(flat[i:i + n], v.shape))
        i += n
    return out


def conjugate_gradient(avp: Callable[[tf.Tensor], tf.Tensor], b: tf.Tensor, iters: int = 10,
                       tol: float = 1e-10) -> tuple[tf.Tensor, tf.Tensor]:
    """Solve ``A x = b`` for symmetric positive definite ``A`` given only ``v -> A v``.

    ``iters`` steps at most (unrolled: a small constant, so the loop traces once), stopping early
    (a no-op update) once the squared residual falls below ``tol``. Returns (x, squared residual)."""
    x = tf.zeros_like(b)
    r = tf.identity(b)
    p = tf.identity(b)
    rr = tf.reduce_sum(r * r)
    for _ in range(iters):
        active = rr > tol
        ap = avp(p)
        pap = tf.reduce_sum(p * ap)
        alpha = tf.where(active, rr / tf.maximum(pap, 1e-30), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = tf.reduce_sum(r * r)
        beta = tf.where(active, rr_new / tf.maximum(rr, 1e-30), 0.0)
        p = tf.where(active, r + beta * p, p)
        rr = tf.where(active, rr_new, rr)
    return x, rr


def step_size(step_dir: tf.Tensor, hvp_of_dir: tf.Tensor, max_kl: float) -> tf.Tensor:
    """The factor that makes the quadratic KL model of the step, 0.5 s^T H s, equal ``max_kl``:
    ``s / sqrt(0.5 s^T H s / max_kl)``."""
    shs = 0.5 * tf.reduce_sum(step_dir * hvp_of_dir)
    return tf.sqrt(max_kl / tf.maximum(shs, 1e-30))


def backtracking_line_search(params: Sequence[tf.Variable], full_step: tf.Tensor,
                             evaluate: Callable[[], tuple[float, float]], old_loss: float, max_kl: float,
                             max_steps: int = 15, ratio: float = 0.8) -> tuple[int, float, float]:
    """Try ``theta_old - ratio^i * full_step`` for i = 0..max_steps-1; accept the first whose loss
    improves on ``old_loss`` and whose KL stays below ``max_kl``; otherwise restore theta_old.

    ``evaluate()`` returns (loss, kl) at the parameters currently assigned. Returns
    (steps tried before acceptance, or -1 when none was accepted; loss; kl) at the final parameters."""
    old = [tf.identity(p) for p in params]
    deltas = unflatten(full_step, params)
    loss, kl = old_loss, 0.0
    for i in range(max_steps):
        eta = ratio ** i
        for p, o, d in zip(params, old, deltas):
            p.assign(o - eta * d)
        loss, kl = evaluate()
        if np.isfinite(loss) and np.isfinite(kl) and loss < old_loss and kl < max_kl:
            return i, float(loss), float(kl)
    for p, o in zip(params, old):
        p.assign(o)
    return -1, float(old_loss), 0.0
