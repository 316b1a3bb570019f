"""ENAS search (``mode: search``): the shared child and the LSTM controller alternate every epoch
(the module docstring of :mod:`tf_rlnas.algos.enas.trainer` describes the epoch); the run ends by
deriving ``architecture.json``. The child-training part is shared with the retrain
(:class:`~tf_rlnas.algos.enas.trainer.ChildTraining`)."""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from tf_rlnas.algos.enas.controller import Controller, arc_from_dict, arc_string, arc_to_dict, entropy_bounds
from tf_rlnas.algos.enas.trainer import ChildTraining
from tf_rlnas.core.files import atomic_write_text
from tf_rlnas.core.logging import say
from tf_rlnas.core.trainer import ExportSpec
from tf_rlnas.errors import UserError

# fixed seeds of an ENAS search: the validation batches of the periodic search evals (+ epoch) and of
# the derive step, and the derive step's sampling seed (with run.seed): a derive changes no state
EVAL_BATCHES_STREAM, DERIVE_BATCHES_STREAM, DERIVE_SAMPLE_SEED = 10_000, 20_000, 424242


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


class SearchTrainer(ChildTraining):
    """``mode: search``: the shared child and the LSTM controller, alternating (module docstring);
    the run ends by deriving ``architecture.json``."""

    HEADLINE = ("search/best_valid_accuracy", "search/best_test_accuracy_shared_weights")

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
