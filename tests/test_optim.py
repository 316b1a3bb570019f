"""The fused optimizers against the update formulas written out in numpy."""

import numpy as np
import tensorflow as tf

from tf_rlnas.nn.optim import FusedAdam, NesterovSGD


def _grads(step, shapes):
    rng = np.random.default_rng(step)
    return [rng.normal(size=s).astype(np.float32) for s in shapes]


def test_nesterov_sgd_matches_numpy_with_l2_on_kernels_only():
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    vs = [tf.Variable(a) for a in init]
    opt = NesterovSGD(0.1, momentum=0.9, l2=0.01)
    opt.build(vs)
    theta, m = [a.astype(np.float64) for a in init], [np.zeros_like(a, np.float64) for a in init]
    for step, lr in enumerate((0.1, 0.05, 0.02)):
        opt.learning_rate.assign(lr)
        gs = _grads(step, [a.shape for a in init])
        tf.function(lambda: opt.apply_gradients(zip([tf.constant(g) for g in gs], vs)))()
        for i, g in enumerate(gs):
            g = g + (0.01 * theta[i] if theta[i].ndim >= 2 else 0.0)  # L2 on the kernel, not the bias
            m[i] = 0.9 * m[i] - lr * g
            theta[i] = theta[i] + 0.9 * m[i] - lr * g
    for v, t in zip(vs, theta):
        np.testing.assert_allclose(v.numpy(), t, rtol=1e-5, atol=1e-6)
    assert int(opt.iterations.numpy()) == 3


def test_fused_adam_matches_numpy():
    init = np.linspace(-1, 1, 6).astype(np.float32).reshape(2, 3)
    v = tf.Variable(init)
    opt = FusedAdam(0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    opt.build([v])
    theta, m, s = init.astype(np.float64), np.zeros((2, 3)), np.zeros((2, 3))
    for t in range(1, 4):
        g = _grads(t, [(2, 3)])[0]
        opt.apply_gradients([(tf.constant(g), v)])
        m = 0.9 * m + 0.1 * g
        s = 0.999 * s + 0.001 * g * g
        theta = theta - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(s / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(v.numpy(), theta, rtol=1e-4, atol=1e-6)
