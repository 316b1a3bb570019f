"""tf_rlnas: TensorFlow 2 / Keras reinforcement learning and RL-driven neural architecture search."""

__version__ = "0.1.0"

from tf_rlnas.envs.registration import register_all as _register_envs  # noqa: E402

_register_envs()  # gymnasium ids tf_rlnas/... (cheap: entry points are imported lazily)
