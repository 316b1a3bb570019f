"""Run directories: ``<root>/<name>/`` with config.yaml, tb/, checkpoints/, summary.json and
algorithm outputs. Checks here only read; :func:`write_config` is the first write of a run."""

from __future__ import annotations

import os
from typing import Any

from tf_rlnas import config as C
from tf_rlnas.core.files import atomic_write_text
from tf_rlnas.errors import ConfigError, UserError

CONFIG_FILE = "config.yaml"
WORKERS_DIR = "workers"  # a multi-worker run's other workers keep their checkpoints under it
PROBE_PREFIX = ".write-probe-"


def has_checkpoint(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, "checkpoints", "checkpoint"))


def saved_config(run_dir: str) -> tuple[str, dict] | None:
    """(algo, config dict) saved in ``run_dir``, or None when it holds no run."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    data = C.read_yaml(path)
    algo = data.pop("algo", None)
    if not isinstance(algo, str):
        raise UserError(f"{path} names no algorithm ('algo' key): the run directory is damaged")
    from tf_rlnas import registry
    if algo in registry.ALGOS:  # a run of an earlier version: keys removed since are dropped
        data = C.drop_removed(registry.get(algo).load("config"), data)
    return algo, data


def _empty_for_a_new_run(run_dir: str) -> bool:
    """Nothing in ``run_dir`` but what a starting run itself writes before config.yaml: the
    ``workers/`` folder of a multi-worker run's other workers (they can start before the chief) and
    another process's write probe (:func:`ensure_writable`)."""
    return all(e == WORKERS_DIR or e.startswith(PROBE_PREFIX) for e in os.listdir(run_dir))


def check_run_dir(run_dir: str, algo: str, cfg: Any, schema: type) -> bool:
    """Can ``cfg`` run in ``run_dir``? Returns True when it resumes an existing run.

    Fails (one line, nothing touched) when the folder is a file, holds something that is not a
    tf_rlnas run, holds another algorithm's run, or when the config differs from the saved one
    in a key that cannot change on resume (a network size, the seed ...).
    """
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise UserError(f"run directory {run_dir} exists and is not a directory")
    if not os.path.isdir(run_dir) or _empty_for_a_new_run(run_dir):
        return False
    saved = saved_config(run_dir)
    if saved is None:
        raise UserError(f"run directory {run_dir} is not empty and holds no {CONFIG_FILE}: "
                        f"not a tf_rlnas run; choose another --run-dir")
    saved_algo, data = saved
    if saved_algo != algo:
        raise UserError(f"run directory {run_dir} holds a '{saved_algo}' run, not '{algo}'")
    try:
        old = C.from_dict(schema, data)
    except ConfigError as e:
        raise UserError(f"{os.path.join(run_dir, CONFIG_FILE)} no longer validates: {e}") from None
    fixed = [(k, a, b) for k, a, b, ok in C.diff(old, cfg) if not ok]
    if fixed:
        k, a, b = fixed[0]
        more = f" (and {len(fixed) - 1} more)" if len(fixed) > 1 else ""
        raise ConfigError(f"cannot resume {run_dir}: config key '{k}' was {a!r}, now {b!r}{more}; "
                          f"only budgets and logging intervals may change on resume - use a new --run-dir")
    return has_checkpoint(run_dir)


def ensure_writable(run_dir: str) -> bool:
    """Create ``run_dir`` if needed and prove it writable (a probe file, removed again); a folder that
    cannot be created or written is one UserError line. Returns True when this call created it.

    A real write is the only reliable test: ``os.access`` says yes to root on a read-only mount and
    on /proc."""
    import tempfile

    created = not os.path.isdir(run_dir)
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise UserError(f"run directory {run_dir} exists and is not a directory")
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create run directory {run_dir}: {e.strerror or e}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=PROBE_PREFIX):
            pass
    except OSError as e:
        raise UserError(f"run directory {run_dir} is not writable: {e.strerror or e}") from None
    return created


def remove_if_empty(run_dir: str) -> None:
    """Undo :func:`ensure_writable`'s folder when a run failed before writing anything."""
    try:
        os.rmdir(run_dir)
    except OSError:
        pass


def remove_new_entries(run_dir: str, before: set[str] | None) -> None:
    """Undo a new run that was refused before its first checkpoint: remove what it wrote in
    ``run_dir`` (every entry not in ``before``, the listing taken before it started; None: the run
    created the folder, which goes too)."""
    import shutil

    if not os.path.isdir(run_dir):
        return
    for entry in set(os.listdir(run_dir)) - (before or set()):
        path = os.path.join(run_dir, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except OSError:
                pass
    if before is None:
        remove_if_empty(run_dir)


def write_config(run_dir: str, algo: str, cfg: Any) -> None:
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    atomic_write_text(os.path.join(run_dir, CONFIG_FILE), C.dump_yaml(cfg, algo))
