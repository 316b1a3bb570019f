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
from tf_rlnas.errors import UserError
from tf_rlnas.nn.optim import NesterovSGD


def _timed(fn, seconds: float) -> tuple[int, float]:
    fn(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        fn(n + 1)
        n += 1
    return n, time.perf_counter() - t0


def run_port(peer_python: str, peer_src: str, batch: int, layers: int, filters: int, seconds: float) -> dict:
    """The port's shared-CNN step at these sizes in its own Python (``port_bench.py``), all cores."""
    import json
    import os
    import subprocess

    script = os.path.join(os.path.dirname(__file__), "port_bench.py")
    out = subprocess.run([peer_python, script, peer_src, str(batch), str(layers), str(filters), str(seconds),
                          str(os.cpu_count() or 1)], capture_output=True, text=True)
    if out.returncode != 0:
        raise UserError(f"the port's bench failed: {(out.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(cfg, seconds: float = 10.0, peer_python: str | None = None, peer_src: str | None = None) -> None:
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
    ours = n * B / dt
    if peer_python:
        port = run_port(peer_python, peer_src, B, L, F, seconds)
        print(f"  port enas_pytorch (torch {port['torch']}, {port['threads']} threads), same step and sizes: "
              f"{port['images_per_s']:7.1f} images/s ({port['ms_per_step']:.0f} ms per step) -> "
              f"ratio ours/port {ours / port['images_per_s']:.2f}x")

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
