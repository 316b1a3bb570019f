"""``tf_rlnas bench enas --controller-task``: how fast the ENAS controller learns, with its knobs, on
a synthetic reward whose optimum is known.

A search's derived architecture can only be as good as two things allow: the reward (do shared-weight
scores rank architectures as retraining does?) and the controller (does REINFORCE move the LSTM policy
towards the reward's best architectures within the search's few hundred updates?). The second part
is measured here, apart from the first and in minutes, instead of one long search per knob.

The landscape (one per trial, seeded from ``run.seed``): an architecture's true score is additive,

    true(arc) = sum_i A[i, op_i] + sum_{i>j} B[i, j] * skip_ij,     A, B ~ N(0, 1), then scaled

so that over the untrained controller's draws (uniform ops, fair-coin skips) the true score has
standard deviation ``signal`` (a ``skip_share`` of its variance from the skips). The controller sees
``base + true + N(0, noise^2)`` per sampled architecture, as it sees a validation batch's accuracy
(plus ``controller.entropy_weight`` x its entropy), and learns exactly as in a search: the config's
controller (LSTM size, tanh constant, temperature, skip target), Adam, ``num_aggregate`` samples per
step, the EMA or leave-one-out baseline, the skip KL penalty, the gradient clip. An additive
landscape is the easy case for the controller (no interactions between layers): knobs that do not
help here will not help in a search.

``reward_corr`` r < 1 models a reward that misranks architectures, as shared-weight scores do: the
controller (and the derive step) see r * true + sqrt(1 - r^2) * (an independent landscape of the same
kind), which correlates r with the true score over uniform draws; every figure below is in TRUE score
(the retrained accuracy such a search is after).

Reported after each number of updates (mean over trials, and the standard errors of the first two):
  progress   E[true] of the controller's samples as a fraction of the way from the uniform mean
             (0) to the best architecture (1)
  derived    the same for the architecture a search would derive: the best of ``derive_archs``
             samples by a noisy score (noise / sqrt(derive_valid_batches)), and its percentile
             among uniform draws, and P>best3: the chance that it beats the best of 3 random
             architectures (percentile^3)
  op ent     the op decisions' summed entropy (uniform L ln 6)
Defaults: signal 0.05 and noise 0.03 are this package's Fashion-MNIST figures (random architectures'
batch-statistics shared-weight scores spread ~0.05; a 256-image accuracy near 0.7 has binomial noise
sqrt(0.7 * 0.3 / 256) = 0.029).
"""

from __future__ import annotations

import time

import numpy as np

from tf_rlnas.algos.enas.controller import NUM_BRANCHES


class Landscape:
    """The additive true-score landscape of one trial (see the module docstring)."""

    def __init__(self, num_layers: int, rng: np.random.Generator, signal: float = 0.05, skip_share: float = 0.3):
        L = num_layers
        a = rng.normal(size=(L, NUM_BRANCHES))
        b = np.tril(rng.normal(size=(L, L)), k=-1)
        var_a = float(np.sum(np.var(a, axis=1)))  # an op drawn uniformly per layer
        var_b = float(np.sum(b ** 2) / 4.0)  # a fair-coin bit times its weight
        self.a = a * np.sqrt((1.0 - skip_share) * signal ** 2 / var_a) if skip_share < 1 else a * 0.0
        self.b = b * np.sqrt(skip_share * signal ** 2 / var_b) if skip_share > 0 and L > 1 else b * 0.0
        self.num_layers = L

    def true(self, branches: np.ndarray, skips: np.ndarray) -> np.ndarray:
        """True scores of M arcs ([M, L] branches, [M, L, L] skips)."""
        branches = np.asarray(branches)
        ops = np.take_along_axis(self.a[None], branches[:, :, None], axis=2)[:, :, 0].sum(axis=1)
        return ops + np.einsum("mij,ij->m", np.asarray(skips, np.float64), self.b)

    @property
    def optimum(self) -> float:
        return float(self.a.max(axis=1).sum() + np.clip(self.b, 0.0, None).sum())

    @property
    def uniform_mean(self) -> float:
        return float(self.a.mean(axis=1).sum() + 0.5 * self.b.sum())

    def uniform_sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        L = self.num_layers
        b = rng.integers(0, NUM_BRANCHES, size=(n, L))
        s = np.tril((rng.random((n, L, L)) < 0.5).astype(np.int32), k=-1)
        return self.true(b, s)


def _progress(land: Landscape, values) -> float:
    return float((np.mean(values) - land.uniform_mean) / (land.optimum - land.uniform_mean))


