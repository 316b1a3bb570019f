"""Image classification data as tf.data pipelines: train / valid / test splits, per-channel
normalisation (statistics of the train split), optional augmentation (pad-and-random-crop,
horizontal flip), shuffling, batching and prefetch.

Sources:
- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, ships with the wheel: the
  built-in default, no download). A fixed, seeded 80/20 train/test split of the 1,797.
- ``fashion_mnist``: the IDX files (``train-images-idx3-ubyte[.gz]`` ...) in ``data_dir``
  (default ``/usr/share/datasets/fashion-mnist``: Debian's ``dataset-fashion-mnist`` package).
- ``cifar10``: tensorflow-datasets' ``cifar10`` in ``data_dir`` (downloaded there if it is not
  prepared and ``download`` is true).

The validation split is carved from the training data (``valid_size`` images, seeded); with
``full_train`` the training split is the whole training data (fixed-architecture retraining).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct

import numpy as np

from tf_rlnas.errors import UserError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DATASETS = ("digits", "fashion_mnist", "cifar10")


@dataclasses.dataclass
class ImageArrays:
    x_train: np.ndarray  # [N, H, W, C] uint8 or float32
    y_train: np.ndarray  # [N] int
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


# ---- loaders --------------------------------------------------------------------------------
def load_digits() -> ImageArrays:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]  # 0..16 -> 0..255
    y = d.target.astype(np.int64)
    order = np.random.default_rng(2018).permutation(len(y))  # fixed split, independent of the run seed
    n_test = len(y) // 5
    test, train = order[:n_test], order[n_test:]
    return ImageArrays(x[train], y[train], x[test], y[test], 10)


def _read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000 08 <ndim>, big-endian dims, uint8 data."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path} is truncated (IDX header)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated or corrupt: {data.size} bytes of data for shape {dims}")
    return data.reshape(dims)


def _find(data_dir: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    raise UserError(f"fashion_mnist: {stem}[.gz] not found in {data_dir} "
                    f"(install Debian's dataset-fashion-mnist, or set data.data_dir to a folder with the IDX files)")


def load_fashion_mnist(data_dir: str | None) -> ImageArrays:
    data_dir = data_dir or FASHION_MNIST_DIR
    if not os.path.isdir(data_dir):
        raise UserError(f"fashion_mnist: folder {data_dir} not found (apt-get install dataset-fashion-mnist, "
                        f"or set data.data_dir to a folder with the four IDX files)")
    xs = {s: _read_idx(_find(data_dir, f"{s}-images-idx3-ubyte")) for s in ("train", "t10k")}
    ys = {s: _read_idx(_find(data_dir, f"{s}-labels-idx1-ubyte")).astype(np.int64) for s in ("train", "t10k")}
    for s in xs:
        if xs[s].ndim != 3 or len(xs[s]) != len(ys[s]):
            raise UserError(f"fashion_mnist: {s} images {xs[s].shape} and labels {ys[s].shape} do not match")
    return ImageArrays(xs["train"][..., None], ys["train"], xs["t10k"][..., None], ys["t10k"], 10)


def load_cifar10(data_dir: str | None, download: bool) -> ImageArrays:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder("cifar10", data_dir=data_dir)
        if download:
            builder.download_and_prepare()  # a no-op when the data is already prepared
        train, test = (_to_numpy(builder.as_dataset(split=s, as_supervised=True)) for s in ("train", "test"))
    except Exception as e:  # noqa: BLE001 - any failure to obtain the data is the same user problem
        where = data_dir or "~/tensorflow_datasets"
        raise UserError(
            f"cifar10 is not available in {where} and could not be downloaded ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else 'no detail'}); on a machine with internet run "
            f"`python -c \"import tensorflow_datasets as tfds; tfds.builder('cifar10', data_dir='DIR')"
            f".download_and_prepare()\"` and copy DIR here, then set data.data_dir") from None
    return ImageArrays(train[0], train[1].astype(np.int64), test[0], test[1].astype(np.int64), 10)


def _to_numpy(ds) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of a finite tf.data split (batched reads; ``batch_size=-1`` crashes on
    tfds' mock data)."""
    xs, ys = [], []
    for x, y in ds.batch(10_000).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError("the split is empty")
    return np.concatenate(xs), np.concatenate(ys)


