"""Unit checks of the SAC/ACE pieces (issue 4 in progress): replay semantics, Polyak averaging,
dormant ratio, perturb factor, causal-weight extraction."""

import gymnasium as gym
import numpy as np
import tensorflow as tf

from tf_rlnas.algos.ace.causal import causal_weights
from tf_rlnas.algos.ace.learner import dormant_ratio, perturb_factor
from tf_rlnas.algos.sac.learner import SACLearner
from tf_rlnas.envs.factory import make_env
from tf_rlnas.replay.uniform import ReplayBuffer, VectorTransitions


def _batches(rng, k: int, n: int, obs_dim: int = 5, act_dim: int = 2) -> dict:
    """k stacked random replay batches of n transitions (non-terminal)."""
    return {"obs": tf.constant(rng.normal(size=(k, n, obs_dim)), tf.float32),
            "actions": tf.constant(rng.uniform(-1, 1, (k, n, act_dim)), tf.float32),
            "rewards": tf.constant(rng.normal(size=(k, n)), tf.float32),
            "next_obs": tf.constant(rng.normal(size=(k, n, obs_dim)), tf.float32),
            "terminated": tf.zeros((k, n))}


def test_ring_buffer_capacity_and_state_roundtrip():
    buf = ReplayBuffer(5, 2, 1)
    for i in range(7):
        buf.add(np.full((1, 2), i), np.full((1, 1), i), [i], np.full((1, 2), i + 1), [0])
    assert len(buf) == 5
    st = buf.state()
    np.testing.assert_array_equal(st["rewards"], [2, 3, 4, 5, 6])  # oldest first, oldest two evicted
    other = ReplayBuffer(5, 2, 1)
    other.load_state(st)
    np.testing.assert_array_equal(other.state()["obs"], st["obs"])
    s = other.sample(np.random.default_rng(0), 4, 3)
    assert s["obs"].shape == (3, 4, 2) and set(s["rewards"].ravel()) <= {2, 3, 4, 5, 6}


def test_tf_replay_append_with_keep_mask_wraps_and_samples_only_stored_rows():
    """The compiled append: rows with keep = 0 go to the never-sampled trash row; the ring wraps;
    sampling with the learner's tf.random.Generator draws only stored rows, reproducibly."""
    buf = ReplayBuffer(4, 1, 1)
    append = tf.function(buf.append)
    for step in range(3):  # 3 vector steps of 2 envs; env 1 is "resetting" at step 1
        base = 10.0 * step
        keep = np.array([1, 0 if step == 1 else 1], np.float32)
        obs = np.array([[base], [base + 1]], np.float32)
        n = append(obs, obs, obs[:, 0], obs + 0.5, np.zeros(2, np.float32), keep)
        assert int(n) == int(keep.sum())
    assert len(buf) == 4 and int(buf.ptr.numpy()) == 1  # 5 stored, capacity 4: the oldest evicted
    np.testing.assert_array_equal(buf.state()["rewards"], [1.0, 10.0, 20.0, 21.0])  # 11 was not kept
    np.testing.assert_array_equal(buf.split(buf.data[4])["rewards"].numpy(), 11.0)  # ... it went to the trash row
    g1, g2 = tf.random.Generator.from_seed(3), tf.random.Generator.from_seed(3)
    s1, s2 = buf.sample(g1, 64, 5), buf.sample(g2, 64, 5)
    np.testing.assert_array_equal(s1["obs"], s2["obs"])
    assert s1["obs"].shape == (5, 64, 1) and set(s1["rewards"].ravel()) == {1.0, 10.0, 20.0, 21.0}
    np.testing.assert_array_equal(s1["next_obs"], s1["obs"] + 0.5)  # rows stay whole


def test_vector_autoreset_and_truncation_semantics():
    """Truncation is not terminal, and no transition joins two episodes across an autoreset."""
    venv = gym.vector.SyncVectorEnv([lambda: make_env("Pendulum-v1", seed=1, max_episode_steps=3)] * 2)
    obs, _ = venv.reset(seed=[1, 2])
    vt, buf = VectorTransitions(2), ReplayBuffer(100, 3, 1)
    for _ in range(8):  # the training loop's path: keep masks -> the TF-side buffer's masked append
        nxt, r, term, trunc, _ = venv.step(np.zeros((2, 1), np.float32))
        buf.append(obs, np.zeros((2, 1)), r, nxt, term, vt.keep(term, trunc))
        obs = nxt
    st = buf.state()
    stored = list(zip(st["obs"], st["next_obs"], st["terminated"]))
    # 8 vector steps = 2 x (3 steps + 1 reset step) per env: 6 transitions per env, none terminal
    assert len(stored) == 12
    assert all(d == 0.0 for _, _, d in stored)
    # each stored transition's next obs follows its obs under Pendulum's dynamics (same episode):
    for o, o2, _ in stored:
        th, th2 = np.arctan2(o[1], o[0]), np.arctan2(o2[1], o2[0])
        assert abs(np.angle(np.exp(1j * (th2 - th)))) < 0.5


