"""MAML-TRPO numerical core: conjugate gradient
vs numpy, the KL Hessian-vector product vs finite differences, the line search's restore, the
linear baseline vs a numpy ridge fit with padding masked, batched per-task forward vs a loop."""

import numpy as np
import tensorflow as tf

from tf_rlnas.algos.maml_trpo import baseline, trpo
from tf_rlnas.algos.maml_trpo.policies import MetaPolicy


def test_conjugate_gradient_solves_spd_system_like_numpy():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(12, 12))
    a = m @ m.T + 0.5 * np.eye(12)
    b = rng.normal(size=12)
    x, res = trpo.conjugate_gradient(lambda v: tf.linalg.matvec(tf.constant(a), v), tf.constant(b), iters=40)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(a, b), rtol=1e-6, atol=1e-8)
    assert float(res) < 1e-10
    # 10 iterations (the default) on a well-conditioned 8x8 system: exact in <= 8 steps
    a8 = a[:8, :8] + 5 * np.eye(8)
    x8, _ = trpo.conjugate_gradient(lambda v: tf.linalg.matvec(tf.constant(a8), v), tf.constant(b[:8]))
    np.testing.assert_allclose(x8.numpy(), np.linalg.solve(a8, b[:8]), rtol=1e-6)


def _kl_setup():
    pol = MetaPolicy(3, 2, [5], gaussian=True, activation="tanh")  # smooth: finite differences across ReLU kinks mislead
    obs = tf.constant(np.random.default_rng(1).normal(size=(16, 3)), tf.float32)
    old = [tf.identity(p) for p in pol.params]
    mu0, sd0 = pol.forward(old, obs)

    def mean_kl(params):
        mu, sd = pol.forward(params, obs)
        return tf.reduce_mean(tf.reduce_sum(tf.math.log(sd / sd0) + (sd0 ** 2 + (mu0 - mu) ** 2) / (2 * sd ** 2) - 0.5, -1))
    return pol, mean_kl


def test_hvp_of_kl_matches_finite_differences():
    pol, mean_kl = _kl_setup()
    rng = np.random.default_rng(2)
    shift = [tf.constant(rng.normal(size=p.shape) * 0.3, tf.float32) for p in pol.params]
    at = [p + s for p, s in zip(pol.params, shift)]  # away from the minimum, where H is not trivial
    v = tf.constant(rng.normal(size=sum(int(np.prod(p.shape)) for p in pol.params)), tf.float32)

    def grad_at(params):
        with tf.GradientTape() as t:
            t.watch(params)
            kl = mean_kl(params)
        return trpo.flat_concat(t.gradient(kl, params))

    with tf.GradientTape() as outer:
        outer.watch(at)
        with tf.GradientTape() as inner:
            inner.watch(at)
            kl = mean_kl(at)
        g = trpo.flat_concat(inner.gradient(kl, at))
        gv = tf.reduce_sum(g * v)
    hvp = trpo.flat_concat(outer.gradient(gv, at)).numpy()
    eps = 1e-2
    plus = [a + eps * d for a, d in zip(at, trpo.unflatten(v, at))]
    minus = [a - eps * d for a, d in zip(at, trpo.unflatten(v, at))]
    fd = ((grad_at(plus) - grad_at(minus)) / (2 * eps)).numpy()
    np.testing.assert_allclose(hvp, fd, rtol=2e-2, atol=2e-3)


def test_line_search_accepts_first_improving_step_and_restores_otherwise():
    v = tf.Variable([1.0, 2.0])
    start = v.numpy().copy()
    # loss = |v|^2: the step along +v improves; KL proxy = |v - start|^2
    evaluate = lambda: (float(tf.reduce_sum(v * v)), float(tf.reduce_sum((v - start) ** 2)))  # noqa: E731
    steps, loss, kl = trpo.backtracking_line_search([v], tf.constant(start), evaluate, old_loss=5.0, max_kl=0.5)
    assert steps >= 1 and loss < 5.0 and kl < 0.5  # the full step (KL 5) is rejected, a shorter one taken
    np.testing.assert_allclose(v.numpy(), start * (1 - 0.8 ** steps), rtol=1e-6)
    v.assign(start)
    steps, loss, kl = trpo.backtracking_line_search([v], tf.constant(-start), evaluate, old_loss=5.0, max_kl=0.5)
    assert steps == -1 and loss == 5.0
    np.testing.assert_array_equal(v.numpy(), start)  # every step made it worse: restored exactly


