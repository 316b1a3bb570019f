"""Checkpoints that restore everything an identical continuation needs.

``tf.train.Checkpoint`` holds the TF side (models, optimizers, counters, ``tf.random.Generator``
states, baselines, alpha ...). Python-side state (NumPy and environment RNG states, episode
counters, small buffers) travels inside the same checkpoint as a JSON string variable, so the two
can never disagree. Large arrays (a replay buffer) go to a side file ``extra-<N>.npz`` written
atomically *before* checkpoint N, so a checkpoint never points at a missing side file.

Atomicity: TF writes the data files under temporary names and updates the ``checkpoint`` index
file by an atomic rename, so a kill at any moment leaves the previous checkpoint loadable. If the
newest checkpoint is unreadable anyway (a damaged disk), older ones are tried before giving up, and
one warning line names each checkpoint passed over and why. Only the errors a damaged file raises
are caught; anything else (``MemoryError``, a bug) propagates.
"""

from __future__ import annotations

import glob
import json
import os
import re
import zipfile
from typing import Any, Callable

import numpy as np

from tf_rlnas.errors import UserError


def _json_default(o: Any):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return {"__ndarray__": o.tolist(), "dtype": str(o.dtype)}
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _json_hook(d: dict):
    if "__ndarray__" in d:
        return np.asarray(d["__ndarray__"], dtype=d["dtype"])
    return d


def _number(path: str) -> int:
    """The iteration a checkpoint path ``.../ckpt-<N>`` was saved at."""
    return int(re.search(r"ckpt-(\d+)$", path).group(1))


class CheckpointContent:
    """What a run's checkpoint holds, registered in one place (a trainer's ``build``):

    - ``track(name=obj, ...)``: TF objects (models, optimizers, variables, generators, tf.Modules);
    - ``state(name, get, set)``: Python-side state as a JSON-able value (RNG states, counters ...);
    - ``arrays(name, get, set)``: large arrays ``{key: ndarray}`` (a replay buffer), saved in the side
      file ``extra-<N>.npz`` as ``<name>_<key>``.
    """

    def __init__(self):
        self.trackables: dict[str, Any] = {}
        self._states: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {}
        self._arrays: dict[str, tuple[Callable[[], dict], Callable[[dict], None]]] = {}

    def track(self, **objects) -> None:
        for name, obj in objects.items():
            if name in self.trackables or name == "python_state":
                raise ValueError(f"checkpoint content '{name}' is registered twice")
            self.trackables[name] = obj

    def state(self, name: str, get: Callable[[], Any], set: Callable[[Any], None]) -> None:  # noqa: A002
        if name in self._states:
            raise ValueError(f"checkpoint state '{name}' is registered twice")
        self._states[name] = (get, set)

    def arrays(self, name: str, get: Callable[[], dict], set: Callable[[dict], None]) -> None:  # noqa: A002
        if name in self._arrays:
            raise ValueError(f"checkpoint arrays '{name}' are registered twice")
        self._arrays[name] = (get, set)

    @property
    def has_arrays(self) -> bool:
        return bool(self._arrays)

    def get_state(self) -> dict:
        return {name: get() for name, (get, _) in self._states.items()}

    def set_state(self, state: dict) -> None:
        legacy = state.get("algo")  # checkpoints of earlier versions: {"np_rng": ..., "algo": {flat state}}
        for name, (_, set_) in self._states.items():
            if name in state:
                set_(state[name])
            elif legacy is not None:
                set_(legacy)
            else:
                raise KeyError(f"the checkpoint's Python state has no '{name}'")

    def get_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for name, (get, _) in self._arrays.items():
            out.update({f"{name}_{k}": v for k, v in get().items()})
        return out

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for name, (_, set_) in self._arrays.items():
            prefix = name + "_"
            set_({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})


