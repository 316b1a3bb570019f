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


class SeedStreams:
    """An algorithm's seed streams by name: each a salt of :func:`derive_seeds` (or a fixed seed of
    its own). The numbers are part of every run's reproducibility: add names, never renumber.

    >>> SEEDS = SeedStreams(envs=11, learner=12)
    >>> SEEDS.derive(run_seed, "envs", n)     # n seeds of the "envs" stream
    """

    def __init__(self, **salts: int):
        if len(set(salts.values())) != len(salts):
            raise ValueError(f"two seed streams share a salt: {salts}")
        self.salts = dict(salts)

    def __getattr__(self, name: str) -> int:
        try:
            return self.__dict__["salts"][name]
        except KeyError:
            raise AttributeError(name) from None

    def derive(self, seed: int, name: str, n: int = 1) -> list[int]:
        return derive_seeds(seed, n, salt=self.salts[name])


def seed_everything(seed: int, deterministic: bool = True) -> None:
    import keras
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed % 2**32)
    keras.utils.set_random_seed(seed)  # python, numpy, tf global seed and Keras' seed generator
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def configure_threads(intra: int, inter: int) -> list[str]:
    """Set TF thread pools (possible only before TF executes its first op). Once TF runs, a request
    that differs from its pools cannot take effect: one warning line says so (returned too)."""
    import tensorflow as tf

    from tf_rlnas.core.logging import say

    t = tf.config.threading
    ignored = []
    for key, want, get, put in (("intra_op_threads", intra, t.get_intra_op_parallelism_threads,
                                 t.set_intra_op_parallelism_threads),
                                ("inter_op_threads", inter, t.get_inter_op_parallelism_threads,
                                 t.set_inter_op_parallelism_threads)):
        if not want or get() == want:
            continue
        try:
            put(want)
        except RuntimeError:  # TF already initialised in this process (tests, a notebook)
            ignored.append(f"run.{key}={want} (in use: {get() or 'TF default'})")
    if ignored:
        say(f"warning: TensorFlow already runs in this process, so its thread pools stay as they are: "
            f"ignored {', '.join(ignored)}")
    return ignored
