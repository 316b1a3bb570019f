"""Vector task environments for MAML sampling: all K tasks x E episodes of a meta-batch at once.

Interface (arrays shaped [K, E, ...]): ``set_tasks(tasks, episodes)``, ``reset(rng) -> obs``,
``step(actions, rng) -> (obs, reward, terminated, info-free)``. Time limits are the sampler's
business (it stops at ``horizon``); an ended episode keeps being stepped and masked out.

- :class:`Navigation2DVec`, :class:`BanditVec`, :class:`TabularMDPVec`: native NumPy dynamics, the
  whole meta-batch in a few array operations per step (the same dynamics as the gymnasium classes;
  a test steps both side by side).
- :class:`GymTaskVec`: any gymnasium task env (MuJoCo families), K x E copies stepped in a loop,
  optionally split over worker processes (``workers > 1``, spawned, each holding a share of the
  envs) so that MuJoCo steps run on all cores.
"""

from __future__ import annotations

import numpy as np


class Navigation2DVec:
    discrete = False

    def __init__(self, low: float = -0.5, high: float = 0.5, normalized_actions: bool = True):
        self.obs_dim, self.act_dim, self.low, self.high = 2, 2, low, high
        self.scale = 0.1 if normalized_actions else 1.0
        bound = 1.0 if normalized_actions else 0.1
        self.act_low, self.act_high = np.full(2, -bound, np.float32), np.full(2, bound, np.float32)

    def set_tasks(self, tasks, episodes: int) -> None:
        self.goals = np.stack([np.asarray(t["goal"], np.float64) for t in tasks])[:, None, :]  # [K, 1, 2]
        self.shape = (len(tasks), episodes)

    def reset(self, rng) -> np.ndarray:
        self.state = np.zeros(self.shape + (2,))
        return self.state.astype(np.float32)

    def step(self, actions, rng):
        self.state = self.state + np.clip(self.scale * actions, -0.1, 0.1)
        d = self.state - self.goals
        reward = -np.sqrt(np.sum(d * d, axis=-1))
        terminated = np.all(np.abs(d) < 0.01, axis=-1)
        return self.state.astype(np.float32), reward, terminated


class BanditVec:
    discrete = True
    obs_dim = 1

    def __init__(self, k: int = 5):
        self.num_actions = int(k)

    def set_tasks(self, tasks, episodes: int) -> None:
        self.p = np.stack([np.asarray(t["p"]) for t in tasks])  # [K, k]
        self.shape = (len(tasks), episodes)

    def reset(self, rng) -> np.ndarray:
        return np.zeros(self.shape + (1,), np.float32)

    def step(self, actions, rng):
        p = np.take_along_axis(self.p, np.asarray(actions, np.int64), axis=1)  # [K, E]
        reward = (rng.random(self.shape) < p).astype(np.float64)
        return np.zeros(self.shape + (1,), np.float32), reward, np.ones(self.shape, bool)


class TabularMDPVec:
    discrete = True

    def __init__(self, num_states: int = 10, num_actions: int = 5):
        self.S, self.num_actions, self.obs_dim = int(num_states), int(num_actions), int(num_states)

    def set_tasks(self, tasks, episodes: int) -> None:
        self.trans = np.stack([np.asarray(t["transitions"]) for t in tasks])       # [K, S, A, S]
        self.cum = np.cumsum(self.trans, axis=-1)
        self.mean = np.stack([np.asarray(t["rewards_mean"]) for t in tasks])       # [K, S, A]
        self.shape = (len(tasks), episodes)

    def _obs(self):
        return np.eye(self.S, dtype=np.float32)[self.s]

    def reset(self, rng) -> np.ndarray:
        self.s = np.zeros(self.shape, np.int64)
        return self._obs()

    def step(self, actions, rng):
        a = np.asarray(actions, np.int64)
        k = np.arange(self.shape[0])[:, None]
        reward = rng.normal(self.mean[k, self.s, a], 1.0)
        u = rng.random(self.shape)[..., None]
        self.s = np.minimum((u > self.cum[k, self.s, a]).sum(-1), self.S - 1)
        return self._obs(), reward, np.zeros(self.shape, bool)


# ---- gymnasium envs, optionally over worker processes ---------------------------------------------

def _make(env_id: str, kwargs: dict):
    import gymnasium as gym

    import tf_rlnas  # noqa: F401  (registers the ids)
    return gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped


class _Chunk:
    """n copies of one task env in this process."""

    def __init__(self, env_id: str, kwargs: dict, n: int):
        self.envs = [_make(env_id, kwargs) for _ in range(n)]

    def set_tasks(self, tasks):
        for env, t in zip(self.envs, tasks):
            env.reset_task(t)

    def reset(self, seeds):
        return np.stack([env.reset(seed=int(s))[0] for env, s in zip(self.envs, seeds)]).astype(np.float32)

    def step(self, actions, alive):
        obs, rew, term = [], [], []
        for env, a, live in zip(self.envs, actions, alive):
            if live:
                o, r, t, _, _ = env.step(a)
            else:  # an ended episode: not stepped (MuJoCo steps are the cost), masked by the sampler
                o, r, t = np.zeros(env.observation_space.shape), 0.0, True
            obs.append(o)
            rew.append(r)
            term.append(t)
        return np.stack(obs).astype(np.float32), np.asarray(rew, np.float64), np.asarray(term, bool)


