"""2D navigation (Finn et al. 2017): a point starts at (0, 0) and must reach a goal drawn from
U[-0.5, 0.5]^2. The move is a displacement clipped to [-0.1, 0.1]^2; reward = -||s - g||_2 after
the move; the episode terminates when |dx| < 0.01 and |dy| < 0.01, else truncates at 100 steps.

Actions: by default in normalised units, ``action_space = [-1, 1]^2`` and displacement
``= 0.1 * clip(a, -1, 1)`` - what the paper's experiments did (rllab's ``normalize`` wrapper around
the point env). ``normalized_actions=False`` exposes the raw [-0.1, 0.1] displacement as
pytorch-maml-rl does; a unit-std Gaussian policy is then clipped almost always and meta-training
degrades (docs/maml_trpo.md)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from tf_rlnas.envs.meta.tasks import TaskEnv


class Navigation2D(TaskEnv):
    metadata = {"render_modes": []}

    def __init__(self, task: dict | None = None, low: float = -0.5, high: float = 0.5,
                 normalized_actions: bool = True):
        self.low, self.high = float(low), float(high)
        self.scale = 0.1 if normalized_actions else 1.0
        bound = 1.0 if normalized_actions else 0.1
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-bound, bound, (2,), np.float32)
        self._goal = np.zeros(2, np.float64)
        self._state = np.zeros(2, np.float64)
        if task is not None:
            self.reset_task(task)

    def draw_tasks(self, n: int, rng: np.random.Generator) -> list[dict]:
        return [{"goal": g} for g in rng.uniform(self.low, self.high, size=(n, 2))]

    def reset_task(self, task: dict) -> None:
        self._goal = np.asarray(task["goal"], np.float64)

    def start_episode(self):
        self._state = np.zeros(2, np.float64)
        return self._state.astype(np.float32), {"task": {"goal": self._goal.copy()}}

    def step(self, action):
        a = np.clip(self.scale * np.asarray(action, np.float64), -0.1, 0.1)
        self._state = self._state + a
        d = self._state - self._goal
        reward = -float(np.sqrt(np.sum(d * d)))
        terminated = bool(np.abs(d[0]) < 0.01 and np.abs(d[1]) < 0.01)
        return self._state.astype(np.float32), reward, terminated, False, {"task": {"goal": self._goal.copy()}}