def test_linear_baseline_is_a_masked_ridge_fit_like_numpy():
    rng = np.random.default_rng(3)
    k, e, t, d = 2, 3, 7, 2
    obs = rng.normal(size=(k, e, t, d)).astype(np.float64)
    lengths = np.array([[7, 4, 2], [7, 7, 5]])
    mask = (np.arange(t)[None, None] < lengths[..., None]).astype(np.float64)
    rets = rng.normal(size=(k, e, t)) * mask
    obs_padded = obs * mask[..., None] + (1 - mask[..., None]) * 99.0  # garbage in padded steps
    got = baseline.fit_predict(tf.constant(obs_padded), tf.constant(mask), tf.constant(rets)).numpy()
    for ki in range(k):
        rows, ys, where = [], [], []
        for ei in range(e):
            for ti in range(lengths[ki, ei]):
                o = np.clip(obs[ki, ei, ti], -10, 10)
                tt = ti / 100.0
                rows.append(np.concatenate([o, o * o, [tt, tt ** 2, tt ** 3, 1.0]]))
                ys.append(rets[ki, ei, ti])
                where.append((ei, ti))
        x, y = np.array(rows), np.array(ys)
        w = np.linalg.solve(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y)
        pred = x @ w
        for (ei, ti), p in zip(where, pred):
            np.testing.assert_allclose(got[ki, ei, ti], p, rtol=1e-6, atol=1e-8)
    assert np.all(got[mask == 0] == 0)


def test_linear_baseline_survives_an_exactly_singular_design():
    """Constant and duplicated observation columns (seen on Ant: an AntDir run died with
    'Input matrix is not invertible' from a float32 LU solve) give finite values equal to a
    float64 numpy ridge fit instead of an error."""
    rng = np.random.default_rng(5)
    k, e, t = 2, 10, 20
    base = rng.uniform(5, 10, size=(k, e, t, 1)).astype(np.float32)  # large: float32 loses the 1e-5 ridge
    obs = np.concatenate([base, base, np.zeros_like(base)], -1)  # duplicate + constant-zero columns
    mask = np.ones((k, e, t), np.float32)
    rets = rng.normal(size=(k, e, t)).astype(np.float32)
    got = baseline.fit_predict(tf.constant(obs), tf.constant(mask), tf.constant(rets)).numpy()
    assert np.all(np.isfinite(got))
    for ki in range(k):
        x = baseline.features(tf.constant(obs[ki:ki + 1]), tf.constant(mask[ki:ki + 1])).numpy().reshape(-1, 10)
        x = x.astype(np.float64)
        w = np.linalg.solve(x.T @ x + 1e-5 * np.eye(10), x.T @ rets[ki].reshape(-1).astype(np.float64))
        np.testing.assert_allclose(got[ki].reshape(-1), x @ w, atol=1e-4)


def test_batched_per_task_forward_equals_a_loop_of_single_task_calls():
    for gaussian in (True, False):
        pol = MetaPolicy(4, 3, [8, 8], gaussian=gaussian)
        k = 5
        rng = np.random.default_rng(4)
        params = [p + tf.constant(rng.normal(size=p.shape) * 0.1, tf.float32) for p in pol.tiled(k)]
        obs = tf.constant(rng.normal(size=(k, 6, 4)), tf.float32)
        a, b = pol.forward(params, obs)
        for i in range(k):
            ai, bi = pol.forward([p[i] for p in params], obs[i])
            np.testing.assert_allclose(a[i].numpy(), ai.numpy(), rtol=1e-5, atol=1e-6)
            if gaussian:
                np.testing.assert_allclose(b[i].numpy(), bi.numpy(), rtol=1e-6)
        lp = pol.dist(params, obs).log_prob(tf.zeros((k, 6, 3)) if gaussian else tf.zeros((k, 6), tf.int32))
        assert lp.shape == (k, 6)
