"""The training loop every algorithm shares.

An algorithm subclasses :class:`Trainer` and supplies its pieces; the base class owns seeding,
the iteration counter, checkpoints (save, resume, Python-side state), TensorBoard logging with
explicit steps, the progress bar, the run summary and the export/evaluate plumbing::

    build()              models, optimizers, environments, datasets (nothing written to disk)
    total_iterations()   the budget in iterations (updates, epochs ...)
    train_iteration()    one iteration; returns scalar metrics {tag: value}
    evaluate(episodes)   metrics of the current policy/model
    export_spec()        an ExportSpec for ``tf_rlnas export``
    trackables(), python_state(), set_python_state(), arrays(), set_arrays()   checkpoint content
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import numpy as np

from tf_rlnas.core.checkpoint import Checkpointer, atomic_write_text
from tf_rlnas.core.logging import Progress, TBLogger, say
from tf_rlnas.core.rundir import WORKERS_DIR
from tf_rlnas.core.seeding import configure_threads, seed_everything


class IterationCounter:
    """The trainer's iteration count: a Python int on the hot path, a ``tf.Variable`` in checkpoints.

    Adding to or reading a ``tf.Variable`` from Python is an eager op (~25 us each); SAC makes one
    iteration per env step (~3 ms), so the count lives in Python and is written to ``variable``
    before every save and read back after every restore. ``numpy()`` / ``assign_add()`` / ``assign()``
    mirror the variable's API."""

    def __init__(self):
        import tensorflow as tf

        self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        self.value = 0

    def numpy(self) -> np.int64:
        return np.int64(self.value)

    def assign_add(self, n: int = 1) -> None:
        self.value += int(n)

    def assign(self, n: int) -> None:
        self.value = int(n)

    def to_variable(self) -> None:
        self.variable.assign(self.value)

    def from_variable(self) -> None:
        self.value = int(self.variable.numpy())


@dataclasses.dataclass
class ExportSpec:
    """What ``export`` saves: a tf.Module, its signature functions, and a live check."""

    module: Any
    signatures: dict[str, Any]
    examples: dict[str, dict[str, np.ndarray]]  # signature -> inputs
    expected: dict[str, dict[str, np.ndarray]]  # signature -> outputs of the live model


@dataclasses.dataclass
class VideoSource:
    """What ``evaluate --video`` needs: the env (made again, rendering, in another process) and the
    deterministic policy."""

    env_id: str
    max_episode_steps: int
    kwargs: dict
    policy: Callable[[np.ndarray], np.ndarray]
    low: np.ndarray
    high: np.ndarray


