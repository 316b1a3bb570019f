"""Keras 3 building blocks shared by the algorithms.

Submodules are imported where used (``from tf_rlnas.nn.mlp import mlp``): :mod:`tf_rlnas.nn.precision`
must stay importable without TensorFlow (the CLI reads it before TF loads).
"""
