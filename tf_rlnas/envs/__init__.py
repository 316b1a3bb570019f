"""Environment factory: gymnasium ids plus this package's own environments."""

from tf_rlnas.envs.factory import make_env, env_spaces  # noqa: F401