def test_polyak():
    src = [tf.Variable([1.0, 2.0])]
    tgt = [tf.Variable([3.0, 6.0])]
    SACLearner.polyak(src, tgt, 0.25)
    np.testing.assert_allclose(tgt[0].numpy(), [0.75 * 3 + 0.25 * 1, 0.75 * 6 + 0.25 * 2])


def test_dormant_ratio_on_hand_built_gradient():
    g1 = np.ones((3, 4), np.float32)
    g1[:, 0] = 0.0           # neuron 0: zero gradient -> dormant
    g1[:, 1] = 0.01          # norm 0.017 vs mean ~1.3 -> dormant at 0.05
    g2 = np.ones((4, 2), np.float32)  # none dormant
    r = dormant_ratio([tf.constant(g1), tf.constant(g2)], 0.05).numpy()
    assert abs(r - 2 / 6) < 1e-6


def test_perturb_factor():
    assert abs(perturb_factor("reset", 0.3, np.ones(3)) - 0.7) < 1e-12
    assert perturb_factor("reset", 0.95, np.ones(3)) == 0.2
    assert perturb_factor("reset", 0.0, np.ones(3)) == 0.9
    w = np.array([0.975, 1.0, 1.025])  # spread 0.05: 1.5 - exp(-0.4) = 0.83
    assert abs(perturb_factor("causal_reset", 0.0, w) - (1.5 - np.exp(-0.4))) < 1e-9
    assert perturb_factor("causal_reset", 0.0, np.array([0.5, 1.0, 1.5])) == 0.9  # capped
    assert perturb_factor("causal_reset", 0.0, np.ones(3)) == 0.5


def test_causal_weights_recover_sign_and_ranking():
    rng = np.random.default_rng(0)
    n = 3000
    states = rng.uniform(-1, 1, (n, 2))
    actions = rng.uniform(-1, 1, (n, 3))
    reward = 2.0 * actions[:, 0] - 1.0 * actions[:, 1] + 0.3 * actions[:, 2] + 0.5 * states[:, 0] \
        + 0.1 * rng.uniform(-1, 1, n)
    const = np.ones((n, 1))  # a zero-variance column (padding) must not break the fit
    w, raw, secs = causal_weights(np.concatenate([states, const], 1), actions, reward)
    assert np.sign(raw).tolist() == [1.0, -1.0, 1.0]
    assert abs(raw[0] - 2.0) < 0.2 and abs(raw[1] + 1.0) < 0.2
    assert list(np.argsort(-w)) == [0, 2, 1]
    assert abs(w.sum() - 3.0) < 1e-9 and secs >= 0


def test_unrolled_updates_equal_the_graph_loop():
    """EnvStep runs K <= 2 updates unrolled, more in a tf.range loop: the same updates."""
    from tf_rlnas.algos.sac.config import SACConfig

    cfg = SACConfig().agent
    a, b = SACLearner(5, 2, cfg, seed=3), SACLearner(5, 2, cfg, seed=3)
    for va, vb in zip(a.actor.weights + a.critic.weights + a.target_critic.weights,
                      b.actor.weights + b.critic.weights + b.target_critic.weights):
        vb.assign(va)
    rng = np.random.default_rng(0)
    batch = _batches(rng, 2, 32)
    oa, ob = a.train(batch), b.train_unrolled(batch, 2)
    np.testing.assert_allclose(oa["critic_loss"].numpy(), ob["critic_loss"].numpy(), rtol=1e-6)
    for va, vb in zip(a.actor.weights + a.critic.weights + [a.log_alpha], b.actor.weights + b.critic.weights + [b.log_alpha]):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6)  # op order (bf16 matmuls)
    assert int(a.updates.numpy()) == int(b.updates.numpy()) == 2


def test_async_vector_envs_train_and_restore_their_rng_streams(tmp_path):
    """num_envs 2 -> gymnasium AsyncVectorEnv (one process per env); the sub-envs' RNG states
    are saved and restored through the vector env (get_attr / set_attr)."""
    from tf_rlnas import config as C
    from tf_rlnas.algos.sac.config import SACConfig
    from tf_rlnas.algos.sac.trainer import SACTrainer

    sets = ["env.id=Pendulum-v1", "env.num_envs=2", "agent.actor_hidden=[16]", "agent.critic_hidden=[16]",
            "train.batch_size=16", "train.start_steps=40", "train.total_env_steps=120", "train.eval_every=0",
            "train.eval_episodes=1", "run.checkpoint_every=1000"]
    tr = SACTrainer(C.resolve(SACConfig, [], sets), str(tmp_path / "a"))
    import gymnasium as gym
    assert isinstance(tr.venv, gym.vector.AsyncVectorEnv)
    tr.fit(progress=False)
    assert tr.env_steps >= 120 and len(tr.buffer) == tr.env_steps
    state = tr._state()
    assert len(state["envs"]) == 2 and state["envs"][0] != state["envs"][1]
    tr.venv.reset()  # draws from both streams ...
    assert tr._state()["envs"] != state["envs"]
    tr._load_state(state)     # ... and this puts them back
    assert tr._state()["envs"] == state["envs"]
    tr.venv.close()


