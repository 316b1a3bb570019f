"""``tf_rlnas bench sac|ace``: update steps/s of the update alone (batch, MLP sizes and env sizes
from the config; default HalfCheetah-v5 sizes, 2x256, batch 256) with 1 and 10 updates per
tf.function call, with and without jit_compile; then full training env steps/s."""

from __future__ import annotations

import dataclasses
import tempfile
import time

import numpy as np
import tensorflow as tf


def _rate(fn, seconds: float, per_call: int) -> float:
    fn()
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * per_call / (time.perf_counter() - t0)


def _mlp_macs(sizes: list[int]) -> int:
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def update_flops(agent, obs_dim: int, act_dim: int, batch: int) -> float:
    """Matmul FLOPs of one SAC update as this package computes it (2 FLOPs per multiply-add; a
    backward pass = 2x its forward): actor forward on [s'; s] (2B rows); target critics on
    (s', a'); critics forward + backward on (s, a); critics forward + input-gradient backward on
    (s, a_pi) and the actor's backward on B rows. Policy updates every ``policy_every``."""
    actor = _mlp_macs([obs_dim, *agent.actor_hidden]) + 2 * agent.actor_hidden[-1] * act_dim
    critic = 2 * _mlp_macs([obs_dim + act_dim, *agent.critic_hidden, 1])  # both critics
    fwd = lambda macs, rows: 2.0 * macs * rows  # noqa: E731
    critic_part = fwd(actor, 2 * batch) + fwd(critic, batch) + 3 * fwd(critic, batch)
    policy_part = 2 * fwd(critic, batch) + 2 * fwd(actor, batch)
    return critic_part + policy_part / agent.policy_every


def run(cfg, seconds: float = 5.0) -> None:
    from tf_rlnas import registry

    algo = "ace" if hasattr(cfg, "ace") else "sac"
    trainer_cls = registry.get(algo).load("trainer")
    B = cfg.train.batch_size
    print(f"{algo} bench  env={cfg.env.id}  actor={cfg.agent.actor_hidden}  critic={cfg.agent.critic_hidden}  "
          f"batch={B}  intra-op threads={tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")
    tr0 = None
    for jit in (False, True):
        c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, jit_compile=jit))
        with tempfile.TemporaryDirectory() as d:
            tr = trainer_cls(c, d)
            rng = np.random.default_rng(0)
            tr.buffer.add(rng.normal(size=(4096, tr.obs_dim)), rng.uniform(-1, 1, (4096, tr.act_dim)),
                          rng.normal(size=4096), rng.normal(size=(4096, tr.obs_dim)), np.zeros(4096))
            if tr0 is None:
                tr0 = tr
                flops = update_flops(cfg.agent, tr.obs_dim, tr.act_dim, B)
                floor = 194e9 / flops  # updates/s if every FLOP ran at this CPU's large-GEMM FP32 rate
                print(f"  one update = {flops / 1e9:.3f} GFLOP of matmuls; at 194 GFLOP/s (a large FP32 GEMM "
                      f"here) the floor is {floor:.0f} updates/s; matmuls in {cfg.agent.matmul_dtype}")
            for k in (1, 10):
                batch = {key: tf.constant(v) for key, v in tr.buffer.sample(rng, B, k).items()}
                ups = _rate(lambda: tr.learner.train(batch), seconds, k)
                print(f"  update alone, {'jit_compile' if jit else 'tf.function'}, {k:2d} per call: "
                      f"{ups:8.1f} updates/s  ({ups * flops / 1e9:5.1f} GFLOP/s, {ups / floor:4.0%} of the floor)")
    with tempfile.TemporaryDirectory() as d:
        c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, start_steps=0, eval_every=0),
                                run=dataclasses.replace(cfg.run, log_every=10**9))
        tr = trainer_cls(c, d)
        rng = np.random.default_rng(1)
        tr.buffer.add(rng.normal(size=(B, tr.obs_dim)), rng.uniform(-1, 1, (B, tr.act_dim)),
                      rng.normal(size=B), rng.normal(size=(B, tr.obs_dim)), np.zeros(B))
        for _ in range(3):
            tr.train_iteration()
            tr.iteration.assign_add(1)
        s0, u0, t0 = tr.env_steps, int(tr.learner.updates.numpy()), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            tr.train_iteration()
            tr.iteration.assign_add(1)
        dt = time.perf_counter() - t0
        print(f"  training loop ({cfg.env.num_envs} envs, update_every={cfg.train.update_every}, "
              f"updates_per_step={cfg.train.updates_per_step}): {(tr.env_steps - s0) / dt:8.1f} env steps/s, "
              f"{(int(tr.learner.updates.numpy()) - u0) / dt:8.1f} updates/s")
