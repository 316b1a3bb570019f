"""REINFORCE with a Gaussian actor: it learns (one-shot game, InvertedPendulum), resumes
identically, survives SIGKILL, exports, and logs the documented TensorBoard tags."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, tb_scalars
from serving import saved_model_cli_run
from tf_rlnas import config as C
from tf_rlnas.algos.reinforce.config import ReinforceConfig
from tf_rlnas.algos.reinforce.trainer import ReinforceTrainer
from tf_rlnas.cli import main

FAST_ONESHOT = ["train.episodes_per_update=8", "train.baseline=batch", "train.lr=0.003",
                "run.checkpoint_every=100000", "run.log_every=100000"]


def make(tmp_path, sets, name="run"):
    cfg = C.resolve(ReinforceConfig, [], sets)
    return ReinforceTrainer(cfg, str(tmp_path / name))


@pytest.mark.parametrize("tau", [4.0, -2.0, 1.5, 7.0])
def test_oneshot_converges_to_tau(tmp_path, tau):
    tr = make(tmp_path, FAST_ONESHOT + [f"env.kwargs.tau={tau}", "train.updates=600"])
    mu0, sigma0 = (float(v[0, 0]) for v in tr.learner.actor(tf.ones((1, 1))))
    assert mu0 == 0.0 and abs(sigma0 - 1.0) < 1e-6  # the reference's initialisation
    ev = tr.fit(progress=False)["final_eval"]
    assert abs(ev["eval/mu"] - tau) < 0.05, ev
    assert ev["eval/sigma"] < 0.1, ev


def test_oneshot_reference_setting_sigma_grows_then_shrinks(tmp_path):
    """The reference's dynamics: sigma first grows (exploration), then shrinks once the target is hit."""
    tr = make(tmp_path, ["train.updates=1600", "run.checkpoint_every=100000"])
    sig = []
    tr.fit(progress=False, on_iteration=lambda it: sig.append(float(tr.learner.actor(tf.ones((1, 1)))[1][0, 0])))
    assert max(sig[:1000]) > 1.2
    mu = float(tr.learner.actor(tf.ones((1, 1)))[0][0, 0])
    assert abs(mu - 4.0) < 0.05 and sig[-1] < 0.1


def test_inverted_pendulum_learns(tmp_path):
    cfg = C.resolve(ReinforceConfig, [os.path.join(REPO, "configs/reinforce/inverted_pendulum.yaml")],
                    ["train.updates=25", "train.eval_every=0", "run.checkpoint_every=1000"])
    tr = ReinforceTrainer(cfg, str(tmp_path / "ip"))
    before = tr.evaluate(10)["eval/return"]
    after = tr.fit(progress=False)["final_eval"]["eval/return"]
    assert before < 40  # the untrained (zero-action) policy drops the pole within a few dozen steps
    print(f"inverted pendulum eval return before {before} after {after}")
    assert after > 4 * before and after > 100, (before, after)


def _weights(tr):
    return [v.numpy() for v in tr.learner.actor.weights] + \
        ([v.numpy() for v in tr.learner.value.weights] if tr.learner.value is not None else [])


@pytest.mark.parametrize("sets", [
    ["train.updates=24"],  # one-shot game, running-mean baseline
    ["env.id=InvertedPendulum-v5", "train.episodes_per_update=3", "train.baseline=value",
     "actor.hidden=[16]", "train.value_hidden=[16]", "train.updates=12", "train.normalize_advantages=true"],
])
def test_resume_matches_uninterrupted(tmp_path, sets):
    sets = sets + ["run.checkpoint_every=4", "run.seed=3"]
    total = int(sets[[s.startswith("train.updates") for s in sets].index(True)].split("=")[1])
    full = make(tmp_path, sets, "full")
    s_full = full.fit(progress=False)
    part = make(tmp_path, sets + [f"train.updates={total // 2}"], "part")
    part.fit(progress=False)
    del part
    resumed = make(tmp_path, sets, "part")  # a fresh process would do the same: new objects, restore
    s_res = resumed.fit(progress=False)
    assert s_res["iterations"] == total
    for a, b in zip(_weights(full), _weights(resumed)):
        np.testing.assert_array_equal(a, b)
    assert s_res["final_metrics"] == s_full["final_metrics"]
    assert s_res["final_eval"] == s_full["final_eval"]


