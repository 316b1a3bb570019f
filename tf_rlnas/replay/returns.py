"""Discounted returns-to-go and generalised advantage estimation (NumPy, per episode)."""

from __future__ import annotations

import numpy as np


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