class Trainer:
    algo: str = ""
    unit: str = "update"

    def __init__(self, cfg: Any, run_dir: str):
        import tensorflow as tf

        from tf_rlnas.core.distribute import make_strategy, worker_role

        self.tf = tf
        self.cfg = cfg
        self.run_dir = run_dir
        configure_threads(cfg.run.intra_op_threads, cfg.run.inter_op_threads)
        dist = getattr(cfg, "distribute", None)  # algorithms with a distributed learner have this section
        kind = dist.strategy if dist is not None else "none"
        self.is_chief, self.task_name = worker_role(kind)
        # before anything runs in TF: a logical CPU split / collective ops must be configured first
        self.strategy = make_strategy(kind, dist.cpu_devices if dist is not None else 0)
        seed_everything(cfg.run.seed)
        self.np_rng = np.random.default_rng(cfg.run.seed)
        self.iteration = IterationCounter()
        self.build()
        self.checkpointer = Checkpointer(
            os.path.join(run_dir, "checkpoints"), cfg.run.keep_checkpoints,
            save_directory=None if self.is_chief else os.path.join(run_dir, WORKERS_DIR, self.task_name, "checkpoints"),
            trackables={"iteration": self.iteration.variable, **self.trackables()},
            get_state=self._get_state, set_state=self._set_state,
            get_arrays=self.arrays if type(self).arrays is not Trainer.arrays else None,
            set_arrays=self.set_arrays if type(self).set_arrays is not Trainer.set_arrays else None)
        self._logger: TBLogger | None = None
        self.progress_enabled = False

    # ---- to implement -----------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def total_iterations(self) -> int:
        raise NotImplementedError

    def train_iteration(self) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self, episodes: int | None = None) -> dict[str, float]:
        raise NotImplementedError

    def export_spec(self) -> ExportSpec:
        raise NotImplementedError

    @classmethod
    def cannot_evaluate(cls, cfg: Any) -> str | None:
        """Why a run of this config has nothing to evaluate (``tf_rlnas evaluate`` then refuses with
        this line before building anything), or None."""
        return None

    def video_source(self) -> VideoSource:
        from tf_rlnas.errors import UserError
        raise UserError(f"'{self.algo}' has no environment episodes to render as video")

    def trackables(self) -> dict:
        return {}

    def python_state(self) -> dict:
        return {}

    def set_python_state(self, state: dict) -> None:
        pass

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    def log_step(self) -> int:
        """The global step of TensorBoard writes (default: the iteration; off-policy RL: env steps)."""
        return int(self.iteration.numpy())

    def progress_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The few metrics shown on the progress bar."""
        return dict(list(metrics.items())[:3])

    # ---- shared -----------------------------------------------------------------------------
    def _get_state(self) -> dict:
        return {"np_rng": self.np_rng.bit_generator.state, "algo": self.python_state()}

    def _set_state(self, state: dict) -> None:
        self.np_rng.bit_generator.state = state["np_rng"]
        self.set_python_state(state.get("algo", {}))

    def sub_progress(self, description: str, completed: int, total: int) -> None:
        """Progress inside the current iteration (a second bar on a terminal; nothing otherwise)."""
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.sub(description, completed, total)

    def done(self) -> bool:
        """Whether the budget is spent (default: ``total_iterations()`` iterations made)."""
        return int(self.iteration.numpy()) >= self.total_iterations()

    def progress_position(self) -> int:
        """Position on the progress bar, in ``unit``s (default: iterations)."""
        return int(self.iteration.numpy())

    def progress_total(self) -> int:
        return self.total_iterations()

    @property
    def logger(self) -> TBLogger:
        """TensorBoard writer of the run (a non-chief multi-worker process: one that writes nothing)."""
        if self._logger is None:
            if self.is_chief:
                self._logger = TBLogger(os.path.join(self.run_dir, "tb"))
            else:
                from tf_rlnas.core.distribute import NullLogger
                self._logger = NullLogger()
        return self._logger

    def close(self) -> None:
        """Release what the trainer holds open (TensorBoard writer; subclasses: env processes). The
        CLI calls it whatever happened; safe to call twice."""
        if self._logger is not None:
            self._logger.close()
            self._logger = None

    def restore(self, number: int | None = None) -> str | None:
        """Restore the newest readable checkpoint (None when there is none), or that of iteration ``number``."""
        path = self.checkpointer.restore() if number is None else self.checkpointer.restore_number(number)
        if path:
            self.iteration.from_variable()
        return path

    def save(self) -> str:
        self.iteration.to_variable()
        return self.checkpointer.save(self.iteration.value)

    def fit(self, progress: bool | None = None, on_iteration: Callable[[int], None] | None = None) -> dict:
        """Train to the budget, resuming from the latest checkpoint if there is one."""
        cfg = self.cfg.run
        path = self.restore()
        start, total = self.progress_position(), self.progress_total()
        if path:
            say(f"resuming {self.run_dir} from {os.path.basename(path)} ({self.unit} {start}/{total})")
        # Every session starts with a SessionLog.START: on a resume TensorBoard then drops what the
        # killed session logged after its last checkpoint (it ignores a run's first START).
        self.logger.restart(self.log_step() + 1)
        bar = Progress(total, start, description=f"{self.algo} {self.unit}s", enabled=progress)
        self.progress_enabled = bar.enabled
        self._bar = bar
        metrics: dict[str, float] = {}
        shown: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            while not self.done():
                step_metrics = self.train_iteration()  # may be {} when nothing is due for logging
                self.iteration.assign_add(1)
                it, finished = int(self.iteration.numpy()), self.done()
                if step_metrics:
                    metrics = {**metrics, **step_metrics}
                    if it % cfg.log_every == 0 or finished:
                        self.logger.scalars(step_metrics, step=self.log_step())
                    shown = self.progress_metrics(metrics)
                if it % cfg.checkpoint_every == 0 or finished:
                    self.save()
                bar.update(self.progress_position(), shown)
                if on_iteration is not None:
                    on_iteration(it)
        finally:
            bar.close()
            if self._logger is not None:
                self._logger.flush()
        summary = {"algo": self.algo, "iterations": int(self.iteration.numpy()),
                   "wall_seconds_this_session": round(time.perf_counter() - t0, 3),
                   "final_metrics": {k: float(v) for k, v in metrics.items()}}
        summary["final_eval"] = {k: float(v) for k, v in self.evaluate().items()}
        if self.is_chief:
            atomic_write_text(os.path.join(self.run_dir, "summary.json"), json.dumps(summary, indent=2))
        return summary
