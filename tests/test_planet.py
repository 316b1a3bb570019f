"""PlaNet + SAC heads: pixel envs, episode files and loader, CEM, the phased compiled step,
filtered restore, export and the CLI."""

from __future__ import annotations

import glob
import os
import re
import tempfile

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_rlnas import config as C
from tf_rlnas.algos.planet.agent import TEST, TRAIN
from tf_rlnas.algos.planet.config import PlanetConfig
from tf_rlnas.algos.planet.models import kl_divergence, preprocess
from tf_rlnas.algos.planet.planner import cem
from tf_rlnas.algos.planet.trainer import PlanetTrainer
from tf_rlnas.cli import main
from tf_rlnas.envs.pixels import PixelWrapper, PointReach
from tf_rlnas.envs.video import offscreen_gl_backend
from tf_rlnas.replay.episodes import ChunkLoader, list_episodes, load_episode, readable_episodes, save_episode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = [os.path.join(REPO, "configs/planet/point_reach.yaml"), os.path.join(REPO, "configs/planet/smoke.yaml")]


def make_cfg(*sets):
    return C.resolve(PlanetConfig, CFG, list(sets))


def fake_episode(n: int, value: float, act_dim: int = 2) -> dict:
    return {"image": np.full((n + 1, 64, 64, 3), int(value) % 256, np.uint8),
            "action": np.full((n + 1, act_dim), value, np.float32), "reward": np.full(n + 1, value, np.float32),
            "discount": np.ones(n + 1, np.float32)}


# ---- environments ---------------------------------------------------------------------------

def test_point_reach_is_a_valid_gymnasium_pixel_env_with_action_repeat():
    from gymnasium.utils.env_checker import check_env
    env = PointReach(max_steps=50)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    # action repeat 2: the reward is the sum over two physics steps, 25 agent steps per episode
    p0, v0 = env.p.copy(), env.v.copy()
    a = np.array([1.0, -0.5])
    _, r, term, trunc, info = env.step(a.astype(np.float32))
    v1 = 0.8 * v0 + 0.05 * a
    p1 = np.clip(p0 + v1, -1, 1)
    v2 = 0.8 * v1 + 0.05 * a
    p2 = np.clip(p1 + v2, -1, 1)
    want = 2.0 - np.linalg.norm(p1 - env.goal) - np.linalg.norm(p2 - env.goal)
    assert abs(r - want) < 1e-9 and not term and not trunc
    np.testing.assert_allclose(info["position"], p2)
    steps = 1
    while not trunc:
        _, _, term, trunc, _ = env.step(a)
        steps += 1
        assert not term
    assert steps == 25


