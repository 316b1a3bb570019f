"""One seed from the config seeds Python, NumPy, TF and Keras once.

Environments are seeded separately (``envs.make_env``) from seeds derived here, so that two
environments of one run never share a stream and the same config gives the same run on CPU.
"""

from __future__ import annotations

import random

import numpy as np


def derive_seeds(seed: int, n: int, salt: int = 0) -> list[int]:
    """``n`` independent 31-bit seeds derived from ``seed`` (and a ``salt`` per consumer)."""
    ss = np.random.SeedSequence([seed, salt])
    return [int(s) for s in ss.generate_state(n, dtype=np.uint32) & 0x7FFFFFFF]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    import keras
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed % 2**32)
    keras.utils.set_random_seed(seed)  # python, numpy, tf global seed and Keras' seed generator
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def configure_threads(intra: int, inter: int) -> None:
    """Set TF thread pools (must run before TF executes its first op)."""
    import tensorflow as tf

    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # TF already initialised in this process (tests): keep its pools