def load_arrays(name: str, data_dir: str | None = None, download: bool = True) -> ImageArrays:
    if name == "digits":
        return load_digits()
    if name == "fashion_mnist":
        return load_fashion_mnist(data_dir)
    if name == "cifar10":
        return load_cifar10(data_dir, download)
    raise UserError(f"unknown dataset '{name}' (choose from {', '.join(DATASETS)})")


# ---- pipelines ------------------------------------------------------------------------------
class Splits:
    """The three splits as normalised arrays plus tf.data builders. Every builder takes the epoch so
    that shuffling and augmentation depend on (seed, epoch) only: a run resumed at an epoch
    boundary sees exactly the batches an uninterrupted run would."""

    def __init__(self, arrays: ImageArrays, *, valid_size: int, batch_size: int, eval_batch_size: int,
                 seed: int, augment_pad: int = 0, augment_flip: bool = False, full_train: bool = False):
        n = len(arrays.y_train)
        if not 0 < valid_size < n:
            raise UserError(f"config key 'data.valid_size' must be between 1 and {n - 1} for this dataset "
                            f"({n} training images)")
        order = np.random.default_rng(seed).permutation(n)
        valid_idx = order[:valid_size]
        train_idx = order if full_train else order[valid_size:]
        x_tr = arrays.x_train[train_idx].astype(np.float32)
        self.mean = x_tr.mean(axis=(0, 1, 2))
        self.std = x_tr.std(axis=(0, 1, 2)) + 1e-6
        del x_tr
        self.x_train, self.y_train = self.normalize(arrays.x_train[train_idx]), arrays.y_train[train_idx].astype(np.int32)
        self.x_valid, self.y_valid = self.normalize(arrays.x_train[valid_idx]), arrays.y_train[valid_idx].astype(np.int32)
        self.x_test, self.y_test = self.normalize(arrays.x_test), arrays.y_test.astype(np.int32)
        if batch_size > len(self.y_train):
            raise UserError(f"config key 'data.batch_size' ({batch_size}) exceeds the {len(self.y_train)} "
                            f"training images")
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.augment_pad, self.augment_flip = augment_pad, augment_flip
        self.num_classes = arrays.num_classes
        self.image_shape = tuple(self.x_train.shape[1:])
        self.sizes = {"train": len(self.y_train), "valid": len(self.y_valid), "test": len(self.y_test)}

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x.astype(np.float32) - self.mean) / self.std).astype(np.float32)

    @property
    def steps_per_epoch(self) -> int:
        return self.sizes["train"] // self.batch_size

    def train(self, epoch: int):
        """One shuffled, augmented pass over the train split (full batches)."""
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((self.x_train, self.y_train))
        ds = ds.shuffle(len(self.y_train), seed=self.seed * 100_003 + epoch, reshuffle_each_iteration=False)
        if self.augment_pad or self.augment_flip:
            aug = augment_fn(self.augment_pad, self.augment_flip)
            seeds = tf.data.Dataset.random(seed=self.seed * 100_003 + epoch + 7).batch(2)
            ds = tf.data.Dataset.zip((ds, seeds)).map(lambda xy, s: aug(xy[0], xy[1], s),
                                                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(self.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def valid_stream(self, epoch: int):
        """Validation batches forever (reshuffled each pass; the controller's reward batches)."""
        import tensorflow as tf

        n = len(self.y_valid)
        ds = tf.data.Dataset.from_tensor_slices((self.x_valid, self.y_valid))
        ds = ds.shuffle(n, seed=self.seed * 100_003 + epoch + 3, reshuffle_each_iteration=True).repeat()
        return ds.batch(min(self.eval_batch_size, n), drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def valid(self):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((self.x_valid, self.y_valid)).batch(self.eval_batch_size)

    def test(self):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((self.x_test, self.y_test)).batch(self.eval_batch_size)


def augment_fn(pad: int, flip: bool):
    """(image, label, [2] int64 seed) -> augmented (image, label): pad ``pad`` pixels (zeros, i.e. the
    mean after normalisation) and crop back at a random offset; random horizontal flip."""
    import tensorflow as tf

    def fn(x, y, s):
        if pad:
            h, w, c = x.shape
            x = tf.pad(x, [[pad, pad], [pad, pad], [0, 0]])
            x = tf.image.stateless_random_crop(x, [h, w, c], seed=s)
        if flip:
            x = tf.image.stateless_random_flip_left_right(x, seed=s + 1)
        return x, y
    return fn
