"""The one-shot game of the Gaussian-actor reference as a gymnasium environment.

One constant state (1.0) and a fixed, unknown target ``tau``. An episode is a single action
``a``; the reward is ``R = zeta * beta / max(zeta, |tau - a|)``: the maximum ``beta`` within
``zeta`` of the target, decaying as ``1/|tau - a|`` outside it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class OneShotGame(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, tau: float = 4.0, zeta: float = 0.05, beta: float = 1.0, action_bound: float = np.inf):
        if zeta <= 0 or beta <= 0:
            raise ValueError("OneShotGame needs zeta > 0 and beta > 0")
        self.tau, self.zeta, self.beta = float(tau), float(zeta), float(beta)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-action_bound, action_bound, shape=(1,), dtype=np.float32)

    def reward(self, action) -> float:
        a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        return self.zeta * self.beta / max(self.zeta, abs(self.tau - a))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones((1,), np.float32), {}

    def step(self, action):
        r = self.reward(action)
        return np.ones((1,), np.float32), r, True, False, {"distance": abs(self.tau - float(np.asarray(action).reshape(-1)[0]))}
