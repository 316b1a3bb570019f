"""Reliability: an export is published only after it verifies; a refused command leaves no run
directory behind (every algorithm, every stage that can refuse); SAC's best checkpoint survives a
crash between a best save and the next regular checkpoint; ACE's causal weights recover a known
causal structure through the training loop; `evaluate` of a run with nothing to evaluate is one
line; thread settings that cannot take effect say so; removed config keys; `bench` of every
algorithm runs and prints figures."""

from __future__ import annotations

import glob
import os
import re

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from conftest import tb_scalars
from test_cli import snapshot
from tf_rlnas import config as C
from tf_rlnas.cli import main


def _err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _empty_or_absent(path) -> bool:
    return not os.path.exists(path) or os.listdir(path) == []


# ---- 1. export: verify, then publish -----------------------------------------------------------

def test_export_that_fails_verification_publishes_nothing(tmp_path, capsys, monkeypatch):
    from tf_rlnas.algos.reinforce.trainer import ReinforceTrainer

    run, out = str(tmp_path / "run"), str(tmp_path / "sm")
    assert main(["train", "reinforce", "--config", "smoke", "--run-dir", run, "--no-progress"]) == 0
    assert main(["export", run, "--out", out]) == 0
    model_dir = os.path.join(out, "run")
    assert os.listdir(model_dir) == ["1"]
    v1 = snapshot(os.path.join(model_dir, "1"))
    capsys.readouterr()

    honest = ReinforceTrainer.export_spec

    def lying_spec(self):  # the live model "says" something else than what was saved
        spec = honest(self)
        sig = "serving_default"
        spec.expected[sig] = {k: v + 0.5 for k, v in spec.expected[sig].items()}
        return spec
    monkeypatch.setattr(ReinforceTrainer, "export_spec", lying_spec)
    code = main(["export", run, "--out", out])
    err = _err_lines(capsys)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("error: exported signature serving_default:") and "nothing was exported" in err[0]
    assert os.listdir(model_dir) == ["1"]  # no version 2, no temporary folder left
    assert snapshot(os.path.join(model_dir, "1")) == v1  # the previous version untouched
    monkeypatch.setattr(ReinforceTrainer, "export_spec", honest)
    assert main(["export", run, "--out", out]) == 0
    assert sorted(os.listdir(model_dir)) == ["1", "2"]


# ---- 2. a refused command leaves no run directory behind ---------------------------------------

PLANET = ["--config", "point_reach", "--config", "smoke"]


