"""K-armed Bernoulli bandits: arm probabilities p ~ U[0, 1]^K per task, one step per episode,
reward ~ Bernoulli(p[action]); the observation is a constant 0."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from tf_rlnas.envs.meta.tasks import TaskEnv


class BernoulliBandit(TaskEnv):
    metadata = {"render_modes": []}

    def __init__(self, k: int = 5, task: dict | None = None):
        self.k = int(k)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)  # always 0
        self.action_space = gym.spaces.Discrete(self.k)
        self._p = np.full(self.k, 0.5)
        if task is not None:
            self.reset_task(task)

    def draw_tasks(self, n: int, rng: np.random.Generator) -> list[dict]:
        return [{"p": p} for p in rng.uniform(0.0, 1.0, size=(n, self.k))]

    def reset_task(self, task: dict) -> None:
        self._p = np.asarray(task["p"], np.float64)

    def start_episode(self):
        return np.zeros(1, np.float32), {}

    def step(self, action):
        reward = float(self.np_random.random() < self._p[int(action)])
        return np.zeros(1, np.float32), reward, True, False, {}
