"""What every meta-RL task family's env shares (the MuJoCo families: ``locomotion._Tasks``)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class TaskEnv(gym.Env):
    """A task family's env: ``sample_tasks(n, rng)`` draws tasks (from the env's own generator when
    no ``rng`` is given), ``reset(options={"task": t})`` switches to task ``t`` first. Subclasses
    write ``draw_tasks(n, rng)``, ``reset_task(task)`` and ``start_episode() -> (obs, info)``."""

    def sample_tasks(self, n: int, rng: np.random.Generator | None = None) -> list[dict]:
        return self.draw_tasks(n, rng if rng is not None else self.np_random)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.reset_task(options["task"])
        return self.start_episode()
