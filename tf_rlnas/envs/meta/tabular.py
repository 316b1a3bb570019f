"""Random tabular MDPs: S states x A actions, transitions ~ Dirichlet(1) per (s, a), mean rewards
~ N(1, 1) per (s, a), reward ~ N(mean, 1); one-hot observations; start in state 0; episodes of
``horizon`` (10) steps, truncated (never terminated)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from tf_rlnas.envs.meta.tasks import TaskEnv


class TabularMDP(TaskEnv):
    metadata = {"render_modes": []}

    def __init__(self, num_states: int = 10, num_actions: int = 5, horizon: int = 10, task: dict | None = None):
        self.S, self.A, self.horizon = int(num_states), int(num_actions), int(horizon)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.S,), np.float32)
        self.action_space = gym.spaces.Discrete(self.A)
        self._trans = np.full((self.S, self.A, self.S), 1.0 / self.S)
        self._mean = np.zeros((self.S, self.A))
        self._s, self._t = 0, 0
        if task is not None:
            self.reset_task(task)

    def draw_tasks(self, n: int, rng: np.random.Generator) -> list[dict]:
        trans = rng.dirichlet(np.ones(self.S), size=(n, self.S, self.A))
        means = rng.normal(1.0, 1.0, size=(n, self.S, self.A))
        return [{"transitions": t, "rewards_mean": m} for t, m in zip(trans, means)]

    def reset_task(self, task: dict) -> None:
        self._trans = np.asarray(task["transitions"], np.float64)
        self._mean = np.asarray(task["rewards_mean"], np.float64)

    def _obs(self):
        o = np.zeros(self.S, np.float32)
        o[self._s] = 1.0
        return o

    def start_episode(self):
        self._s, self._t = 0, 0
        return self._obs(), {}

    def step(self, action):
        a = int(action)
        reward = float(self.np_random.normal(self._mean[self._s, a], 1.0))
        self._s = int(self.np_random.choice(self.S, p=self._trans[self._s, a]))
        self._t += 1
        return self._obs(), reward, False, self._t >= self.horizon, {}
