"""The training loop every algorithm shares, and the contract an algorithm signs.

An algorithm subclasses :class:`Trainer` and writes:

    build()             make models, optimizers, environments, data (nothing written to disk; a bad
                        input raises UserError here) and register what a checkpoint holds, in one place:
                            self.checkpoint.track(learner=..., ...)          TF objects
                            self.checkpoint.state("name", get, set)          JSON-able Python state
                            self.checkpoint.arrays("name", get, set)         large arrays (a side file)
    budget()            Budget(position, total) in the trainer's ``unit`` (updates, env steps, epochs ...):
                        the run ends at total; TensorBoard steps and the progress bar use position
    train_iteration()   one iteration; returns scalar metrics (may be {} when nothing is due)
    evaluate(episodes)  metrics of the current policy/model
    export_spec()       what ``tf_rlnas export`` saves and checks (ExportSpec)

and may override finish(summary) (the end of a completed run), close() (env processes; call super),
format_eval(), progress_metrics(), video_source() and the classmethod cannot_evaluate(cfg). The base class owns seeding, the
iteration counter, checkpoints (save, resume, the RNG state), TensorBoard, the progress bar, the
run summary; the CLI always closes a trainer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import numpy as np

from tf_rlnas.core.checkpoint import CheckpointContent, Checkpointer
from tf_rlnas.core.files import atomic_write_text
from tf_rlnas.core.logging import NullLogger, Progress, TBLogger, say
from tf_rlnas.core.rundir import WORKERS_DIR
from tf_rlnas.core.seeding import configure_threads, seed_everything


@dataclasses.dataclass(frozen=True)
class Budget:
    """Where a run is and where it ends, in the trainer's unit."""

    position: int
    total: int

    @property
    def done(self) -> bool:
        return self.position >= self.total


class IterationCounter:
    """The trainer's iteration count: a Python int on the hot path, a ``tf.Variable`` in checkpoints.

    Adding to or reading a ``tf.Variable`` from Python is an eager op (~25 us each); SAC makes one
    iteration per env step (~3 ms), so the count lives in Python and is written to ``variable``
    before every save and read back after every restore. ``numpy()`` / ``assign_add()``
    mirror the variable's API."""

    def __init__(self):
        import tensorflow as tf

        self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        self.value = 0

    def numpy(self) -> np.int64:
        return np.int64(self.value)

    def assign_add(self, n: int = 1) -> None:
        self.value += int(n)

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

    @classmethod
    def of(cls, env_cfg, policy, low, high) -> "VideoSource":
        """From an env config section with ``id``, ``max_episode_steps`` and ``kwargs``."""
        return cls(env_cfg.id, env_cfg.max_episode_steps, dict(env_cfg.kwargs), policy, low, high)


