"""Shared pieces of the ``tf_rlnas bench`` commands: a steady call rate and this machine's GEMM rate
(the yardstick the benchmarks quote their compute as a percentage of)."""

from __future__ import annotations

import time


def rate(fn, seconds: float, per_call: int = 1) -> float:
    """Calls (x ``per_call``) per second of ``fn`` over ~``seconds`` after two warm-up calls."""
    fn()
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * per_call / (time.perf_counter() - t0)


def gemm_rate(dtype: str, seconds: float = 1.0, n: int = 1024) -> float:
    """FLOP/s of an n x n x n matmul chain in ``dtype`` (float32 accumulation for bf16)."""
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_normal((n, n), [1, 2], dtype=tf.float32), dtype)
    reps = 8

    @tf.function
    def f(x):  # a graph loop with a different left operand each time: nothing to fold or share
        acc = tf.zeros((), tf.float32)
        for i in tf.range(reps):
            acc += tf.cast(tf.reduce_sum(tf.matmul(x + tf.cast(i, dtype), x)[:1, :1]), tf.float32)
        return acc

    return rate(lambda: f(a).numpy(), seconds, 2 * n ** 3 * reps)
