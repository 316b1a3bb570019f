"""Multi-layer perceptrons."""

from __future__ import annotations

from typing import Sequence

import keras

from tf_rlnas.nn.layers import Dense


def mlp(hidden: Sequence[int], activation: str = "relu", name: str = "mlp",
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        dtype=None) -> keras.Sequential:
    """A stack of Dense layers (no output layer): ``hidden`` sizes with ``activation``; ``dtype`` a
    Keras dtype policy of every layer (e.g. ``"mixed_bfloat16"``; None = the global one).

    No sizes gives the identity, so that a head on top of it is a linear model."""
    if not hidden:
        return keras.layers.Identity(name=name)
    return keras.Sequential([Dense(int(h), activation=activation, name=f"{name}_dense{i}",
                                                kernel_initializer=kernel_initializer, dtype=dtype)
                             for i, h in enumerate(hidden)], name=name)
