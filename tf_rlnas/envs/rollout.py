"""On-policy episode collection: one episode per environment, stepped together.

Each step makes ONE batched policy call for all still-running environments (a ``tf.function``
traced once for a ``[None, obs_dim]`` batch), so Python overhead per env step stays small.
Actions are clipped to the action box when sent to the environment; the unclipped sample is
what the policy's log-prob is taken of.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np


@dataclasses.dataclass
class Episode:
    obs: np.ndarray          # [T, obs_dim]
    actions: np.ndarray      # [T, act_dim], as sampled (before clipping)
    rewards: np.ndarray      # [T]
    terminated: bool         # True end of the task (no bootstrap); False = time-limit truncation
    final_obs: np.ndarray    # observation after the last step

    @property
    def ret(self) -> float:
        return float(np.sum(self.rewards))

    def __len__(self) -> int:
        return len(self.rewards)


def collect_episodes(envs: Sequence[gym.Env], policy: Callable[[np.ndarray], np.ndarray],
                     low: np.ndarray, high: np.ndarray) -> list[Episode]:
    """Run one episode in each of ``envs`` (which continue their own RNG streams)."""
    n = len(envs)
    obs = [np.asarray(env.reset()[0], np.float32) for env in envs]
    traj = [([], [], []) for _ in range(n)]
    result: list[Episode | None] = [None] * n
    active = list(range(n))
    while active:
        actions = np.asarray(policy(np.stack([obs[i] for i in active])), np.float32)
        still = []
        for j, i in enumerate(active):
            a = actions[j]
            o2, r, term, trunc, _ = envs[i].step(np.clip(a, low, high))
            o_list, a_list, r_list = traj[i]
            o_list.append(obs[i]); a_list.append(a); r_list.append(float(r))
            o2 = np.asarray(o2, np.float32)
            if term or trunc:
                result[i] = Episode(np.stack(o_list), np.stack(a_list), np.asarray(r_list, np.float32),
                                    bool(term), o2)
            else:
                obs[i] = o2
                still.append(i)
        active = still
    return result  # type: ignore[return-value]


class Evaluator:
    """Deterministic evaluation episodes on environments seeded apart from training.

    The environments are made once per episode count and keep their RNG streams, so successive
    evaluations see fresh (but reproducible) initial states.
    """

    def __init__(self, make_env: Callable[[int], gym.Env], seed: int, salt: int):
        from tf_rlnas.core.seeding import derive_seeds

        self._make_env, self._seeds = make_env, lambda n: derive_seeds(seed, n, salt=salt)
        self._envs: list[gym.Env] = []

    def __call__(self, policy: Callable[[np.ndarray], np.ndarray], episodes: int,
                 low: np.ndarray, high: np.ndarray) -> dict[str, float]:
        if len(self._envs) != episodes:
            self._envs = [self._make_env(s) for s in self._seeds(episodes)]
        eps = collect_episodes(self._envs, policy, low, high)
        rets = np.array([e.ret for e in eps])
        return {"eval/return": float(rets.mean()), "eval/return_std": float(rets.std()),
                "eval/length": float(np.mean([len(e) for e in eps]))}