class Trainer:
    algo: str = ""
    unit: str = "update"

    def __init__(self, cfg: Any, run_dir: str):
        from tf_rlnas.core.distribute import make_strategy, worker_role

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
        self._logger: TBLogger | None = None
        self.progress_enabled = False
        self.checkpoint = CheckpointContent()
        self.checkpoint.track(iteration=self.iteration.variable)
        self.checkpoint.state("np_rng", lambda: self.np_rng.bit_generator.state, self._set_np_rng)
        self.build()
        self.checkpointer = Checkpointer(
            os.path.join(run_dir, "checkpoints"), cfg.run.keep_checkpoints, self.checkpoint,
            save_directory=None if self.is_chief else os.path.join(run_dir, WORKERS_DIR, self.task_name, "checkpoints"))

    # ---- to implement (the contract: module docstring) -----------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def budget(self) -> Budget:
        raise NotImplementedError

    def train_iteration(self) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self, episodes: int | None = None) -> dict[str, float]:
        raise NotImplementedError

    def export_spec(self) -> ExportSpec:
        raise NotImplementedError

    # ---- may override -------------------------------------------------------------------------
    @classmethod
    def cannot_evaluate(cls, cfg: Any) -> str | None:
        """Why a run of this config has nothing to evaluate (``tf_rlnas evaluate`` then refuses with
        this line before building anything), or None."""
        return None

    def video_source(self) -> VideoSource:
        from tf_rlnas.errors import UserError
        raise UserError(f"'{self.algo}' has no environment episodes to render as video")

    def format_eval(self, metrics: dict[str, float]) -> str:
        """How ``tf_rlnas evaluate`` prints ``evaluate()``'s metrics (default: one line each)."""
        return "\n".join(f"  {k}: {v:.6g}" for k, v in metrics.items())

    def progress_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The few metrics shown on the progress bar."""
        return dict(list(metrics.items())[:3])

    HEADLINE: tuple[str, ...] = ()  # the TensorBoard tags that say how well a run does

    @classmethod
    def headline_metrics(cls, cfg) -> tuple[str, ...]:
        """The run's headline metric tags: HParams' metrics, ``tf_rlnas report``'s default metric."""
        return cls.HEADLINE

    def finish(self, summary: dict) -> dict:
        """The end of a completed run, before summary.json is written (ENAS search: derive the
        architecture); returns the summary."""
        return summary

    def close(self) -> None:
        """Release what the trainer holds open (TensorBoard writer; subclasses: env processes). The
        CLI calls it whatever happened; safe to call twice."""
        if self._logger is not None:
            self._logger.close()
            self._logger = None

    # ---- shared -----------------------------------------------------------------------------
    def _set_np_rng(self, state: dict) -> None:
        self.np_rng.bit_generator.state = state

    def sub_progress(self, description: str, completed: int, total: int) -> None:
        """Progress inside the current iteration (a second bar on a terminal; nothing otherwise)."""
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.sub(description, completed, total)

    def progress_position(self) -> int:
        """Where the run is, in ``unit``s."""
        return self.budget().position

    @property
    def logger(self) -> TBLogger:
        """TensorBoard writer of the run (a non-chief multi-worker process: one that writes nothing)."""
        if self._logger is None:
            if self.is_chief:
                self._logger = TBLogger(os.path.join(self.run_dir, "tb"))
            else:
                self._logger = NullLogger()
        return self._logger

    def restore(self, number: int | None = None) -> str | None:
        """Restore the newest readable checkpoint (None when there is none), or that of iteration ``number``."""
        path = self.checkpointer.restore() if number is None else self.checkpointer.restore_number(number)
        if path:
            self.iteration.from_variable()
        return path

    def _summary(self) -> dict | None:
        """summary.json of a run that completed before (None if absent or unreadable: the run is
        then finished again, as when it was killed between its last checkpoint and the summary)."""
        try:
            with open(os.path.join(self.run_dir, "summary.json")) as f:
                summary = json.load(f)
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) and "final_eval" in summary else None

    def save(self) -> str:
        self.iteration.to_variable()
        return self.checkpointer.save(self.iteration.value)

    def fit(self, progress: bool | None = None, on_iteration: Callable[[int], None] | None = None) -> dict:
        """Train to the budget, resuming from the latest checkpoint if there is one."""
        cfg = self.cfg.run
        path = self.restore()
        start, total = self.budget().position, self.budget().total
        previous = self._summary() if path and self.budget().done else None
        if previous is not None:
            # a complete run is not evaluated again: a second final evaluation (other episodes) would
            # change its logged result each time a queue re-runs its command
            say(f"{self.run_dir} is complete ({self.unit} {start}/{total}); its final evaluation stands "
                f"(summary.json)")
            summary = self.finish(previous)  # e.g. ENAS derives again with this config's derive options
            if self.is_chief:
                atomic_write_text(os.path.join(self.run_dir, "summary.json"), json.dumps(summary, indent=2))
            return summary
        if path:
            say(f"resuming {self.run_dir} from {os.path.basename(path)} ({self.unit} {start}/{total})")
        # Every session starts with a SessionLog.START: on a resume TensorBoard then drops what the
        # killed session logged after its last checkpoint (it ignores a run's first START).
        self.logger.restart(self.budget().position + 1)
        from tf_rlnas import config as C
        self.logger.hparams(C.flat_scalars(self.cfg), self.headline_metrics(self.cfg),
                            os.path.basename(os.path.abspath(self.run_dir)))
        bar = Progress(total, start, description=f"{self.algo} {self.unit}s", enabled=progress)
        self.progress_enabled = bar.enabled
        self._bar = bar
        metrics: dict[str, float] = {}
        shown: dict[str, float] = {}
        logged: tuple[int, set] = (-1, set())  # the last logged step and its tags
        t0 = time.perf_counter()
        try:
            while not self.budget().done:
                step_metrics = self.train_iteration()  # may be {} when nothing is due for logging
                self.iteration.assign_add(1)
                it, budget = int(self.iteration.numpy()), self.budget()
                finished = budget.done
                if step_metrics:
                    metrics = {**metrics, **step_metrics}
                    if it % cfg.log_every == 0 or finished:
                        self.logger.scalars(step_metrics, step=budget.position)
                        logged = (budget.position, set(step_metrics))
                    shown = self.progress_metrics(metrics)
                if it % cfg.checkpoint_every == 0 or finished:
                    self.save()
                bar.update(budget.position, shown)
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
        # the final evaluation joins the curves (a run that evaluates only at the end has its headline
        # metric in TensorBoard too), unless the last iteration logged that tag at this step already
        end = self.budget().position
        final = {k: v for k, v in summary["final_eval"].items() if not (logged[0] == end and k in logged[1])}
        if final and self._logger is not None:
            self._logger.scalars(final, step=end)
            self._logger.flush()
        summary = self.finish(summary)
        if self.is_chief:
            atomic_write_text(os.path.join(self.run_dir, "summary.json"), json.dumps(summary, indent=2))
        return summary
