"""Uniform replay: a NumPy ring buffer of (obs, action, reward, next_obs, terminated).

``terminated`` is the true end of the task only; a time-limit truncation is stored as NOT
terminal so the critic bootstraps through it. :func:`VectorTransitions` turns gymnasium 1.x
vector-env steps (default ``NEXT_STEP`` autoreset) into transitions without ever joining the
last observation of one episode to the first of the next. The buffer's arrays go into the
run's checkpoint side file, so a resumed run continues with its data.
"""

from __future__ import annotations

import numpy as np


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, act_dim), np.float32)
        self.rewards = np.zeros((capacity,), np.float32)
        self.terminated = np.zeros((capacity,), np.float32)
        self.ptr = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        """Add a batch of transitions (leading axis = transitions)."""
        n = len(rewards)
        idx = (self.ptr + np.arange(n)) % self.capacity
        self.obs[idx] = obs
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.next_obs[idx] = next_obs
        self.terminated[idx] = terminated
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def sample(self, rng: np.random.Generator, batch_size: int, n_batches: int = 1) -> dict[str, np.ndarray]:
        """``n_batches`` uniform batches stacked on a leading axis: arrays of [n, B, ...]."""
        idx = rng.integers(0, self.size, size=(n_batches, batch_size))
        return {"obs": self.obs[idx], "actions": self.actions[idx], "rewards": self.rewards[idx],
                "next_obs": self.next_obs[idx], "terminated": self.terminated[idx]}

    def state(self) -> dict[str, np.ndarray]:
        n = self.size
        order = (np.arange(n) + (self.ptr - n)) % self.capacity  # oldest first
        return {"obs": self.obs[order], "actions": self.actions[order], "rewards": self.rewards[order],
                "next_obs": self.next_obs[order], "terminated": self.terminated[order]}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.ptr, self.size = 0, 0
        n = len(arrays["rewards"])
        if n > self.capacity:
            arrays = {k: v[-self.capacity:] for k, v in arrays.items()}
        self.add(arrays["obs"], arrays["actions"], arrays["rewards"], arrays["next_obs"], arrays["terminated"])


class VectorTransitions:
    """Builds transitions from gymnasium 1.x vector-env steps (NEXT_STEP autoreset).

    After a sub-env ends an episode, its next ``step`` only resets it (the action is ignored and
    the returned observation is the new episode's first): that step yields no transition.
    """

    def __init__(self, num_envs: int):
        self.resetting = np.zeros(num_envs, bool)

    def __call__(self, obs, actions, rewards, next_obs, terminated, truncated):
        keep = ~self.resetting
        self.resetting = np.logical_or(terminated, truncated)
        return (obs[keep], actions[keep], rewards[keep], next_obs[keep],
                terminated[keep].astype(np.float32)), keep
