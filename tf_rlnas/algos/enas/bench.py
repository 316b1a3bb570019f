"""``tf_rlnas bench enas``: shared-CNN train steps/s and images/s (a fresh controller sample every
step, as in search; CIFAR-sized 32x32x3 inputs; batch, layers and filters from the config, e.g.
``--set data.batch_size=128 --set child.num_layers=12 --set child.filters=36``), and controller
samples/s (one arc per call, and ``num_aggregate`` arcs per batched call)."""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from tf_rlnas.algos.enas.child import ChildNet, disable_bn_relu_fusion
from tf_rlnas.algos.enas.controller import Controller
from tf_rlnas.algos.enas.trainer import make_child_step
from tf_rlnas.nn.optim import NesterovSGD


def _timed(fn, seconds: float) -> tuple[int, float]:
    fn(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        fn(n + 1)
        n += 1
    return n, time.perf_counter() - t0


def run(cfg, seconds: float = 10.0) -> None:
    c, k = cfg.child, cfg.controller
    B, L, F = cfg.data.batch_size, c.num_layers, c.filters
    shape = (32, 32, 3)
    disable_bn_relu_fusion()
    child = ChildNet(L, F, 10, shape, keep_prob=c.keep_prob, compute_dtype=c.compute_dtype)
    ctrl = Controller(L, k.lstm_size, tanh_constant=k.tanh_constant, temperature=k.temperature)
    opt = NesterovSGD(c.lr_max, c.momentum, c.l2)
    opt.build(child.trainable_variables)
    params = sum(int(np.prod(v.shape)) for v in child.trainable_variables)
    print(f"enas bench  images {shape}  batch={B}  layers={L}  filters={F}  shared params={params / 1e6:.2f}M  "
          f"compute={child.conv_dtype}{' (auto)' if c.compute_dtype == 'auto' else ''}  "
          f"intra-op threads={tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")

    step = make_child_step(child, opt, ctrl, c.grad_clip, B, shape)

    x = tf.random.stateless_normal((B, *shape), seed=[1, 2])
    y = tf.random.stateless_uniform((B,), seed=[3, 4], maxval=10, dtype=tf.int32)
    t0 = time.perf_counter()
    step(x, y, tf.constant([0, 0], tf.int64))
    print(f"  first call (trace + one step): {time.perf_counter() - t0:.1f} s")
    n, dt = _timed(lambda i: step(x, y, tf.constant([1, i], tf.int64))[0].numpy(), seconds)
    print(f"  shared CNN, fresh arc every step: {n / dt:6.2f} train steps/s  {n * B / dt:7.1f} images/s")

    @tf.function(input_signature=[tf.TensorSpec([None, *shape]), tf.TensorSpec([2], tf.int64)])
    def infer(x, seed):
        arc = ctrl.sample(1, seed)
        return child(x, arc["branches"][0], arc["skips"][0], training=False)
    n, dt = _timed(lambda i: infer(x, tf.constant([2, i], tf.int64)).numpy(), seconds / 2)
    print(f"  shared CNN inference (controller reward pass): {n * B / dt:7.1f} images/s")

    one = tf.function(lambda seed: ctrl.sample(1, seed), input_signature=[tf.TensorSpec([2], tf.int64)])
    many = tf.function(lambda seed: ctrl.sample(k.num_aggregate, seed), input_signature=[tf.TensorSpec([2], tf.int64)])
    n, dt = _timed(lambda i: one(tf.constant([3, i], tf.int64))["log_prob"].numpy(), seconds / 4)
    print(f"  controller: {n / dt:7.1f} samples/s one per call ({dt / n * 1e3:.2f} ms per sample)")
    n, dt = _timed(lambda i: many(tf.constant([4, i], tf.int64))["log_prob"].numpy(), seconds / 4)
    print(f"  controller: {n * k.num_aggregate / dt:7.1f} samples/s, {k.num_aggregate} per batched call")
