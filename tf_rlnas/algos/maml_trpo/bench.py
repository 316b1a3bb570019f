"""``tf_rlnas bench maml_trpo [--config FAMILY]``: seconds per meta-iteration split into sampling,
inner loop and TRPO step, env steps/s of the sampler, second order and with ``first_order`` (with
the configured ``maml.hvp``, ``maml.jit_compile`` and ``maml.curvature_subsample``), second order
with the other curvature subsample (all rows / every 5th), and second order with the other
Hessian-vector-product methods (XLA-compiled, their faster setting; every row)."""

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


def run(cfg, seconds: float = 5.0) -> None:
    from tf_rlnas.algos.maml_trpo.config import DISCRETE

    m = cfg.maml
    print(f"MAML-TRPO {cfg.env.family}: meta-batch {m.meta_batch} x {m.fast_batch} episodes, "
          f"hidden {cfg.policy.hidden}, {m.num_steps} inner step(s), CG {m.cg_iters}, jit {m.jit_compile}, "
          f"curvature every {m.curvature_subsample} row(s), env workers {cfg.env.workers} (medians)")
    print(f"{'':40s}{'iteration s':>12s}{'sampling':>10s}{'inner':>8s}{'TRPO':>8s}{'env steps/s':>13s}")
    sub = m.curvature_subsample
    rows = [("second order", False, m.hvp, m.jit_compile, sub), ("first order", True, m.hvp, m.jit_compile, sub)]
    if m.hvp == "analytic" and cfg.env.family not in DISCRETE:  # the other curvature setting, for its cost
        rows.append(("second order", False, "analytic", m.jit_compile, 1 if sub > 1 else 5))
    rows += [("second order", False, h, True, 1) for h in ("analytic", "gauss_newton", "double_backprop")
             if h != m.hvp]
    for label, first, hvp, jit, s in rows:
        c = dataclasses.replace(cfg, maml=dataclasses.replace(m, first_order=first, hvp=hvp, jit_compile=jit,
                                                              curvature_subsample=s))
        r = _measure(c, seconds)
        label = f"{label}, {hvp}{f', curvature rows/{s}' if s > 1 else ''}{', XLA' if jit else ''}"
        print(f"{label:40s}{r['time/iteration_s']:12.3f}{r['time/sample_s']:10.3f}{r['time/inner_s']:8.3f}"
              f"{r['time/trpo_s']:8.3f}{r['time/env_steps_per_s']:13,.0f}   ({r['n']} iterations)")
