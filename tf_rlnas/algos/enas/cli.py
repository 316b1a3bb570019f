"""ENAS's own commands, registered with the CLI (``tf_rlnas.clikit.Extensions``):

- ``compare-arcs`` (:mod:`tf_rlnas.algos.enas.compare`): retrain the derived architecture beside
  random ones and a plain conv stack (same config, budget and seeds) and tabulate their test accuracies;
- ``derive``: the architecture a search's checkpoint of epoch E derives;
- ``bench enas --controller-task ...``: how far the controller learns on a synthetic reward.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tf_rlnas.algos.enas import compare
from tf_rlnas.clikit import fraction, int_list, load_run, nonnegative_float, peer_source, positive_float, positive_int
from tf_rlnas.core import rundir
from tf_rlnas.errors import UserError


def register(ext, algo: str) -> None:

    ext.command("compare-arcs", help="ENAS: retrain the derived architecture beside random ones and a plain conv "
                                     "stack (same budget and seed) and tabulate test accuracy",
                add_arguments=compare.add_arguments, run=compare.cmd_compare_arcs,
                description=compare.cmd_compare_arcs.__doc__,
                epilog="example:\n  tf_rlnas compare-arcs --config fashion_mnist_fixed --random 3 --seeds 0,1,2")
    ext.command("derive", help="ENAS: the architecture a search's checkpoint of epoch E derives (= a search of "
                               "E epochs), to RUN_DIR/derived/epoch-E.json",
                add_arguments=_derive_arguments, run=cmd_derive, description=cmd_derive.__doc__,
                epilog="example:\n  tf_rlnas train enas --config fashion_mnist   # keeps every epoch's checkpoint\n"
                       "  tf_rlnas derive runs/enas_fashion_mnist --epoch 5")
    ext.bench_options(algo, add_arguments=_bench_arguments, run=_bench_controller_task, kwargs=_bench_kwargs)


def cmd_derive(args) -> int:
    """ENAS: derive the architecture a search's checkpoint of epoch E stands for, exactly as the search
    derives at its end (same sampling seed and validation batches), and write it to
    RUN_DIR/derived/epoch-E.json. With child.lr_t0 set (the shipped search configs) the shared weights'
    schedule does not depend on child.epochs, so it is the architecture.json a search of E epochs would
    write: which search budget is enough? -> retrain derived/epoch-*.json with compare-arcs --arc.
    Needs that epoch's checkpoint (keep them with --set run.keep_checkpoints=N, or derive during the
    search with --set search.derive_every=1)."""
    if args.epoch is not None and args.epoch < 1:
        raise UserError("--epoch must be >= 1")
    saved = rundir.saved_config(args.run_dir) if os.path.isdir(args.run_dir) else None
    if saved is not None and saved[0] != "enas":  # checked before the data and network are built
        raise UserError(f"derive applies to ENAS search runs; {args.run_dir} is a {saved[0]} run")
    if saved is not None and saved[1].get("mode") == "fixed":
        raise UserError(f"{args.run_dir} is a fixed-mode retrain: derive needs a search run (mode: search)")
    _, cfg, trainer = load_run(args.run_dir, number=args.epoch)
    try:
        rundir.ensure_writable(os.path.join(args.run_dir, "derived"))  # a read-only run: one line, before the work
        if cfg.child.lr_t0 is None:
            print("note: child.lr_t0 is null (one cosine cycle over child.epochs): this is the architecture at "
                  "this epoch of this run, not what a shorter search (whose cycle is shorter) would derive",
                  file=sys.stderr)
        result = trainer.derive()
        path = trainer.write_derived(result, announce=not args.json)
    finally:
        trainer.close()
    if args.json:
        print(json.dumps({**result, "path": path}))
    return 0


def _derive_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("run_dir", metavar="RUN_DIR")
    d.add_argument("--epoch", type=int, default=None, metavar="E",
                   help="the checkpoint of this epoch (default: the latest)")
    d.add_argument("--json", action="store_true", help="print the result (and its path) as one JSON object")


# ---- bench enas --controller-task ----------------------------------------------------------------

TASK_OPTIONS = ("updates", "trials", "signal", "noise", "skip_share", "reward_corr")


def _bench_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("--compare", choices=["port"], default=None,
                   help="also time the TDeVries PyTorch port's shared-CNN step at the same sizes in a subprocess "
                        "and print the ratio (needs --peer-python and --peer-src; never a dependency)")
    b.add_argument("--peer-python", default=None, metavar="PYTHON", help="--compare: a Python with torch")
    b.add_argument("--peer-src", default=None, metavar="DIR",
                   help="--compare: the port's source tree, patched for CPU (models/shared_cnn.py, ...)")
    b.add_argument("--controller-task", action="store_true",
                   help="instead of throughput, how far the config's controller learns in --updates "
                        "REINFORCE steps on a synthetic additive reward with a known optimum (minutes per knob, "
                        "not a search)")
    b.add_argument("--updates", type=int_list, default=None, metavar="N,N,...",
                   help="--controller-task: measure after these numbers of controller updates "
                        "(default 0,200,500,1000; a 10-epoch search with 20 steps an epoch makes 200)")
    b.add_argument("--trials", type=positive_int, default=None, metavar="K",
                   help="--controller-task: landscapes (and fresh controllers) to average over (default 3)")
    b.add_argument("--signal", type=positive_float, default=None,
                   help="--controller-task: sd of the true score over uniform architectures (default 0.05)")
    b.add_argument("--noise", type=nonnegative_float, default=None,
                   help="--controller-task: sd of the noise of one reward (default 0.03: one 256-image batch)")
    b.add_argument("--skip-share", type=fraction, default=None,
                   help="--controller-task: share of the true score's variance from the skips (default 0.3)")
    b.add_argument("--reward-corr", type=fraction, default=None, metavar="R",
                   help="--controller-task: correlation of the reward with the true score (default 1; "
                        "shared-weight rewards misrank: R < 1 mixes in an independent landscape)")


def _bench_kwargs(args) -> dict:
    peer = peer_source(args, os.path.join("models", "shared_cnn.py"), "the port")
    return {} if peer is None else {"peer_python": peer[0], "peer_src": peer[1]}


def _bench_controller_task(cfg, args) -> bool:
    """``bench enas --controller-task``: run it (True); a task option without it is refused."""
    task = {k: getattr(args, k) for k in TASK_OPTIONS if getattr(args, k) is not None}
    if not args.controller_task:
        if task:
            raise UserError(f"--{next(iter(task)).replace('_', '-')} goes with --controller-task")
        return False
    from tf_rlnas.algos.enas import controller_task
    controller_task.run(cfg, **task)
    return True
