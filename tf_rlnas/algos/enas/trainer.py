"""ENAS trainer. One iteration = one epoch.

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
import json
import math
import os
import time

import numpy as np
import tensorflow as tf

from tf_rlnas.algos.enas.child import ChildNet, batch_stats_frozen, disable_bn_relu_fusion
from tf_rlnas.algos.enas.controller import Controller, arc_from_dict, arc_string, arc_to_dict, entropy_bounds
from tf_rlnas.core.logging import say
from tf_rlnas.core.files import atomic_write_text
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


def make_controller_update(controller, optimizer, skip_weight: float, grad_clip: float):
    """One REINFORCE step on M given arcs with their advantages (reward - baseline):
    loss = -mean(log_prob * advantage) + skip_weight * mean(skip_penalty), i.e. the gradient
    averaged over the M samples; global-norm clip; returns (loss, pre-clip gradient norm)."""
    L = controller.num_layers

    def update(branches, skips, advantages):
        with tf.GradientTape() as tape:
            out = controller.log_prob(branches, skips)
            pg = -tf.reduce_mean(out["log_prob"] * advantages)
            loss = pg + skip_weight * tf.reduce_mean(out["skip_penalty"])
        grads = tape.gradient(loss, controller.trainable_variables)
        gnorm = tf.linalg.global_norm(grads)
        if grad_clip:
            grads, _ = tf.clip_by_global_norm(grads, grad_clip, use_norm=gnorm)
        optimizer.apply_gradients(zip(grads, controller.trainable_variables))
        return loss, gnorm
    return tf.function(update, input_signature=[tf.TensorSpec([None, L], tf.int32),
                                                tf.TensorSpec([None, L, L], tf.int32), tf.TensorSpec([None])])


def advantages(rewards: np.ndarray, baseline: float, has: bool, bl_dec: float, mode: str = "ema"):
    """The REINFORCE advantages of one controller step's rewards -> (advantages, baseline, has).

    ``ema`` (the paper): the baseline moves towards each reward in turn (b <- b - (1 - bl_dec)(b - r),
    starting at the first reward) and the advantage is r - b after that move. ``loo``: r_i minus the
    mean of the step's other rewards (all scored on one batch); the EMA is still tracked, for the
    ``controller/baseline`` metric and a later switch of mode."""
    adv = np.zeros(len(rewards), np.float32)
    for i, r in enumerate(rewards):
        baseline = float(r) if not has else baseline - (1.0 - bl_dec) * (baseline - float(r))
        has = True
        adv[i] = r - baseline
    if mode == "loo":
        n = len(rewards)
        adv = (rewards - (rewards.sum() - rewards) / (n - 1)).astype(np.float32)
    return adv, baseline, has


# fixed seeds of an ENAS search: the validation batches of the periodic search evals (+ epoch) and of
# the derive step, and the derive step's sampling seed (with run.seed): a derive changes no state
EVAL_BATCHES_STREAM, DERIVE_BATCHES_STREAM, DERIVE_SAMPLE_SEED = 10_000, 20_000, 424242


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


class SearchTrainer(ChildTraining):
    """``mode: search``: the shared child and the LSTM controller, alternating (module docstring);
    the run ends by deriving ``architecture.json``."""

    def build(self) -> None:
        k = self.cfg.controller
        self.build_child(None)
        self.controller = Controller(self.num_layers, k.lstm_size, tanh_constant=k.tanh_constant,
                                     temperature=k.temperature, skip_target=k.skip_target)
        import keras
        self.ctrl_opt = keras.optimizers.Adam(k.lr, beta_1=0.0, beta_2=0.999, epsilon=1e-3)
        self.ctrl_opt.build(self.controller.trainable_variables)
        self.baseline = tf.Variable(0.0, trainable=False, name="baseline")
        self.has_baseline = tf.Variable(False, trainable=False, name="has_baseline")
        self.checkpoint.track(controller=self.controller, ctrl_opt=self.ctrl_opt, baseline=self.baseline,
                              has_baseline=self.has_baseline)
        self.build_child_functions(batch_bn=self.cfg.search.score_bn == "batch")
        self.sample_n = tf.function(lambda n, seed: self.controller.sample(n, seed),
                                    input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int64)])
        self.ctrl_update = make_controller_update(self.controller, self.ctrl_opt, k.skip_weight, k.grad_clip)

    @classmethod
    def cannot_evaluate(cls, cfg) -> str | None:
        return ("evaluate needs a fixed-architecture ENAS run (mode: fixed); a search run's result is its "
                "architecture.json ('tf_rlnas derive RUN' rebuilds it from a checkpoint): retrain it with "
                "--config <dataset>_fixed --set fixed.arc_file=RUN/architecture.json")

    def train_iteration(self) -> dict[str, float]:
        cfg, epoch = self.cfg, int(self.iteration.numpy())
        m = self.train_child_epoch(epoch)
        if epoch >= cfg.search.warmup_epochs:  # warm-up: the shared weights train on the untrained controller's draws
            m.update(self._train_controller(epoch))
        if cfg.search.eval_every and (epoch + 1) % cfg.search.eval_every == 0:
            m.update(self._eval_search(epoch))
        every = cfg.search.derive_every
        if every and (epoch + 1) % every == 0 and epoch + 1 < cfg.child.epochs:  # the last epoch's: finish() derives
            # before this epoch's checkpoint: a kill in between redoes the epoch and writes the same file
            self.write_derived(self.derive(epochs=epoch + 1))
        return m

    def _train_controller(self, epoch: int) -> dict[str, float]:
        k = self.cfg.controller
        if k.train_steps == 0:
            return {}
        stream = iter(self.splits.valid_stream(epoch))
        rewards_all, accs, ents, op_ents, skips, losses, gnorms = [], [], [], [], [], [], []
        baseline, has = float(self.baseline.numpy()), bool(self.has_baseline.numpy())
        label = f"epoch {epoch + 1} controller"
        self.sub_progress(label, 0, k.train_steps)
        shared = k.baseline == "loo"
        for step in range(k.train_steps):
            out = self.sample_n(k.num_aggregate, self._seed())
            b, s = out["branches"].numpy(), out["skips"].numpy()
            ent = out["entropy"].numpy()
            rewards = np.zeros(len(b), np.float64)
            if shared:  # every architecture of the step on the same batch
                x, y = next(stream)
            for i in range(len(b)):
                if not shared:
                    x, y = next(stream)
                acc = float(self.accuracy(x, y, b[i], s[i]))
                rewards[i] = acc + k.entropy_weight * float(ent[i])
                accs.append(acc)
            adv, baseline, has = advantages(rewards, baseline, has, k.bl_dec, k.baseline)
            rewards_all.extend(rewards.tolist())
            loss, gnorm = self.ctrl_update(b, s, adv)
            self.sub_progress(label, step + 1, k.train_steps)
            ents.extend(ent.tolist())
            op_ents.extend(out["op_entropy"].numpy().tolist())
            skips.extend(out["skip_count"].numpy().tolist())
            losses.append(float(loss))
            gnorms.append(float(gnorm))
        self.baseline.assign(baseline)
        self.has_baseline.assign(has)
        pairs = self.num_layers * (self.num_layers - 1) / 2
        return {"controller/loss": float(np.mean(losses)), "controller/reward": float(np.mean(rewards_all)),
                "controller/valid_accuracy": float(np.mean(accs)), "controller/baseline": baseline,
                "controller/entropy": float(np.mean(ents)), "controller/op_entropy": float(np.mean(op_ents)),
                "controller/skip_rate": float(np.mean(skips)) / pairs,
                "controller/grad_norm": float(np.mean(gnorms))}

    def _eval_search(self, epoch: int) -> dict[str, float]:
        sc = self.cfg.search
        out = self.sample_n(sc.eval_archs, self._seed())
        b, s = out["branches"].numpy(), out["skips"].numpy()
        batch = [next(iter(self.splits.valid_stream(EVAL_BATCHES_STREAM + epoch)))]
        scores = [self._score(b[i], s[i], batch) for i in range(len(b))]
        best = int(np.argmax(scores))
        step = epoch + 1
        self.logger.text("search/sampled_architecture", arc_string(b[0], s[0]), step=step)
        self.logger.text("search/best_architecture", arc_string(b[best], s[best]), step=step)
        return {"search/best_valid_batch_accuracy": scores[best],
                "search/best_valid_accuracy": self.evaluate_arc(self.splits.valid(), b[best], s[best]),
                "search/best_test_accuracy_shared_weights": self.evaluate_arc(self.splits.test(), b[best], s[best])}

    def derive(self, epochs: int | None = None) -> dict:
        """Best of ``derive_archs`` samples on the same ``derive_valid_batches`` validation batches.

        Its sampling seed and batches are fixed by the config, and it changes no training state, so it
        may run at any epoch: ``epochs`` (default: the iteration count) is the epoch it is recorded at."""
        sc = self.cfg.search
        out = self.sample_n(sc.derive_archs, tf.constant([self.cfg.run.seed, DERIVE_SAMPLE_SEED], tf.int64))
        b, s = out["branches"].numpy(), out["skips"].numpy()
        stream = iter(self.splits.valid_stream(DERIVE_BATCHES_STREAM))
        batches = [next(stream) for _ in range(sc.derive_valid_batches)]
        scores = [self._score(b[i], s[i], batches) for i in range(len(b))]
        best = int(np.argmax(scores))
        extra = {}
        if sc.derive_top > 1:  # the winner of many noisy scores is flattered by its batches: re-score the top K
            top = [int(i) for i in np.argsort(scores, kind="stable")[::-1][:sc.derive_top]]
            full = [self.evaluate_arc(self.splits.valid(), b[i], s[i]) for i in top]
            best = top[int(np.argmax(full))]
            extra = {"derive_top": [{"sample": i, "derive_batches_accuracy": scores[i], "valid_accuracy": f}
                                    for i, f in zip(top, full)]}
        # how far the controller has moved from the untrained one's uniform draws: the mean summed entropy
        # of its op decisions beside the uniform value and the floor the tanh constant allows (the skip
        # bits are held near skip_target by the KL penalty), and how often the derive samples repeat
        bounds = entropy_bounds(self.num_layers, self.cfg.controller.tanh_constant)
        keys = [b[i].tobytes() + s[i].tobytes() for i in range(len(b))]
        concentration = {"controller_op_entropy": float(np.mean(out["op_entropy"].numpy())),
                         "op_entropy_uniform": bounds["op_uniform"], "op_entropy_floor": bounds["op_min"],
                         "controller_entropy": float(np.mean(out["entropy"].numpy())),
                         "entropy_uniform": bounds["op_uniform"] + bounds["skip_uniform"],
                         "distinct_samples": len(set(keys)), "derived_sample_count": keys.count(keys[best])}
        return {"architecture": arc_to_dict(b[best], s[best]),
                "search_valid_accuracy": scores[best], **extra, **concentration,
                "search_valid_accuracy_mean_of_samples": float(np.mean(scores)),
                "search_test_accuracy_shared_weights": self.evaluate_arc(self.splits.test(), b[best], s[best]),
                "dataset": self.cfg.data.dataset,
                "epochs": int(self.iteration.numpy()) if epochs is None else int(epochs)}

    def write_derived(self, result: dict, announce: bool = False) -> str:
        """``derived/epoch-<E>.json`` (the architecture.json of a search of E epochs) and its TensorBoard
        text at step E; ``announce``: print it (the CLI's ``derive``)."""
        path = os.path.join(self.run_dir, "derived", f"epoch-{result['epochs']}.json")
        if self.is_chief:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_text(path, json.dumps(result, indent=2))
            self._log_derived(result)
        if announce:
            self._announce(result, path)
        return path

    def _log_derived(self, result: dict) -> None:
        b, s = arc_from_dict(result["architecture"])
        self.logger.text("search/derived_architecture", arc_string(b, s), step=result["epochs"])
        self.logger.flush()

    def _announce(self, result: dict, path: str) -> None:
        b, s = arc_from_dict(result["architecture"])
        sc = self.cfg.search
        top = sc.derive_top
        say(f"derived architecture at epoch {result['epochs']} (best of {sc.derive_archs} on "
            f"{sc.derive_valid_batches} validation batches"
            f"{f', then of their top {top} on the whole validation split' if top > 1 else ''}; "
            f"search-time accuracy with shared "
            f"weights: valid {result['search_valid_accuracy']:.4f}, test "
            f"{result['search_test_accuracy_shared_weights']:.4f}) -> {path}\n{arc_string(b, s)}\n"
            f"controller: op entropy {result['controller_op_entropy']:.2f} nats (uniform "
            f"{result['op_entropy_uniform']:.2f}, floor {result['op_entropy_floor']:.2f}), all decisions "
            f"{result['controller_entropy']:.2f} (uniform {result['entropy_uniform']:.2f}); "
            f"{result['distinct_samples']} distinct of {sc.derive_archs} samples, the derived "
            f"one drawn {result['derived_sample_count']}x")

    def finish(self, summary: dict) -> dict:
        """The end of the run: derive ``architecture.json`` (printed) into the summary."""
        result = self.derive()
        path = os.path.join(self.run_dir, "architecture.json")
        if self.is_chief:
            atomic_write_text(path, json.dumps(result, indent=2))
        if self.cfg.search.derive_every:  # the set of per-budget files ends with this run's own budget
            self.write_derived(result)
        elif self.is_chief:
            self._log_derived(result)
        self._announce(result, path)
        return {**summary, "architecture": result}

    def evaluate(self, episodes=None) -> dict[str, float]:
        return {}  # a search's result is its architecture (finish)

    def export_spec(self) -> ExportSpec:
        raise UserError("export needs a fixed-architecture run (mode: fixed); a search run's result is "
                        "architecture.json — retrain it with mode=fixed")


class RetrainTrainer(ChildTraining):
    """``mode: fixed``: the architecture of ``fixed.arc_file`` alone (filters doubled at the pool
    layers), trained from scratch on the full train split; test accuracy every epoch."""

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
        module = ClassifierModule(self.child, self.splits.mean, self.splits.std, self.splits.image_shape)
        raw = (self.splits.x_test[:8] * self.splits.std + self.splits.mean).astype(np.float32)
        expected = tf.nn.softmax(self.child(tf.constant(self.splits.x_test[:8]), training=False)).numpy()
        return ExportSpec(module, {"serving_default": module.serving_default}, {"serving_default": {"images": raw}},
                          {"serving_default": {"probabilities": expected}})


class EnasTrainer:
    """The registry's ENAS trainer: ``EnasTrainer(cfg, run_dir)`` is a :class:`SearchTrainer` or a
    :class:`RetrainTrainer` by ``cfg.mode``."""

    def __new__(cls, cfg, run_dir: str):
        return (RetrainTrainer if cfg.mode == "fixed" else SearchTrainer)(cfg, run_dir)

    @staticmethod
    def cannot_evaluate(cfg) -> str | None:
        return (RetrainTrainer if cfg.mode == "fixed" else SearchTrainer).cannot_evaluate(cfg)


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
