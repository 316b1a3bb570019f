"""Episode storage (one compressed ``.npz`` per episode) and the PlaNet chunk loader.

Convention (one for the whole package; a test checks it). An episode of T env transitions is
stored as arrays of T + 1 entries:

    image[t]     the observation at time t (t = 0: after reset)
    action[t]    the action that LED TO image[t]; action[0] = 0
    reward[t]    the reward received on arriving at image[t]; reward[0] = 0
    discount[t]  0 if image[t] is a true terminal state, else 1; a time-limit end keeps 1
                 (DeepMind Control episodes never terminate: their last discount is 1)

so ``(image[t], action[t+1], reward[t+1], image[t+1], discount[t+1])`` is the transition t -> t+1,
and a recurrent filter reads ``(action[t], image[t])`` pairs in order.

Files are named ``{timestamp}-{uuid}-{length}.npz`` (length = T) in ``train_episodes/`` and
``test_episodes/``; the 32 hex digits of the id start with the run's episode counter (12 digits)
when the writer gives one, so that sorting the names gives the order of creation even within one
second, and the loader (and so training) is the same for the same seed, written to a temporary name and renamed (atomic: a kill leaves either no file
or a whole one). A corrupt or truncated file is skipped with one warning line and never stops
training.
"""

from __future__ import annotations

import datetime
import glob
import io
import os
import uuid
import zipfile
from typing import Iterator

import numpy as np

KEYS = ("image", "action", "reward", "discount")


def warn(msg: str) -> None:
    from tf_rlnas.core.logging import say
    say(f"warning: {msg}")


