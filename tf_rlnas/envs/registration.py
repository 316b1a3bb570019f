"""Every environment of the package, registered with gymnasium on ``import tf_rlnas`` (no TF
imported). Plain gymnasium code can make them by id, without importing anything by hand, through
gymnasium's ``module:id`` form: ``gymnasium.make("tf_rlnas:tf_rlnas/2DNavigation-v0")``; after
``import tf_rlnas`` the plain id works too."""

from __future__ import annotations

import gymnasium as gym

# family name (config key) -> (gymnasium id, entry point, default kwargs, max_episode_steps)
META_FAMILIES: dict[str, tuple[str, str, dict, int]] = {
    "2dnav": ("tf_rlnas/2DNavigation-v0", "tf_rlnas.envs.meta.navigation:Navigation2D", {}, 100),
    "bandit": ("tf_rlnas/Bandit-v0", "tf_rlnas.envs.meta.bandit:BernoulliBandit", {"k": 5}, 1),
    "tabular_mdp": ("tf_rlnas/TabularMDP-v0", "tf_rlnas.envs.meta.tabular:TabularMDP", {}, 10),
    "halfcheetah_vel": ("tf_rlnas/HalfCheetahVel-v0", "tf_rlnas.envs.meta.locomotion:HalfCheetahVel", {}, 200),
    "halfcheetah_dir": ("tf_rlnas/HalfCheetahDir-v0", "tf_rlnas.envs.meta.locomotion:HalfCheetahDir", {}, 200),
    "ant_vel": ("tf_rlnas/AntVel-v0", "tf_rlnas.envs.meta.locomotion:AntVel", {}, 200),
    "ant_dir": ("tf_rlnas/AntDir-v0", "tf_rlnas.envs.meta.locomotion:AntDir", {}, 200),
    "ant_pos": ("tf_rlnas/AntPos-v0", "tf_rlnas.envs.meta.locomotion:AntPos", {}, 200),
}

_DONE = False


def register_all() -> None:
    global _DONE
    if _DONE:
        return
    _DONE = True
    if "tf_rlnas/OneShotGame-v0" not in gym.registry:
        gym.register(id="tf_rlnas/OneShotGame-v0", entry_point="tf_rlnas.envs.oneshot:OneShotGame")
    for env_id, entry, kwargs, steps in META_FAMILIES.values():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry, kwargs=dict(kwargs), max_episode_steps=steps)
