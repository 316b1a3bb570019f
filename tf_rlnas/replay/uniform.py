"""Uniform replay kept on the TensorFlow side, and the vector-env transition builder.

:class:`ReplayBuffer` stores (obs, action, reward, next_obs, terminated) in ``tf.Variable``s so a
compiled training step appends and samples without host copies. Appends are fixed-shape scatters:
a row that is not a transition (``keep = 0``) is written to one extra "trash" row that is never
sampled, so the same code runs for any number of kept rows. All fields live in ONE [capacity + 1, width]
variable (one scatter per append, one gather per batch: per-op cost dominates at these sizes).
Sampling draws indices from a ``tf.random.Generator`` (the learner's, checkpointed).

``terminated`` is the true end of the task only; a time-limit truncation is stored as NOT
terminal so the critic bootstraps through it. :class:`VectorTransitions` turns gymnasium 1.x
vector-env steps (default ``NEXT_STEP`` autoreset) into keep masks without ever joining the last
observation of one episode to the first of the next. ``state()`` / ``load_state()`` move the
contents oldest-first to NumPy for the run's checkpoint side file.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")


class ReplayBuffer(tf.Module):
    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        super().__init__(name="replay")
        self.capacity = int(capacity)
        widths = dict(zip(FIELDS, (obs_dim, act_dim, 0, obs_dim, 0)))  # 0 = a scalar column
        self.columns, col = {}, 0
        for k, w in widths.items():
            self.columns[k] = (col, w)
            col += max(w, 1)
        self.width = col
        self.data = tf.Variable(tf.zeros((self.capacity + 1, col), tf.float32), trainable=False)  # + trash row
        self.ptr = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False)

    def __len__(self) -> int:
        return int(self.count.numpy())

    # ---- graph-side (also fine eagerly) -------------------------------------------------------
    def append(self, obs, actions, rewards, next_obs, terminated, keep) -> tf.Tensor:
        """Store the rows with ``keep`` != 0 (in order); returns how many were stored."""
        keep = tf.cast(keep > 0, tf.int64)
        pos = tf.cumsum(keep) - 1
        idx = tf.where(keep > 0, (self.ptr + pos) % self.capacity, self.capacity)[:, None]
        rows = tf.concat([tf.cast(obs, tf.float32), tf.cast(actions, tf.float32), tf.cast(rewards, tf.float32)[:, None],
                          tf.cast(next_obs, tf.float32), tf.cast(terminated, tf.float32)[:, None]], axis=1)
        self.data.scatter_nd_update(idx, rows)
        n = tf.reduce_sum(keep)
        self.ptr.assign((self.ptr + n) % self.capacity)
        self.count.assign(tf.minimum(self.count + n, self.capacity))
        return n

    def sample_tf(self, rng: tf.random.Generator, n_batches, batch_size: int) -> dict[str, tf.Tensor]:
        """``n_batches`` uniform batches stacked on a leading axis: [n, B, ...]."""
        idx = rng.uniform(tf.stack([tf.cast(n_batches, tf.int32), batch_size]), 0, self.count, dtype=tf.int64)
        return self.split(tf.gather(self.data, idx))

    def split(self, rows: tf.Tensor) -> dict[str, tf.Tensor]:
        """[..., width] rows -> the named fields."""
        return {k: rows[..., c] if w == 0 else rows[..., c:c + w] for k, (c, w) in self.columns.items()}

    # ---- host-side API --------------------------------------------------------------------------
    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        """Add a batch of transitions from NumPy (leading axis = transitions)."""
        n = len(rewards)
        if n > self.capacity:  # only the newest fit
            obs, actions, rewards, next_obs, terminated = (np.asarray(a)[-self.capacity:] for a in
                                                           (obs, actions, rewards, next_obs, terminated))
            n = self.capacity
        self.append(tf.constant(obs, tf.float32), tf.constant(actions, tf.float32),
                    tf.constant(rewards, tf.float32), tf.constant(next_obs, tf.float32),
                    tf.constant(terminated, tf.float32), tf.ones([n], tf.int64))

    def sample(self, rng, batch_size: int, n_batches: int = 1) -> dict[str, np.ndarray]:
        """NumPy batches [n, B, ...]; ``rng`` a NumPy Generator or a ``tf.random.Generator``."""
        if isinstance(rng, tf.random.Generator):
            return {k: v.numpy() for k, v in self.sample_tf(rng, n_batches, batch_size).items()}
        idx = rng.integers(0, len(self), size=(n_batches, batch_size))
        return {k: v.numpy() for k, v in self.split(tf.gather(self.data, idx)).items()}

    def state(self) -> dict[str, np.ndarray]:
        n, ptr = len(self), int(self.ptr.numpy())
        order = (np.arange(n) + (ptr - n)) % self.capacity  # oldest first
        return {k: v.numpy() for k, v in self.split(tf.gather(self.data, order)).items()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.ptr.assign(0)
        self.count.assign(0)
        self.add(*(arrays[k] for k in FIELDS))


class VectorTransitions:
    """Keep masks for gymnasium 1.x vector-env steps (NEXT_STEP autoreset).

    After a sub-env ends an episode, its next ``step`` only resets it (the action is ignored and
    the returned observation is the new episode's first): that step yields no transition.
    """

    def __init__(self, num_envs: int):
        self.resetting = np.zeros(num_envs, bool)

    def keep(self, terminated, truncated) -> np.ndarray:
        """True for the sub-envs whose step is a transition (False: an autoreset step)."""
        keep = ~self.resetting
        self.resetting = np.logical_or(terminated, truncated)
        return keep