def save_episode(directory: str, episode: dict[str, np.ndarray], index: int | None = None) -> str:
    """Write one episode atomically; returns its path. ``index``: the writer's episode counter,
    the leading digits of the id (creation order = name order)."""
    n = len(episode["reward"])
    for k in KEYS:
        if k not in episode or len(episode[k]) != n:
            raise ValueError(f"episode key '{k}' missing or not of length {n}")
    os.makedirs(directory, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    uid = uuid.uuid4().hex if index is None else f"{int(index):012x}{uuid.uuid4().hex[:20]}"
    path = os.path.join(directory, f"{stamp}-{uid}-{n - 1}.npz")
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(episode[k]) for k in KEYS})
    tmp = path + ".tmp"  # not *.npz: scans never see a half-written file
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def episode_length(path: str) -> int | None:
    try:
        return int(os.path.basename(path)[:-4].rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def list_episodes(directory: str) -> list[str]:
    """Episode files, oldest first (the timestamp leads the name)."""
    return sorted(glob.glob(os.path.join(directory, "*.npz")))


def readable_episodes(directory: str) -> list[str]:
    """Episode files whose name parses and whose zip directory is intact (a cheap check: a
    truncated or garbage file fails it; the arrays are not read)."""
    return [p for p in list_episodes(directory) if episode_length(p) is not None and zipfile.is_zipfile(p)]


def load_episode(path: str) -> dict[str, np.ndarray] | None:
    """The episode, or None (with one warning line) if the file is corrupt or inconsistent."""
    try:
        with np.load(path) as data:
            ep = {k: data[k] for k in KEYS}
        n = len(ep["reward"])
        if any(len(v) != n for v in ep.values()) or ep["image"].dtype != np.uint8:
            raise ValueError("inconsistent arrays")
        return ep
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        warn(f"skipping unreadable episode {path} ({type(e).__name__}: {e})")
        return None


class ChunkLoader:
    """Fixed-length chunks for ``tf.data.Dataset.from_generator``, one at a time on demand.

    Each round yields ``every`` chunks: half from episodes that appeared since the last scan
    ("recent"; as many as exist), the rest from the cache; then the recent episodes join the cache
    and the folder is rescanned. The cache is bounded by ``max_cache_steps`` env steps: the oldest
    episodes are evicted (the original's cache never evicted: 1e6 pixel steps is ~11 GB).
    Episodes shorter than ``length`` are never sampled. Chunks start at uniformly random offsets.

    The loader is a small state machine (:meth:`next_chunk`) whose whole state - RNG, which
    episodes are cached / recent / seen, the position in the current round - is :meth:`state` /
    :meth:`load_state` (episode names only; episode files never change once written), so a resumed
    run continues the same chunk stream. :func:`chunk_dataset` reads it synchronously (no
    prefetch): what a step trains on is decided when the step runs, not by a thread racing ahead of
    the episodes the trainer writes."""

    def __init__(self, directory: str, length: int, every: int, seed: int, max_cache_steps: int = 100_000):
        self.directory, self.length, self.every = directory, int(length), int(every)
        self.max_cache_steps = int(max_cache_steps)
        self.rng = np.random.default_rng(seed)
        self.cache: dict[str, dict] = {}   # path -> episode, insertion order = age
        self.seen: set[str] = set()        # paths read or skipped (corrupt files are warned once)
        self.recent: dict[str, dict] = {}
        self.stats = {"scans": 0, "recent_yields": 0, "cache_yields": 0, "evicted": 0}
        self._round_recent: list[str] | None = None  # this round's picks from the recent episodes
        self._round_pool: list[str] = []             # this round's pool for the random fill
        self._pos = 0                                # chunks yielded in this round

    def cached_steps(self) -> int:
        return sum(len(e["reward"]) for e in self.cache.values())

    def scan(self) -> None:
        self.stats["scans"] += 1
        for path in list_episodes(self.directory):
            if path in self.seen:
                continue
            self.seen.add(path)
            n = episode_length(path)
            if n is not None and n + 1 < self.length:
                continue
            ep = load_episode(path)
            if ep is not None and len(ep["reward"]) >= self.length:
                self.recent[path] = ep

    def _evict(self) -> None:
        total = self.cached_steps()
        while self.cache and total > self.max_cache_steps:
            path = next(iter(self.cache))
            total -= len(self.cache.pop(path)["reward"])
            self.stats["evicted"] += 1

    def _chunk(self, ep: dict) -> dict:
        start = int(self.rng.integers(0, len(ep["reward"]) - self.length + 1))
        return {k: v[start:start + self.length] for k, v in ep.items()}

    def _start_round(self) -> None:
        self.scan()
        recent = list(self.recent)
        self._round_recent = [recent[i] for i in self.rng.permutation(len(recent))][: self.every // 2]
        self._round_pool = list(self.cache) or recent
        self._pos = 0

    def _end_round(self) -> None:
        self.cache.update(self.recent)
        self.recent = {}
        self._evict()
        self._round_recent = None
        if not self.cache:  # nothing long enough on disk yet
            raise RuntimeError(f"no episode of >= {self.length} steps in {self.directory}")

    def next_chunk(self) -> dict:
        while True:
            if self._round_recent is None:
                self._start_round()
            if self._pos < len(self._round_recent):
                ep = self.recent[self._round_recent[self._pos]]
                self.stats["recent_yields"] += 1
            elif self._round_pool and self._pos < self.every:
                path = self._round_pool[int(self.rng.integers(len(self._round_pool)))]
                ep = self.cache[path] if path in self.cache else self.recent[path]
                self.stats["cache_yields"] += 1
            else:
                self._end_round()
                continue
            self._pos += 1
            return self._chunk(ep)

    def __call__(self) -> Iterator[dict]:
        while True:
            yield self.next_chunk()

    # ---- checkpoint ---------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything :meth:`next_chunk` depends on, by episode file name (JSON-able)."""
        name = os.path.basename
        return {"rng": self.rng.bit_generator.state, "seen": sorted(name(p) for p in self.seen),
                "cache": [name(p) for p in self.cache], "recent": [name(p) for p in self.recent],
                "round_recent": None if self._round_recent is None else [name(p) for p in self._round_recent],
                "round_pool": [name(p) for p in self._round_pool], "pos": self._pos, "stats": dict(self.stats)}

    def load_state(self, state: dict) -> None:
        """Continue from :meth:`state`: the cached and recent episodes are read again from the folder
        (one warning line for each that is gone or damaged; it is then dropped)."""
        path = lambda n: os.path.join(self.directory, n)  # noqa: E731
        self.rng.bit_generator.state = state["rng"]
        self.seen = {path(n) for n in state["seen"]}
        loaded = {}
        for n in dict.fromkeys(state["cache"] + state["recent"]):
            ep = load_episode(path(n)) if os.path.exists(path(n)) else None
            if ep is None and not os.path.exists(path(n)):
                warn(f"episode {path(n)} of the checkpoint's loader state is gone; continuing without it")
            if ep is not None:
                loaded[n] = ep
        self.cache = {path(n): loaded[n] for n in state["cache"] if n in loaded}
        self.recent = {path(n): loaded[n] for n in state["recent"] if n in loaded}
        rr = state["round_recent"]
        self._round_recent = None if rr is None else [path(n) for n in rr if n in loaded]
        self._round_pool = [path(n) for n in state["round_pool"] if n in loaded]
        self._pos = int(state["pos"])
        self.stats = dict(state["stats"])
        if len(loaded) < len(dict.fromkeys(state["cache"] + state["recent"])):
            self._round_recent = None  # episodes went missing: a new round (and scan) on the next chunk


def episode_index(path: str) -> int | None:
    """The writer's episode counter in a file name (see :func:`save_episode`), or None."""
    try:
        uid = os.path.basename(path).split("-")[1]
        return int(uid[:12], 16) if len(uid) == 32 else None
    except (IndexError, ValueError):
        return None


def chunk_dataset(directory: str, length: int, batch: int, image_size: int, act_dim: int, seed: int,
                  every: int = 0, max_cache_steps: int = 100_000):
    """``tf.data`` batches of chunks ``{image [B, L, H, W, 3] uint8, action [B, L, A], reward [B, L],
    discount [B, L]}`` from :class:`ChunkLoader`, prefetched. Returns (dataset, loader)."""
    import tensorflow as tf

    loader = ChunkLoader(directory, length, every or batch * 10, seed, max_cache_steps)
    # read synchronously: no prefetch (and none injected by tf.data's optimiser), so the loader's
    # state at a checkpoint is exactly what the steps so far consumed
    sig = {"image": tf.TensorSpec([length, image_size, image_size, 3], tf.uint8),
           "action": tf.TensorSpec([length, act_dim], tf.float32),
           "reward": tf.TensorSpec([length], tf.float32),
           "discount": tf.TensorSpec([length], tf.float32)}

    def gen():
        for c in loader():
            yield {"image": c["image"], "action": c["action"].astype(np.float32),
                   "reward": c["reward"].astype(np.float32), "discount": c["discount"].astype(np.float32)}

    ds = tf.data.Dataset.from_generator(gen, output_signature=sig).batch(batch, drop_remainder=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.inject_prefetch = False
    options.deterministic = True
    return ds.with_options(options), loader
