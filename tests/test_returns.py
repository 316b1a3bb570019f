import numpy as np

from tf_rlnas.replay.returns import discounted_returns, gae


def test_discounted_returns_by_hand():
    r = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(discounted_returns(r, 0.5), [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0])
    np.testing.assert_allclose(discounted_returns(r, 0.5, bootstrap=8.0), [2.75 + 0.125 * 8, 3.5 + 0.25 * 8, 3 + 0.5 * 8])


def test_gae_by_hand():
    r = np.array([1.0, 0.0, 2.0])
    v = np.array([0.5, 1.0, 1.5])
    gamma, lam, last = 0.9, 0.8, 2.0
    d = [1 + 0.9 * 1.0 - 0.5, 0 + 0.9 * 1.5 - 1.0, 2 + 0.9 * 2.0 - 1.5]
    a2 = d[2]
    a1 = d[1] + gamma * lam * a2
    a0 = d[0] + gamma * lam * a1
    adv, ret = gae(r, v, gamma, lam, last)
    np.testing.assert_allclose(adv, [a0, a1, a2])
    np.testing.assert_allclose(ret, adv + v)
    # lam = 1: advantages are the bootstrapped Monte-Carlo returns minus V
    adv1, _ = gae(r, v, gamma, 1.0, last)
    np.testing.assert_allclose(adv1, discounted_returns(r, gamma, last) - v)
