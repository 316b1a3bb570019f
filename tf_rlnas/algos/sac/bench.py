"""``tf_rlnas bench sac|ace``: the update alone and the training loop, at the config's sizes (default
HalfCheetah-v5, 2x256, batch 256, 1 update per env step).

Printed: this machine's large-GEMM rate in float32 and bfloat16 (measured now), one update's matmul
FLOPs and the floors they imply; the update alone (updates/s, 1 and 10 per call) for every path
(float32 / bfloat16 matmuls x tf.function / XLA; bfloat16 via oneDNN's math mode and via casts,
see ``networks.py``), measured on the path the training loop runs: one
compiled call with no inputs that draws the batches from the TF replay buffer and runs the updates
(as the peers' ``train(gradient_steps)`` samples their buffers too), each path in a fresh process
as the peers are; the training loop's steady env steps/s with the config's path and the share of a
loop step spent in the env, in acting (the compiled call with no update), in the update and
elsewhere (Python bookkeeping, argument binding, the trainer loop); the update alone and the loop
with the other ``agent.update_order``; the loop with ``train.update_every: 10`` (one call per 10 env
steps with 10 updates: SB3's train_freq 10 / gradient_steps 10); and with ``--compare sb3|sbx``
the peer measured in a subprocess (``--peer-python``) at train_freq 1 and 10, with the ratios.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from tf_rlnas.core.benchkit import gemm_rate
from tf_rlnas.core.benchkit import rate as _rate
from tf_rlnas.core.trainer import Budget

PEERS = {"sb3": ("stable_baselines3", "stable-baselines3"), "sbx": ("sbx", "sbx-rl")}
K_STEPS = 10  # the loop is also measured with one call per K env steps (ours and the peers')


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


def _with(cfg, dtype=None, jit=None, **train):
    agent = cfg.agent if dtype is None else dataclasses.replace(cfg.agent, matmul_dtype=dtype)
    t = dataclasses.replace(cfg.train, **train) if jit is None else dataclasses.replace(cfg.train, jit_compile=jit, **train)
    return dataclasses.replace(cfg, agent=agent, train=t)


def _fill(tr, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    tr.buffer.add(rng.normal(size=(n, tr.obs_dim)), rng.uniform(-1, 1, (n, tr.act_dim)),
                  rng.normal(size=n), rng.normal(size=(n, tr.obs_dim)), np.zeros(n))


def measure_loop(trainer_cls, cfg, seconds: float) -> dict:
    """Steady env steps/s of ``Trainer.fit`` (the real loop) and where a loop step's time goes."""
    B = cfg.train.batch_size
    warm = 100  # iterations before timing (traces, warm caches); then ~``seconds`` of timed loop
    c = _with(cfg, start_steps=0, eval_every=0, eval_episodes=1, total_env_steps=10**9)
    c = dataclasses.replace(c, run=dataclasses.replace(c.run, log_every=10**9, checkpoint_every=10**9))
    with tempfile.TemporaryDirectory() as d:
        tr = trainer_cls(c, d)
        _fill(tr, B, 1)
        acc = {"env": 0.0, "call": 0.0, "calls": 0}
        step, env_step = tr.venv.step, tr.env_step

        def timed_step(a):
            t0 = time.perf_counter()
            out = step(a)
            acc["env"] += time.perf_counter() - t0
            return out

        class TimedCall:
            metrics = env_step.metrics

            def __call__(self, p, k, random):
                t0 = time.perf_counter()
                out = env_step(p, k, random)
                acc["call"] += time.perf_counter() - t0
                acc["calls"] += 1
                return out

        tr.venv.step, tr.env_step = timed_step, TimedCall()
        marks = []

        def on_it(it):
            now = time.perf_counter()
            if it == warm or (marks and now - marks[0][0] >= seconds and len(marks) == 1):
                marks.append((now, tr.env_steps, int(tr.learner.updates.numpy()), dict(acc)))

        budget = tr.budget
        tr.budget = lambda: Budget(1, 1) if len(marks) == 2 else budget()  # stop once the timed window closes
        tr.fit(progress=False, on_iteration=on_it)
        (t0, s0, u0, a0), (t1, s1, u1, a1) = marks
        wall = t1 - t0
        # acting alone: the same compiled call with 0 updates
        p = np.zeros((c.env.num_envs, tr.obs_dim + 3), np.float32)
        act_s = 1.0 / _rate(lambda: env_step(p, 0, False).numpy(), min(seconds, 2.0), 1)
        calls = a1["calls"] - a0["calls"]
        env_t, call_t = a1["env"] - a0["env"], a1["call"] - a0["call"]
        act_t = min(calls * act_s, call_t)
        return {"env_steps_per_s": (s1 - s0) / wall, "updates_per_s": (u1 - u0) / wall,
                "share_env": env_t / wall, "share_act": act_t / wall, "share_update": (call_t - act_t) / wall,
                "share_else": (wall - env_t - call_t) / wall, "ms_per_step": 1e3 * wall / max(s1 - s0, 1)}


