"""Hardening found by using the package as a new user would: run directories that cannot be written,
empty/zero layer lists, MuJoCo and TensorFlow noise, the README's ENAS sequence, continuous
TensorBoard curves after a resume."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, tb_scalars
from tf_rlnas import config as C
from tf_rlnas.cli import main
from tf_rlnas.envs.video import offscreen_gl_backend

CLI = [sys.executable, "-m", "tf_rlnas"]


def cli_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_RLNAS_TF_LOGS")}
    return {**env, "PYTHONPATH": REPO, "CUDA_VISIBLE_DEVICES": "", **extra}


# ---- item 1: bad input is one line, exit 2, nothing written -------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["train", "sac", "--set", "agent.actor_hidden=[]"], "agent.actor_hidden"),
    (["train", "sac", "--set", "agent.critic_hidden=[256,0]"], "agent.critic_hidden"),
    (["train", "reinforce", "--set", "actor.hidden=[4,-1]"], "actor.hidden"),
    (["train", "reinforce", "--set", "train.value_hidden=[0]"], "train.value_hidden"),
    (["train", "sac", "--set", "agent.init_alpha=0"], "agent.init_alpha"),
    (["train", "sac", "--set", "agent.log_std_min=3"], "agent.log_std_min"),
    (["train", "enas", "--set", "child.keep_prob=0"], "child.keep_prob"),
    (["train", "enas", "--set", "controller.temperature=0"], "controller.temperature"),
    (["train", "enas", "--set", "controller.tanh_constant=-1"], "controller.tanh_constant"),
    (["train", "enas", "--set", "child.lr_min=1"], "child.lr_min"),
    (["train", "ace", "--set", "ace.causal_sample_size=1"], "ace.causal_sample_size"),
])
def test_bad_sizes_counts_probabilities(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code = main(argv + ["--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert os.listdir(tmp_path) == []


def test_empty_hidden_list_is_a_linear_policy_that_learns(tmp_path):
    """REINFORCE: actor.hidden = [] is a valid model (mu, sigma linear in the observation)."""
    from tf_rlnas.algos.reinforce.config import ReinforceConfig
    from tf_rlnas.algos.reinforce.trainer import ReinforceTrainer

    cfg = C.resolve(ReinforceConfig, [os.path.join(REPO, "configs/reinforce/oneshot.yaml")],
                    ["actor.hidden=[]", "train.updates=600", "train.lr=0.03"])
    tr = ReinforceTrainer(cfg, str(tmp_path / "lin"))
    assert [v.shape for v in tr.learner.actor.trainable_variables][0] == (1, 1)  # obs -> mu directly
    summary = tr.fit(progress=False)
    assert summary["final_eval"]["eval/distance"] < 0.1, summary["final_eval"]


@pytest.mark.parametrize("make_bad", ["proc", "file_parent", "read_only"])
def test_unwritable_run_dir_is_one_line(tmp_path, make_bad):
    locked = None
    if make_bad == "proc":
        run_dir = "/proc/tf_rlnas_x/run"
    elif make_bad == "file_parent":
        (tmp_path / "afile").write_text("x")
        run_dir = str(tmp_path / "afile" / "run")
    else:  # an existing, empty, read-only folder
        run_dir = str(tmp_path / "ro")
        os.mkdir(run_dir)
        os.chmod(run_dir, 0o555)
        if os.geteuid() == 0:  # root ignores permission bits; the immutable flag stops root too
            if subprocess.run(["chattr", "+i", run_dir], capture_output=True).returncode != 0:
                pytest.skip("running as root and chattr +i is not available: cannot make a read-only folder")
            locked = run_dir
    try:
        res = subprocess.run([*CLI, "train", "reinforce", "--config", "smoke", "--run-dir", run_dir],
                             capture_output=True, text=True, timeout=300, env=cli_env(), cwd=str(tmp_path))
    finally:
        if locked:
            subprocess.run(["chattr", "-i", locked])
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(err) == 1 and err[0].startswith("error: "), res.stderr[-2000:]
    assert "run directory" in err[0]
    if make_bad == "read_only":
        assert "not writable" in err[0] and os.listdir(run_dir) == []
    else:
        assert not os.path.exists(run_dir)


# ---- items 2 and 3: no MuJoCo or TensorFlow noise -----------------------------------------------

def test_mujoco_training_is_quiet_and_leaves_no_log_file(tmp_path):
    res = subprocess.run([*CLI, "train", "sac", "--config", "halfcheetah", "--config", "smoke",
                          "--set", "train.total_env_steps=300", "--set", "train.start_steps=200",
                          "--set", "train.eval_every=0", "--set", "train.eval_episodes=1",
                          "--set", "env.max_episode_steps=100", "--run-dir", "run"],
                         capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=cli_env())
    assert res.returncode == 0, res.stderr[-3000:]
    assert "MUJOCO_LOG.TXT" not in os.listdir(tmp_path)
    assert "settotalmass" not in res.stdout + res.stderr and "WARNING" not in res.stdout
    # item 3: TensorFlow's C++ notices (oneDNN's DT_INT32 line, cuInit ...) do not reach the user
    assert not any(line[:1] in "EWI" and line[1:5].isdigit() for line in res.stderr.splitlines()), res.stderr


def test_cleaned_half_cheetah_model_is_the_same_physics(tmp_path, monkeypatch):
    import gymnasium as gym

    from tf_rlnas.envs.factory import make_env

    monkeypatch.chdir(tmp_path)  # the original model writes MUJOCO_LOG.TXT here
    ours, orig = make_env("HalfCheetah-v5", seed=5), gym.make("HalfCheetah-v5")
    assert "xml_file" in ours.spec.kwargs  # the cleaned copy, not gymnasium's file
    np.testing.assert_array_equal(ours.unwrapped.model.body_mass, orig.unwrapped.model.body_mass)
    np.testing.assert_array_equal(ours.unwrapped.model.body_inertia, orig.unwrapped.model.body_inertia)
    np.testing.assert_array_equal(ours.unwrapped.model.dof_invweight0, orig.unwrapped.model.dof_invweight0)
    o1, _ = ours.reset(seed=1)
    o2, _ = orig.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.uniform(-1, 1, 6)
        o1, r1, *_ = ours.step(a)
        o2, r2, *_ = orig.step(a)
        np.testing.assert_array_equal(o1, o2)
        assert r1 == r2


# ---- item 4: the README's ENAS sequence works as written ----------------------------------------

def test_readme_enas_sequence_without_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    readme = open(os.path.join(REPO, "README.md")).read()
    for cmd in ("tf_rlnas train enas", "tf_rlnas train enas --config digits_fixed",
                "tf_rlnas export runs/enas_digits_fixed"):
        assert cmd in readme, cmd
    # the search as a user runs it (a fresh process): also item 3, no TensorFlow C++ notices on stderr
    res = subprocess.run([*CLI, "train", "enas", "--config", "smoke"], capture_output=True, text=True, timeout=600,
                         cwd=str(tmp_path), env=cli_env())
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.strip() == "", res.stderr
    assert os.path.exists("runs/enas/architecture.json")
    assert main(["train", "enas", "--config", "digits_fixed", "--config", "smoke"]) == 0
    assert main(["export", "runs/enas_digits_fixed"]) == 0
    assert os.path.isdir("savedmodels/enas_digits_fixed/1")
    # the Fashion-MNIST pair points at each other too
    search = C.read_yaml(os.path.join(REPO, "configs/enas/fashion_mnist.yaml"))
    fixed = C.read_yaml(os.path.join(REPO, "configs/enas/fashion_mnist_fixed.yaml"))
    assert fixed["fixed"]["arc_file"] == f"runs/{search['run']['name']}/architecture.json"
    cifar, cifar_fixed = (C.read_yaml(os.path.join(REPO, f"configs/enas/{n}.yaml")) for n in ("cifar10", "cifar10_fixed"))
    assert cifar_fixed["fixed"]["arc_file"] == f"runs/{cifar['run']['name']}/architecture.json"


# ---- item 5: TensorBoard shows each step once after a kill and a resume -------------------------

def test_resumed_run_has_each_tensorboard_step_once(tmp_path):
    from tf_rlnas.algos.reinforce.config import ReinforceConfig
    from tf_rlnas.algos.reinforce.trainer import ReinforceTrainer

    cfg = C.resolve(ReinforceConfig, [os.path.join(REPO, "configs/reinforce/oneshot.yaml")],
                    ["train.updates=20", "run.checkpoint_every=5", "run.log_every=1"])
    run_dir = str(tmp_path / "run")

    class Killed(Exception):
        pass

    def kill_at_13(it):
        if it == 13:
            raise Killed  # steps 11-13 are logged, the last checkpoint is at 10

    with pytest.raises(Killed):
        ReinforceTrainer(cfg, run_dir).fit(progress=False, on_iteration=kill_at_13)
    before = tb_scalars(os.path.join(run_dir, "tb"))["train/mu"]
    assert [s for s, _ in before] == list(range(1, 14))
    ReinforceTrainer(cfg, run_dir).fit(progress=False)
    after = tb_scalars(os.path.join(run_dir, "tb"))
    for tag in ("train/mu", "train/loss", "train/reward"):
        assert [s for s, _ in after[tag]] == list(range(1, 21)), tag
    assert after["train/mu"][:10] == before[:10]


# ---- item 0b: MultiWorkerMirroredStrategy, two processes on loopback ----------------------------

def _free_ports(n):
    import socket
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run_workers(argv, cwd, n=2, timeout=600):
    """Start ``n`` CLI workers with TF_CONFIG on free loopback ports; when one fails, stop the others
    (a worker whose peer died waits for it forever) and report the failure."""
    import json as _json
    import time
    ports = _free_ports(n)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    logs = [(open(os.path.join(cwd, f"w{i}.out"), "w+"), open(os.path.join(cwd, f"w{i}.err"), "w+")) for i in range(n)]
    procs = [subprocess.Popen([*CLI, *argv], cwd=cwd, stdout=o, stderr=e, text=True,
                              env=cli_env(TF_CONFIG=_json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})))
             for i, (o, e) in enumerate(logs)]
    t0 = time.time()
    try:
        while any(p.poll() is None for p in procs):
            bad = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            assert not bad and time.time() - t0 < timeout, f"worker(s) {bad} failed or timed out"
            time.sleep(0.5)
        assert all(p.returncode == 0 for p in procs)
    except AssertionError:
        for p in procs:
            p.kill()
        errs = []
        for i, (o, e) in enumerate(logs):
            e.seek(0)
            errs.append(f"--- worker {i} rc={procs[i].poll()}: {e.read()[-1500:]}")
        raise AssertionError("\n".join(errs)) from None
    outs = []
    for o, e in logs:
        o.seek(0)
        outs.append(o.read())
        o.close()
        e.close()
    return outs


def _weights(ckpt_dir, prefix="child/"):
    import tensorflow as tf
    r = tf.train.load_checkpoint(ckpt_dir)
    return {n: r.get_tensor(n) for n in r.get_variable_to_shape_map() if n.startswith(prefix) and "OPTIMIZER" not in n}


@pytest.mark.timeout(900)
def test_multi_worker_fixed_matches_single_process_and_resumes(tmp_path):
    import json
    from tf_rlnas.algos.enas.controller import arc_to_dict
    arc = tmp_path / "arc.json"
    arc.write_text(json.dumps(arc_to_dict(np.array([0, 1, 4]), np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]]))))
    common = ["train", "enas", "--config", "digits_fixed", "--set", f"fixed.arc_file={arc}", "--set", "child.epochs=1",
              "--set", "child.filters=8", "--set", "child.keep_prob=1.0", "--set", "data.batch_size=256", "--no-progress"]
    mw = common + ["--set", "distribute.strategy=multi_worker", "--run-dir", "mw"]
    _run_workers(mw, str(tmp_path))
    single = subprocess.run([*CLI, *common, "--set", "distribute.strategy=mirrored", "--run-dir", "one"],
                            cwd=str(tmp_path), capture_output=True, text=True, timeout=600, env=cli_env())
    assert single.returncode == 0, single.stderr[-2000:]
    chief = _weights(str(tmp_path / "mw" / "checkpoints"))
    other = _weights(str(tmp_path / "mw" / "workers" / "worker-1" / "checkpoints"))
    one = _weights(str(tmp_path / "one" / "checkpoints"))
    assert len(chief) > 20 and chief.keys() == other.keys() == one.keys()
    for n in chief:
        np.testing.assert_array_equal(chief[n], other[n], err_msg=n)  # the workers agree exactly
        if "moving_" not in n and chief[n].dtype.kind == "f":  # and match one process up to rounding
            # (batch 256 = 5 steps: measured ~2e-7; with many small steps the rounding of half-batch
            # sums grows through momentum SGD - at batch 64, 23 steps, to ~7e-3 - exactly as it
            # does for MirroredStrategy on 2 local devices, so short runs are the sharp comparison)
            assert np.max(np.abs(chief[n] - one[n])) < 1e-4, n
    losses = [json.load(open(tmp_path / r / "summary.json"))["final_metrics"]["child/loss"] for r in ("mw", "one")]
    assert abs(losses[0] - losses[1]) < 1e-5 * losses[1], losses
    # only the chief wrote the run directory's files
    assert sorted(os.listdir(tmp_path / "mw")) == ["checkpoints", "config.yaml", "summary.json", "tb", "workers"]
    assert os.listdir(tmp_path / "mw" / "workers" / "worker-1") == ["checkpoints"]
    # resume both workers from the chief's checkpoint and extend the run by an epoch
    outs = _run_workers(mw + ["--set", "child.epochs=2"], str(tmp_path))
    assert all("resuming" in o and "ckpt-1" in o for o in outs), outs
    chief = _weights(str(tmp_path / "mw" / "checkpoints"), prefix="")
    other = _weights(str(tmp_path / "mw" / "workers" / "worker-1" / "checkpoints"), prefix="")
    assert int(chief["iteration/.ATTRIBUTES/VARIABLE_VALUE"]) == 2
    for n in chief:
        if n.startswith("child/"):
            np.testing.assert_array_equal(chief[n], other[n], err_msg=n)
    assert [s for s, _ in tb_scalars(str(tmp_path / "mw" / "tb"))["child/loss"]] == [1, 2]


@pytest.mark.timeout(900)
def test_multi_worker_search(tmp_path):
    """Search mode: the sampled branches run inside tf.switch_case, where a synchronized BN cannot
    all-reduce; the branch BNs are replica-local there. Both workers end with the same weights and
    the chief alone writes architecture.json."""
    outs = _run_workers(["train", "enas", "--config", "smoke", "--set", "distribute.strategy=multi_worker",
                         "--set", "child.epochs=1", "--no-progress", "--run-dir", "run"], str(tmp_path))
    assert "worker worker-1" in outs[1] and os.path.exists(tmp_path / "run" / "architecture.json")
    chief = _weights(str(tmp_path / "run" / "checkpoints"), prefix="")
    other = _weights(str(tmp_path / "run" / "workers" / "worker-1" / "checkpoints"), prefix="")
    names = [n for n in chief if n.startswith(("child/", "controller/", "baseline"))]
    assert len(names) > 50
    for n in names:
        np.testing.assert_array_equal(chief[n], other[n], err_msg=n)


# ---- item 6: videos of evaluation episodes ---------------------------------------------------------

@pytest.mark.skipif(offscreen_gl_backend() is None, reason="no OpenGL for offscreen rendering (no display, "
                    "no OSMesa or EGL library: apt-get install libosmesa6)")
def test_evaluate_video_writes_mp4_with_the_episode_frames(tmp_path, capsys):
    import json

    import imageio.v3 as iio

    run = str(tmp_path / "ip")
    assert main(["train", "--config", os.path.join(REPO, "configs/reinforce/inverted_pendulum.yaml"),
                 "--set", "train.updates=2", "--set", "train.episodes_per_update=2", "--set", "train.eval_every=0",
                 "--set", "env.max_episode_steps=30", "--run-dir", run]) == 0
    capsys.readouterr()
    assert main(["evaluate", run, "--video", str(tmp_path / "vid"), "--episodes", "2", "--json"]) == 0
    videos = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["videos"]
    assert len(videos) == 2
    for v in videos:
        frames = iio.imread(v["path"], index=None)
        assert frames.shape == (v["frames"], 480, 480, 3)
        assert 2 <= v["frames"] <= 31  # reset frame + one per step, at most the 30-step limit
        assert frames.std() > 1.0  # a picture, not a blank frame
    assert sorted(os.listdir(tmp_path / "vid")) == ["update2-episode0.mp4", "update2-episode1.mp4"]
    # a run with no environment to render, and an env that cannot render: one line, exit 2
    oneshot = str(tmp_path / "oneshot")
    assert main(["train", "reinforce", "--config", "smoke", "--run-dir", oneshot]) == 0
    capsys.readouterr()
    assert main(["evaluate", oneshot, "--video"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot render" in err[0]
    assert not os.path.exists(os.path.join(oneshot, "videos"))