def test_pixel_wrapper_renders_a_gymnasium_env_with_action_repeat():
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    env = PixelWrapper(gym.make("CartPole-v1", render_mode="rgb_array"), size=64, action_repeat=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and obs.std() > 0
    obs2, r, term, trunc, _ = env.step(0)
    assert r == 3.0 and not trunc and not np.array_equal(obs, obs2)
    env.close()


@pytest.mark.skipif(offscreen_gl_backend() is None, reason="no OpenGL for offscreen rendering (no display, "
                    "no OSMesa or EGL library: apt-get install libosmesa6)")
def test_dmc_and_mujoco_envs_render_pixels_in_a_spawned_process():
    pytest.importorskip("dm_control")
    from tf_rlnas.envs.pixels import ProcessEnv
    env = ProcessEnv({"name": "dmc:cartpole-swingup"})  # with a GL library present, any failure is a failure
    try:
        obs, _ = env.reset(seed=1)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        n, term, trunc = 0, False, False
        while not (term or trunc):
            obs, r, term, trunc, _ = env.step(np.zeros(1, np.float32))
            n += 1
        assert n == 1000 // 8 and trunc and not term  # paper's action repeat 8; DMC never terminates
    finally:
        env.close()
    env = ProcessEnv({"name": "HalfCheetah-v5", "action_repeat": 4})
    try:
        obs, _ = env.reset(seed=1)
        obs2, r, *_ = env.step(np.zeros(6, np.float32))
        assert obs.shape == (64, 64, 3) and obs.std() > 0 and np.isfinite(r)
    finally:
        env.close()


# ---- episodes and the loader ----------------------------------------------------------------

def test_episode_files_are_atomic_named_and_corrupt_ones_are_skipped_with_one_warning(tmp_path, capsys):
    d = str(tmp_path / "eps")
    path = save_episode(d, fake_episode(7, 3.0))
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{32}-7\.npz", os.path.basename(path))
    assert os.listdir(d) == [os.path.basename(path)]  # no temporary file left behind
    ep = load_episode(path)
    assert ep["image"].shape == (8, 64, 64, 3) and ep["reward"][0] == 3.0
    with open(path, "rb") as f:
        data = f.read()
    bad1 = os.path.join(d, "20000101T000000-" + "0" * 32 + "-7.npz")
    with open(bad1, "wb") as f:
        f.write(data[: len(data) // 2])  # truncated
    bad2 = os.path.join(d, "20000101T000001-" + "1" * 32 + "-7.npz")
    with open(bad2, "wb") as f:
        f.write(b"not a zip file")
    loader = ChunkLoader(d, 5, 4, seed=0)
    chunks = [c for _, c in zip(range(8), loader())]
    assert all(c["reward"].shape == (5,) and c["reward"][0] == 3.0 for c in chunks)
    out = capsys.readouterr().out + capsys.readouterr().err
    warnings = [line for line in out.splitlines() if "skipping unreadable episode" in line]
    assert len(warnings) == 2, out  # one line per bad file, once


def test_loader_takes_half_from_new_episodes_and_bounds_its_cache(tmp_path):
    d = str(tmp_path / "eps")
    # indexed ids (as the trainer writes them): name order = creation order within one second
    for v in (1, 2, 3, 4):
        save_episode(d, fake_episode(10, v), index=v)
    save_episode(d, fake_episode(3, 99), index=99)  # shorter than a chunk: never sampled
    loader = ChunkLoader(d, 6, 8, seed=0, max_cache_steps=40)
    gen = loader()
    first = [next(gen)["reward"][0] for _ in range(8)]
    assert set(first) <= {1, 2, 3, 4} and 99 not in first
    for v in (5, 6):
        save_episode(d, fake_episode(10, v), index=v)
    second = [next(gen)["reward"][0] for _ in range(8)]
    # round 2: the two new episodes first (all of them: fewer than half a round), then the cache
    assert sorted(second[:2]) == [5, 6] and set(second[2:]) <= {1, 2, 3, 4}
    next(gen)  # round 3 starts: the new ones joined the cache, the oldest were evicted (<= 40 steps)
    assert loader.cached_steps() <= 40 and loader.stats["evicted"] >= 2
    cached = sorted(float(e["reward"][0]) for e in loader.cache.values())
    assert cached[-2:] == [5.0, 6.0] and 1.0 not in cached
    c = next(gen)
    assert c["image"].shape == (6, 64, 64, 3) and c["action"].shape == (6, 2)


def test_episode_convention_action_t_led_to_image_t(tmp_path):
    """Replaying the stored actions from the same reset seed reproduces every stored image and
    reward: action[t] and reward[t] belong to the step that produced image[t]."""
    cfg = make_cfg()
    tr = PlanetTrainer(cfg, str(tmp_path / "run"))
    ret, n = tr.run_episode("train", "random", seed=11)
    ep = load_episode(list_episodes(tr.dirs["train"])[0])
    assert n == 25 and len(ep["reward"]) == 26
    assert np.all(ep["action"][0] == 0) and ep["reward"][0] == 0 and np.all(ep["discount"] == 1)
    env = PointReach(max_steps=50)
    obs, _ = env.reset(seed=11)
    np.testing.assert_array_equal(obs, ep["image"][0])
    for t in range(1, n + 1):
        obs, r, *_ = env.step(ep["action"][t])
        np.testing.assert_array_equal(obs, ep["image"][t])
        assert abs(r - ep["reward"][t]) < 1e-5
    assert abs(ret - ep["reward"].sum()) < 1e-4


# ---- model pieces ---------------------------------------------------------------------------

def test_cem_finds_the_maximum_of_a_quadratic():
    target = tf.constant(np.random.default_rng(0).uniform(-0.8, 0.8, (4, 2)), tf.float32)

    def objective(actions, seed):
        return -tf.reduce_sum(tf.square(actions - target[None]), axis=[1, 2])
    best = cem(objective, 2, 4, iterations=8, candidates=400, top_k=40, seed=tf.constant([1, 2]))
    np.testing.assert_allclose(best.numpy(), target.numpy(), atol=0.05)
    # the bounds are respected: a target outside [-1, 1] ends at the bound
    far = cem(lambda a, s: -tf.reduce_sum(tf.square(a - 3.0), axis=[1, 2]), 2, 3, 6, 200, 20, tf.constant([3, 4]))
    assert np.all(far.numpy() <= 1.0) and np.all(far.numpy() > 0.9)


def test_rssm_shapes_and_decoder_round_trip():
    from tf_rlnas.algos.planet.models import RSSM, Decoder, Encoder
    enc, dec = Encoder(4), Decoder(4)
    img = tf.zeros([2, 3, 64, 64, 3])
    embed = enc(img)
    assert embed.shape == (2, 3, 4 * 32)  # 2x2x(8 d) for 64x64 inputs
    rssm = RSSM(act_dim=2, embed_dim=128, deter=7, stoch=5, hidden=6)
    post, prior = rssm.observe(embed, tf.zeros([2, 3, 2]), tf.constant([0, 1]))
    for st in (post, prior):
        assert st["mean"].shape == (2, 3, 5) and st["deter"].shape == (2, 3, 7)
        assert float(tf.reduce_min(st["std"])) >= 0.1  # min std
    np.testing.assert_array_equal(post["deter"].numpy(), prior["deter"].numpy())  # same h_t
    imagined = rssm.imagine({k: v[:, -1] for k, v in post.items()}, tf.zeros([2, 4, 2]), tf.constant([2, 3]))
    assert imagined["stoch"].shape == (2, 4, 5)
    assert dec(RSSM.features(post)).shape == (2, 3, 64, 64, 3) and rssm.feat_dim == 12


def test_gru_is_keras_gru_in_float32_and_keeps_a_float32_state_in_bfloat16():
    """RSSM.gru computes Keras' GRUCell on the cell's own variables (checkpoint paths unchanged):
    exactly in float32; with bfloat16 products the state stays float32 and close."""
    from tf_rlnas.algos.planet.models import RSSM
    x = tf.random.stateless_normal([8, 6], [1, 2])
    h = tf.random.stateless_normal([8, 7], [3, 4])
    r32 = RSSM(act_dim=2, embed_dim=5, deter=7, stoch=5, hidden=6)
    want, _ = r32.cell(x, [h])
    np.testing.assert_allclose(r32.gru(x, h).numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    r16 = RSSM(act_dim=2, embed_dim=5, deter=7, stoch=5, hidden=6, compute_dtype="bfloat16")
    for a, b in zip(r16.weights, r32.weights):
        assert a.path == b.path and a.dtype == "float32"
        a.assign(b)
    got = r16.gru(x, h)
    assert got.dtype == tf.float32
    err = float(tf.reduce_max(tf.abs(got - want)))
    assert 0 < err < 0.02, err  # bfloat16 products (8 significant bits), float32 gates


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_planner_rollout_is_imagine_with_fused_kernels(dtype):
    """RSSM.imagine_features (the planner's unrolled rollout with XLA-fused GRU gates and Gaussian
    samples) computes imagine's features, time-major, with the same random numbers; inside a
    tf.function too. A wrong gate order, a missing bias or a different noise draw is off by O(0.1)."""
    from tf_rlnas.algos.planet.models import RSSM
    rssm = RSSM(act_dim=2, embed_dim=5, deter=7, stoch=5, hidden=6, compute_dtype=dtype)
    state = {"mean": tf.zeros([4, 5]), "std": tf.ones([4, 5]), "stoch": tf.random.stateless_normal([4, 5], [1, 1]),
             "deter": tf.random.stateless_normal([4, 7], [2, 2])}
    actions = tf.random.stateless_uniform([4, 3, 2], [3, 3], -1, 1)
    want = tf.transpose(RSSM.features(rssm.imagine(state, actions, tf.constant([1, 2]))), [1, 0, 2]).numpy()
    assert np.abs(want[1:] - want[:-1]).max() > 0.1  # a rollout that moves
    for fn in (rssm.imagine_features, tf.function(rssm.imagine_features)):
        got = fn(state, actions, tf.constant([1, 2])).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    other = rssm.imagine_features(state, actions, tf.constant([1, 3])).numpy()
    assert np.abs(other - want).max() > 0.1  # the seed matters


@pytest.mark.parametrize("depth", [2, 4])
def test_subpixel_decoder_is_the_keras_transposed_convs(depth):
    """The decoder's bfloat16 path (the 1x1 first transposed conv as a matmul, the last as a
    stride-1 conv + depth_to_space on Keras' own kernel) computes the Keras layers' output and
    gradients in float32; bfloat16 (its default there) stays close; and the sub-pixel form of each
    stride-2 layer (odd kernels padded) equals the layer."""
    from tf_rlnas.algos.planet.models import Decoder
    feats = tf.random.stateless_normal([3, 2, 9], [4, 5])
    ref, fast = Decoder(depth, subpixel=False), Decoder(depth, subpixel=True)
    want = ref(feats)
    fast(feats)
    for a, b in zip(fast.weights, ref.weights):
        assert a.path == b.path
        a.assign(b + 0.1 * tf.random.stateless_normal(b.shape, [6, 7]))  # non-zero biases too
        b.assign(a)
    with tf.GradientTape(persistent=True) as tape:
        want = ref(feats)
        got = fast(feats)
        lw, lg = tf.reduce_sum(tf.square(want)), tf.reduce_sum(tf.square(got))
    assert got.shape == want.shape == (3, 2, 64, 64, 3)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5 * float(tf.reduce_max(tf.abs(want))))
    for gw, gg in zip(tape.gradient(lw, ref.trainable_variables), tape.gradient(lg, fast.trainable_variables)):
        scale = float(tf.reduce_max(tf.abs(gw)))
        assert scale > 0
        np.testing.assert_allclose(gg.numpy(), gw.numpy(), atol=1e-4 * scale)
    # each stride-2 layer (odd and even kernels) through the sub-pixel form == Keras' layer
    from tf_rlnas.algos.planet.models import _conv_transpose_s2
    for layer, size in zip(ref.deconvs.layers[1:], (5, 13, 30)):
        x = tf.random.stateless_normal([2, size, size, layer.kernel.shape[3]], [8, size])
        np.testing.assert_allclose(_conv_transpose_s2(layer, x).numpy(), layer(x).numpy(), rtol=1e-5,
                                   atol=1e-5 * float(tf.reduce_max(tf.abs(layer(x)))))
    b16 = Decoder(depth, compute_dtype="bfloat16")
    assert b16.subpixel
    b16(feats)
    for a, b in zip(b16.weights, ref.weights):
        a.assign(b)
    err = float(tf.reduce_max(tf.abs(b16(feats) - want))) / float(tf.reduce_max(tf.abs(want)))
    assert err < 0.05, err


def _world_model_losses(dtype: str, seed: int, steps: int) -> np.ndarray:
    cfg = C.resolve(PlanetConfig, [CFG[0]], [f"model.compute_dtype={dtype}", f"run.seed={seed}"])
    with tempfile.TemporaryDirectory() as d:
        tr = PlanetTrainer(cfg, d)
        try:
            tr.seed_episodes()
            assert tr.agent.encoder.convs.layers[0].compute_dtype == dtype
            return np.array([float(tr.agent.step(tf.constant(TRAIN))["total"]) for _ in range(steps)])
        finally:
            tr.close()


def test_bfloat16_world_model_learns_within_the_float32_seed_spread():
    """The built-in task's CPU config: 30 world-model steps in bfloat16 end with a loss inside the
    range of three float32 seeds (measured: float32 164-249, bfloat16 240 with seed 0, 188 with
    seed 1), and the same seed's early losses agree to ~1%."""
    f32 = [_world_model_losses("float32", s, 30) for s in (0, 1, 2)]
    b16 = _world_model_losses("bfloat16", 0, 30)
    ends = [x[-10:].mean() for x in f32]
    lo, hi = min(ends), max(ends)
    margin = 0.1 * (hi - lo)
    assert lo - margin <= b16[-10:].mean() <= hi + margin, (b16[-10:].mean(), ends)
    assert b16[-10:].mean() < 0.5 * b16[:5].mean()  # it learns
    np.testing.assert_allclose(b16[:5], f32[0][:5], rtol=0.02)


def test_bfloat16_world_model_gradients_point_where_float32_ones_do():
    """Same weights, batch and seeds: every world-model variable's bfloat16 gradient points the way
    its float32 gradient does (cosine > 0.98). Measured: 0.989-1.0, the lowest the encoder's first
    conv at the far end of the backward pass. With TF's own bfloat16 BiasAddGrad (a sum over
    ~160k positions here that stops growing in bfloat16) the decoder's deconv1/deconv2 biases
    fail it at 0.953/0.955; with it PlaNet in bfloat16 did not learn the built-in task
    (docs/planet.md). tf_rlnas.nn.layers adds those biases.

    The weights come from Keras' global seed, set here (the test ran with whatever state earlier
    tests left, so its weights changed with the test order). Over global seeds 0-4, 7, 11 the
    lowest cosine was 0.9695 (seed 4: every encoder variable 0.97-0.985, its gradient arriving
    through the 50-step bfloat16 RSSM; the decoder's and all others > 0.99); the other seeds > 0.996."""
    from tf_rlnas.algos.planet.agent import PlanetAgent
    keras.utils.set_random_seed(0)
    cfg = [C.resolve(PlanetConfig, [CFG[0]], [f"model.compute_dtype={dt}"]) for dt in ("float32", "bfloat16")]
    a32, a16 = PlanetAgent(cfg[0], 2, 0), PlanetAgent(cfg[1], 2, 5)
    n16 = a16.named_variables()
    for k, v in a32.named_variables().items():
        n16[k].assign(v)
    rng = np.random.default_rng(0)
    # smooth images (a bright blob on a dark field) so the decoder's gradients have structure
    yy, xx = np.mgrid[:64, :64]
    centres = rng.uniform(10, 54, (4, 10, 2))
    blob = np.exp(-((yy - centres[..., :1, None]) ** 2 + (xx - centres[..., 1:, None]) ** 2) / 40.0)
    batch = {"image": tf.constant(np.repeat((blob * 200 + 20)[..., None], 3, -1).astype(np.uint8)),
             "action": tf.constant(rng.uniform(-1, 1, (4, 10, 2)), tf.float32),
             "reward": tf.constant(rng.uniform(0, 1, (4, 10)), tf.float32)}
    seeds = tf.constant([[1, 2], [3, 4], [5, 6]])
    grads = []
    for agent in (a32, a16):
        with tf.GradientTape() as tape:
            out, _ = agent.losses(batch, seeds)
        grads.append(tape.gradient(out["total"], agent.wm_variables, unconnected_gradients="zero"))
    bad, n_checked = [], 0
    for v, g32, g16 in zip(a32.wm_variables, *grads):
        g32, g16 = g32.numpy().ravel(), tf.cast(g16, tf.float32).numpy().ravel()
        if not g32.any():  # the prior's, below the free nats: zero in both
            assert not g16.any(), v.path
            continue
        n_checked += 1
        cos = float(g32 @ g16 / (np.linalg.norm(g32) * np.linalg.norm(g16) + 1e-30))
        if cos < 0.98:
            bad.append((v.path, round(cos, 3)))
    assert not bad, bad
    assert n_checked >= 20


def test_bfloat16_planner_reaches_the_float32_plans_return_on_a_fixed_model():
    """Same weights, same observations, same seeds: the plan CEM finds on the bfloat16 model scores
    (under the float32 model) within 1% of the float32 model's plan, and its first action - the
    one executed - is close. Measured on untrained models, whose return surface is flat: plans
    identical on 2-4 of 5 observations, elsewhere first actions up to 0.12 apart at returns from
    0.84% worse to 0.37% better (4 initialisations x 5 observations; which elite is chosen flips on
    near-ties, so a 0.2% bound held for one initialisation and not for another)."""
    from tf_rlnas.algos.planet.agent import PlanetAgent
    cfg = [C.resolve(PlanetConfig, [CFG[0]], [f"model.compute_dtype={dt}"]) for dt in ("float32", "bfloat16")]
    a32, a16 = PlanetAgent(cfg[0], 2, 0), PlanetAgent(cfg[1], 2, 5)
    n16 = a16.named_variables()
    for k, v in a32.named_variables().items():
        n16[k].assign(v)
    p = cfg[0].planner
    rng = np.random.default_rng(0)
    same = 0
    for i in range(5):
        img = tf.constant(rng.integers(0, 256, (1, 64, 64, 3)), tf.uint8)
        plans, returns = [], []
        for agent in (a32, a16):
            post = agent.filter(agent.initial_state(), tf.zeros([1, 2]), img, None, sample=False)
            plan = cem(agent._objective(post), 2, p.horizon, p.iterations, p.candidates, p.top_k, tf.constant([i, 3]))
            plans.append(plan.numpy())
            returns.append(float(a32._objective(post)(plan[None], tf.constant([9, 9]))[0]))
        assert abs(returns[1] - returns[0]) <= 0.01 * abs(returns[0]), returns
        np.testing.assert_allclose(plans[1][0], plans[0][0], atol=0.15)
        same += int(np.abs(plans[1] - plans[0]).max() < 1e-3)
    assert same >= 2, same


def test_kl_and_image_quantisation():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    s1, s2 = rng.uniform(0.2, 2, (3, 5)), rng.uniform(0.2, 2, (3, 5))
    want = (np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5).sum(-1)
    got = kl_divergence({"mean": tf.constant(m1), "std": tf.constant(s1)}, {"mean": tf.constant(m2), "std": tf.constant(s2)})
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    img = tf.constant(np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1))
    x = preprocess(img, None, 5).numpy().ravel()
    np.testing.assert_allclose(x, (np.arange(256) // 8 + 0.5) / 32 - 0.5, atol=1e-7)  # 32 bins, centred
    noisy = preprocess(img, tf.constant([1, 2]), 5).numpy().ravel()
    assert np.all(noisy >= (np.arange(256) // 8) / 32 - 0.5) and np.all(noisy < (np.arange(256) // 8 + 1) / 32 - 0.5)


# ---- the phased step, SAC heads, restore ------------------------------------------------------

def _values(variables):
    return [v.numpy().copy() for v in variables]


def test_phases_choose_the_dataset_and_whether_anything_updates(tmp_path):
    cfg = make_cfg("sac.enabled=true", "sac.agent.actor_hidden=[16]", "sac.agent.critic_hidden=[16]")
    tr = PlanetTrainer(cfg, str(tmp_path / "run"))
    tr.seed_episodes()
    agent = tr.agent
    every = list(agent.named_variables().values())
    before = _values(every)
    train_reads, test_reads = tr.train_loader.stats["scans"], tr.test_loader.stats["scans"]
    out = agent.step(tf.constant(TEST, tf.int32))
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, every))  # test phase: nothing changes
    assert float(out["grad_norm"]) == 0.0 and np.isfinite(float(out["total"])) and int(agent.updates.numpy()) == 0
    assert tr.test_loader.stats["scans"] > test_reads and tr.train_loader.stats["scans"] == train_reads
    losses = []
    for _ in range(25):
        out = agent.step(tf.constant(TRAIN, tf.int32))
        losses.append(float(out["image"]))
    assert tr.train_loader.stats["scans"] > train_reads
    changed = {n for (n, v), b in zip(agent.named_variables().items(), before) if not np.array_equal(b, v.numpy())}
    assert any(n.startswith("encoder/") for n in changed) and any(n.startswith("sac/actor/") for n in changed)
    assert int(agent.updates.numpy()) == 25 and agent.traces["step"] == 1  # one trace for both phases
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])  # the world model learns
    assert float(out["kl"]) >= cfg.model.free_nats - 1e-6 and float(out["sac_critic_loss"]) > 0


def test_sac_transitions_are_aligned_with_the_episode_convention():
    cfg = make_cfg("sac.enabled=true", "sac.burn_in=2", "sac.agent.actor_hidden=[8]", "sac.agent.critic_hidden=[8]")
    from tf_rlnas.algos.planet.agent import PlanetAgent
    agent = PlanetAgent(cfg, 2, 0)
    b, L = 2, 6
    t = np.arange(L, dtype=np.float32)
    feat = tf.constant(np.broadcast_to(t[None, :, None], (b, L, 3)))
    batch = {"action": tf.constant(np.broadcast_to(10 + t[None, :, None], (b, L, 2))),
             "reward": tf.constant(np.broadcast_to(20 + t[None], (b, L))),
             "discount": tf.constant(np.broadcast_to((t != 4).astype(np.float32)[None], (b, L)))}
    s = agent._sac_batch(feat, batch)
    np.testing.assert_array_equal(s["obs"].numpy()[0, :3, 0], [2, 3, 4])      # burn-in 2 dropped
    np.testing.assert_array_equal(s["next_obs"].numpy()[0, :3, 0], [3, 4, 5])
    np.testing.assert_array_equal(s["actions"].numpy()[0, :3, 0], [13, 14, 15])  # a_{t+1} leads t -> t+1
    np.testing.assert_array_equal(s["rewards"].numpy()[0, :3], [23, 24, 25])
    np.testing.assert_array_equal(s["terminated"].numpy()[0, :3], [0, 1, 0])
    assert s["obs"].shape == (1, b * (L - 3), 3)


def test_filtered_restore_loads_a_world_model_into_a_run_with_sac_heads(tmp_path):
    src = str(tmp_path / "wm")
    assert main(["train", "planet", "--config", CFG[0], "--config", CFG[1], "--run-dir", src, "--no-progress"]) == 0
    dst = str(tmp_path / "sac")
    sets = ["sac.enabled=true", "sac.train_world_model=false", "sac.act_with=actor", f"init.from_run={src}",
            "init.exclude=[^decoder/]", "sac.agent.actor_hidden=[16]", "sac.agent.critic_hidden=[16]",
            "train.steps=4"]
    cfg = make_cfg(*sets)
    tr = PlanetTrainer(cfg, dst)
    assert tr.restore() is None
    import json
    report = json.load(open(os.path.join(dst, "init_report.json")))
    loaded, skipped = set(report["loaded"]), report["not_loaded"]
    assert any(n.startswith("encoder/") for n in loaded) and any(n.startswith("rssm/gru/") for n in loaded)
    assert any(n.startswith("reward/") for n in loaded)
    assert all(skipped[n] == "filtered out" for n in skipped if n.startswith("decoder/"))
    assert all(skipped[n] == "not in the source run" for n in skipped if n.startswith("sac/"))
    src_tr = PlanetTrainer(make_cfg(), src)
    src_tr.restore()
    theirs = src_tr.agent.named_variables()
    ours = tr.agent.named_variables()
    for n in loaded:
        np.testing.assert_array_equal(ours[n].numpy(), theirs[n].numpy())
    assert not np.array_equal(ours["decoder/dense/kernel"].numpy(), theirs["decoder/dense/kernel"].numpy())
    # a frozen world model: SAC trains, the world model does not move
    wm = {n: v.numpy().copy() for n, v in ours.items() if not n.startswith("sac/")}
    tr.fit(progress=False)
    assert all(np.array_equal(wm[n], ours[n].numpy()) for n in wm)
    assert tr.agent.sac.updates.numpy() > 0


# ---- CLI, export, resume --------------------------------------------------------------------

def test_train_resume_export_and_serve(tmp_path):
    from tests.serving import saved_model_cli_run
    run = str(tmp_path / "run")
    assert main(["train", "planet", "--config", CFG[0], "--config", CFG[1], "--set", "train.steps=6",
                 "--run-dir", run, "--no-progress"]) == 0
    n_train = len(list_episodes(os.path.join(run, "train_episodes")))
    assert main(["train", "--run-dir", run, "--set", "train.steps=12", "--no-progress"]) == 0
    tr = PlanetTrainer(make_cfg(), run)
    tr.restore()
    assert int(tr.iteration.numpy()) == 12 and int(tr.agent.updates.numpy()) == 10  # 2 test-phase steps
    eps = list_episodes(os.path.join(run, "train_episodes"))
    assert len(eps) > n_train  # resumed collection, no second batch of seed episodes
    assert len(eps) == 2 + int(tr.agent.updates.numpy()) // 4
    assert len(list_episodes(os.path.join(run, "test_episodes"))) == 2 + 1  # seeds + one test phase
    scalars = _tb_tags(os.path.join(run, "tb"))
    for tag in ("loss/image", "loss/reward", "loss/kl", "loss/kl_before_free_nats", "test_loss/image",
                "train/return", "test/return", "time/episodes_per_s", "time/updates_per_s"):
        assert tag in scalars, (tag, sorted(scalars))
    out = str(tmp_path / "models")
    assert main(["export", run, "--out", out]) == 0
    path = glob.glob(os.path.join(out, "*", "*"))[0]
    ex = tr.export_spec()
    inputs = ex.examples["serving_default"]
    served = saved_model_cli_run(path, "serving_default", inputs, str(tmp_path / "serve"))
    for k, v in ex.expected["serving_default"].items():
        np.testing.assert_allclose(served[k], v, atol=1e-5)
    # the caller carries the state: a second call with the returned state
    loaded = tf.saved_model.load(path)
    first = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in inputs.items()})
    second = loaded.signatures["serving_default"](image=tf.constant(inputs["image"]), prev_action=first["action"],
                                                  deter=first["deter"], stoch=first["stoch"])
    assert second["deter"].shape == first["deter"].shape and not np.allclose(second["deter"], first["deter"])


def _tb_tags(logdir):
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    acc = pea.EventAccumulator(logdir, size_guidance={"tensors": 0})
    acc.Reload()
    return set(acc.Tags().get("tensors", []))


def test_bad_episode_directories_and_pretrained_runs_are_one_line_errors(tmp_path, capsys):
    base = ["train", "planet", "--config", CFG[0], "--config", CFG[1], "--no-progress"]
    run = tmp_path / "a"
    assert main(base + ["--run-dir", str(run), "--set", "train.steps=3"]) == 0
    # every training episode corrupted: skipped with warnings, fresh seed episodes written, training goes on
    eps = list_episodes(str(run / "train_episodes"))
    for p in eps:
        with open(p, "wb") as f:
            f.write(b"garbage")
    capsys.readouterr()
    assert main(["train", "--run-dir", str(run), "--set", "train.steps=6", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert (out.out + out.err).count("skipping unreadable episode") == len(eps)
    assert len(readable_episodes(str(run / "train_episodes"))) >= 2
    # an episode directory that is a file
    import shutil
    shutil.rmtree(run / "train_episodes")
    (run / "train_episodes").write_text("x")
    assert main(["train", "--run-dir", str(run), "--set", "train.steps=8", "--no-progress"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "train_episodes" in err[0], err
    # a pretrained run whose env has other action sizes / that is not a PlaNet run
    other = tmp_path / "c"
    assert main(["train", "reinforce", "--config", "smoke", "--run-dir", str(other), "--no-progress"]) == 0
    capsys.readouterr()
    code = main(base + ["--run-dir", str(tmp_path / "d"), "--set", f"init.from_run={other}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "init.from_run" in err[0], err


def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(tmp_path):
    """World-model training under MirroredStrategy (2 logical CPU devices, each half of the global
    batch, gradients summed) follows the single-device run: same data, only the per-replica noise
    streams (dequantisation, posterior samples) differ."""
    import json
    import subprocess
    import sys
    script = (
        "import json, sys\n"
        "from tf_rlnas import config as C\n"
        "from tf_rlnas.algos.planet.config import PlanetConfig\n"
        "from tf_rlnas.algos.planet.trainer import PlanetTrainer\n"
        "import tensorflow as tf\n"
        f"cfg = C.resolve(PlanetConfig, {CFG!r}, sys.argv[2:] + ['sac.enabled=true', 'sac.agent.actor_hidden=[8]', "
        "'sac.agent.critic_hidden=[8]', 'train.batch=8'])\n"
        "tr = PlanetTrainer(cfg, sys.argv[1])\n"
        "tr.seed_episodes()\n"
        "rows = [{k: float(v) for k, v in tr.agent.step(tf.constant(0)).items()} for _ in range(4)]\n"
        "print('REPLICAS', tr.strategy.num_replicas_in_sync if tr.strategy else 1)\n"
        "print(json.dumps(rows))\n")
    outs = []
    for i, sets in enumerate(([], ["distribute.strategy=mirrored", "distribute.cpu_devices=2"])):
        res = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"r{i}"), *sets], capture_output=True,
                             text=True, timeout=600, env={**os.environ, "PYTHONPATH": REPO})
        assert res.returncode == 0, res.stderr[-3000:]
        lines = res.stdout.strip().splitlines()
        assert lines[-2] == f"REPLICAS {1 + i}"
        outs.append(json.loads(lines[-1]))
    one, two = outs
    for a, b in zip(one, two):
        for k in ("total", "image"):  # the image term dominates; it barely depends on the noise
            assert abs(a[k] - b[k]) <= 0.02 * abs(a[k]) + 1e-3, (k, a[k], b[k])
        for k in ("reward", "kl_raw"):  # small terms of the sampled latents: looser
            assert abs(a[k] - b[k]) <= 0.25 * abs(a[k]) + 1e-2, (k, a[k], b[k])
        assert b["grad_norm"] > 0 and np.isfinite(b["sac_critic_loss"])
    assert one[-1]["image"] < one[0]["image"] and two[-1]["image"] < two[0]["image"]


def test_every_shipped_planet_config_resolves():
    from tf_rlnas.registry import shipped_configs
    cfgs = shipped_configs("planet")
    assert {"point_reach", "point_reach_sac", "dmc_cartpole_swingup", "dmc_cheetah_run", "dmc_walker_walk",
            "dmc_cartpole_swingup_cpu", "dmc_cartpole_swingup_sac", "smoke"} <= set(cfgs)
    for name, path in cfgs.items():
        base = [] if name in ("point_reach", "smoke", "point_reach_sac") or name.startswith("dmc_") and \
            not name.endswith("_sac") else [cfgs["dmc_cartpole_swingup"]]
        cfg = C.resolve(PlanetConfig, base + [path], ["init.from_run=somewhere"] if name.endswith("_sac") and
                        "dmc" in name else [])
        assert cfg.train.chunk >= 2
    paper = C.resolve(PlanetConfig, [cfgs["dmc_cartpole_swingup"]], [])
    assert (paper.model.deter, paper.model.stoch, paper.planner.candidates, paper.train.batch) == (200, 30, 1000, 50)


@pytest.mark.timeout(900)
def test_multi_worker_training_two_processes(tmp_path):
    """MultiWorkerMirroredStrategy, 2 CLI processes on loopback: the chief alone seeds, collects and
    writes the run directory; the other worker reads the shared episode folders with its own loader
    seed; gradients are all-reduced, so both end with the same weights (SAC heads included: they
    train on the all-gathered features with the same seeds)."""
    from tests.test_hardening import _run_workers, _weights
    argv = ["train", "planet", "--config", CFG[0], "--config", CFG[1], "--set", "distribute.strategy=multi_worker",
            "--set", "sac.enabled=true", "--set", "sac.agent.actor_hidden=[8]", "--set", "sac.agent.critic_hidden=[8]",
            "--run-dir", "mw", "--no-progress"]
    _run_workers(argv, str(tmp_path))
    chief = _weights(str(tmp_path / "mw" / "checkpoints"), prefix="agent/")
    other = _weights(str(tmp_path / "mw" / "workers" / "worker-1" / "checkpoints"), prefix="agent/")
    assert len(chief) > 30 and chief.keys() == other.keys()
    for n in chief:
        if n.startswith("agent/rng/"):  # the chief's generator also drew the acting noise
            continue
        np.testing.assert_array_equal(chief[n], other[n], err_msg=n)
    assert int(chief["agent/updates/.ATTRIBUTES/VARIABLE_VALUE"]) == 10
    assert sorted(os.listdir(tmp_path / "mw")) == ["checkpoints", "config.yaml", "summary.json", "tb", "test_episodes",
                                                    "train_episodes", "workers"]
    assert os.listdir(tmp_path / "mw" / "workers" / "worker-1") == ["checkpoints"]
    assert len(list_episodes(str(tmp_path / "mw" / "train_episodes"))) == 2 + 10 // 4  # the chief's, once
