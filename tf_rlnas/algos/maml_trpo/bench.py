"""``tf_rlnas bench maml_trpo [--config FAMILY]``: seconds per meta-iteration split into sampling,
inner loop and TRPO step, env steps/s of the sampler, second order and with ``first_order`` (with
the configured ``maml.hvp``, ``maml.jit_compile`` and ``maml.curvature_subsample``), second order
with the other curvature subsample (all rows / every 5th), and second order with the other
Hessian-vector-product methods (XLA-compiled, their faster setting; every row). For a MuJoCo family
also the machine's physics floor: ``mj_step`` of the same model in one process per core, as env
steps/s (``frame_skip`` physics steps each), beside which the sampler's rate shows what is left."""

from __future__ import annotations

import dataclasses
import tempfile
import time

import numpy as np


def _measure(cfg, seconds: float) -> dict:
    from tf_rlnas.algos.maml_trpo.trainer import MAMLTrainer

    with tempfile.TemporaryDirectory() as d:
        tr = MAMLTrainer(cfg, d)
        tr.train_iteration()  # traces and compiles
        tr.iteration.assign_add(1)
        rows, t0 = [], time.perf_counter()
        while not rows or (time.perf_counter() - t0 < seconds and len(rows) < 20):
            m = tr.train_iteration()
            tr.iteration.assign_add(1)
            rows.append(m)
        tr.close()
    keys = ("time/iteration_s", "time/sample_s", "time/inner_s", "time/trpo_s", "time/env_steps_per_s")
    return {k: float(np.median([r[k] for r in rows])) for k in keys} | {"n": len(rows)}


def _mj_rate(family: str, kwargs: dict, seconds: float) -> tuple[float, int]:
    """Physics steps/s of ``mujoco.mj_step`` on the family's model in this process, and its frame_skip."""
    import mujoco

    from tf_rlnas.envs.meta import make_task_env

    env = make_task_env(family, kwargs)
    env.reset(seed=0)
    model, data = env.model, env.data
    for _ in range(100):
        mujoco.mj_step(model, data)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            mujoco.mj_step(model, data)
        n += 100
    rate = n / (time.perf_counter() - t0)
    frame_skip = int(env.frame_skip)
    env.close()
    return rate, frame_skip


def physics_floor(family: str, kwargs: dict, seconds: float, processes: int) -> dict:
    """The machine's MuJoCo floor for a family: ``processes`` processes (spawned, one per core)
    stepping the family's model with ``mj_step`` and nothing else, summed; env steps/s = that / frame_skip."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(processes) as pool:
        out = pool.starmap(_mj_rate, [(family, kwargs, seconds)] * processes)
    total = sum(r for r, _ in out)
    return {"mj_steps_per_s": total, "frame_skip": out[0][1], "env_steps_per_s": total / out[0][1],
            "processes": processes}


def run_port(python: str, src: str, config: str, seconds: float) -> dict:
    """pytorch-maml-rl's train.py loop on its ``config`` in its own Python (``port_bench.py``), one
    sampler worker process per core."""
    import json
    import os
    import subprocess

    from tf_rlnas.errors import UserError

    script = os.path.join(os.path.dirname(__file__), "port_bench.py")
    out = subprocess.run([python, script, src, config, str(os.cpu_count() or 1), str(seconds)],
                         capture_output=True, text=True, cwd=src)
    if out.returncode != 0:
        raise UserError(f"the port's bench failed: {(out.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(cfg, seconds: float = 5.0, peer: tuple[str, str, str] | None = None, quick: bool = False) -> None:
    """``quick``: the config's own settings, second and first order only (not the other curvature
    subsample, nor the other Hessian-vector products)."""
    from tf_rlnas.algos.maml_trpo.config import DISCRETE

    m = cfg.maml
    print(f"MAML-TRPO {cfg.env.family}: meta-batch {m.meta_batch} x {m.fast_batch} episodes, "
          f"hidden {cfg.policy.hidden}, {m.num_steps} inner step(s), CG {m.cg_iters}, jit {m.jit_compile}, "
          f"curvature every {m.curvature_subsample} row(s), env workers {cfg.env.workers} (medians)")
    print(f"{'':40s}{'iteration s':>12s}{'sampling':>10s}{'inner':>8s}{'TRPO':>8s}{'env steps/s':>13s}")
    sub = m.curvature_subsample
    rows = [("second order", False, m.hvp, m.jit_compile, sub), ("first order", True, m.hvp, m.jit_compile, sub)]
    if not quick and m.hvp == "analytic" and cfg.env.family not in DISCRETE:  # the other curvature setting, for its cost
        rows.append(("second order", False, "analytic", m.jit_compile, 1 if sub > 1 else 5))
    if not quick:
        rows += [("second order", False, h, True, 1) for h in ("analytic", "gauss_newton", "double_backprop")
                 if h != m.hvp]
    mujoco_family = cfg.env.family not in DISCRETE and cfg.env.family != "2dnav"
    measured = []
    for label, first, hvp, jit, s in rows:
        c = dataclasses.replace(cfg, maml=dataclasses.replace(m, first_order=first, hvp=hvp, jit_compile=jit,
                                                              curvature_subsample=s))
        r = _measure(c, seconds)
        label = f"{label}, {hvp}{f', curvature rows/{s}' if s > 1 else ''}{', XLA' if jit else ''}"
        print(f"{label:40s}{r['time/iteration_s']:12.3f}{r['time/sample_s']:10.3f}{r['time/inner_s']:8.3f}"
              f"{r['time/trpo_s']:8.3f}{r['time/env_steps_per_s']:13,.0f}   ({r['n']} iterations)")
        measured.append(r)
    if peer is not None:
        port = run_port(*peer, seconds=max(seconds, 20.0))
        ours = measured[0]["time/iteration_s"]
        print(f"pytorch-maml-rl (torch {port['torch']}, {port['workers']} sampler workers, 1 torch thread each, {peer[2]}: meta-batch "
              f"{port['meta_batch']} x {port['fast_batch']}, hidden {port['hidden']}, "
              f"{'first' if port['first_order'] else 'second'} order): {port['median_s_per_iteration']:.3f} s per "
              f"iteration ({port['iterations']} iterations) -> ratio port/ours (first row) {port['median_s_per_iteration'] / ours:.2f}x")
    if mujoco_family:
        import os
        floor = physics_floor(cfg.env.family, dict(cfg.env.kwargs), min(seconds, 3.0), os.cpu_count() or 1)
        best = max(r["time/env_steps_per_s"] for r in measured)
        print(f"MuJoCo physics floor ({floor['processes']} processes, mj_step only): "
              f"{floor['mj_steps_per_s']:,.0f} physics steps/s = {floor['env_steps_per_s']:,.0f} env steps/s "
              f"(frame_skip {floor['frame_skip']}); the sampler's best above: {best:,.0f} env steps/s = "
              f"{best / floor['env_steps_per_s']:.0%} of the floor")