def test_simultaneous_update_order_uses_the_critics_before_their_step():
    """agent.update_order: simultaneous = the actor's gradient from the critics as they were before
    this update's critic step. So one simultaneous update moves the actor exactly as a sequential one
    whose critic step changes nothing (critic_lr = 0), and the critics, targets and alpha exactly as
    a sequential one; with a large critic step the sequential actor moves differently."""
    import dataclasses

    from tf_rlnas.algos.sac.config import SACConfig

    base = dataclasses.replace(SACConfig().agent, matmul_dtype="float32", critic_lr=0.05)
    cfgs = {"seq": base, "sim": dataclasses.replace(base, update_order="simultaneous"),
            "seq0": dataclasses.replace(base, critic_lr=0.0)}
    ls = {k: SACLearner(5, 2, c, seed=3) for k, c in cfgs.items()}
    ref = ls["seq"]
    for name, other in ls.items():
        for va, vb in zip(ref.actor.weights + ref.critic.weights + ref.target_critic.weights,
                          other.actor.weights + other.critic.weights + other.target_critic.weights):
            vb.assign(va)
    rng = np.random.default_rng(1)
    batch = _batches(rng, 1, 64)
    out = {k: l.train_unrolled(batch, 1) for k, l in ls.items()}
    seq, sim, seq0 = ls["seq"], ls["sim"], ls["seq0"]
    for va, vb in zip(sim.actor.weights, seq0.actor.weights):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6, atol=1e-7)
    for va, vb in zip(sim.critic.weights + sim.target_critic.weights + [sim.log_alpha],
                      seq.critic.weights + seq.target_critic.weights + [seq.log_alpha]):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["sim"]["actor_loss"].numpy(), out["seq0"]["actor_loss"].numpy(), rtol=1e-6)
    moved = sum(int(np.sum(np.abs(va.numpy() - vb.numpy()) > 1e-6)) for va, vb in zip(sim.actor.weights, seq.actor.weights))
    assert moved > 50, moved  # the sequential actor saw the stepped critics
    assert int(sim.updates.numpy()) == 1


def test_policy_every_delays_actor_and_targets_in_both_orders():
    """policy_every = 2: the actor, alpha and target critics move on the 2nd, 4th, ... update only."""
    import dataclasses

    from tf_rlnas.algos.sac.config import SACConfig

    rng = np.random.default_rng(2)
    batch = _batches(rng, 1, 32)
    for order in ("sequential", "simultaneous"):
        cfg = dataclasses.replace(SACConfig().agent, policy_every=2, update_order=order)
        l = SACLearner(5, 2, cfg, seed=4)
        snap = lambda: [v.numpy().copy() for v in l.actor.weights + l.target_critic.weights + [l.log_alpha]]  # noqa: E731
        before = snap()
        l.train_unrolled(batch, 1)
        assert all(np.array_equal(a, b) for a, b in zip(before, snap())), order
        l.train_unrolled(batch, 1)
        assert all(not np.array_equal(a, b) for a, b in zip(before, snap())), order


def test_env_step_without_tf_internals_trains_identically(tmp_path, monkeypatch):
    """EnvStep calls its compiled functions through TF internals where this TF has them
    (env_step.fast_caller); the public-call fallback must give the very same run."""
    from tf_rlnas import config as C
    from tf_rlnas.algos.sac import env_step
    from tf_rlnas.algos.sac.config import SACConfig
    from tf_rlnas.algos.sac.trainer import SACTrainer

    sets = ["env.id=Pendulum-v1", "agent.actor_hidden=[16]", "agent.critic_hidden=[16]", "train.batch_size=16",
            "train.start_steps=50", "train.total_env_steps=150", "train.eval_every=0", "train.eval_episodes=1",
            "run.checkpoint_every=1000"]
    fast = SACTrainer(C.resolve(SACConfig, [], sets), str(tmp_path / "fast"))
    assert env_step._direct_call is not None  # this TF: the internals path is the one the loop takes
    fast.fit(progress=False)
    monkeypatch.setattr(env_step, "_direct_call", lambda fn: None)
    monkeypatch.setattr(env_step, "_CALL_FLAT", False)
    public = SACTrainer(C.resolve(SACConfig, [], sets), str(tmp_path / "public"))
    public.fit(progress=False)
    for a, b in zip(fast.learner.actor.weights + fast.learner.critic.weights,
                    public.learner.actor.weights + public.learner.critic.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(public.learner.updates.numpy()) == int(fast.learner.updates.numpy()) > 50