def measure_update(trainer_cls, cfg, seconds: float) -> dict:
    """Updates/s at 1 and 10 per call on the loop's own path (``EnvStep.updates_only``)."""
    with tempfile.TemporaryDirectory() as d:
        tr = trainer_cls(cfg, d)
        _fill(tr, 4096, 0)
        out = {"bf16_via": tr.learner.bf16_via}
        for k in (1, 10):
            fn = tr.env_step.updates_only(k)  # replay sampling on the TF side included
            out[str(k)] = _rate(lambda: fn()["critic_loss"].numpy(), seconds, k)
        tr.venv.close()
    return out


def _fresh_process(what: str, algo: str, cfg, seconds: float, no_fpmath: bool = False) -> dict:
    """Run ``measure_update`` or ``measure_loop`` for ``cfg`` in a new Python process, as the peers
    are: measured in one process after one another, a path ran ~10-15% slower when trainers of
    other paths (an XLA one above all) had been built before it. The child inherits this process's
    oneDNN math mode; ``no_fpmath`` starts it without (bfloat16 layers then multiply via casts)."""
    from tf_rlnas import config as C
    from tf_rlnas.nn.precision import FPMATH_ENV

    req = json.dumps({"what": what, "algo": algo, "cfg": C.to_dict(cfg), "seconds": seconds})
    env = {k: v for k, v in os.environ.items() if not (no_fpmath and k == FPMATH_ENV)}
    out = subprocess.run([sys.executable, "-c", "from tf_rlnas.algos.sac.bench import _child; _child()"],
                         input=req, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"bench subprocess failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child() -> None:
    from tf_rlnas import config as C
    from tf_rlnas import registry
    from tf_rlnas.core.seeding import configure_threads

    req = json.loads(sys.stdin.read())
    spec = registry.get(req["algo"])
    cfg = C.from_dict(spec.load("config"), req["cfg"])
    configure_threads(cfg.run.intra_op_threads, cfg.run.inter_op_threads)
    trainer_cls = spec.load("trainer")
    fn = measure_update if req["what"] == "update" else measure_loop
    print(json.dumps(fn(trainer_cls, cfg, req["seconds"])))


def run_peer(peer: str, python: str, cfg, seconds: float, k: int = 1) -> dict | None:
    module, dist = PEERS[peer]
    python = os.path.abspath(python) if os.sep in python else python  # it runs from a temporary cwd
    probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True)
    if probe.returncode != 0:
        print(f"  --compare {peer}: '{module}' is not importable by {python}; install it in a separate "
              f"venv (python -m venv /tmp/peers && /tmp/peers/bin/pip install {dist} 'gymnasium[mujoco]') "
              f"and pass --peer-python /tmp/peers/bin/python")
        return None
    script = os.path.join(os.path.dirname(__file__), "peer_bench.py")
    threads = os.cpu_count() or 1  # the peer's own default: all cores (our intra-op setting is ours)
    hidden = ",".join(str(h) for h in cfg.agent.actor_hidden)
    # the peers' gymnasium + MuJoCo 3.17 write MUJOCO_LOG.TXT into the cwd and SB3's logger an
    # SB3-<date> folder into the temporary directory: both go into this one, removed afterwards
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run([python, script, peer, cfg.env.id, hidden, str(cfg.train.batch_size), str(seconds),
                              str(threads), str(k)], capture_output=True, text=True, cwd=cwd,
                             env={**os.environ, "TMPDIR": cwd})
    if out.returncode != 0:
        print(f"  --compare {peer}: the peer run failed: {out.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(cfg, seconds: float = 5.0, compare: tuple[str, ...] = (), peer_python: str | None = None,
        quick: bool = False) -> None:
    """``quick``: the config's own path only (its update alone and its training loop), no sweep of
    the other dtypes, XLA, update orders and update_every."""
    from tf_rlnas import registry
    from tf_rlnas.nn.precision import resolve_dtype
    from tf_rlnas.core.seeding import configure_threads

    configure_threads(cfg.run.intra_op_threads, cfg.run.inter_op_threads)  # before TF runs any op
    algo = "ace" if hasattr(cfg, "ace") else "sac"
    trainer_cls = registry.get(algo).load("trainer")
    B = cfg.train.batch_size
    print(f"{algo} bench  env={cfg.env.id}  actor={cfg.agent.actor_hidden}  critic={cfg.agent.critic_hidden}  "
          f"batch={B}  threads intra-op={tf.config.threading.get_intra_op_parallelism_threads() or 'default'} "
          f"inter-op={tf.config.threading.get_inter_op_parallelism_threads() or 'default'}  "
          f"cpus={os.cpu_count()}")
    dtypes = ["float32"] + (["bfloat16"] if resolve_dtype("auto") == "bfloat16" else [])
    rates = {dt: gemm_rate(dt) for dt in dtypes}
    print("  large GEMM (1024^3, measured now): " + ", ".join(f"{dt} {r / 1e9:.0f} GFLOP/s" for dt, r in rates.items())
          + ("" if "bfloat16" in rates else "  (no native bfloat16 on this CPU: bf16 path not measured)"))
    best = {}
    with tempfile.TemporaryDirectory() as d:
        tr = trainer_cls(cfg, d)
        flops = update_flops(cfg.agent, tr.obs_dim, tr.act_dim, B)
        tr.venv.close()
        del tr
    print(f"  one update = {flops / 1e9:.3f} GFLOP of matmuls -> floor "
          + ", ".join(f"{rates[k] / flops:.0f} updates/s in {k}" for k in rates))
    print("  (each of our paths below runs in a fresh process, as the peers do)")
    via = {}  # path -> how its bfloat16 layers multiply, as the child process reported

    def measure(dt: str, jit: bool, force: str | None = None) -> dict:
        res = _fresh_process("update", algo, _with(cfg, dt, jit), seconds, no_fpmath=force == "cast")
        name = dt if dt == "float32" else f"{dt} ({res['bf16_via']})"
        via[(dt, jit, force)] = res["bf16_via"]
        for k in (1, 10):
            ups = res[str(k)]
            best[(dt, jit, force, k)] = ups
            print(f"  update alone, {name:17s} {'XLA        ' if jit else 'tf.function'}, {k:2d} per call: "
                  f"{ups:7.1f} updates/s  ({ups * flops / 1e9:5.1f} GFLOP/s, "
                  f"{ups * flops / rates[dt]:4.0%} of the {dt} GEMM rate)")
        return res

    dtype = resolve_dtype(cfg.agent.matmul_dtype)
    jit = bool(cfg.train.jit_compile)
    if quick:
        measure(dtype, jit)
    else:
        for dt in dtypes:
            if "fpmath" in measure(dt, False)["bf16_via"]:
                measure(dt, False, "cast")  # the same dtype without the math mode, for comparison
            measure(dt, True)
    path = (f"{dtype} matmuls{' (auto)' if cfg.agent.matmul_dtype == 'auto' else ''}"
            f"{' via ' + via.get((dtype, jit, None), '?') if dtype == 'bfloat16' else ''}, "
            f"{'XLA' if jit else 'tf.function'}")
    ours_update = best.get((dtype, jit, None, 1))
    ours_update10 = best.get((dtype, jit, None, 10))
    order = cfg.agent.update_order
    other = "simultaneous" if order == "sequential" else "sequential"
    alt_cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, update_order=other))
    loop = _fresh_process("loop", algo, cfg, seconds)
    if quick:
        print(f"  training loop ({path}, update_order={order}): {loop['env_steps_per_s']:7.1f} env steps/s, "
              f"{loop['ms_per_step']:.2f} ms per env step (--quick: the config's path only)")
        return
    alt_update = _fresh_process("update", algo, alt_cfg, seconds)
    print(f"  update alone, {path}, update_order={other} "
          f"(the config's: {order}): {alt_update['1']:7.1f} / {alt_update['10']:7.1f} updates/s at 1 / 10 per call")
    print(f"  training loop ({path}, update_order={order}; {cfg.env.num_envs} env(s), "
          f"update_every={cfg.train.update_every}, updates_per_step={cfg.train.updates_per_step}): "
          f"{loop['env_steps_per_s']:7.1f} env steps/s, "
          f"{loop['updates_per_s']:7.1f} updates/s, {loop['ms_per_step']:.2f} ms per env step")
    print(f"    share of a loop step: env {loop['share_env']:.0%}, acting {loop['share_act']:.0%}, "
          f"update {loop['share_update']:.0%}, elsewhere {loop['share_else']:.0%}")
    alt_loop = _fresh_process("loop", algo, alt_cfg, seconds)
    print(f"  training loop, update_order={other}: {alt_loop['env_steps_per_s']:7.1f} env steps/s "
          f"({alt_loop['ms_per_step']:.2f} ms: env {alt_loop['share_env']:.0%}, acting {alt_loop['share_act']:.0%}, "
          f"update {alt_loop['share_update']:.0%}, elsewhere {alt_loop['share_else']:.0%})")
    k_loop = None
    if cfg.train.update_every == 1 and cfg.train.updates_per_step == 1.0:
        # SB3's train_freq K / gradient_steps K: one call with K updates every K env steps
        k_loop = _fresh_process("loop", algo, _with(cfg, update_every=K_STEPS), seconds)
        print(f"  training loop, update_every={K_STEPS} (= train_freq {K_STEPS}, gradient_steps {K_STEPS}; the same "
              f"update-to-data ratio): {k_loop['env_steps_per_s']:7.1f} env steps/s ({k_loop['ms_per_step']:.2f} ms: "
              f"env {k_loop['share_env']:.0%}, acting {k_loop['share_act']:.0%}, update {k_loop['share_update']:.0%}, "
              f"elsewhere {k_loop['share_else']:.0%})")
    for peer in compare:
        res = run_peer(peer, peer_python or sys.executable, cfg, seconds, K_STEPS if k_loop else 1)
        if res is None:
            continue
        print(f"  peer {peer} {res['version']}: update alone {res['updates_per_s']:7.1f} updates/s (10 per call), "
              f"training loop {res['env_steps_per_s']:7.1f} env steps/s")
        msg = (f"    ratio ours/{peer}: training loop {loop['env_steps_per_s'] / res['env_steps_per_s']:.2f}x "
               f"({order}; {alt_loop['env_steps_per_s'] / res['env_steps_per_s']:.2f}x {other})")
        if ours_update:
            msg += (f", update alone {ours_update10 / res['updates_per_s']:.2f}x at 10 per call each "
                    f"({ours_update / res['updates_per_s']:.2f}x with ours at 1 per call; {path}, {order}; "
                    f"{alt_update['10'] / res['updates_per_s']:.2f}x / {alt_update['1'] / res['updates_per_s']:.2f}x "
                    f"{other})")
        print(msg)
        if k_loop and "env_steps_per_s_k" in res:
            print(f"    at train_freq {K_STEPS} / gradient_steps {K_STEPS} each: {peer} loop {res['env_steps_per_s_k']:7.1f} "
                  f"env steps/s, ratio ours/{peer} {k_loop['env_steps_per_s'] / res['env_steps_per_s_k']:.2f}x")
