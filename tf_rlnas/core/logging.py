"""TensorBoard writing (always with an explicit step) and console progress (rich)."""

from __future__ import annotations

import os
import sys
from typing import Mapping

import numpy as np


class TBLogger:
    """Thin wrapper over a ``tf.summary`` file writer; every write names its step."""

    def __init__(self, logdir: str):
        import tensorflow as tf

        self._tf = tf
        os.makedirs(logdir, exist_ok=True)
        self.writer = tf.summary.create_file_writer(logdir)
        self._writers: dict = {}
        self._seen: dict = {}

    def scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Write many scalars in ONE traced call (eager tf.summary costs ~0.5 ms per scalar)."""
        tf = self._tf
        items = [(k, float(v)) for k, v in metrics.items() if v is not None]
        if not items:
            return
        tags = tuple(k for k, _ in items)
        fn = self._writers.get(tags)
        if fn is None and self._seen.get(tags, 0) < 2:  # rare tag sets: eager (no trace per set)
            self._seen[tags] = self._seen.get(tags, 0) + 1
            with self.writer.as_default():
                for k, v in items:
                    tf.summary.scalar(k, v, step=int(step))
            return
        if fn is None:
            writer = self.writer

            def write(values, step):
                with writer.as_default():
                    for i, tag in enumerate(tags):
                        tf.summary.scalar(tag, values[i], step=step)
                return tf.constant(0)

            fn = tf.function(write, input_signature=[tf.TensorSpec([len(tags)], tf.float32),
                                                     tf.TensorSpec([], tf.int64)], autograph=False)
            self._writers[tags] = fn
        fn(tf.constant([v for _, v in items], tf.float32), tf.constant(int(step), tf.int64))

    def restart(self, step: int) -> None:
        """Mark the start of a session: a ``SessionLog.START`` event at ``step`` in this writer's own
        file. TensorBoard treats a run's first START as its beginning and every later one as a
        restart: it drops the events at or after ``step`` written before it (the steps a killed
        session logged past its last checkpoint), so a resumed run's curves are continuous."""
        import time

        from tensorflow.core.util import event_pb2
        from tensorflow.python.ops import summary_ops_v2

        event = event_pb2.Event(step=int(step), wall_time=time.time(),
                                session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
        with self.writer.as_default():
            summary_ops_v2.import_event(self._tf.constant(event.SerializeToString()))
        self.writer.flush()

    def hparams(self, values: Mapping[str, object], metrics: tuple[str, ...], run_name: str) -> None:
        """The run's resolved config (flattened keys, scalar values) and its headline metric tags for
        TensorBoard's HParams dashboard: one experiment config naming the metrics and one session
        start with the values (``tensorboard --logdir ROOT`` then lists every run side by side)."""
        from tensorboard.plugins.hparams import api as hp

        with self.writer.as_default():
            hp.hparams_config(hparams=[hp.HParam(k) for k in values],
                              metrics=[hp.Metric(tag) for tag in metrics])
            hp.hparams(dict(values), trial_id=run_name)
        self.writer.flush()

    def histogram(self, tag: str, values, step: int) -> None:
        tf = self._tf
        with self.writer.as_default():
            tf.summary.histogram(tag, np.asarray(values), step=int(step))

    def text(self, tag: str, text: str, step: int) -> None:
        tf = self._tf
        with self.writer.as_default():
            tf.summary.text(tag, text, step=int(step))

    def images(self, tag: str, images, step: int, max_outputs: int = 3) -> None:
        """uint8 [N, H, W, 3] images."""
        tf = self._tf
        with self.writer.as_default():
            tf.summary.image(tag, images, step=int(step), max_outputs=max_outputs)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NullLogger:
    """What a non-chief worker logs: nothing."""

    def scalars(self, *a, **k) -> None:
        pass

    histogram = text = images = restart = flush = close = hparams = scalars


class Progress:
    """A rich progress bar with live metrics; silent when stdout is not a terminal."""

    def __init__(self, total: int, start: int = 0, description: str = "train", enabled: bool | None = None):
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self._progress = None
        if not self.enabled:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._progress = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            transient=False)
        self._task = self._progress.add_task(description, total=total, completed=start, info="")
        self._sub = None
        self._progress.start()

    def update(self, completed: int, metrics: Mapping[str, float] | None = None) -> None:
        if self._progress is None:
            return
        info = "  ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in (metrics or {}).items())
        self._progress.update(self._task, completed=completed, info=info)

    def sub(self, description: str, completed: int, total: int) -> None:
        """A second bar for progress inside one iteration (e.g. minibatches of an epoch)."""
        if self._progress is None:
            return
        if self._sub is None:
            self._sub = self._progress.add_task(description, total=total, completed=completed, info="")
        elif completed == 0:  # a new pass: restart the clock too
            self._progress.reset(self._sub, total=total, completed=0, description=description)
        else:
            self._progress.update(self._sub, completed=completed, total=total, description=description)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def say(msg: str) -> None:
    """A console line for the user (stdout, flushed)."""
    print(msg, flush=True)
