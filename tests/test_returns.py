import numpy as np

from tf_rlnas.returns import discounted_returns, discounted_cumsum, gae, gae_masked


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


def test_numpy_per_episode_and_tf_batched_masked_forms_agree():
    """The two layouts of tf_rlnas.returns: REINFORCE's per-episode NumPy GAE and MAML's [K, E, T]
    masked TF form give the same advantages for terminated episodes of different lengths."""
    rng = np.random.default_rng(0)
    lengths = [5, 2, 7]
    T = max(lengths)
    rewards = np.zeros((1, len(lengths), T), np.float32)
    values = np.zeros_like(rewards)
    mask = np.zeros_like(rewards)
    for e, n in enumerate(lengths):
        rewards[0, e, :n] = rng.normal(size=n)
        values[0, e, :n] = rng.normal(size=n)
        mask[0, e, :n] = 1.0
        values[0, e, n:] = 99.0  # padding must not leak in
    gamma, lam = 0.95, 0.9
    batched = gae_masked(rewards, values, mask, gamma, lam).numpy()
    returns = discounted_cumsum(rewards, mask, gamma).numpy()
    for e, n in enumerate(lengths):
        adv, _ = gae(rewards[0, e, :n], values[0, e, :n], gamma, lam, 0.0)
        np.testing.assert_allclose(batched[0, e, :n], adv, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(returns[0, e, :n], discounted_returns(rewards[0, e, :n], gamma), rtol=1e-5, atol=1e-5)
        assert np.all(batched[0, e, n:] == 0)