class Checkpointer:
    """``CheckpointManager`` over a :class:`CheckpointContent`: the TF objects in the checkpoint, the
    Python-side state as a JSON string variable inside it, the arrays in a side file.

    Args:
        directory: the run's ``checkpoints/`` folder.
        save_directory: where saves go when not ``directory`` (a non-chief multi-worker process:
            restores read the chief's ``directory``, saves go to its own folder).
    """

    def __init__(self, directory: str, max_to_keep: int, content: CheckpointContent,
                 save_directory: str | None = None):
        import tensorflow as tf

        self._tf = tf
        self.content = content
        self.directory = save_directory or directory
        self._py_state = tf.Variable("", dtype=tf.string, trainable=False, name="python_state")
        self.ckpt = tf.train.Checkpoint(python_state=self._py_state, **content.trackables)
        self.manager = tf.train.CheckpointManager(self.ckpt, self.directory, max_to_keep=max_to_keep,
                                                  checkpoint_name="ckpt")
        self.restore_directory = directory
        self.restore_manager = self.manager if self.directory == directory else tf.train.CheckpointManager(
            self.ckpt, directory, max_to_keep=max_to_keep, checkpoint_name="ckpt")

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def save(self, step: int) -> str:
        self._py_state.assign(json.dumps(self.content.get_state(), default=_json_default))
        if self.content.has_arrays:
            os.makedirs(self.directory, exist_ok=True)
            path = os.path.join(self.directory, f"extra-{int(step)}.npz")
            tmp = path + f".tmp-{os.getpid()}.npz"
            np.savez(tmp, **self.content.get_arrays())
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        path = self.manager.save(checkpoint_number=int(step))
        self._prune_side_files()
        return path

    def _prune_side_files(self) -> None:
        keep = {_number(p) for p in self.manager.checkpoints}
        for f in glob.glob(os.path.join(self.directory, "extra-*.npz*")):
            m = re.search(r"extra-(\d+)\.npz", os.path.basename(f))
            if m and (int(m.group(1)) not in keep or ".tmp-" in f):
                try:
                    os.remove(f)
                except OSError:
                    pass

    def restore(self) -> str | None:
        """Restore the newest readable checkpoint; None when there is none."""
        candidates = list(reversed(self.restore_manager.checkpoints))
        if not candidates:
            return None
        errors = []
        from google.protobuf.message import DecodeError

        # what a truncated / overwritten file raises: TF's reader (OpError, or IndexError "Read less
        # bytes than requested"), a damaged object graph proto, the JSON state, the npz side file
        damaged = (self._tf.errors.OpError, IndexError, DecodeError, OSError, ValueError, KeyError, TypeError,
                   EOFError, zipfile.BadZipFile)
        for path in candidates:
            try:
                self._restore_one(path)
            except UserError:
                raise
            except damaged as e:  # a damaged checkpoint: try the previous one
                first = (str(e).strip().splitlines() or [""])[0][:200]
                errors.append(f"{os.path.basename(path)}: {type(e).__name__}: {first}")
                continue
            if errors:
                from tf_rlnas.core.logging import say
                say(f"warning: restored {os.path.basename(path)}; passed over the damaged newer "
                    f"checkpoint(s) {'; '.join(errors)}")
            return path
        raise UserError(f"no readable checkpoint in {self.restore_directory} ({'; '.join(errors)})")

    def numbers(self) -> list[int]:
        """The numbers (iterations) of the kept checkpoints, oldest first."""
        return [_number(p) for p in self.restore_manager.checkpoints]

    def restore_number(self, number: int) -> str:
        """Restore the kept checkpoint of iteration ``number`` (an error naming the kept ones if it is gone)."""
        for path in self.restore_manager.checkpoints:
            if _number(path) == number:
                self._restore_one(path)
                return path
        kept = ", ".join(map(str, self.numbers())) or "none"
        raise UserError(f"{self.restore_directory} has no checkpoint of iteration {number} (kept: {kept}; "
                        f"run.keep_checkpoints sets how many are kept)")

    def _restore_one(self, path: str) -> None:
        status = self.ckpt.restore(path)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            raise UserError(f"checkpoint {path} does not match this config's models "
                            f"(was the config changed?): {str(e).splitlines()[0][:200]}") from None
        text = self._py_state.numpy().decode("utf-8")
        if text:
            self.content.set_state(json.loads(text, object_hook=_json_hook))
        if self.content.has_arrays:
            step = _number(path)
            side = os.path.join(self.restore_directory, f"extra-{step}.npz")
            if not os.path.exists(side):
                raise FileNotFoundError(f"side file {side} missing")
            with np.load(side) as z:
                self.content.set_arrays({k: z[k] for k in z.files})
