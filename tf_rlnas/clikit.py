"""What the command line is made of, shared by ``tf_rlnas.cli`` (the generic verbs) and the
algorithms' own command modules (``algos/<name>/cli.py``, named in the registry):

- :class:`Extensions`: how an algorithm adds a top-level command (ENAS: ``compare-arcs``,
  ``derive``), options of ``evaluate`` for its runs (MAML: ``--tasks``) or of ``bench ALGO``
  (SAC/ACE: ``--compare``; ENAS: ``--controller-task``), shown only in the help they belong to;
- config resolution and run loading (:func:`resolve_train_config`, :func:`load_run`), the quiet
  TensorFlow import, argument types.

Nothing here imports an algorithm or TensorFlow at import time.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from typing import Any, Callable

from tf_rlnas import config as C
from tf_rlnas import registry
from tf_rlnas.core import rundir
from tf_rlnas.core.distribute import worker_role
from tf_rlnas.errors import UserError


# ---- the extension API ------------------------------------------------------------------------

@dataclasses.dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
    epilog: str | None = None


@dataclasses.dataclass
class EvaluateOptions:
    algo: str
    add_arguments: Callable[[Any], None]                   # (argument group) -> None
    kwargs: Callable[[argparse.Namespace], dict]           # the extra keyword arguments of trainer.evaluate
    check: Callable[[argparse.Namespace], None] | None = None  # refusals before the run is loaded


@dataclasses.dataclass
class BenchOptions:
    add_arguments: Callable[[argparse.ArgumentParser], None]
    kwargs: Callable[[argparse.Namespace], dict] | None = None   # extra keyword arguments of the bench
    run: Callable[[Any, argparse.Namespace], bool] | None = None  # (cfg, args) -> handled instead of the bench


class Extensions:
    """Collects what every algorithm's ``register(ext, algo)`` adds (see the module docstring)."""

    def __init__(self):
        self.commands: dict[str, Command] = {}
        self.evaluate: dict[str, EvaluateOptions] = {}
        self.bench: dict[str, BenchOptions] = {}

    def command(self, name: str, help: str, add_arguments, run, description=None, epilog=None) -> None:
        if name in self.commands:
            raise ValueError(f"command '{name}' is registered twice")
        self.commands[name] = Command(name, help, add_arguments, run, description, epilog)

    def evaluate_options(self, algo: str, add_arguments, kwargs, check=None) -> None:
        self.evaluate[algo] = EvaluateOptions(algo, add_arguments, kwargs, check)

    def bench_options(self, algo: str, add_arguments, kwargs=None, run=None) -> None:
        self.bench[algo] = BenchOptions(add_arguments, kwargs, run)


def peer_source(args, marker: str, what: str) -> tuple[str, str] | None:
    """``bench ALGO --compare port --peer-python PY --peer-src DIR``, checked before anything runs:
    (python, source tree) or None without ``--compare``; ``marker`` is a file the tree must hold."""
    if args.compare is None:
        if args.peer_python or args.peer_src:
            raise UserError("--peer-python and --peer-src go with --compare port")
        return None
    if not args.peer_python or not args.peer_src:
        raise UserError("--compare port needs --peer-python PYTHON and --peer-src DIR (the port's source tree)")
    if not os.path.isfile(os.path.join(args.peer_src, marker)):
        raise UserError(f"--peer-src {args.peer_src}: not {what}'s source tree (no {marker})")
    return args.peer_python, args.peer_src


def load_extensions() -> Extensions:
    ext = Extensions()
    for spec in registry.ALGOS.values():
        if spec.cli:
            spec.load("cli")(ext, spec.name)
    return ext


# ---- TensorFlow, quietly -----------------------------------------------------------------------

