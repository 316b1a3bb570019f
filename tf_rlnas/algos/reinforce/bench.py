"""``tf_rlnas bench reinforce``: update steps/s (the tf.function alone) and training env steps/s."""

from __future__ import annotations

import tempfile
import time

import numpy as np
import tensorflow as tf


def _rate(fn, seconds: float) -> tuple[float, int]:
    fn()  # warm-up (trace)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0), n


def run(cfg, seconds: float = 5.0) -> None:
    from tf_rlnas.algos.reinforce.trainer import ReinforceTrainer

    with tempfile.TemporaryDirectory() as d:
        tr = ReinforceTrainer(cfg, d)
        batch = 1024
        obs = tf.constant(np.random.default_rng(0).normal(size=(batch, tr.obs_dim)), tf.float32)
        acts = tf.constant(np.random.default_rng(1).normal(size=(batch, tr.act_dim)), tf.float32)
        adv = tf.constant(np.random.default_rng(2).normal(size=batch), tf.float32)
        ups, _ = _rate(lambda: tr.learner.update(obs, acts, adv, adv), seconds)
        one = tf.constant(obs.numpy()[:1])
        acts_s, _ = _rate(lambda: tr.learner.act(one), seconds)
        steps0 = tr.env_steps
        t0 = time.perf_counter()
        iters = 0
        while time.perf_counter() - t0 < seconds or iters < 2:
            tr.train_iteration()
            tr.iteration.assign_add(1)
            iters += 1
        dt = time.perf_counter() - t0
    print(f"reinforce bench  env={cfg.env.id}  actor={cfg.actor.hidden}  threads={tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")
    print(f"  update (tf.function, batch {batch}):   {ups:9.1f} updates/s")
    print(f"  act (tf.function, 1 obs):            {acts_s:9.1f} calls/s")
    print(f"  training loop:                       {(tr.env_steps - steps0) / dt:9.1f} env steps/s, "
          f"{iters / dt:.2f} updates/s ({cfg.train.episodes_per_update} episodes/update)")