@pytest.mark.parametrize("argv, needle", [
    # refused while the config resolves (before TensorFlow)
    (["train", "sac", "--set", "train.nope=1"], "train.nope"),
    (["train", "maml_trpo", "--set", "policy.distribution=normal"], "was removed"),
    # refused while the trainer builds (environments, data, a pretrained source)
    (["train", "sac", "--set", "env.id=NoSuchEnv-v0"], "NoSuchEnv-v0"),
    (["train", "ace", "--set", "env.id=Pendulum-v1", "--set", "env.kwargs.zeta=1"], "zeta"),
    (["train", "enas", "--set", "data.dataset=fashion_mnist", "--set", "data.data_dir=/no/such/idx"],
     "/no/such/idx"),
    (["train", "planet", *PLANET, "--set", "train.chunk=1000"], "train.chunk"),
    (["train", "planet", *PLANET, "--set", "init.from_run=/no/such/run"], "init.from_run"),
    (["train", "planet", *PLANET, "--set", "env.name=no_such_env"], "no_such_env"),
    # MAML-TRPO's config checks
    (["train", "maml_trpo", "--set", "env.family=nope"], "env.family"),
    (["train", "maml_trpo", "--set", "policy.distribution=categorical"],
     "'policy.distribution' in --set was removed: the family decides"),
    (["train", "maml_trpo", "--set", "maml.fast_batch=0"], "maml.fast_batch"),
    (["train", "maml_trpo", "--set", "maml.meta_batch=0"], "maml.meta_batch"),
    (["train", "maml_trpo", "--set", "policy.hidden=[]"], "policy.hidden"),
    (["train", "maml_trpo", "--set", "maml.fast_lr=0"], "maml.fast_lr"),
    (["train", "maml_trpo", "--set", "env.kwargs.k=3"], "env.kwargs.k"),
    (["train", "maml_trpo", "--set", "maml.curvature_subsample=5", "--set", "maml.hvp=gauss_newton"],
     "maml.curvature_subsample"),
    # PlaNet's config and environment checks
    (["train", "planet", *PLANET, "--set", "env.name=NoSuchEnv-v9"], "NoSuchEnv-v9"),
    (["train", "planet", *PLANET, "--set", "train.chunk=40"], "train.chunk"),
    (["train", "planet", *PLANET, "--set", "planner.top_k=500"], "planner.top_k"),
    (["train", "planet", *PLANET, "--set", "sac.act_with=actor"], "sac.enabled"),
    (["train", "planet", *PLANET, "--set", "init.exclude=[(]"], "init.exclude"),
    (["train", "planet", *PLANET, "--set", "env.image_size=32"], "env.image_size"),
])
def test_refused_input_leaves_no_run_directory(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    code = main(argv + ["--run-dir", str(run), "--no-progress"])
    err = _err_lines(capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert _empty_or_absent(run), os.listdir(run)
    assert os.listdir(tmp_path) == ["run"] if run.exists() else os.listdir(tmp_path) == []


def test_a_refusal_during_training_before_the_first_checkpoint_is_undone(tmp_path, capsys, monkeypatch):
    """What cannot be checked before writing (e.g. PlaNet episodes that terminate early, shorter than
    a chunk) is refused during fit: the new run's files go again, a folder's earlier content stays."""
    from tf_rlnas.algos.reinforce.trainer import ReinforceTrainer
    from tf_rlnas.errors import UserError

    def refuse(self):
        raise UserError("refused on the way")
    monkeypatch.setattr(ReinforceTrainer, "train_iteration", refuse)
    fresh = tmp_path / "fresh"
    assert main(["train", "reinforce", "--config", "smoke", "--run-dir", str(fresh), "--no-progress"]) == 2
    assert not fresh.exists()
    # a folder that existed (empty but for another worker's folder) keeps what it had
    early = tmp_path / "early"
    (early / "workers").mkdir(parents=True)
    assert main(["train", "reinforce", "--config", "smoke", "--run-dir", str(early), "--no-progress"]) == 2
    assert os.listdir(early) == ["workers"]
    assert [e for e in _err_lines(capsys) if e.startswith("error:")] == ["error: refused on the way"] * 2
    # the corrected command then starts without complaint
    monkeypatch.undo()
    assert main(["train", "reinforce", "--config", "smoke", "--run-dir", str(fresh), "--no-progress"]) == 0


def test_rerunning_a_complete_run_changes_nothing(tmp_path, capsys, monkeypatch):
    """The same command again on a finished run (a resumable queue re-runs every command) neither
    trains nor evaluates again: summary.json and the event files stay as they were."""
    from tf_rlnas.algos.reinforce.trainer import ReinforceTrainer

    run = tmp_path / "run"
    argv = ["train", "reinforce", "--config", "smoke", "--run-dir", str(run), "--no-progress"]
    assert main(argv) == 0
    summary = (run / "summary.json").read_text()
    events = {p: os.path.getsize(p) for p in glob.glob(str(run / "tb" / "*"))}
    capsys.readouterr()

    def no_more(self, *a, **k):
        raise AssertionError("a complete run was trained or evaluated again")
    monkeypatch.setattr(ReinforceTrainer, "evaluate", no_more)
    monkeypatch.setattr(ReinforceTrainer, "train_iteration", no_more)
    assert main(argv) == 0
    assert "is complete" in capsys.readouterr().out
    assert (run / "summary.json").read_text() == summary
    assert {p: os.path.getsize(p) for p in glob.glob(str(run / "tb" / "*"))} == events
    # a summary lost in a crash after the last checkpoint: the run is finished (evaluated) again
    monkeypatch.undo()
    os.remove(run / "summary.json")
    assert main(argv) == 0
    assert "final_eval" in (run / "summary.json").read_text()


def test_planet_env_errors_are_one_line_with_the_childs_reason(tmp_path, capsys):
    pytest.importorskip("dm_control")
    cases = [(["--set", "env.name=no_such_env"], r"no_such_env.*doesn't exist"),
             (["--set", "env.name=dmc:cartpole-swingup"], r"env\.kwargs key 'max_steps' is not accepted by "
                                                          r"'dmc:cartpole-swingup'")]
    for sets, pattern in cases:
        run = tmp_path / "r"
        code = main(["train", "planet", *PLANET, *sets, "--run-dir", str(run), "--no-progress"])
        captured = capsys.readouterr()
        err = [line for line in captured.err.splitlines() if line.strip()]
        assert code == 2 and len(err) == 1 and re.search(pattern, err[0]), err
        assert "Traceback" not in captured.err + captured.out
        assert _empty_or_absent(run)
    # and an error after start-up (a bad action for the env) carries the child's reason too
    from tf_rlnas.envs.pixels import ProcessEnv
    env = ProcessEnv({"name": "dmc:cartpole-swingup"})
    try:
        env.reset(seed=0)
        with pytest.raises(RuntimeError, match=r"environment process failed: \w+"):
            env.step(np.zeros(7, np.float32))  # cartpole has 1 action
    finally:
        env.close()


# ---- 4. ACE's causal weights on a known causal structure, through the training loop ------------

class KnownCausal(gym.Env):
    """3-D observations drawn uniformly each step, 2-D actions; reward = 2 a0 - a1 + 0.5 s0 + small
    uniform noise: the reward row of the true causal graph has effects (2, -1) for the actions (and
    0.5 for an observation column, which must not leak into the action weights)."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self._s = np.zeros(3, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._s = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self._s, {}

    def step(self, a):
        a = np.asarray(a, np.float64)
        r = 2.0 * a[0] - 1.0 * a[1] + 0.5 * self._s[0] + 0.1 * self.np_random.uniform(-1, 1)
        self._s = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self._s, float(r), False, False, {}


def test_ace_causal_weights_recover_a_known_structure_and_set_the_reset_factor(tmp_path):
    from tf_rlnas.algos.ace.causal import causal_weights
    from tf_rlnas.algos.ace.config import ACEConfig
    from tf_rlnas.algos.ace.learner import perturb_factor
    from tf_rlnas.algos.ace.trainer import ACETrainer

    if "tf_rlnas_test/KnownCausal-v0" not in gym.registry:
        gym.register("tf_rlnas_test/KnownCausal-v0", entry_point=KnownCausal, max_episode_steps=50)
    sets = ["env.id=tf_rlnas_test/KnownCausal-v0", "agent.actor_hidden=[32,32]", "agent.critic_hidden=[32,32]",
            "train.batch_size=32", "train.start_steps=400", "train.total_env_steps=600", "train.eval_every=0",
            "train.eval_episodes=1", "run.checkpoint_every=10000", "run.log_every=50",
            "ace.causal_sample_size=300", "ace.causal_sample_interval=300", "ace.reset_start=0",
            "ace.reset_interval=100", "ace.reset_mode=causal_reset"]
    run = str(tmp_path / "ace")
    tr = ACETrainer(C.resolve(ACEConfig, [], sets), run)
    tr.fit(progress=False)
    tags = tb_scalars(os.path.join(run, "tb"))
    # the first fit (300 env steps, all uniform random actions) against the true effects
    true = np.array([2.0, -1.0])
    want = np.exp(true) / np.exp(true).sum() * 2  # softmax * |A| = [1.905, 0.095]
    got = np.array([dict(tags[f"ace/causal_weight_{i}"])[300] for i in range(2)])
    np.testing.assert_allclose(got, want, atol=0.03)
    # the raw effects the loop's buffer gives: actions (2, -1) recovered, the observation's 0.5 kept out
    d = tr.obs_dim
    x = tr.local[: tr.local_size]
    _, raw, _ = causal_weights(x[:, :d], x[:, d:d + tr.act_dim], x[:, -1])
    assert x.shape == (300, 3 + 2 + 1)
    # the buffer now holds steps 301-600 (policy actions from 400 on): the reward equation still holds
    np.testing.assert_allclose(x[:, -1], 2 * x[:, 3] - x[:, 4] + 0.5 * x[:, 0], atol=0.1 + 1e-5)
    assert abs(raw[0] - 2.0) < 0.15 and abs(raw[1] + 1.0) < 0.15, raw
    # resets at updates 100 and 200 (after the fit at 300 env steps): factor from the weights' spread
    factors = [v for _, v in tags["ace/reset_factor"]]
    w_now = tr.learner.causal_w.numpy()
    assert len(factors) == 2 and tr.resets == 2
    assert factors == [pytest.approx(perturb_factor("causal_reset", 0.0, w_now), abs=1e-6)] * 2
    assert perturb_factor("causal_reset", 0.0, np.ones(2)) == pytest.approx(0.5)  # uniform weights: 0.5
    assert factors[0] == pytest.approx(0.9)  # a spread of ~1.8: the clip's top, not the uniform 0.5


# ---- 5. SAC: the best checkpoint survives a crash ----------------------------------------------

def test_sac_best_eval_survives_a_crash_between_best_and_regular_checkpoint(tmp_path, monkeypatch):
    from tf_rlnas.algos.sac.config import SACConfig
    from tf_rlnas.algos.sac.trainer import SACTrainer

    sets = ["env.id=Pendulum-v1", "agent.actor_hidden=[16]", "agent.critic_hidden=[16]", "train.batch_size=16",
            "train.start_steps=50", "train.eval_every=100", "train.eval_episodes=1", "run.checkpoint_every=150",
            "train.total_env_steps=400"]
    run = str(tmp_path / "sac")
    script = {100: -500.0, 200: -100.0}  # the evaluation at 200 is the best so far ...

    def scripted(self, episodes=None):
        return {"eval/return": script.get(self.env_steps, -1000.0)}
    monkeypatch.setattr(SACTrainer, "evaluate", scripted)
    honest = SACTrainer._evaluate_and_keep_best

    def crash_after_200(self):
        out = honest(self)
        if self.env_steps == 200:
            raise RuntimeError("killed")  # ... and the process dies before the next regular checkpoint
        return out
    monkeypatch.setattr(SACTrainer, "_evaluate_and_keep_best", crash_after_200)
    first = SACTrainer(C.resolve(SACConfig, [], sets), run)
    with pytest.raises(RuntimeError, match="killed"):
        first.fit(progress=False)
    best_ckpt = first.best.latest_checkpoint
    best_actor = [v.numpy() for v in first.learner.actor.weights]
    assert best_ckpt.endswith("ckpt-200") and first.checkpointer.numbers() == [150]
    del first

    monkeypatch.setattr(SACTrainer, "_evaluate_and_keep_best", honest)
    script.update({200: -300.0, 300: -200.0})  # after the resume: worse than the real best (-100)
    second = SACTrainer(C.resolve(SACConfig, [], sets), run)
    second.restore()
    assert second.env_steps == 150 and second.best_eval == -100.0  # the max of both checkpoints' records
    second.fit(progress=False)
    assert second.best.latest_checkpoint == best_ckpt  # not replaced by the worse -300 / -200
    reader = tf.train.load_checkpoint(best_ckpt)
    assert reader.get_tensor("best_return/.ATTRIBUTES/VARIABLE_VALUE") == -100.0
    ckpt = tf.train.Checkpoint(actor=second.learner.actor)
    ckpt.read(best_ckpt).expect_partial()
    for a, b in zip(second.learner.actor.weights, best_actor):
        np.testing.assert_array_equal(a.numpy(), b)


# ---- 9. smaller ones ----------------------------------------------------------------------------

def test_evaluate_of_an_enas_search_run_is_one_error_line(tmp_path, capsys):
    run = str(tmp_path / "search")
    assert main(["train", "enas", "--config", "smoke", "--set", "child.epochs=1", "--run-dir", run,
                 "--no-progress"]) == 0
    capsys.readouterr()
    code = main(["evaluate", run])
    out = capsys.readouterr()
    err = [line for line in out.err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "mode: fixed" in err[0] and out.out == "", (err, out.out)


def test_thread_settings_that_cannot_take_effect_warn(capsys):
    from tf_rlnas.core.seeding import configure_threads

    tf.constant(1.0) + 1.0  # TF is running in this process
    current = tf.config.threading.get_intra_op_parallelism_threads()
    want = current + 3
    ignored = configure_threads(want, 0)
    out = capsys.readouterr().out
    assert ignored == [f"run.intra_op_threads={want} (in use: {current or 'TF default'})"]
    assert out.count("warning:") == 1 and f"run.intra_op_threads={want}" in out
    assert configure_threads(0, 0) == [] and capsys.readouterr().out == ""  # nothing asked: nothing said


def test_a_saved_maml_config_with_the_removed_distribution_key_still_resumes(tmp_path, capsys):
    run = tmp_path / "maml"
    assert main(["train", "maml_trpo", "--config", "smoke", "--set", "train.meta_iterations=1",
                 "--run-dir", str(run), "--no-progress"]) == 0
    cfg_file = run / "config.yaml"
    text = cfg_file.read_text()
    assert "distribution" not in text
    cfg_file.write_text(text.replace("policy:\n", "policy:\n  distribution: auto\n", 1))  # an earlier version's
    assert main(["train", "--run-dir", str(run), "--set", "train.meta_iterations=2", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out


@pytest.mark.parametrize("algo, argv", [
    ("reinforce", ["--config", "smoke"]),
    ("sac", ["--config", "smoke", "--set", "env.id=Pendulum-v1", "--quick"]),
    ("ace", ["--config", "smoke", "--set", "env.id=Pendulum-v1", "--quick"]),
    ("enas", ["--config", "smoke"]),
    ("maml_trpo", ["--config", "smoke", "--quick"]),
    ("planet", ["--config", "point_reach", "--config", "smoke"]),
])
def test_bench_runs_for_every_algorithm_and_prints_rates(capsys, algo, argv):
    assert main(["bench", algo, *argv, "--seconds", "0.3"]) == 0
    out = capsys.readouterr().out
    rates = [float(x) for x in re.findall(r"(\d+(?:\.\d+)?)\s*(?:[a-z]+/s|ms|s)\b", out)]
    # MAML's table: the env steps/s column before "(N iterations)"
    rates += [float(x.replace(",", "")) for x in re.findall(r"(\d[\d,]*)\s+\(\d+ iterations\)", out)]
    assert rates and all(np.isfinite(r) and r > 0 for r in rates), out
    assert out.splitlines()[0].startswith("cpu: ") and "compute dtype auto -> " in out.splitlines()[0], out
    if algo == "planet":  # compute figures as GFLOP and a share of the measured GEMM rate
        assert re.search(r"world-model step .* GFLOP/s = \d+% of the \w+ GEMM rate", out), out
        assert re.search(r"acting by cem .* GFLOP/s = \d+% of the \w+ GEMM rate", out), out


@pytest.mark.parametrize("argv, needle", [
    (["enas", "--peer-src", "/x"], "go with --compare port"),
    (["enas", "--compare", "port"], "needs --peer-python"),
    (["enas", "--compare", "port", "--peer-python", "python", "--peer-src", "/no/such"], "not the port's source"),
])
def test_bench_peer_options_are_checked_before_anything_runs(capsys, argv, needle):
    assert main(["bench", *argv]) == 2
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err) == 1 and needle in err[0] and captured.out == "", (err, captured.out)


def test_mujoco_physics_floor_counts_env_steps_of_the_familys_model():
    from tf_rlnas.algos.maml_trpo.bench import physics_floor
    from tf_rlnas.envs.meta import make_task_env
    floor = physics_floor("halfcheetah_vel", {}, 0.3, 1)
    assert floor["frame_skip"] == make_task_env("halfcheetah_vel", {}).frame_skip == 5
    assert floor["env_steps_per_s"] == pytest.approx(floor["mj_steps_per_s"] / 5)
    assert 1e3 < floor["mj_steps_per_s"] < 1e8


# ---- 7. resume identity: SAC, ACE, PlaNet ----------------------------------------------------------

class Killed(Exception):
    pass


def _kill_at(n):
    def hook(it):
        if it == n:
            raise Killed(f"killed after iteration {n}")
    return hook


def _all_variables(ckpt_dir) -> dict[str, np.ndarray]:
    """Every value of a run's latest checkpoint (weights, optimizer moments, counters, RNG states,
    the replay buffer, the Python-side state)."""
    r = tf.train.load_checkpoint(ckpt_dir)
    return {n: r.get_tensor(n) for n in r.get_variable_to_shape_map() if n != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _assert_same_checkpoint(a_dir, b_dir, ignore=("wall", "time/")):
    a, b = _all_variables(a_dir), _all_variables(b_dir)
    assert a.keys() == b.keys() and len(a) > 20
    for n in a:
        if n.startswith("python_state"):
            continue
        np.testing.assert_array_equal(a[n], b[n], err_msg=n)
    return a, b


@pytest.mark.parametrize("algo", ["sac", "ace"])
def test_sac_ace_resume_equals_an_uninterrupted_run_whose_envs_reset_at_the_checkpoint(tmp_path, algo):
    """What differs on resume is the environments' episode in progress (a simulator's mid-episode
    state is not checkpointed): the resumed run starts fresh episodes from the restored env RNG
    streams. So a run killed after its checkpoint and resumed equals, bit for bit, an uninterrupted
    run whose environments are reset at that checkpoint - weights, Adam moments, alpha, replay
    buffer, RNG states, counters (ACE: causal buffer and weights, resets too)."""
    from tf_rlnas import registry

    spec = registry.get(algo)
    sets = ["env.id=Pendulum-v1", "agent.actor_hidden=[16]", "agent.critic_hidden=[16]", "train.batch_size=16",
            "train.start_steps=100", "train.total_env_steps=400", "train.eval_every=0", "train.eval_episodes=1",
            "run.checkpoint_every=150", "run.log_every=50", "run.seed=3"]
    if algo == "ace":
        sets += ["ace.causal_sample_size=100", "ace.causal_sample_interval=100", "ace.reset_start=0",
                 "ace.reset_interval=60", "agent.policy_every=2"]
    cfg = C.resolve(spec.load("config"), [], sets)
    trainer = spec.load("trainer")

    a = trainer(cfg, str(tmp_path / "a"))
    a.fit(progress=False, on_iteration=lambda it: setattr(a, "_obs", None) if it == 150 else None)
    b = trainer(cfg, str(tmp_path / "b"))
    with pytest.raises(Killed):
        b.fit(progress=False, on_iteration=_kill_at(230))  # 80 steps past the checkpoint of 150: lost
    b.close()
    b = trainer(cfg, str(tmp_path / "b"))  # a new process would do the same: new objects, restore
    b.fit(progress=False)
    assert a.env_steps == b.env_steps == 400
    va, vb = _assert_same_checkpoint(str(tmp_path / "a" / "checkpoints"), str(tmp_path / "b" / "checkpoints"))
    side = [sorted(glob.glob(str(tmp_path / r / "checkpoints" / "extra-*.npz")))[-1] for r in ("a", "b")]
    assert os.path.basename(side[0]) == os.path.basename(side[1])  # the replay buffer's side file
    with np.load(side[0]) as za, np.load(side[1]) as zb:
        assert za.files == zb.files and "replay_obs" in za.files
        for k in za.files:
            np.testing.assert_array_equal(za[k], zb[k], err_msg=k)
    assert a.np_rng.bit_generator.state == b.np_rng.bit_generator.state
    if algo == "ace":
        assert a.resets == b.resets > 0
        np.testing.assert_array_equal(a.learner.causal_w.numpy(), b.learner.causal_w.numpy())
    # without the reset at the checkpoint, the runs differ: the test can tell
    c = trainer(cfg, str(tmp_path / "c"))
    c.fit(progress=False)
    vc = _all_variables(str(tmp_path / "c" / "checkpoints"))
    assert any(not np.array_equal(va[n], vc[n]) for n in va if "actor" in n and "OPTIMIZER" not in n)


def test_planet_resume_equals_an_uninterrupted_run(tmp_path):
    """PlaNet (with SAC heads): a run killed after its checkpoint - having collected episodes since -
    and resumed ends bit for bit where an uninterrupted run ends: every variable, and the same episode
    files in the same order (the chunk loaders' state is checkpointed; the killed session's later
    episodes are removed and simulated again)."""
    from tf_rlnas.algos.planet.config import PlanetConfig
    from tf_rlnas.algos.planet.trainer import PlanetTrainer
    from tf_rlnas.replay.episodes import list_episodes, load_episode
    from tf_rlnas.registry import shipped_configs

    files = [shipped_configs("planet")["point_reach"], shipped_configs("planet")["smoke"]]
    cfg = C.resolve(PlanetConfig, files, ["sac.enabled=true", "sac.agent.actor_hidden=[8]",
                                          "sac.agent.critic_hidden=[8]", "run.checkpoint_every=5", "train.steps=14"])
    a = PlanetTrainer(cfg, str(tmp_path / "a"))
    a.fit(progress=False)
    a.close()
    b = PlanetTrainer(cfg, str(tmp_path / "b"))
    with pytest.raises(Killed):
        b.fit(progress=False, on_iteration=_kill_at(9))  # past ckpt 5: a train and a test episode since
    b.close()
    lost = [p for s in ("train", "test") for p in list_episodes(str(tmp_path / "b" / f"{s}_episodes"))]
    b = PlanetTrainer(cfg, str(tmp_path / "b"))
    b.fit(progress=False)
    b.close()
    _assert_same_checkpoint(str(tmp_path / "a" / "checkpoints"), str(tmp_path / "b" / "checkpoints"))
    for split in ("train", "test"):
        ea, eb = (list_episodes(str(tmp_path / r / f"{split}_episodes")) for r in ("a", "b"))
        assert len(ea) == len(eb) and len(ea) >= 3
        for pa, pb in zip(ea, eb):
            assert os.path.basename(pa).split("-")[1][:12] == os.path.basename(pb).split("-")[1][:12]
            xa, xb = load_episode(pa), load_episode(pb)
            for k in xa:
                np.testing.assert_array_equal(xa[k], xb[k], err_msg=f"{split} {k}")
    assert any(p not in list_episodes(str(tmp_path / "b" / "train_episodes")) +
               list_episodes(str(tmp_path / "b" / "test_episodes")) for p in lost)


# ---- 8. a suite CI can trust ----------------------------------------------------------------------

def test_ci_fails_on_a_skip_outside_the_allow_list_and_tests_have_a_timeout(tmp_path, request):
    import subprocess
    import sys

    from conftest import REPO

    assert request.config.getini("timeout") == "900"  # pytest-timeout reads it for every test
    head = "=========================== short test summary info ============================\n"
    cases = {
        "allowed": (head + "SKIPPED [1] tests/test_fpmath.py:128: oneDNN's BF16 math mode has no effect on this "
                    "CPU's BatchMatMul\n5 passed, 1 skipped in 3.0s\n", 0),
        "outside": (head + "SKIPPED [2] tests/test_planet.py:80: no OpenGL for offscreen rendering\n"
                    "5 passed, 2 skipped in 3.0s\n", 1),
        "no summary": ("collected 0 items / 1 error\n", 1),
    }
    for name, (text, want) in cases.items():
        log = tmp_path / f"{name}.log"
        log.write_text(text)
        res = subprocess.run([sys.executable, os.path.join(REPO, ".ci", "check_skips.py"), str(log),
                              os.path.join(REPO, ".ci", "allowed_skips")], capture_output=True, text=True)
        assert res.returncode == want, (name, res.stdout)
        if name == "outside":
            assert "NOT ALLOWED skip: tests/test_planet.py: no OpenGL" in res.stdout