def test_sigkill_mid_run_then_resume(tmp_path):
    run_dir = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "tf_rlnas", "train", "reinforce", "--config", "oneshot",
           "--set", "train.updates=3000", "--set", "run.checkpoint_every=20", "--run-dir", run_dir, "--no-progress"]
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.Popen(cmd, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt_dir = os.path.join(run_dir, "checkpoints")

    def newest_checkpoint() -> int:
        if not os.path.isdir(ckpt_dir):
            return 0
        return max((int(f[5:-6]) for f in os.listdir(ckpt_dir) if f.startswith("ckpt-") and f.endswith(".index")),
                   default=0)

    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and newest_checkpoint() < 100:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming" in out.stdout
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["iterations"] == 3000
    assert abs(summary["final_eval"]["eval/mu"] - 4.0) < 0.05


def test_tensorboard_tags_and_steps(tmp_path):
    run_dir = str(tmp_path / "tb")
    assert main(["train", "reinforce", "--config", "smoke", "--set", "run.log_every=5",
                 "--run-dir", run_dir]) == 0
    sc = tb_scalars(os.path.join(run_dir, "tb"))
    for tag in ("train/reward", "train/mu", "train/sigma", "train/loss", "train/episode_return",
                "train/baseline", "train/entropy", "train/env_steps"):
        assert [s for s, _ in sc[tag]] == [5, 10, 15, 20], tag
    assert sc["train/env_steps"][-1][1] == 20.0  # one action per update in the one-shot game
    assert sc["train/mu"][0][1] != 0.0 and sc["train/sigma"][0][1] > 0


def test_export_serves_mean_action_without_tf_rlnas(tmp_path):
    run_dir = str(tmp_path / "exp")
    assert main(["train", "--config", os.path.join(REPO, "configs/reinforce/inverted_pendulum.yaml"),
                 "--set", "train.updates=3", "--set", "train.episodes_per_update=2",
                 "--set", "train.eval_every=0", "--run-dir", run_dir]) == 0
    out = str(tmp_path / "sm")
    assert main(["export", run_dir, "--out", out]) == 0
    assert main(["export", run_dir, "--out", out]) == 0
    assert sorted(os.listdir(os.path.join(out, "exp"))) == ["1", "2"]  # never overwrites
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32) * 0.5
    script = (
        "import sys, json, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({os.path.join(out, 'exp', '1')!r})\n"
        f"obs = tf.constant(np.array({obs.tolist()!r}, np.float32))\n"
        "a = m.signatures['serving_default'](obs=obs)['action'].numpy()\n"
        "s1 = m.signatures['sample'](obs=obs, seed=tf.constant(5, tf.int64))['action'].numpy()\n"
        "s2 = m.signatures['sample'](obs=obs, seed=tf.constant(5, tf.int64))['action'].numpy()\n"
        "assert not any(k.startswith('tf_rlnas') for k in sys.modules)\n"
        "print(json.dumps({'a': a.tolist(), 's1': s1.tolist(), 's2': s2.tolist()}))\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": ""}, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    cfg = C.from_dict(ReinforceConfig, {k: v for k, v in
                                        __import__("yaml").safe_load(open(os.path.join(run_dir, "config.yaml"))).items()
                                        if k != "algo"})
    live = ReinforceTrainer(cfg, run_dir)
    live.restore()
    np.testing.assert_allclose(np.array(got["a"]), live.mean_action(obs), atol=1e-6)
    assert np.array(got["a"]).min() >= -3 and np.array(got["a"]).max() <= 3
    assert got["s1"] == got["s2"] and got["s1"] != got["a"]
    # TF Serving's loader path (saved_model_cli run: TF1 loader in a Session), fresh process
    path = os.path.join(out, "exp", "1")
    served = saved_model_cli_run(path, "serving_default", {"obs": obs}, str(tmp_path / "cli"))
    np.testing.assert_allclose(served["action"], live.mean_action(obs), atol=1e-6)
    sampled = saved_model_cli_run(path, "sample", {"obs": obs, "seed": np.int64(5)}, str(tmp_path / "cli"))
    np.testing.assert_allclose(sampled["action"], np.array(got["s1"]), atol=1e-6)
