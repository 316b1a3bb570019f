"""CLI: every user mistake is one stderr line, exit code 2, and leaves run directories untouched."""

import hashlib
import os

import pytest

from tf_rlnas.cli import main


def snapshot(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("cli") / "run")
    assert main(["train", "reinforce", "--config", "smoke", "--run-dir", run_dir]) == 0
    return run_dir


def run_cli(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_help_and_list(capsys):
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "reinforce" in out and "oneshot" in out and "smoke" in out
    assert main(["train", "--help"]) == 0
    assert "--set" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["train", "nope"], "unknown algorithm 'nope'"),
    (["train"], "name an algorithm"),
    (["train", "reinforce", "--set", "train.bogus=1"], "train.bogus"),
    (["train", "reinforce", "--set", "train.lr=fast"], "train.lr"),
    (["train", "reinforce", "--set", "train.updates=-3"], "train.updates"),
    (["train", "reinforce", "--config", "/no/such/file.yaml"], "not found"),
    (["train", "reinforce", "--config", "nosuchshipped"], "not found"),
    (["train", "reinforce", "--set", "env.id=NoSuchEnv-v0"], "NoSuchEnv"),
    (["train", "reinforce", "--set", "env.kwargs.zeta=-1"], "zeta"),
    (["train", "reinforce", "--set", "env.kwargs.colour=3"], "colour"),
    (["evaluate", "/no/such/run"], "not found"),
    (["export", "/no/such/run"], "not found"),
    (["evaluate", ".", "--episodes", "0"], "--episodes"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, argv + (["--run-dir", str(tmp_path / "r")] if argv[0] == "train" else []))
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not os.path.exists(tmp_path / "r") and not os.path.exists(tmp_path / "runs")


def test_bad_files(tmp_path, capsys):
    bad = {"malformed.yaml": "train: {lr: [1\n", "list.yaml": "- 1\n", "binary.yaml": b"\xff\xfe\x00bad",
           "wrongalgo.yaml": "algo: enas_nope\n"}
    for name, data in bad.items():
        p = tmp_path / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        code, err = run_cli(capsys, ["train", "reinforce", "--config", str(p), "--run-dir", str(tmp_path / "r")])
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (name, err)
    assert not os.path.exists(tmp_path / "r")


def test_existing_run_is_not_damaged_by_bad_input(trained, capsys, tmp_path):
    before = snapshot(trained)
    for argv in (["train", "--run-dir", trained, "--set", "train.lr=0.5"],       # fixed key changed
                 ["train", "--run-dir", trained, "--set", "actor.hidden=[9]"],
                 ["train", "--run-dir", trained, "--set", "train.nope=1"],
                 ["train", "--run-dir", trained, "--set", "env.id=NoSuchEnv-v0"]):
        code, err = run_cli(capsys, argv)
        assert code == 2 and len(err) == 1, err
    assert snapshot(trained) == before
    # a folder that is not a run is refused, not written into
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    code, err = run_cli(capsys, ["train", "reinforce", "--run-dir", str(other)])
    assert code == 2 and "not a tf_rlnas run" in err[0]
    assert os.listdir(other) == ["precious.txt"]
    # ... but a folder holding only what a multi-worker run's other workers write before the chief
    # has written config.yaml (workers/<task>/, a write probe) is a fresh run, not a foreign folder
    from tf_rlnas.algos.reinforce.config import ReinforceConfig
    from tf_rlnas.core.rundir import check_run_dir
    from tf_rlnas.errors import UserError
    early = tmp_path / "early"
    (early / "workers" / "worker-1" / "checkpoints").mkdir(parents=True)
    (early / ".write-probe-abc").write_text("")
    assert check_run_dir(str(early), "reinforce", ReinforceConfig(), ReinforceConfig) is False
    (early / "stray.txt").write_text("x")
    with pytest.raises(UserError, match="not a tf_rlnas run"):
        check_run_dir(str(early), "reinforce", ReinforceConfig(), ReinforceConfig)


def test_resume_extends_budget_and_evaluate(trained, capsys):
    assert main(["train", "--run-dir", trained, "--set", "train.updates=25"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "update 20/25" in out
    assert main(["evaluate", trained, "--episodes", "2", "--json"]) == 0
    assert '"eval/mu"' in capsys.readouterr().out


def test_corrupt_latest_checkpoint_falls_back(tmp_path, capsys):
    run_dir = str(tmp_path / "c")
    assert main(["train", "reinforce", "--config", "smoke", "--set", "run.checkpoint_every=5",
                 "--run-dir", run_dir]) == 0
    ck = os.path.join(run_dir, "checkpoints")
    for f in os.listdir(ck):
        if f.startswith("ckpt-20.data"):
            open(os.path.join(ck, f), "wb").write(b"garbage")
    capsys.readouterr()
    assert main(["evaluate", run_dir]) == 0
    out = capsys.readouterr().out
    assert "update 15" in out  # the previous checkpoint was used ...
    warned = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "ckpt-20" in warned[0] and "ckpt-15" in warned[0], out  # ... and said so once
    # only the errors of a damaged file fall back: anything else (here MemoryError) propagates
    from tf_rlnas.core import checkpoint as ckpt_mod

    def oom(self, path):
        raise MemoryError("simulated")
    orig = ckpt_mod.Checkpointer._restore_one
    ckpt_mod.Checkpointer._restore_one = oom
    try:
        with pytest.raises(MemoryError):
            main(["evaluate", run_dir])
    finally:
        ckpt_mod.Checkpointer._restore_one = orig
    for f in os.listdir(ck):
        if f.startswith("ckpt-") and ".data" in f:
            open(os.path.join(ck, f), "wb").write(b"garbage")
    code, err = run_cli(capsys, ["evaluate", run_dir])
    assert code == 2 and "no readable checkpoint" in err[-1]
