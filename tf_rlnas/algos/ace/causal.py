"""Causal weights of the action dimensions on the reward (ACE's ``get_sa2r_weight``).

DirectLiNGAM is fitted on X = [states | actions | reward]. In ``adjacency_matrix_`` B[i, j] is
the effect j -> i, so the reward row's action columns are the signed effects w_r of each action
dimension on the reward; the weights are softmax(w_r) * |A| (they sum to |A|). Zero-variance
columns (constant padding, which makes LiNGAM divide by zero: ACE issue #2) are dropped first;
a dropped action dimension gets effect 0. The fit runs on one BLAS thread (faster than two here).
"""

from __future__ import annotations

import time

import numpy as np


def causal_weights(states: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """-> (weights [A] summing to A, raw reward-row effects [A], fit seconds)."""
    import lingam
    from threadpoolctl import threadpool_limits

    s_dim, a_dim = states.shape[1], actions.shape[1]
    x = np.concatenate([states, actions, np.reshape(rewards, (-1, 1))], axis=1).astype(np.float64)
    keep = np.flatnonzero(x.std(axis=0) > 1e-8)
    raw = np.zeros(a_dim)
    t0 = time.perf_counter()
    reward_col = x.shape[1] - 1
    if reward_col in keep and len(keep) >= 2:
        model = lingam.DirectLiNGAM(random_state=seed)
        with threadpool_limits(limits=1, user_api="blas"):
            model.fit(x[:, keep])
        b = model.adjacency_matrix_
        pos = {int(c): i for i, c in enumerate(keep)}
        row = b[pos[reward_col]]
        for k in range(a_dim):
            col = s_dim + k
            if col in pos:
                raw[k] = row[pos[col]]
    seconds = time.perf_counter() - t0
    e = np.exp(raw - raw.max())
    return (e / e.sum()) * a_dim, raw, seconds
