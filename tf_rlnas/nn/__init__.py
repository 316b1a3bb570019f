"""Keras 3 building blocks shared by the algorithms."""

from tf_rlnas.nn.mlp import mlp  # noqa: F401