def import_tf_quietly() -> None:
    """Import TensorFlow with its C++ logging hidden (TF_RLNAS_TF_LOGS=1 shows everything).

    Level 3 also hides TF's C++ ERROR-level lines, such as oneDNN's "supports DT_INT32 only on
    platforms with AVX-512 ... falling back to Eigen" printed in the middle of a run: they are
    notices, and a real failure still reaches us as a Python exception. A TF_CPP_MIN_LOG_LEVEL set
    by the user wins."""
    if "tensorflow" in sys.modules:
        return
    if os.environ.get("TF_RLNAS_TF_LOGS"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        import tensorflow as tf
        import tensorflow_probability  # noqa: F401

        tf.config.list_physical_devices()  # device start-up (and its CUDA probing) happens here
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def prepare_process(algo: str, cfg) -> None:
    """Before TensorFlow loads: the algorithm's process preparation (its registry ``prepare`` hook,
    e.g. SAC's oneDNN math mode); for the others, a note when the user's environment forces one."""
    spec = registry.get(algo)
    if spec.prepare:
        spec.load("prepare")(cfg)
        return
    from tf_rlnas.nn import precision
    precision.note_user_fpmath()


# ---- configs and runs -------------------------------------------------------------------------

def config_path(name: str, algo: str | None) -> str:
    """A --config value: a path, or the name of a shipped config of ``algo`` (e.g. 'smoke')."""
    if os.path.exists(name) or os.sep in name or name.endswith((".yaml", ".yml")):
        return name
    if algo:
        shipped = registry.shipped_configs(algo)
        if name in shipped:
            return shipped[name]
        raise UserError(f"config file not found: {name} (shipped {algo} configs: "
                        f"{', '.join(shipped) or 'none'})")
    return name


def resolve_train_config(args, check_run_dir: bool = True) -> tuple[str, object, type, str, bool]:
    """-> (algo, cfg, schema, run_dir, resumes) from ``args.algo/config/set/run_dir``;
    ``check_run_dir`` False: run_dir is only a parent folder (compare-arcs), not a run to resume."""
    algo = args.algo
    if algo:
        registry.get(algo)
    files: list[str] = []
    for name in args.config:
        path = config_path(name, algo)
        file_algo = C.read_yaml(path).get("algo")
        if file_algo is not None:
            if not isinstance(file_algo, str):
                raise UserError(f"{path}: 'algo' must be a name, got {file_algo!r}")
            registry.get(file_algo)
            if algo and file_algo != algo:
                raise UserError(f"{path} is a '{file_algo}' config but the algorithm is '{algo}'")
            algo = file_algo
        files.append(path)
    saved = (rundir.saved_config(args.run_dir) if check_run_dir and args.run_dir and os.path.isdir(args.run_dir)
             else None)
    if algo is None and saved is not None:
        algo = saved[0]
        registry.get(algo)
    if algo is None:
        raise UserError("name an algorithm (tf_rlnas train ALGO), a --config with an 'algo' key, "
                        "or an existing --run-dir to resume; see 'tf_rlnas list'")
    schema = registry.get(algo).load("config")
    default = registry.get(algo).default_config
    if not files and default and saved is None:
        files = [config_path(default, algo)]  # a bare `tf_rlnas train ALGO`: the algorithm's sensible pairing
    cfg = C.resolve(schema, files, args.set)
    run_dir = args.run_dir or os.path.join(cfg.run.root, cfg.run.name or algo)
    if not check_run_dir:
        return algo, cfg, schema, run_dir, False
    if args.run_dir is None and os.path.isdir(run_dir):
        saved = rundir.saved_config(run_dir)
    if saved is not None and saved[0] == algo:
        cfg = C.resolve(schema, files, args.set, base=saved[1])  # resume: the saved run is the base
    dist = getattr(cfg, "distribute", None)
    chief = worker_role(dist.strategy)[0] if dist is not None else True
    if not chief:  # the chief writes the run directory, maybe right now: read only what is complete
        return algo, cfg, schema, run_dir, rundir.has_checkpoint(run_dir)
    resumes = rundir.check_run_dir(run_dir, algo, cfg, schema)
    return algo, cfg, schema, run_dir, resumes


def saved_algo(run_dir: str) -> str | None:
    saved = rundir.saved_config(run_dir) if os.path.isdir(run_dir) else None
    return saved[0] if saved else None


def load_run(run_dir: str, adjust=None, number: int | None = None, for_evaluate: bool = False):
    """(algo, cfg, trainer) for an existing run directory, restored from its latest checkpoint or the one
    of iteration ``number`` (``adjust(cfg) -> cfg``: a change that leaves the checkpoint's content alone,
    e.g. how it is scored; ``for_evaluate``: refuse a run with nothing to evaluate, before building).
    The caller closes the trainer."""
    if not os.path.isdir(run_dir):
        raise UserError(f"run directory not found: {run_dir}")
    saved = rundir.saved_config(run_dir)
    if saved is None:
        raise UserError(f"{run_dir} holds no config.yaml: not a tf_rlnas run directory")
    algo, data = saved
    spec = registry.get(algo)
    cfg = C.from_dict(spec.load("config"), data)
    if adjust is not None:
        cfg = adjust(cfg)
    if not rundir.has_checkpoint(run_dir):
        raise UserError(f"{run_dir} has no checkpoint yet (train it first)")
    prepare_process(algo, cfg)
    import_tf_quietly()
    reason = spec.load("trainer").cannot_evaluate(cfg) if for_evaluate else None
    if reason:
        raise UserError(reason)
    trainer = spec.load("trainer")(cfg, run_dir)
    try:
        trainer.restore(number)
    except BaseException:
        trainer.close()
        raise
    return algo, cfg, trainer


# ---- argument types ---------------------------------------------------------------------------

def number_type(cast, ok, what: str):
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'")
        return value
    return parse


positive_int = number_type(int, lambda v: v >= 1, "a positive integer")
positive_float = number_type(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
nonnegative_float = number_type(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
fraction = number_type(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def int_list_or_none(text: str, distinct: bool = False) -> tuple[list[int] | None, str]:
    """(comma-separated non-negative integers, or None if the text is not such a list; what was expected)."""
    what = f"comma-separated {'distinct ' if distinct else ''}non-negative integers (e.g. 0,1,2)"
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        return None, what
    ok = values and min(values) >= 0 and not (distinct and len(set(values)) != len(values))
    return (values if ok else None), what


def int_list(text: str) -> tuple[int, ...]:
    values, what = int_list_or_none(text)
    if values is None:
        raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'")
    return tuple(values)


def add_config_arguments(p: argparse.ArgumentParser, config_help: str = "YAML config; repeat to overlay "
                         "(later wins). A bare name means a shipped config of the algorithm, e.g. --config smoke") -> None:
    p.add_argument("--config", action="append", default=[], metavar="FILE", help=config_help)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, typed by the schema, e.g. --set train.lr=3e-4")
