"""SAC's (and ACE's) options of ``tf_rlnas bench`` and the process preparation that must run before
TensorFlow loads (registered with the CLI: ``tf_rlnas.clikit``)."""

from __future__ import annotations


def register(ext, algo: str) -> None:
    ext.bench_options(algo, add_arguments=_bench_arguments, kwargs=_bench_kwargs)


def _bench_arguments(b) -> None:
    b.add_argument("--compare", action="append", default=[], choices=["sb3", "sbx"],
                   help="also measure Stable-Baselines3 / SBX at the same sizes in a subprocess "
                        "(never a dependency: install it in a separate venv, see --peer-python)")
    b.add_argument("--peer-python", default=None, metavar="PYTHON",
                   help="the Python that has the peer installed (default: this one)")
    b.add_argument("--quick", action="store_true",
                   help="only the config's own path (its update and training loop), not the sweep of dtypes, "
                        "XLA, update orders and update_every")


def _bench_kwargs(args) -> dict:
    out = {"compare": tuple(args.compare), "peer_python": args.peer_python} if args.compare else {}
    return {**out, "quick": True} if args.quick else out


def prepare(cfg) -> None:
    """Before TensorFlow loads: the process's matmul precision for this config
    (:func:`tf_rlnas.nn.precision.prepare_process`: oneDNN's bf16 math mode where it is the path)."""
    from tf_rlnas.nn import precision

    precision.prepare_process(cfg.agent.matmul_dtype, xla=cfg.train.jit_compile)
