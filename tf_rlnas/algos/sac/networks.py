"""SAC networks: a tanh-Gaussian actor and twin critics.

Both are stacks of ``Linear`` layers: float32 parameters, and the matmul optionally in bfloat16
(``agent.matmul_dtype``; products accumulated in float32; the bias, activations, the output layers
and everything after them stay float32). Where the CPU has native bfloat16 (AVX512-BF16 / AMX) a
bf16 GEMM runs faster than float32. A bfloat16 layer computes its product one of two ways (``bf16_via``):

- ``fpmath``: a float32 BatchMatMul that oneDNN computes in bfloat16 because the process runs with
  ``TF_SET_ONEDNN_FPMATH_MODE=BF16`` (:mod:`tf_rlnas.nn.fpmath`; SAC's registry ``prepare`` hook sets
  it before TF loads for runs in bfloat16): no Cast ops, a float32 result; only for kernels of at most
  ``FPMATH_MAX_KERNEL`` weights: larger ones multiply as fast or faster through casts
  (docs/benchmarks.md has the figures).
- ``cast``: cast input and kernel to bfloat16, a bfloat16 MatMul, cast the (bf16-rounded) result
  back. Used where the math mode is off (TF imported before the CLI could ask for it) and under
  XLA, which compiles its own dots.

Only layers with a fan-in of at least ``BF16_MIN_FAN_IN`` take a bf16 path: for a first layer on
a 17-23-dim observation the float32 product is cheaper (grappler fuses MatMul + BiasAdd + ReLU
into one oneDNN kernel there; the fpmath path is no faster for it). Acting, evaluation and
serving run every matmul in float32 (``full_precision``): plain MatMuls, which the math mode does
not touch.

The twin critics are two plain MLPs, not one batched matmul ([2, B, in] x [2, in, out]): on a CPU
TensorFlow's BatchMatMul with its stock gradient is slower than two MatMuls, which TF's
inter-op scheduler runs side by side.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_rlnas.distributions import TanhNormal
from tf_rlnas.nn.fpmath import fpmath_matmul

BF16_MIN_FAN_IN = 64
# fpmath only for kernels up to this many weights (up to 512 x 512); larger ones (ACE's 1024 x 1024)
# multiply faster through casts (docs/benchmarks.md)
FPMATH_MAX_KERNEL = 2 ** 17


class Linear(keras.layers.Layer):
    """y = act(x W + b) with float32 W, b; x W computed in ``matmul_dtype`` (float32 when the
    fan-in is below ``BF16_MIN_FAN_IN``), a bfloat16 product by ``bf16_via`` (module docstring)."""

    def __init__(self, units: int, activation=None, matmul_dtype: str = "float32", bf16_via: str = "cast",
                 **kwargs):
        super().__init__(**kwargs)
        if bf16_via not in ("fpmath", "cast"):
            raise ValueError(f"bf16_via must be 'fpmath' or 'cast', not {bf16_via!r}")
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        if matmul_dtype not in ("float32", "bfloat16"):  # "auto" is resolved once, by the learner
            raise ValueError(f"matmul_dtype must be 'float32' or 'bfloat16', not {matmul_dtype!r}")
        self.matmul_dtype = tf.as_dtype(matmul_dtype)
        self.bf16_via = bf16_via

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        if fan_in < BF16_MIN_FAN_IN:
            self.matmul_dtype = tf.float32
        if self.bf16_via == "fpmath" and fan_in * self.units > FPMATH_MAX_KERNEL:
            self.bf16_via = "cast"
        self.kernel = self.add_weight(shape=(fan_in, self.units), name="kernel", initializer="glorot_uniform")
        self.bias = self.add_weight(shape=(self.units,), name="bias", initializer="zeros")

    def call(self, x, full_precision: bool = False):
        """``full_precision``: a float32 matmul whatever ``matmul_dtype`` is."""
        if full_precision or self.matmul_dtype == tf.float32:
            y = tf.matmul(x, self.kernel)
        elif self.bf16_via == "fpmath":
            y = fpmath_matmul(x, tf.convert_to_tensor(self.kernel))
        else:
            y = tf.cast(tf.matmul(tf.cast(x, self.matmul_dtype), tf.cast(self.kernel, self.matmul_dtype)),
                        tf.float32)
        return self.activation(tf.nn.bias_add(y, self.bias))


def _stack(hidden, matmul_dtype: str, name: str, out: int | None = None, bf16_via: str = "cast") -> keras.Sequential:
    """Hidden ReLU layers (+ a float32 output layer of ``out`` units). A Sequential, not a list:
    tf.train.Checkpoint does not see layers kept in plain Python lists of a Keras 3 model."""
    layers = [Linear(h, "relu", matmul_dtype, bf16_via, name=f"{name}_dense{i}") for i, h in enumerate(hidden)]
    if out is not None:
        layers.append(Linear(out, name=f"{name}_out"))
    return keras.Sequential(layers, name=name)


class TwinCritic(keras.Model):
    """Q_i(s, a) for i < n (n = 2): returns [n, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden, n: int = 2, matmul_dtype: str = "float32",
                 name="critic", bf16_via: str = "cast"):
        super().__init__(name=name)
        self.n = n
        for i in range(n):
            setattr(self, f"q{i}", _stack(hidden, matmul_dtype, f"q{i}", out=1, bf16_via=bf16_via))
        self(tf.zeros((1, obs_dim)), tf.zeros((1, act_dim)))

    def dense_layers(self) -> list[Linear]:
        return [layer for i in range(self.n) for layer in getattr(self, f"q{i}").layers]

    def call(self, obs, act):
        x = tf.concat([obs, act], axis=-1)
        return tf.stack([getattr(self, f"q{i}")(x)[:, 0] for i in range(self.n)])


class TanhGaussianActor(keras.Model):
    """obs -> (mean, log_std) of the pre-tanh Gaussian; log_std clipped to [min, max]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden, log_std_min=-20.0, log_std_max=2.0,
                 matmul_dtype: str = "float32", name="actor", bf16_via: str = "cast"):
        super().__init__(name=name)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)
        self.body = _stack(hidden, matmul_dtype, "actor", bf16_via=bf16_via)
        self.mean = Linear(act_dim, name="mean")
        self.log_std = Linear(act_dim, name="log_std")
        # call() runs the body's layers and the heads' weights itself: build them here
        self.body.build((None, obs_dim))
        for head in (self.mean, self.log_std):
            head.build((None, hidden[-1]))
        self(tf.zeros((1, obs_dim)))

    def call(self, obs, full_precision: bool = False):
        h = obs
        for layer in self.body.layers:
            h = layer(h, full_precision=full_precision)
        # both heads in one float32 matmul (their kernels side by side: one oneDNN call instead of two)
        kernel = tf.concat([self.mean.kernel, self.log_std.kernel], axis=1)
        bias = tf.concat([self.mean.bias, self.log_std.bias], axis=0)
        mean, log_std = tf.split(tf.nn.bias_add(tf.matmul(h, kernel), bias), 2, axis=-1)
        return mean, tf.clip_by_value(log_std, self.log_std_min, self.log_std_max)

    def dist(self, obs, full_precision: bool = False) -> TanhNormal:
        """``full_precision``: float32 matmuls (acting, evaluation, serving: one or a few rows);
        the updates' batches use ``matmul_dtype``."""
        mean, log_std = self(obs, full_precision=full_precision)
        return TanhNormal(mean, tf.exp(log_std))

    def dense_layers(self) -> list[Linear]:
        return list(self.body.layers) + [self.mean, self.log_std]
