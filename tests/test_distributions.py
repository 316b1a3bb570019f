"""Distributions vs NumPy change-of-variables; finiteness at the tanh bounds."""

import math

import numpy as np
import tensorflow as tf

from tf_rlnas.distributions import TanhNormal, diag_gaussian, scale_action


def np_normal_logpdf(x, mu, s):
    return -0.5 * ((x - mu) / s) ** 2 - np.log(s) - 0.5 * math.log(2 * math.pi)


def test_diag_gaussian_log_prob_sums_dims():
    mu = np.array([[0.3, -1.0]], np.float32)
    s = np.array([[0.5, 2.0]], np.float32)
    x = np.array([[0.1, 0.7]], np.float32)
    lp = diag_gaussian(tf.constant(mu), tf.constant(s)).log_prob(x).numpy()
    np.testing.assert_allclose(lp, np_normal_logpdf(x, mu, s).sum(-1), rtol=1e-5)


def test_tanh_normal_log_prob_matches_change_of_variables():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(64, 3)).astype(np.float64)
    s = np.exp(rng.normal(size=(64, 3)) * 0.5)
    x = np.clip(mu + s * rng.normal(size=(64, 3)), -4, 4)  # |a| < 1 - 1e-6: no clipping involved
    a = np.tanh(x)
    want = (np_normal_logpdf(x, mu, s) - np.log(1 - np.tanh(x) ** 2)).sum(-1)
    d = TanhNormal(tf.constant(mu), tf.constant(s))
    np.testing.assert_allclose(d.log_prob(tf.constant(a)).numpy(), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d.log_prob_per_dim_pre_tanh(tf.constant(x)).numpy().sum(-1), want, rtol=1e-9)


def test_tanh_normal_sample_log_prob_consistent_and_seeded():
    mu = tf.constant([[0.2, -0.4]], tf.float64)
    s = tf.constant([[0.3, 0.9]], tf.float64)
    d = TanhNormal(mu, s)
    a1, lp1 = d.sample(seed=tf.constant([3, 4]))
    a2, lp2 = d.sample(seed=tf.constant([3, 4]))
    np.testing.assert_array_equal(a1.numpy(), a2.numpy())
    np.testing.assert_allclose(lp1.numpy(), d.log_prob(a1).numpy(), rtol=1e-6)
    assert np.all(np.abs(a1.numpy()) < 1)


def test_tanh_normal_finite_at_bounds():
    mu = tf.constant([[0.0, 5.0, -30.0]], tf.float32)
    s = tf.constant([[1.0, 0.1, 0.5]], tf.float32)
    d = TanhNormal(mu, s)
    for a in ([1.0, 1.0, -1.0], [-1.0, 0.9999999, -0.9999999]):
        assert np.all(np.isfinite(d.log_prob_per_dim(tf.constant([a], tf.float32)).numpy()))
    # a pre-tanh sample far in the tail: the stable log-det stays finite where log(1 - tanh^2) is -inf
    x = tf.constant([[20.0, 40.0, -50.0]], tf.float32)
    lp = d.log_prob_per_dim_pre_tanh(x).numpy()
    assert np.all(np.isfinite(lp))
    assert not np.all(np.isfinite(np.log(1 - np.tanh(x.numpy()) ** 2)))
    with tf.GradientTape() as tape:
        tape.watch(mu)
        _, lp = TanhNormal(mu, s).sample(seed=tf.constant([1, 2]))
    assert np.all(np.isfinite(tape.gradient(lp, mu).numpy()))


def test_scale_action():
    np.testing.assert_allclose(scale_action(np.array([-1.0, 0.0, 1.0]), -2.0, 4.0), [-2.0, 1.0, 4.0])
