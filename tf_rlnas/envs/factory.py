"""``make_env``: one place that builds, checks and seeds environments.

Package environments are registered under the ``tf_rlnas/`` namespace (``tf_rlnas/OneShotGame-v0``).
A bad id, a missing optional dependency (MuJoCo) or bad keyword arguments become one
:class:`UserError` line instead of a traceback.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from tf_rlnas.errors import UserError



def register_envs() -> None:
    from tf_rlnas.envs.registration import register_all
    register_all()


def _env_class(env_id: str):
    try:
        entry = gym.spec(env_id).entry_point
        return gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    except Exception:  # unknown id etc.: gym.make reports it
        return None


def make_env(env_id: str, seed: int | None = None, max_episode_steps: int | None = None,
             kwargs: dict[str, Any] | None = None) -> gym.Env:
    """Make ``env_id``; seed its RNG (and its action space's) once with ``seed``.

    MuJoCo models with the deprecated ``settotalmass`` attribute are loaded from a cleaned copy
    (same physics, no warning, no MUJOCO_LOG.TXT): see :mod:`tf_rlnas.envs.mujoco_assets`.
    """
    register_envs()
    kwargs, total_mass = dict(kwargs or {}), None
    cls = _env_class(env_id)
    if isinstance(cls, type):
        from tf_rlnas.envs.mujoco_assets import quiet_model_kwargs
        kwargs, total_mass = quiet_model_kwargs(cls, kwargs)
    try:
        env = gym.make(env_id, max_episode_steps=max_episode_steps or None, **kwargs)
    except gym.error.Error as e:
        raise UserError(f"cannot make environment '{env_id}': {e}") from None
    except ImportError as e:
        raise UserError(f"environment '{env_id}' needs a missing package ({e.name or e}); "
                        f"install tf_rlnas with its dependencies (pip install -e .)") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"bad env.kwargs for '{env_id}': {e}") from None
    if total_mass is not None:
        from tf_rlnas.envs.mujoco_assets import finish_model
        finish_model(env, total_mass)
    if seed is not None:
        env.reset(seed=int(seed))
        env.action_space.seed(int(seed))
    return env


def make_env_from_config(env_cfg, seed: int | None = None) -> gym.Env:
    """``make_env`` from an env config section with ``id``, ``max_episode_steps`` and ``kwargs``."""
    return make_env(env_cfg.id, seed=seed, max_episode_steps=env_cfg.max_episode_steps, kwargs=env_cfg.kwargs)


def env_spaces(env: gym.Env) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(obs_dim, act_dim, act_low, act_high) of a flat Box/Box environment."""
    obs, act = env.observation_space, env.action_space
    if not isinstance(act, gym.spaces.Box) or len(act.shape) != 1:
        raise UserError(f"{env.spec.id if env.spec else env}: this algorithm needs a 1-D continuous "
                        f"(Box) action space, got {act}")
    if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
        raise UserError(f"{env.spec.id if env.spec else env}: this algorithm needs a flat Box "
                        f"observation space, got {obs}")
    return int(obs.shape[0]), int(act.shape[0]), act.low.astype(np.float32), act.high.astype(np.float32)


class RNGStateAccess(gym.Wrapper):
    """Exposes the wrapped env's RNG state as the attribute ``tf_rlnas_rng`` so a vector env (sync
    or async: ``get_attr`` / ``set_attr``) can save and restore every sub-env's stream."""

    @property
    def tf_rlnas_rng(self) -> dict:
        return rng_state(self.env)

    @tf_rlnas_rng.setter
    def tf_rlnas_rng(self, state: dict) -> None:
        set_rng_state(self.env, state)


def _wrapped_env(env_id, seed, max_episode_steps, kwargs):
    return RNGStateAccess(make_env(env_id, seed=seed, max_episode_steps=max_episode_steps, kwargs=kwargs))


def make_vector_env(env_id: str, seeds, max_episode_steps: int | None, kwargs: dict | None,
                    mode: str = "auto") -> gym.vector.VectorEnv:
    """A gymnasium vector env of ``len(seeds)`` copies (default NEXT_STEP autoreset); ``mode`` sync,
    async (one spawned process per env) or auto (async for more than one env)."""
    import functools

    fns = [functools.partial(_wrapped_env, env_id, int(s), max_episode_steps, dict(kwargs or {})) for s in seeds]
    if mode == "async" or (mode == "auto" and len(fns) > 1):
        make_env(env_id, max_episode_steps=max_episode_steps, kwargs=kwargs).close()  # errors here, as one line
        return gym.vector.AsyncVectorEnv(fns, context="spawn")
    return gym.vector.SyncVectorEnv(fns)


def rng_state(env: gym.Env) -> dict:
    """The environment's RNG state (for identical resumption)."""
    return {"env": env.unwrapped.np_random.bit_generator.state,
            "action_space": env.action_space.np_random.bit_generator.state}


def set_rng_state(env: gym.Env, state: dict) -> None:
    env.unwrapped.np_random.bit_generator.state = state["env"]
    env.action_space.np_random.bit_generator.state = state["action_space"]
