"""ENAS trainers (search: :mod:`tf_rlnas.algos.enas.search`; retrain and the shared child training: here). One iteration = one epoch.

search mode, per epoch (the reference's alternation):
  1. the shared child trains one pass over the train split, a FRESH controller sample per minibatch
     (sampled inside the same tf.function; no gradient to the controller); cross-entropy, L2 on
     kernels, SGD-Nesterov with a cosine learning rate with warm restarts, global-norm clipping;
  2. the controller takes ``train_steps`` steps; each samples ``num_aggregate`` arcs in one call,
     scores each on its own validation minibatch (child in inference mode): reward = accuracy +
     entropy_weight * entropy; the EMA baseline is updated after each sample in turn (or, with
     ``controller.baseline: loo``, the step's arcs share ONE validation batch and each is measured
     against the mean reward of the others: :func:`advantages`); loss =
     mean(-log_prob * (reward - baseline)) + skip_weight * mean(skip_penalty) (so the gradient is
     the average over the samples); global-norm clip; Adam(beta1 0, eps 1e-3);
     Scoring (rewards, evals, derive) uses BN in inference mode with the shared moving statistics
     (the paper), or with ``search.score_bn: batch`` each architecture's own batch statistics.
  3. every ``search.eval_every`` epochs: ``eval_archs`` sampled arcs scored on one validation batch;
     the best one's full validation and test accuracy (search-time accuracy, shared weights).
  At the end: ``derive_archs`` sampled arcs scored on the same ``derive_valid_batches`` validation
  batches (``search.derive_top: K`` > 1: the best K of them re-scored on the whole validation split);
  the best goes to ``<run>/architecture.json`` and is printed.

fixed mode: the architecture from ``fixed.arc_file`` is built alone (filters doubled at the pool
layers) and trained from scratch on the full train split; test accuracy every epoch; export gives
``serving_default(images) -> probabilities``.

Child training runs under the configured tf.distribute strategy (per-replica gradients are summed
across replicas, then clipped and applied once in the cross-replica context).
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import tensorflow as tf

from tf_rlnas.algos.enas.child import ChildNet, batch_stats_frozen, disable_bn_relu_fusion
from tf_rlnas.core.logging import say
from tf_rlnas.core.trainer import Budget, ExportSpec, Trainer
from tf_rlnas.data.images import Splits, load_arrays
from tf_rlnas.errors import UserError
from tf_rlnas.nn.optim import NesterovSGD


def cosine_lr(epoch: float, lr_max: float, lr_min: float, t0: int, tmul: int) -> float:
    """SGDR: cycles of t0, t0*tmul, ... epochs; lr = min + (max - min)(1 + cos(pi t / T)) / 2 (``epoch``
    may be fractional: the position within the epoch, for a per-step schedule)."""
    start, length = 0, t0
    while epoch >= start + length:
        start, length = start + length, length * tmul
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * (epoch - start) / length))


def make_child_step(child, optimizer, controller, grad_clip: float, global_batch: int, image_shape,
                    strategy=None):
    """One shared-child SGD step as a tf.function ``(x, y, seed [2]) -> (loss, #correct, grad norm)``:
    a fresh arc from ``controller`` (``None``: the fixed network), cross-entropy summed over the
    global batch / its size, dropout seeded from ``seed``, gradients (summed over replicas under
    ``strategy``) clipped by global norm and applied once."""
    L = child.num_layers
    variables = child.trainable_variables

    def arc_for_step(seed):
        if controller is None:
            return tf.zeros([L], tf.int32), tf.zeros([L, L], tf.int32)
        out = controller.sample(1, seed)
        return out["branches"][0], out["skips"][0]

    def grads_of(x, y, b, s, drop_seed):
        with tf.GradientTape() as tape:
            logits = child(x, b, s, training=True, dropout_seed=drop_seed)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)) / float(global_batch)
        grads = tape.gradient(loss, variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
        return grads, loss, correct

    def apply(grads):
        gnorm = tf.linalg.global_norm(grads)
        if grad_clip:
            grads, _ = tf.clip_by_global_norm(grads, grad_clip, use_norm=gnorm)
        optimizer.apply_gradients(zip(grads, variables))
        return gnorm

    if strategy is None:
        def step(x, y, seed):
            b, s = arc_for_step(seed)
            grads, loss, correct = grads_of(x, y, b, s, seed + [0, 1])
            return loss, correct, apply(grads)
        return tf.function(step, input_signature=[tf.TensorSpec([None, *image_shape], tf.float32),
                                                  tf.TensorSpec([None], tf.int32), tf.TensorSpec([2], tf.int64)])

    def step_dist(x, y, seed):
        b, s = arc_for_step(seed)

        def per_replica(x, y):  # a different dropout mask on each replica's shard
            rid = tf.distribute.get_replica_context().replica_id_in_sync_group
            return grads_of(x, y, b, s, seed + [0, 1] + tf.cast(tf.stack([rid, 0]), tf.int64) * 7919)
        grads, loss, correct = strategy.run(per_replica, args=(x, y))
        grads = [strategy.reduce("SUM", g, axis=None) for g in grads]
        return (strategy.reduce("SUM", loss, axis=None), strategy.reduce("SUM", correct, axis=None),
                apply(grads))
    return tf.function(step_dist)


class ChildTraining(Trainer):
    """What the search and the retrain share: the data splits, the child network and its SGD, one
    epoch of child training (a fresh controller sample per minibatch in the search, the fixed
    network in the retrain), scoring an architecture. One iteration = one epoch."""

    algo = "enas"
    unit = "epoch"
    controller = None

    def build_child(self, arc) -> None:
        cfg, d, c = self.cfg, self.cfg.data, self.cfg.child
        if arc is not None and len(arc[0]) != c.num_layers:
            say(f"fixed architecture has {len(arc[0])} layers: child.num_layers {c.num_layers} -> {len(arc[0])}")
        arrays = load_arrays(d.dataset, d.data_dir, d.download)
        self.splits = Splits(arrays, valid_size=d.valid_size, batch_size=d.batch_size,
                             eval_batch_size=d.eval_batch_size, seed=cfg.run.seed, augment_pad=d.augment_pad,
                             augment_flip=d.augment_flip, full_train=arc is not None)
        self.replicas = self.strategy.num_replicas_in_sync if self.strategy else 1
        if d.batch_size % self.replicas:
            raise UserError(f"config key 'data.batch_size' ({d.batch_size}) must be divisible by the "
                            f"{self.replicas} replicas")
        self.num_layers = len(arc[0]) if arc is not None else c.num_layers
        self.arc = arc
        disable_bn_relu_fusion()
        with self.strategy.scope() if self.strategy else contextlib.nullcontext():
            self.child = ChildNet(self.num_layers, c.filters, self.splits.num_classes, self.splits.image_shape,
                                  keep_prob=c.keep_prob, fixed_arc=arc, synchronized_bn=self.strategy is not None,
                                  compute_dtype=c.compute_dtype)
            self.child_opt = NesterovSGD(c.lr_max, c.momentum, c.l2, name="child_sgd")
            self.child_opt.build(self.child.trainable_variables)
        self.rng = tf.random.Generator.from_seed(int(self.np_rng.integers(2**31)))
        self.checkpoint.track(child=self.child, child_opt=self.child_opt, rng=self.rng)

    def build_child_functions(self, batch_bn: bool) -> None:
        h, w, ch = self.splits.image_shape
        L = self.num_layers
        img = tf.TensorSpec([None, h, w, ch], tf.float32)
        lab = tf.TensorSpec([None], tf.int32)
        arc_b, arc_s = tf.TensorSpec([L], tf.int32), tf.TensorSpec([L, L], tf.int32)
        self.child_step = make_child_step(self.child, self.child_opt, self.controller, self.cfg.child.grad_clip,
                                          self.cfg.data.batch_size, self.splits.image_shape, self.strategy)

        def accuracy(x, y, b, s):
            if batch_bn:  # the batch's own BN statistics (the moving ones stay as they are); no dropout
                with batch_stats_frozen():
                    logits = self.child(x, b, s, training=True)
            else:
                logits = self.child(x, b, s, training=False)
            return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
        self.accuracy = tf.function(accuracy, input_signature=[img, lab, arc_b, arc_s])

        def accuracy_flip_avg(x, y, b, s):  # class probabilities averaged over the image and its mirror
            p = tf.nn.softmax(self.child(x, b, s, training=False)) + \
                tf.nn.softmax(self.child(tf.reverse(x, axis=[2]), b, s, training=False))
            return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(p, -1, output_type=tf.int32), y), tf.float32))
        self.accuracy_flip_avg = tf.function(accuracy_flip_avg, input_signature=[img, lab, arc_b, arc_s])

    def budget(self) -> Budget:
        return Budget(int(self.iteration.numpy()), self.cfg.child.epochs)

    def _seed(self) -> tf.Tensor:
        return self.rng.make_seeds(1)[:, 0]

    def train_child_epoch(self, epoch: int) -> dict[str, float]:
        """One pass of the child over the train split (SGDR learning rate, per epoch or per step)."""
        cfg, c = self.cfg, self.cfg.child
        steps, label = self.splits.steps_per_epoch, f"epoch {epoch + 1} child"
        cycle = c.lr_t0 or c.epochs
        lr = cosine_lr(epoch, c.lr_max, c.lr_min, cycle, c.lr_tmul)
        self.child_opt.learning_rate.assign(lr)
        t0 = time.perf_counter()
        losses, correct, gnorms, n = [], 0.0, [], 0
        ds = self.splits.train(epoch)
        if self.strategy is not None:
            ds = self.strategy.experimental_distribute_dataset(ds)
        self.sub_progress(label, 0, steps)
        for x, y in ds:
            if c.lr_per_step:
                self.child_opt.learning_rate.assign(
                    cosine_lr(epoch + min(len(losses), steps - 1) / steps, c.lr_max, c.lr_min, cycle, c.lr_tmul))
            loss, corr, gnorm = self.child_step(x, y, self._seed())
            self.sub_progress(label, len(losses) + 1, steps)
            losses.append(float(loss))
            gnorms.append(float(gnorm))
            correct += float(corr)
            n += cfg.data.batch_size
        child_seconds = time.perf_counter() - t0
        return {"child/loss": float(np.mean(losses)), "child/train_accuracy": correct / max(n, 1), "child/lr": lr,
                "child/grad_norm": float(np.mean(gnorms)), "child/images_per_s": n / max(child_seconds, 1e-9)}

    def _score(self, b, s, batches) -> float:
        return float(np.mean([float(self.accuracy(x, y, b, s)) for x, y in batches]))

    def evaluate_arc(self, dataset, b=None, s=None, flip_average: bool = False) -> float:
        """Accuracy of an arc (fixed mode: the built one) over a whole dataset, weighted by batch size;
        ``flip_average``: of the class probabilities averaged over each image and its mirror."""
        L = self.num_layers
        if b is None:
            b, s = np.zeros(L, np.int32), np.zeros((L, L), np.int32)
        acc = self.accuracy_flip_avg if flip_average else self.accuracy
        correct, n = 0.0, 0
        for x, y in dataset:
            correct += float(acc(x, y, b, s)) * len(y)
            n += len(y)
        return correct / max(n, 1)

    def progress_metrics(self, metrics):
        keys = ("child/train_accuracy", "controller/valid_accuracy", "fixed/test_accuracy",
                "search/best_test_accuracy_shared_weights")
        return {k: metrics[k] for k in keys if k in metrics}


class RetrainTrainer(ChildTraining):
    """``mode: fixed``: the architecture of ``fixed.arc_file`` alone (filters doubled at the pool
    layers), trained from scratch on the full train split; test accuracy every epoch."""

    HEADLINE = ("fixed/test_accuracy",)

    def _read_arc(self, path: str):
        from tf_rlnas.algos.enas.controller import read_arc_file, special_arc

        arc = special_arc(path, self.cfg.child.num_layers)
        return arc if arc is not None else read_arc_file(path)

    def build(self) -> None:
        self.build_child(self._read_arc(self.cfg.fixed.arc_file))
        self.build_child_functions(batch_bn=False)

    def train_iteration(self) -> dict[str, float]:
        m = self.train_child_epoch(int(self.iteration.numpy()))
        m["fixed/test_accuracy"] = self.evaluate_arc(self.splits.test())
        return m

    def evaluate(self, episodes=None) -> dict[str, float]:
        # (the validation images are part of the full training split in fixed mode)
        out = {"fixed/test_accuracy": self.evaluate_arc(self.splits.test())}
        if self.cfg.data.augment_flip:  # trained on mirrored images too: also the test-time flip average
            out["fixed/test_accuracy_flip_avg"] = self.evaluate_arc(self.splits.test(), flip_average=True)
        return out

    def export_spec(self) -> ExportSpec:
        child = self._float32_child()
        module = ClassifierModule(child, self.splits.mean, self.splits.std, self.splits.image_shape)
        raw = (self.splits.x_test[:8] * self.splits.std + self.splits.mean).astype(np.float32)
        expected = tf.nn.softmax(child(tf.constant(self.splits.x_test[:8]), training=False)).numpy()
        return ExportSpec(module, {"serving_default": module.serving_default}, {"serving_default": {"images": raw}},
                          {"serving_default": {"probabilities": expected}})


    def _float32_child(self):
        """The child to serve: this one, or where it trains in bfloat16 a float32 copy with its weights
        (the served model runs on any CPU and converts to ONNX / LiteRT, whose CPU kernels take no
        bfloat16 convolutions)."""
        if self.child.conv_dtype == "float32":
            return self.child
        c = self.cfg.child
        child = ChildNet(self.num_layers, c.filters, self.splits.num_classes, self.splits.image_shape,
                         keep_prob=c.keep_prob, fixed_arc=self.arc, compute_dtype="float32")
        child(tf.zeros((1, *self.splits.image_shape)), training=False)
        mine = {v.path: v for v in self.child.weights}
        for v in child.weights:
            v.assign(mine[v.path])
        return child


class EnasTrainer:
    """The registry's ENAS trainer: ``EnasTrainer(cfg, run_dir)`` is a :class:`SearchTrainer` or a
    :class:`RetrainTrainer` by ``cfg.mode``."""

    def __new__(cls, cfg, run_dir: str):
        from tf_rlnas.algos.enas.search import SearchTrainer
        return (RetrainTrainer if cfg.mode == "fixed" else SearchTrainer)(cfg, run_dir)

    @staticmethod
    def cannot_evaluate(cfg) -> str | None:
        from tf_rlnas.algos.enas.search import SearchTrainer
        return (RetrainTrainer if cfg.mode == "fixed" else SearchTrainer).cannot_evaluate(cfg)

    @staticmethod
    def headline_metrics(cfg) -> tuple[str, ...]:
        from tf_rlnas.algos.enas.search import SearchTrainer
        return (RetrainTrainer if cfg.mode == "fixed" else SearchTrainer).HEADLINE


class ClassifierModule(tf.Module):
    """``serving_default(images) -> probabilities``: raw pixel values (the dataset's scale, e.g.
    0..255), normalised inside with the training split's per-channel statistics."""

    def __init__(self, child, mean, std, image_shape):
        super().__init__(name="enas_classifier")
        self.child = child
        self.mean, self.std = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)
        spec = tf.TensorSpec([None, *image_shape], tf.float32, name="images")
        self.serving_default = tf.function(self._serve, input_signature=[spec])

    def _serve(self, images):
        x = (images - self.mean) / self.std
        return {"probabilities": tf.nn.softmax(self.child(x, training=False))}