def _worker(conn, env_id, kwargs, n):
    chunk = _Chunk(env_id, kwargs, n)
    while True:
        cmd, arg = conn.recv()
        if cmd == "close":
            conn.close()
            return
        conn.send(getattr(chunk, cmd)(*arg))


class GymTaskVec:
    """K x E copies of a gymnasium task env; with ``workers > 1`` the copies are split over
    workers stepped in parallel (commands go out to all, then answers come back):
    ``backend="process"`` spawns local processes, ``backend="ray"`` makes Ray actors (one CPU
    each) on a local Ray instance or the cluster at ``ray_address`` ("auto" = the one this host
    belongs to), so MuJoCo sampling can use many hosts. Both backends draw the reset seeds from the
    caller's RNG in the same order, so they give identical episodes."""

    def __init__(self, env_id: str, kwargs: dict, size: int, workers: int = 1, backend: str = "process",
                 ray_address: str = ""):
        import gymnasium as gym

        probe = _make(env_id, kwargs)
        self.discrete = isinstance(probe.action_space, gym.spaces.Discrete)
        self.obs_dim = int(np.prod(probe.observation_space.shape))
        if self.discrete:
            self.num_actions = int(probe.action_space.n)
        else:
            self.act_dim = int(probe.action_space.shape[0])
            self.act_low, self.act_high = probe.action_space.low, probe.action_space.high
        self.size = int(size)
        self.local, self.conns, self.procs, self.actors = None, [], [], []
        if backend == "ray":
            self.splits = np.array_split(np.arange(self.size), max(1, min(int(workers), self.size)))
            self._start_ray(env_id, kwargs, ray_address)
            return
        workers = max(1, min(int(workers), self.size))
        self.splits = np.array_split(np.arange(self.size), workers)
        if workers == 1:
            self.local = _Chunk(env_id, kwargs, self.size)
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            for idx in self.splits:
                a, b = ctx.Pipe()
                p = ctx.Process(target=_worker, args=(b, env_id, kwargs, len(idx)), daemon=True)
                p.start()
                b.close()
                self.conns.append(a)
                self.procs.append(p)

    def _start_ray(self, env_id: str, kwargs: dict, address: str) -> None:
        try:
            import ray
        except ImportError:
            from tf_rlnas.errors import UserError
            raise UserError("env.sampler 'ray' needs Ray: pip install -e \".[ray]\"") from None
        import os

        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:  # a local instance with a CPU slot per actor
                ray.init(num_cpus=max(os.cpu_count() or 1, len(self.splits)), include_dashboard=False,
                         log_to_driver=False)
        actor = ray.remote(num_cpus=1)(_Chunk)
        self.actors = [actor.remote(env_id, kwargs, len(idx)) for idx in self.splits]
        self._ray = ray

    def _all(self, cmd, per_chunk_args):
        if self.local is not None:
            return [getattr(self.local, cmd)(*per_chunk_args[0])]
        if self.actors:
            return self._ray.get([getattr(a, cmd).remote(*args) for a, args in zip(self.actors, per_chunk_args)])
        for c, a in zip(self.conns, per_chunk_args):
            c.send((cmd, a))
        return [c.recv() for c in self.conns]

    def set_tasks(self, tasks, episodes: int) -> None:
        self.shape = (len(tasks), episodes)
        assert len(tasks) * episodes == self.size, "GymTaskVec was built for another meta-batch size"
        flat = [t for t in tasks for _ in range(episodes)]
        self._all("set_tasks", [([flat[i] for i in idx],) for idx in self.splits])

    def reset(self, rng) -> np.ndarray:
        seeds = rng.integers(0, 2**31 - 1, size=self.size)
        self.alive = np.ones(self.size, bool)
        out = self._all("reset", [(seeds[idx],) for idx in self.splits])
        return np.concatenate(out).reshape(self.shape + (-1,))

    def step(self, actions, rng):
        flat = np.asarray(actions).reshape((self.size,) + np.shape(actions)[2:])
        out = self._all("step", [(flat[idx], self.alive[idx]) for idx in self.splits])
        obs = np.concatenate([o for o, _, _ in out])
        rew = np.concatenate([r for _, r, _ in out])
        term = np.concatenate([t for _, _, t in out])
        self.alive &= ~term
        return obs.reshape(self.shape + (-1,)), rew.reshape(self.shape), term.reshape(self.shape)

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(("close", None))
            except OSError:
                pass
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        self.conns, self.procs = [], []
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []
