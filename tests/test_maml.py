"""MAML-TRPO: task families, vectorised sampling, GAE with masks, second- vs first-order
meta-gradients, trace counts, short-budget learning, resume, export, bad input."""

import json
import os

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from serving import saved_model_cli_run
from tf_rlnas import config as C
from tf_rlnas.algos.maml_trpo.config import MAMLConfig
from tf_rlnas.algos.maml_trpo.learner import MAMLLearner, gae_masked
from tf_rlnas.algos.maml_trpo.policies import MetaPolicy
from tf_rlnas.algos.maml_trpo.trainer import MAMLTrainer, sample_episodes
from tf_rlnas.cli import main
from tf_rlnas.envs.meta.vector import GymTaskVec, Navigation2DVec, TabularMDPVec

TINY = ["maml.meta_batch=4", "maml.fast_batch=4", "policy.hidden=[16]", "train.eval_tasks=4", "maml.jit_compile=false",
        "train.eval_steps=1", "env.horizon=20"]


@pytest.mark.parametrize("env_id", ["tf_rlnas/2DNavigation-v0", "tf_rlnas/Bandit-v0", "tf_rlnas/TabularMDP-v0",
                                    "tf_rlnas/HalfCheetahVel-v0", "tf_rlnas/HalfCheetahDir-v0",
                                    "tf_rlnas/AntVel-v0", "tf_rlnas/AntDir-v0", "tf_rlnas/AntPos-v0"])
def test_families_pass_gymnasiums_env_checker(env_id):
    from gymnasium.utils.env_checker import check_env
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    tasks = env.unwrapped.sample_tasks(3, np.random.default_rng(0))
    env.unwrapped.reset_task(tasks[1])
    assert len(tasks) == 3


def test_plain_gymnasium_makes_the_families_by_id_in_a_fresh_process(tmp_path):
    import subprocess
    import sys
    script = ("import gymnasium as gym\n"
              "e = gym.make('tf_rlnas:tf_rlnas/HalfCheetahVel-v0')\n"
              "o, _ = e.reset(seed=0)\n"
              "print(o.shape, e.spec.max_episode_steps)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
                         env={**os.environ, "PYTHONPATH": REPO})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "(17,) 200"
    assert not os.path.exists(tmp_path / "MUJOCO_LOG.TXT")


@pytest.mark.parametrize("normalized", [True, False])
def test_native_vector_envs_step_like_the_gymnasium_envs(normalized):
    rng = np.random.default_rng(0)
    nav = gym.make("tf_rlnas/2DNavigation-v0").unwrapped
    tasks = nav.sample_tasks(3, rng)
    vec = Navigation2DVec(normalized_actions=normalized)
    vec.set_tasks(tasks, 2)
    vec.reset(rng)
    envs = [[gym.make("tf_rlnas/2DNavigation-v0", normalized_actions=normalized).unwrapped for _ in range(2)]
            for _ in tasks]
    for k, t in enumerate(tasks):
        for e in envs[k]:
            e.reset_task(t)
            e.reset(seed=0)
    bound = 2.0 if normalized else 0.2  # beyond the clip on both sides
    for _ in range(30):
        a = rng.uniform(-bound, bound, size=(3, 2, 2))
        obs, r, term = vec.step(a, rng)
        for k in range(3):
            for j in range(2):
                o2, r2, t2, _, _ = envs[k][j].step(a[k, j])
                np.testing.assert_allclose(obs[k, j], o2, rtol=1e-6)
                assert abs(r[k, j] - r2) < 1e-9 and term[k, j] == t2
    # normalised units: a = 0.5 moves 0.05; a = 3 is clipped to the 0.1 maximum
    e = envs[0][0]
    e.reset(seed=0)
    o, *_ = e.step(np.array([0.5, 3.0], np.float32))
    np.testing.assert_allclose(o, [0.05, 0.1] if normalized else [0.1, 0.1], rtol=1e-6)
    if not normalized:
        return
    # tabular MDP: the vectorised transition sampler draws from the task's transition rows
    mdp = gym.make("tf_rlnas/TabularMDP-v0").unwrapped
    t = mdp.sample_tasks(1, rng)
    tv = TabularMDPVec()
    tv.set_tasks(t, 20000)
    tv.reset(rng)
    obs, _, _ = tv.step(np.full((1, 20000), 2), rng)
    freq = obs[0].mean(0)
    np.testing.assert_allclose(freq, t[0]["transitions"][0, 2], atol=0.015)


def _ten_steps(workers: int, backend: str = "process"):
    """Reset observations and 10 steps of rewards of 2 HalfCheetahVel tasks x 2 episodes."""
    tasks = gym.make("tf_rlnas/HalfCheetahVel-v0").unwrapped.sample_tasks(2, np.random.default_rng(1))
    v = GymTaskVec("tf_rlnas/HalfCheetahVel-v0", {}, 4, workers=workers, backend=backend)
    kind = ("ray", len(v.actors), len(v.procs)) if backend == "ray" else ("process", len(v.procs))
    v.set_tasks(tasks, 2)
    rng = np.random.default_rng(5)
    o = v.reset(rng)
    a = np.random.default_rng(2).uniform(-1, 1, size=(10, 2, 2, 6))
    rs = np.stack([v.step(a[i], rng)[1] for i in range(10)])
    v.close()
    return o, rs, kind


def test_gym_task_vec_in_worker_processes_matches_in_process():
    (o1, r1, _), (o2, r2, kind) = _ten_steps(1), _ten_steps(2)
    assert kind == ("process", 2)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)
    assert r1.std() > 0


def test_ray_sampler_matches_the_process_sampler_on_a_local_ray_instance():
    """The Ray backend (2 actors on a local Ray instance) is the same interface as the process
    backend and, with the same RNG, steps out the same episodes bit for bit."""
    ray = pytest.importorskip("ray")
    try:
        (o1, r1, _), (o2, r2, kind) = _ten_steps(2), _ten_steps(2, "ray")
    finally:
        ray.shutdown()
    assert kind == ("ray", 2, 0)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)
    assert r2.std() > 0


def test_gae_with_masks_matches_a_hand_computation():
    r = np.array([[[1.0, 2.0, 3.0, 0.0], [0.5, 0.0, 0.0, 0.0]]], np.float32)
    v = np.array([[[0.5, 1.0, 1.5, 9.0], [2.0, 9.0, 9.0, 9.0]]], np.float32)
    m = np.array([[[1, 1, 1, 0], [1, 0, 0, 0]]], np.float32)
    g, lam = 0.9, 0.8
    adv = gae_masked(tf.constant(r), tf.constant(v), tf.constant(m), g, lam).numpy()
    d2 = 3.0 - 1.5                      # V after the last valid step is 0
    d1 = 2.0 + g * 1.5 - 1.0
    d0 = 1.0 + g * 1.0 - 0.5
    want0 = [d0 + g * lam * (d1 + g * lam * d2), d1 + g * lam * d2, d2, 0.0]
    np.testing.assert_allclose(adv[0, 0], want0, rtol=1e-6)
    np.testing.assert_allclose(adv[0, 1], [0.5 - 2.0, 0, 0, 0], rtol=1e-6)


def _tiny_learner(first_order: bool):
    cfg = C.resolve(MAMLConfig, [], ["policy.activation=tanh", f"maml.first_order={str(first_order).lower()}",
                                     "maml.normalize_advantages=false"])
    pol = MetaPolicy(2, 2, [6], gaussian=True, activation="tanh")
    rng = np.random.default_rng(0)
    for p in pol.params:  # a common starting point for both learners
        p.assign(rng.normal(size=p.shape).astype(np.float32) * 0.5)
    learner = MAMLLearner(pol, 2, 3, 4, 2, cfg)

    def batch(seed):
        r = np.random.default_rng(seed)
        return (tf.constant(r.normal(size=(2, 3, 4, 2)), tf.float32), tf.constant(r.normal(size=(2, 3, 4, 2)), tf.float32),
                tf.constant(r.normal(size=(2, 3, 4)), tf.float32), tf.ones((2, 3, 4)))
    return pol, learner, (batch(1),), batch(2)


def test_second_order_meta_gradient_matches_finite_differences_and_differs_from_first_order():
    grads = {}
    for fo in (False, True):
        pol, learner, train, valid = _tiny_learner(fo)
        lrs = tf.constant([0.5])
        old_logp, old_dist = learner.old_policy(train, lrs, valid)
        with tf.GradientTape() as tape:
            loss, _ = learner._surrogate_kl(train, lrs, valid, old_logp, old_dist)
        grads[fo] = np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, learner.variables)])
        if not fo:
            base = [v.numpy().copy() for v in learner.variables]
            fd, eps = [], 1e-2
            for i, v in enumerate(learner.variables):
                for j in range(v.numpy().size):
                    vals = []
                    for s in (1, -1):
                        x = base[i].copy().ravel()
                        x[j] += s * eps
                        v.assign(x.reshape(v.shape))
                        vals.append(float(learner._surrogate_kl(train, lrs, valid, old_logp, old_dist)[0]))
                    v.assign(base[i])
                    fd.append((vals[0] - vals[1]) / (2 * eps))
            np.testing.assert_allclose(grads[False], np.array(fd), rtol=3e-2, atol=3e-3)
    rel = np.linalg.norm(grads[False] - grads[True]) / np.linalg.norm(grads[False])
    assert rel > 0.05, rel  # the second-order terms matter at this step size


@pytest.mark.parametrize("first_order", [False, True])
def test_gauss_newton_hvp_equals_double_backprop_at_the_trpo_point(first_order):
    """J^T F J v (forward-mode JVP + reverse VJP through the adaptation) equals the double-backprop
    Hessian-vector product of the mean KL through the adaptation, where new' = old'."""
    pol, learner, train, valid = _tiny_learner(first_order)
    for v, gn, db in _hvps_vs_double_backprop(learner, train, tf.constant([0.5]), valid, "gauss_newton"):
        np.testing.assert_allclose(gn, db, rtol=1e-3, atol=1e-5 * np.abs(db).max())
        assert np.dot(gn, v) > 0  # positive definite along v


def _hvps_vs_double_backprop(learner, train, lrs, valid, method):
    """(v, H v by ``method``, H v by double backprop) for two random directions at the TRPO point."""
    old_logp, old_dist = learner.old_policy(train, lrs, valid)
    n = sum(int(np.prod(v.shape)) for v in learner.variables)
    out = []
    for seed in (0, 1):
        v = tf.constant(np.random.default_rng(seed).normal(size=n), tf.float32)
        out.append((v.numpy(), learner.make_hvp(train, lrs, valid, old_logp, old_dist, method)(v).numpy(),
                    learner.make_hvp(train, lrs, valid, old_logp, old_dist, "double_backprop")(v).numpy()))
    return out


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("num_steps", [1, 2])
def test_analytic_hvp_equals_double_backprop(activation, first_order, num_steps):
    """The hand-written R-operator products (theta-only terms cached once) equal autodiff's
    double-backprop KL Hessian-vector product through 1-2 inner steps, with padded steps, two
    hidden layers and a log-std that is adapted too."""
    cfg = C.resolve(MAMLConfig, [], [f"policy.activation={activation}", f"maml.first_order={str(first_order).lower()}",
                                     "maml.normalize_advantages=false", f"maml.num_steps={num_steps}"])
    pol = MetaPolicy(2, 2, [6, 5], gaussian=True, activation=activation)
    rng = np.random.default_rng(0)
    for p in pol.params:
        p.assign(rng.normal(size=p.shape).astype(np.float32) * 0.5)
    learner = MAMLLearner(pol, 2, 3, 4, 2, cfg)

    def batch(seed):
        r = np.random.default_rng(seed)
        mask = np.ones((2, 3, 4), np.float32)
        mask[0, 1, 2:] = 0
        mask[1, 2, 1:] = 0
        return (tf.constant(r.normal(size=(2, 3, 4, 2)), tf.float32), tf.constant(r.normal(size=(2, 3, 4, 2)), tf.float32),
                tf.constant(r.normal(size=(2, 3, 4)), tf.float32), tf.constant(mask))
    train, valid = tuple(batch(1 + j) for j in range(num_steps)), batch(9)
    lrs = tf.constant([0.5, 0.3][:num_steps])
    for _, an, db in _hvps_vs_double_backprop(learner, train, lrs, valid, "analytic"):
        np.testing.assert_allclose(an, db, rtol=1e-4, atol=1e-5 * np.abs(db).max())
        assert np.abs(an).max() > 1e-2  # not trivially zero


@pytest.mark.parametrize("first_order", [False, True])
def test_subsampled_curvature_is_the_curvature_of_every_nth_row(first_order):
    """maml.curvature_subsample = 3 keeps rows 0, 3, 6, ... of each task's flattened episodes in
    the KL Hessian-vector products: equal to the full product with the other rows' weights zeroed
    and each task's kept weights rescaled to the same total (adaptation still on every row)."""
    from tf_rlnas.algos.maml_trpo import trpo
    from tf_rlnas.algos.maml_trpo.curvature import MLPGaussianCurvature
    sets = ["maml.normalize_advantages=false", f"maml.first_order={str(first_order).lower()}"]
    pol = MetaPolicy(2, 2, [6, 5], gaussian=True)
    rng = np.random.default_rng(0)
    for p in pol.params:
        p.assign(rng.normal(size=p.shape).astype(np.float32) * 0.5)
    sub = MAMLLearner(pol, 2, 3, 4, 2, C.resolve(MAMLConfig, [], sets + ["maml.curvature_subsample=3"]))

    def batch(seed):
        r = np.random.default_rng(seed)
        mask = np.ones((2, 3, 4), np.float32)
        mask[0, 1, 2:] = 0
        return (tf.constant(r.normal(size=(2, 3, 4, 2)), tf.float32), tf.constant(r.normal(size=(2, 3, 4, 2)), tf.float32),
                tf.constant(r.normal(size=(2, 3, 4)), tf.float32), tf.constant(mask))
    train, valid, lr = batch(1), batch(2), tf.constant(0.5)
    keep = (np.arange(12) % 3 == 0).astype(np.float32)

    def zeroed(mask):  # [K, 12] weights: kept rows only, each task's total as with every row
        m = mask.numpy().reshape(2, 12)
        w = m / m.sum(1, keepdims=True)
        return tf.constant(w * keep * (w.sum(1, keepdims=True) / (w * keep).sum(1, keepdims=True)), tf.float32)
    flat = lambda x: tf.reshape(x, [2, 12, -1])
    theta = pol.tiled(2, sub.variables)
    adapted = sub.adapt_from(theta, train, lr, first_order=True)
    steps = [] if first_order else [(theta, flat(train[0]), flat(train[1]), tf.reshape(train[2], [2, 12]) * zeroed(train[3]))]
    ref = MLPGaussianCurvature(pol, steps, tf.constant([0.5]), adapted, flat(valid[0]), zeroed(valid[3]) / 2)
    got_fn = sub.make_hvp((train,), tf.constant([0.5]), valid, None, None)
    for seed in (0, 1):
        v = tf.constant(np.random.default_rng(seed).normal(size=sum(int(np.prod(x.shape)) for x in sub.variables)),
                        tf.float32)
        want = trpo.flat_concat(ref.hvp(trpo.unflatten(v, sub.variables), sub.damping)).numpy()
        got = got_fn(v).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    full = MAMLLearner(pol, 2, 3, 4, 2, C.resolve(MAMLConfig, [], sets)).make_hvp((train,), tf.constant([0.5]), valid,
                                                                                 None, None)(v).numpy()
    assert np.linalg.norm(full - got) > 1e-3 * np.linalg.norm(full)  # the subsample is not the full product


def test_meta_iterations_trace_once_and_adaptation_helps_on_2dnav(tmp_path):
    cfg = C.resolve(MAMLConfig, [os.path.join(REPO, "configs/maml_trpo/2dnav.yaml")],
                    ["maml.meta_batch=10", "maml.fast_batch=10", "train.meta_iterations=8", "train.eval_tasks=10",
                     "train.eval_steps=2"])
    tr = MAMLTrainer(cfg, str(tmp_path / "nav"))
    summary = tr.fit(progress=False)
    assert tr.learner.traces == {"advantages": 1, "act": 1, "inner": 1, "direction": 1, "evaluate": 1}, tr.learner.traces
    ev = summary["final_eval"]
    # held-out tasks: one adaptation step is clearly better than none (the paper's 2DNav shape)
    assert ev["eval/return_after_1_steps"] > ev["eval/return_after_0_steps"] + 5.0, ev
    fm = summary["final_metrics"]
    assert fm["train/return_after"] > fm["train/return_before"] + 5.0
    assert fm["meta/step_accepted"] == 1.0 and np.isfinite(fm["meta/cg_residual"])
    data = np.load(os.path.join(tmp_path, "nav", "eval-8.npz"))
    assert data["returns"].shape == (3, 10)


def test_resume_reaches_the_same_meta_policy(tmp_path):
    sets = TINY + ["train.meta_iterations=4", "run.checkpoint_every=1"]
    full = MAMLTrainer(C.resolve(MAMLConfig, [], sets), str(tmp_path / "full"))
    full.fit(progress=False)

    class Stop(Exception):
        pass

    def stop_at_2(it):
        if it == 2:
            raise Stop
    with pytest.raises(Stop):
        MAMLTrainer(C.resolve(MAMLConfig, [], sets), str(tmp_path / "part")).fit(progress=False, on_iteration=stop_at_2)
    resumed = MAMLTrainer(C.resolve(MAMLConfig, [], sets), str(tmp_path / "part"))
    resumed.fit(progress=False)
    for a, b in zip(full.policy.params, resumed.policy.params):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_two_inner_steps_and_first_order_run(tmp_path):
    for extra in (["maml.num_steps=2"], ["maml.first_order=true"]):
        tr = MAMLTrainer(C.resolve(MAMLConfig, [], TINY + ["train.meta_iterations=2", "train.eval_steps=0"] + extra),
                         str(tmp_path / extra[0]))
        s = tr.fit(progress=False)
        assert tr.learner.traces["direction"] == 1 and np.isfinite(s["final_metrics"]["meta/surrogate_after"])


@pytest.mark.parametrize("family", ["bandit", "tabular_mdp"])
def test_discrete_families_run_and_export(tmp_path, family):
    run = str(tmp_path / family)
    assert main(["train", "maml_trpo", *sum([["--set", s] for s in TINY], []), "--set", f"env.family={family}",
                 "--set", "env.horizon=0", "--set", "train.meta_iterations=2", "--run-dir", run]) == 0
    out = str(tmp_path / "sm")
    assert main(["export", run, "--out", out]) == 0
    obs = np.zeros((3, 1 if family == "bandit" else 10), np.float32)
    if family == "tabular_mdp":
        obs[np.arange(3), [0, 4, 9]] = 1
    got = saved_model_cli_run(os.path.join(out, family, "1"), "serving_default", {"obs": obs}, str(tmp_path / "cli"))
    np.testing.assert_allclose(got["probabilities"].sum(1), 1.0, rtol=1e-5)
    assert got["action"].dtype == np.int32


def test_evaluate_on_a_common_task_set(tmp_path, capsys):
    """`evaluate --tasks N --task-seed S`: the same N tasks whatever the run's seed (so runs of
    different seeds compare on one set), a separate .npz (the training-time evaluation file is
    kept), deterministic; the flags on another algorithm's run are one error line, exit 2."""
    runs = []
    for seed in (0, 1):
        run = str(tmp_path / f"s{seed}")
        assert main(["train", "maml_trpo", *sum([["--set", s] for s in TINY], []), "--set", "train.meta_iterations=2",
                     "--set", f"run.seed={seed}", "--run-dir", run]) == 0
        runs.append(run)
    before = np.load(os.path.join(runs[0], "eval-2.npz"))["returns"].copy()
    got = []
    for run in runs + runs[:1]:
        capsys.readouterr()
        assert main(["evaluate", run, "--tasks", "3", "--task-seed", "5", "--json"]) == 0
        got.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
        assert np.load(os.path.join(run, "eval-2-tasks3-taskseed5.npz"))["returns"].shape == (2, 3)
    assert got[0] == got[2]  # deterministic
    assert got[0] != got[1]  # the two meta-policies differ on the same tasks
    np.testing.assert_array_equal(np.load(os.path.join(runs[0], "eval-2.npz"))["returns"], before)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("algo: sac\n")
    capsys.readouterr()
    assert main(["evaluate", str(other), "--tasks", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "maml_trpo runs only" in err[0]


def test_gaussian_export_serves_the_meta_policy_mean(tmp_path):
    run = str(tmp_path / "nav")
    assert main(["train", "maml_trpo", *sum([["--set", s] for s in TINY], []), "--set", "train.meta_iterations=1",
                 "--run-dir", run]) == 0
    assert main(["export", run, "--out", str(tmp_path / "sm")]) == 0
    obs = np.array([[0.1, -0.2], [0.3, 0.3]], np.float32)
    got = saved_model_cli_run(str(tmp_path / "sm" / "nav" / "1"), "serving_default", {"obs": obs}, str(tmp_path / "cli"))
    tr = MAMLTrainer(C.resolve(MAMLConfig, [], TINY + ["train.meta_iterations=1"]), run)
    tr.restore()
    want, _ = tr.policy.forward(tr.policy.params, tf.constant(obs))
    np.testing.assert_allclose(got["action"], want.numpy(), rtol=1e-5, atol=1e-6)
    # the 'adapt' signature: one inner step on a new task's episodes inside the SavedModel
    rng = np.random.default_rng(3)
    e, t = 4, 20
    eps = {"episode_obs": rng.normal(size=(e, t, 2)).astype(np.float32) * 0.2,
           "episode_actions": rng.normal(size=(e, t, 2)).astype(np.float32) * 0.1,
           "episode_rewards": -rng.random((e, t)).astype(np.float32),
           "episode_mask": (np.arange(t)[None] < np.array([20, 20, 7, 15])[:, None]).astype(np.float32)}
    eps["episode_rewards"] *= eps["episode_mask"]
    got = saved_model_cli_run(str(tmp_path / "sm" / "nav" / "1"), "adapt", {**eps, "obs": obs}, str(tmp_path / "cli2"))
    one = MAMLLearner(tr.policy, 1, e, t, 2, tr.cfg)
    adv = one.advantages(*(tf.constant(eps[k][None]) for k in ("episode_obs", "episode_rewards", "episode_mask")))
    batch = (tf.constant(eps["episode_obs"][None]), tf.constant(eps["episode_actions"][None]), adv,
             tf.constant(eps["episode_mask"][None]))
    adapted = one.inner_step(tr.policy.tiled(1), batch, tf.constant(tr.cfg.maml.fast_lr))
    want_adapted, _ = tr.policy.forward([p[0] for p in adapted], tf.constant(obs))
    np.testing.assert_allclose(got["action"], want_adapted.numpy(), rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(want_adapted.numpy() - want.numpy())) > 1e-3  # adaptation changed the policy


def test_sampler_masks_ended_episodes():
    pol = MetaPolicy(2, 2, [8])
    vec = Navigation2DVec(normalized_actions=False)
    tasks = [{"goal": np.array([0.05, 0.0])}, {"goal": np.array([0.4, 0.4])}]

    class Seek:  # a deterministic policy that walks straight to the goal
        def __call__(self, params, obs, seed, det):
            goals = np.array([[0.05, 0.0], [0.4, 0.4]], np.float32)[:, None, :]
            return tf.constant(np.clip(goals - obs.numpy(), -0.1, 0.1))
    data = sample_episodes(vec, Seek(), pol.tiled(2), tasks, 3, 20, np.random.default_rng(0), (0, 0))
    lengths = data["mask"].sum(-1)
    np.testing.assert_array_equal(lengths[0], [1, 1, 1])   # reached in one step: terminated
    np.testing.assert_array_equal(lengths[1], [4, 4, 4])   # 0.4 away: four 0.1 steps
    assert np.all(data["rewards"][data["mask"] == 0] == 0)
