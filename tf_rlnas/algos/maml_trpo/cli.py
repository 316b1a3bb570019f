"""MAML-TRPO's options of ``tf_rlnas evaluate`` and ``tf_rlnas bench`` (registered with the CLI:
``tf_rlnas.clikit``)."""

from __future__ import annotations

import os

from tf_rlnas.clikit import peer_source
from tf_rlnas.errors import UserError

PORT_CONFIG = "configs/maml/2d-navigation.yaml"


def register(ext, algo: str) -> None:
    ext.evaluate_options(algo, add_arguments=_evaluate_arguments, kwargs=_evaluate_kwargs, check=_check)
    ext.bench_options(algo, add_arguments=_bench_arguments, kwargs=_bench_kwargs)


def _bench_arguments(b) -> None:
    b.add_argument("--compare", choices=["port"], default=None,
                   help="also time pytorch-maml-rl's own training loop on its shipped config in a subprocess and "
                        "print the ratio (needs --peer-python and --peer-src; never a dependency)")
    b.add_argument("--peer-python", default=None, metavar="PYTHON", help="--compare: a Python with the port's deps")
    b.add_argument("--peer-src", default=None, metavar="DIR", help="--compare: the port's source tree")
    b.add_argument("--quick", action="store_true",
                   help="only the config's own settings, second and first order (not the other curvature "
                        "subsample and Hessian-vector products)")
    b.add_argument("--peer-config", default=PORT_CONFIG, metavar="YAML",
                   help=f"--compare: the port's config, relative to --peer-src (default {PORT_CONFIG}; pass ours "
                        "the same sizes with --set)")


def _bench_kwargs(args) -> dict:
    peer = peer_source(args, os.path.join("maml_rl", "metalearners", "maml_trpo.py"), "pytorch-maml-rl")
    if peer is None:
        return {"quick": True} if args.quick else {}
    if not os.path.isfile(os.path.join(peer[1], args.peer_config)):
        raise UserError(f"--peer-config {os.path.join(peer[1], args.peer_config)}: no such file")
    return {"peer": (*peer, args.peer_config), **({"quick": True} if args.quick else {})}


def _evaluate_arguments(group) -> None:
    group.add_argument("--tasks", type=int, default=None, metavar="N",
                       help="held-out tasks to adapt to (default: the config's train.eval_tasks)")
    group.add_argument("--task-seed", type=int, default=None, metavar="S",
                       help="draw the held-out tasks with this seed instead of the run's own stream, to compare "
                            "runs of different seeds on the same tasks (saved as "
                            "eval-<iteration>-tasks<N>-taskseed<S>.npz)")


def _check(args) -> None:
    if args.tasks is not None and args.tasks < 1:
        raise UserError("--tasks must be >= 1")


def _evaluate_kwargs(args) -> dict:
    return {k: v for k, v in (("tasks", args.tasks), ("task_seed", args.task_seed)) if v is not None}
