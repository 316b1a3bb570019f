"""float32 matmuls computed in bfloat16 by oneDNN's math mode (see :mod:`tf_rlnas.nn.precision`).

:func:`fpmath_matmul` is ``x @ w`` for 2-D float32 tensors written as rank-3 ``BatchMatMulV2`` ops
(forward and both gradients), the op TensorFlow builds with the process's oneDNN math mode. With
``TF_SET_ONEDNN_FPMATH_MODE=BF16`` (:func:`bf16_fpmath_active`) each product takes bfloat16 inputs
and accumulates in float32, float32 in and out; without it the same ops are exact float32.

Its gradient is written out: TF's own BatchMatMul gradient adds broadcast reductions (Sum,
Reshape) around each product, slower than two MatMuls on a CPU; this one is two
BatchMatMuls with adjoint flags, no other op.
"""

from __future__ import annotations

import functools

import tensorflow as tf


@functools.lru_cache(maxsize=1)
def bf16_fpmath_active() -> bool:
    """True when this process's float32 BatchMatMuls compute in bfloat16: probed once with a value
    bfloat16 cannot hold (1 + 2^-12 rounds to 1)."""
    with tf.init_scope():  # eager even when first asked inside a tf.function trace
        x = tf.fill((1, 16, 16), 1.0 + 2.0 ** -12)
        z = tf.raw_ops.BatchMatMulV2(x=x, y=tf.eye(16)[None])
        return bool(z[0, 0, 0].numpy() == 1.0)


def bf16_path(xla: bool = False) -> str:
    """How this process computes a bfloat16 layer: ``fpmath`` where the oneDNN math mode is on (probed)
    and the update is not XLA-compiled, else ``cast``."""
    return "fpmath" if not xla and bf16_fpmath_active() else "cast"


@tf.custom_gradient
def fpmath_matmul(x, w):
    """``x @ w`` ([B, K] x [K, N], float32) through BatchMatMulV2 in forward and backward."""
    y = tf.raw_ops.BatchMatMulV2(x=x[None], y=w[None])[0]

    def grad(dy):
        dx = tf.raw_ops.BatchMatMulV2(x=dy[None], y=w[None], adj_y=True)[0]
        dw = tf.raw_ops.BatchMatMulV2(x=x[None], y=dy[None], adj_x=True)[0]
        return dx, dw

    return y, grad