def run_trial(cfg, trial: int, checkpoints, signal: float, noise: float, skip_share: float = 0.3,
              base: float = 0.7, eval_samples: int = 500, reward_corr: float = 1.0, on_update=None) -> list[dict]:
    """Train a fresh controller on one landscape; measure it at each number of updates in checkpoints
    (``on_update()`` is called after every update: the progress bar)."""
    import keras
    import tensorflow as tf

    from tf_rlnas.algos.enas.controller import Controller
    from tf_rlnas.algos.enas.search import advantages, make_controller_update

    k, sc, L = cfg.controller, cfg.search, cfg.child.num_layers
    seed = int(cfg.run.seed)
    land = Landscape(L, np.random.default_rng([seed, trial, 7717]), signal, skip_share)
    rng = np.random.default_rng([seed, trial, 7718])  # the reward noise
    ref = np.sort(land.uniform_sample(20000, np.random.default_rng([seed, trial, 7719])))
    if reward_corr < 1.0:  # the reward's own landscape: correlation reward_corr with the true one
        nuisance = Landscape(L, np.random.default_rng([seed, trial, 7720]), signal, skip_share)
        w = float(np.sqrt(1.0 - reward_corr ** 2))
        seen = lambda b, s: reward_corr * land.true(b, s) + w * nuisance.true(b, s)  # noqa: E731
    else:
        seen = land.true
    keras.utils.set_random_seed(seed * 1000 + trial)
    ctrl = Controller(L, k.lstm_size, tanh_constant=k.tanh_constant, temperature=k.temperature,
                      skip_target=k.skip_target)
    opt = keras.optimizers.Adam(k.lr, beta_1=0.0, beta_2=0.999, epsilon=1e-3)
    opt.build(ctrl.trainable_variables)
    update = make_controller_update(ctrl, opt, k.skip_weight, k.grad_clip)
    sample = tf.function(lambda n, s: ctrl.sample(n, s),
                         input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int64)])
    baseline, has = 0.0, False
    out, done = [], 0
    for target in sorted(set(int(c) for c in checkpoints)):
        while done < target:
            arc = sample(k.num_aggregate, tf.constant([seed * 100003 + trial, done], tf.int64))
            b, s = arc["branches"].numpy(), arc["skips"].numpy()
            r = base + seen(b, s) + noise * rng.standard_normal(len(b))
            r = r + k.entropy_weight * arc["entropy"].numpy()
            adv, baseline, has = advantages(r, baseline, has, k.bl_dec, k.baseline)
            update(b, s, adv)
            done += 1
            if on_update is not None:
                on_update()
        ev = sample(eval_samples, tf.constant([seed * 100003 + trial, 10 ** 9 + done], tf.int64))
        true = land.true(ev["branches"].numpy(), ev["skips"].numpy())
        der = sample(sc.derive_archs, tf.constant([seed * 100003 + trial, 2 * 10 ** 9 + done], tf.int64))
        d_b, d_s = der["branches"].numpy(), der["skips"].numpy()
        d_true = land.true(d_b, d_s)
        d_noisy = seen(d_b, d_s) + noise / np.sqrt(sc.derive_valid_batches) * rng.standard_normal(len(d_true))
        pick = float(d_true[int(np.argmax(d_noisy))])
        pct = float(np.searchsorted(ref, pick)) / len(ref)
        out.append({"updates": done, "progress": _progress(land, true),
                    "derived_progress": _progress(land, [pick]),
                    "derived_percentile": 100.0 * pct,
                    "beats_best_of_3": pct ** 3,  # P(its true score > that of the best of 3 uniform draws)
                    "op_entropy": float(np.mean(ev["op_entropy"].numpy())),
                    "skip_rate": float(np.mean(ev["skip_count"].numpy())) / max(1, L * (L - 1) // 2)})
    return out


def run(cfg, updates=(0, 200, 500, 1000), trials: int = 3, signal: float = 0.05, noise: float = 0.03,
        skip_share: float = 0.3, reward_corr: float = 1.0) -> list[dict]:
    """Print (and return) the mean over trials at each checkpoint."""
    from tf_rlnas.algos.enas.controller import entropy_bounds

    k, sc, L = cfg.controller, cfg.search, cfg.child.num_layers
    eb = entropy_bounds(L, k.tanh_constant)
    print(f"enas controller task  layers={L}  lstm={k.lstm_size}  tanh={k.tanh_constant}  T={k.temperature}  "
          f"lr={k.lr}  num_aggregate={k.num_aggregate}  baseline={k.baseline} bl_dec={k.bl_dec}  "
          f"entropy_weight={k.entropy_weight}  skip_weight={k.skip_weight} target={k.skip_target}")
    print(f"  landscape: additive, signal sd {signal}, noise sd {noise} per reward, skip share {skip_share}, "
          f"reward correlation with the true score {reward_corr}; "
          f"derive: best of {sc.derive_archs} on {sc.derive_valid_batches} batches; {trials} trials; "
          f"op entropy uniform {eb['op_uniform']:.2f} floor {eb['op_min']:.2f}")
    from tf_rlnas.core.logging import Progress

    t0 = time.perf_counter()
    bar = Progress(trials * max(updates), description="controller updates")
    done = [0]

    def tick():
        done[0] += 1
        if done[0] % 10 == 0:
            bar.update(done[0])
    try:
        per = [run_trial(cfg, t, updates, signal, noise, skip_share, reward_corr=reward_corr, on_update=tick)
               for t in range(trials)]
    finally:
        bar.close()
    rows = []
    print(f"  {'updates':>7s} {'progress':>9s} {'derived':>8s} {'pctile':>7s} {'P>best3':>7s} {'op ent':>7s} "
          f"{'skips':>6s}   (standard errors of progress, derived)")
    for i in range(len(per[0])):
        row = {key: float(np.mean([p[i][key] for p in per])) for key in per[0][i]}
        for key in ("progress", "derived_progress"):  # the standard error of the mean over trials
            row[key + "_se"] = float(np.std([p[i][key] for p in per], ddof=1) / np.sqrt(trials)) if trials > 1 else 0.0
        rows.append(row)
        print(f"  {int(row['updates']):7d} {row['progress']:9.3f} {row['derived_progress']:8.3f} "
              f"{row['derived_percentile']:7.2f} {row['beats_best_of_3']:7.3f} {row['op_entropy']:7.2f} "
              f"{row['skip_rate']:6.2f}"
              f"   +-{row['progress_se']:.3f} +-{row['derived_progress_se']:.3f}")
    print(f"  ({time.perf_counter() - t0:.1f} s)")
    return rows
