"""MuJoCo meta-RL families on gymnasium's v5 bodies (the old gym + mujoco-py versions are dead).

HalfCheetahVel: v_goal ~ U[0, 2], r = -|v - v_goal| - 0.05 |a|^2.  HalfCheetahDir: d in {-1, +1},
r = d v - 0.05 |a|^2 (v = ``info["x_velocity"]``; never terminates).
AntVel (v_goal ~ U[0, 3]): -|v - v_goal| + 1; AntDir: d v; AntPos (goal ~ U[-3, 3]^2):
-|xy - g|_1 + 4; all Ant tasks add -0.005 |a|^2 - 0.0005 |clip(cfrc_ext, -1, 1)|^2 + 0.05 survive
and terminate when the torso's z leaves [0.2, 1.0] (gymnasium's Ant-v5 with ctrl_cost_weight 0.005,
contact_cost_weight 5e-4, healthy_reward 0.05, its default healthy z range).
"""

from __future__ import annotations

import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from tf_rlnas.envs.mujoco_assets import finish_model, quiet_model_kwargs


class _Tasks:
    """Task handling shared by the MuJoCo families: a task dict, ``reset_task``, and
    ``reset(options={"task": ...})`` (as ``tasks.TaskEnv``, but MuJoCo's own reset). Subclasses give
``draw_tasks(n, rng)`` and the forward reward."""

    def sample_tasks(self, n: int, rng: np.random.Generator | None = None) -> list[dict]:
        return self.draw_tasks(n, rng if rng is not None else self.np_random)

    def _init_task(self, task: dict | None) -> None:
        self._task = self.sample_tasks(1, np.random.default_rng(0))[0] if task is None else task

    def reset_task(self, task: dict) -> None:
        self._task = task

    def reset(self, *, seed=None, options=None):
        if options and "task" in options:
            self.reset_task(options["task"])
        return super().reset(seed=seed, options=options)


class _HalfCheetahTask(_Tasks, HalfCheetahEnv):
    def __init__(self, task: dict | None = None, **kwargs):
        kwargs.setdefault("ctrl_cost_weight", 0.05)
        kwargs, total_mass = quiet_model_kwargs(HalfCheetahEnv, kwargs)  # no settotalmass warning
        HalfCheetahEnv.__init__(self, **kwargs)
        finish_model(self, total_mass)
        self._init_task(task)

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        v = float(info["x_velocity"])
        ctrl = 0.05 * float(np.sum(np.square(action)))
        reward = self._forward_reward(v) - ctrl
        info["task_forward_reward"] = self._forward_reward(v)
        return obs, reward, terminated, truncated, info


class HalfCheetahVel(_HalfCheetahTask):
    def draw_tasks(self, n, rng):
        return [{"velocity": float(v)} for v in rng.uniform(0.0, 2.0, size=n)]

    def _forward_reward(self, v):
        return -abs(v - self._task["velocity"])


class HalfCheetahDir(_HalfCheetahTask):
    def draw_tasks(self, n, rng):
        return [{"direction": float(d)} for d in rng.choice([-1.0, 1.0], size=n)]

    def _forward_reward(self, v):
        return self._task["direction"] * v


class _AntTask(_Tasks, AntEnv):
    def __init__(self, task: dict | None = None, **kwargs):
        kwargs.setdefault("ctrl_cost_weight", 0.005)
        kwargs.setdefault("contact_cost_weight", 5e-4)
        kwargs.setdefault("healthy_reward", 0.05)
        AntEnv.__init__(self, **kwargs)
        self._init_task(task)

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        forward = self._forward_reward(info)
        # gymnasium's terms: healthy reward, control and contact costs (with our weights)
        reward = forward + float(info["reward_survive"]) + float(info["reward_ctrl"]) + float(info["reward_contact"])
        info["task_forward_reward"] = forward
        return obs, reward, terminated, truncated, info


class AntVel(_AntTask):
    def draw_tasks(self, n, rng):
        return [{"velocity": float(v)} for v in rng.uniform(0.0, 3.0, size=n)]

    def _forward_reward(self, info):
        return -abs(float(info["x_velocity"]) - self._task["velocity"]) + 1.0


class AntDir(_AntTask):
    def draw_tasks(self, n, rng):
        return [{"direction": float(d)} for d in rng.choice([-1.0, 1.0], size=n)]

    def _forward_reward(self, info):
        return self._task["direction"] * float(info["x_velocity"])


class AntPos(_AntTask):
    def draw_tasks(self, n, rng):
        return [{"position": g} for g in rng.uniform(-3.0, 3.0, size=(n, 2))]

    def _forward_reward(self, info):
        xy = np.array([info["x_position"], info["y_position"]])
        return -float(np.sum(np.abs(xy - np.asarray(self._task["position"])))) + 4.0
