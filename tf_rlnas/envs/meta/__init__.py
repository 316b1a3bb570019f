"""Meta-RL task families (MAML): each a gymnasium env with ``sample_tasks(n, rng)`` and
``reset_task(task)``; the cheap ones also come as native vector envs stepping every task x
episode of a meta-batch as one NumPy array (:mod:`tf_rlnas.envs.meta.vector`)."""

from tf_rlnas.envs.registration import META_FAMILIES  # noqa: E402
from tf_rlnas.errors import UserError  # noqa: E402


def make_task_vector_env(family: str, kwargs: dict, size: int, workers: int, sampler: str = "process",
                    ray_address: str = ""):
    """The vector env of a family: NumPy-vectorised for the cheap ones, worker processes or Ray actors
    stepping gymnasium envs for the MuJoCo ones."""
    from tf_rlnas.envs.meta import vector as V

    if family == "2dnav":
        return V.Navigation2DVec(**kwargs)
    if family == "bandit":
        return V.BanditVec(**kwargs)
    if family == "tabular_mdp":
        return V.TabularMDPVec(**{k: v for k, v in kwargs.items() if k in ("num_states", "num_actions")})
    return V.GymTaskVec(META_FAMILIES[family][0], kwargs, size, workers, sampler, ray_address)


def make_task_env(family: str, kwargs: dict):
    """One env of a family (its ``sample_tasks`` draws the tasks); bad kwargs are one UserError line."""
    import gymnasium as gym

    import tf_rlnas  # noqa: F401
    try:
        return gym.make(META_FAMILIES[family][0], disable_env_checker=True, **kwargs).unwrapped
    except TypeError as e:
        raise UserError(f"bad env.kwargs for family '{family}': {e}") from None
