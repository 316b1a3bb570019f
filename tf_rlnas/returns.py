"""Discounted returns-to-go and generalised advantage estimation, in the two layouts the algorithms
hold their episodes in: one NumPy episode at a time (REINFORCE) and batched [K, E, T] TF tensors
with a validity mask inside a compiled meta-update (MAML-TRPO). The same recursion
``y_t = x_t + f y_{t+1}``; a test checks the two against each other."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def discounted_returns(rewards: np.ndarray, gamma: float, bootstrap: float = 0.0) -> np.ndarray:
    """``G_t = r_t + gamma G_{t+1}``, ``G_T = bootstrap`` (0 for a terminated episode)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.empty_like(rewards)
    g = float(bootstrap)
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def gae(rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float,
        last_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation for one episode.

    ``delta_t = r_t + gamma V_{t+1} - V_t`` with ``V_T = last_value`` (0 if the episode
    terminated, ``V(s_T)`` if it was truncated by a time limit); advantages are the
    ``gamma * lam`` discounted sums of deltas. Returns (advantages, value targets).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    nxt = np.append(values[1:], last_value)
    deltas = rewards + gamma * nxt - values
    adv = discounted_returns(deltas, gamma * lam)
    return adv, adv + values


def discounted_cumsum(x, mask, factor: float):
    """Reverse discounted sums along T (axis 2) that restart after padding: y_t = x_t + f y_{t+1}."""
    xs = tf.transpose(x * mask, [2, 0, 1])
    ms = tf.transpose(mask, [2, 0, 1])
    ys = tf.scan(lambda acc, xm: xm[0] + factor * acc * xm[1], (xs, ms), initializer=tf.zeros_like(xs[0]),
                 reverse=True)
    return tf.transpose(ys, [1, 2, 0])


def gae_masked(rewards, values, mask, gamma: float, lam: float):
    """delta_t = r_t + gamma V_{t+1} - V_t with V = 0 after the last valid step; advantages are the
    (gamma lam)-discounted sums of deltas within each episode."""
    nxt = tf.concat([values[:, :, 1:] * mask[:, :, 1:], tf.zeros_like(values[:, :, :1])], axis=2)
    deltas = (rewards + gamma * nxt - values) * mask
    return discounted_cumsum(deltas, mask, gamma * lam)
