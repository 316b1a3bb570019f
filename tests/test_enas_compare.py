"""ENAS search-quality tools: the random-architecture sampler draws what an untrained controller
draws, and `tf_rlnas compare-arcs` retrains derived / random / conv-stack architectures with one
budget and seed and tabulates them."""

import json
import os

import numpy as np
import tensorflow as tf
from scipy import stats

from tf_rlnas.algos.enas.controller import (NUM_BRANCHES, Controller, arc_from_dict, arc_to_dict, conv_stack_arc,
                                            random_arc, special_arc)
from tf_rlnas.cli import main
from tf_rlnas.clikit import load_run as _load_run


def test_random_arcs_match_the_untrained_controller_distribution():
    L, n = 6, 400
    b, s = zip(*(random_arc(L, np.random.default_rng(i)) for i in range(n)))
    b, s = np.stack(b), np.stack(s)
    lower = np.tril(np.ones((L, L), bool), k=-1)
    assert np.all(s[:, ~lower] == 0)  # only earlier layers
    op_freq = np.bincount(b.ravel(), minlength=NUM_BRANCHES) / b.size
    np.testing.assert_allclose(op_freq, 1 / NUM_BRANCHES, atol=0.03)
    skip_rate = s[:, lower].mean()
    # a freshly initialised controller (the config's defaults) samples the same way
    ctrl = Controller(L, lstm_size=32, tanh_constant=1.5)
    out = ctrl.sample(n, tf.constant([1, 2], tf.int64))
    c_ops = np.bincount(out["branches"].numpy().ravel(), minlength=NUM_BRANCHES) / (n * L)
    c_skip = out["skips"].numpy()[:, lower].mean()
    np.testing.assert_allclose(c_ops, op_freq, atol=0.04)
    assert abs(c_skip - skip_rate) < 0.04 and abs(skip_rate - 0.5) < 0.03, (c_skip, skip_rate)
    # the special arc_file values
    np.testing.assert_array_equal(special_arc("random:7", L)[1], special_arc("random:7", L)[1])
    assert not np.array_equal(special_arc("random:7", L)[0], special_arc("random:8", L)[0])
    cb, cs = conv_stack_arc(L)
    assert np.all(cb == 0) and np.all(cs == 0)
    assert special_arc("runs/x/architecture.json", L) is None


def test_compare_arcs_retrains_each_with_the_same_budget_and_tabulates(tmp_path):
    L = 3
    derived = {"architecture": arc_to_dict(np.array([0, 2, 4]), np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]]))}
    arc_file = tmp_path / "architecture.json"
    arc_file.write_text(json.dumps(derived))
    run = str(tmp_path / "fixed")
    rc = main(["compare-arcs", "--config", "digits_fixed", "--config", "smoke", "--set", f"fixed.arc_file={arc_file}",
               "--set", "child.epochs=1", "--set", "child.num_layers=5", "--random", "1", "--run-dir", run,
               "--no-progress"])
    assert rc == 0
    table = json.load(open(os.path.join(run, "compare", "comparison.json")))
    res = table["results"]
    assert list(res) == ["derived", "random-1", "conv_stack"]
    assert table["config"]["num_layers"] == L  # the derived arc's depth, not child.num_layers
    for name, r in res.items():
        assert 0.3 < r["test_accuracy"] <= 1.0, (name, r)  # digits, 1 epoch: well above chance (0.1)
        assert r["architecture"]["num_layers"] == L
        assert os.path.isdir(os.path.join(run, "compare", name, "checkpoints"))
    assert res["derived"]["architecture"] == derived["architecture"]
    assert res["random-1"]["architecture"] == arc_to_dict(*special_arc("random:1", L))
    assert all(x["branch"] == 0 and not x["skips"] for x in res["conv_stack"]["architecture"]["layers"])
    assert table["random_mean"] == res["random-1"]["test_accuracy"]
    # re-running resumes every retrain (a budget may grow); a changed network is one error line
    base = ["compare-arcs", "--config", "digits_fixed", "--config", "smoke", "--set", f"fixed.arc_file={arc_file}",
            "--random", "1", "--run-dir", run, "--no-progress"]
    assert main(base + ["--set", "child.epochs=2"]) == 0
    again = json.load(open(os.path.join(run, "compare", "comparison.json")))
    assert list(again["results"]) == ["derived", "random-1", "conv_stack"]
    assert main(base + ["--set", "child.epochs=2", "--set", "child.filters=12"]) == 2
    # a search-mode config is refused with one line
    assert main(["compare-arcs", "--config", "smoke", "--run-dir", str(tmp_path / "x")]) == 2


def test_compare_arcs_over_retrain_seeds_with_extra_architectures(tmp_path, capsys):
    arcs = {"a": (np.array([0, 2, 4]), np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]])),
            "b": (np.array([1, 1, 3]), np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0]]))}
    files = {}
    for k, (b, s) in arcs.items():
        files[k] = tmp_path / f"{k}.json"
        files[k].write_text(json.dumps({"architecture": arc_to_dict(b, s)}))
    run = str(tmp_path / "cmp")
    base = ["compare-arcs", "--config", "digits_fixed", "--config", "smoke", "--set", f"fixed.arc_file={files['a']}",
            "--set", "child.epochs=1", "--random", "1", "--run-dir", run, "--no-progress"]
    assert main(base + ["--arc", f"alt={files['b']}", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    table = json.load(open(os.path.join(run, "compare", "comparison.json")))
    res = table["results"]
    assert list(res) == ["derived", "alt", "random-1", "conv_stack"] and table["config"]["seeds"] == [0, 1]
    assert res["alt"]["architecture"] == arc_to_dict(*arcs["b"])
    for name, r in res.items():
        accs = [r["per_seed"]["0"], r["per_seed"]["1"]]
        assert all(0.3 < a <= 1.0 for a in accs), (name, r)
        assert r["test_accuracy"] == np.mean(accs) and np.isclose(r["std"], np.std(accs, ddof=1))
        # the config's seed keeps the plain name (so seeds can be added to an existing comparison)
        assert os.path.isdir(os.path.join(run, "compare", name, "checkpoints"))
        assert "seed: 1" in open(os.path.join(run, "compare", f"{name}-seed1", "config.yaml")).read()
    # the seed reaches the retrain: some architecture scores differently under seed 1
    assert any(r["per_seed"]["0"] != r["per_seed"]["1"] for r in res.values())
    assert table["random_mean"] == res["random-1"]["test_accuracy"]
    assert "alt: - random mean" in out and "seed 1" in out
    # re-running reuses every finished retrain: the same figures
    assert main(base + ["--arc", f"alt={files['b']}", "--seeds", "0,1", "--json"]) == 0
    out = capsys.readouterr().out
    again = json.loads(out.strip().splitlines()[-1])
    assert again["results"] == res
    assert "reusing derived, seed 1: finished" in out and "retraining" not in out
    # the search's shared weights score the same architectures: the rank agreement is scipy's on the table
    srun = str(tmp_path / "search")
    assert main(["train", "enas", "--config", "smoke", "--set", "child.num_layers=3", "--set", "child.epochs=1",
                 "--run-dir", srun, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(base + ["--arc", f"alt={files['b']}", "--seeds", "0,1", "--score-with", srun]) == 0
    out = capsys.readouterr().out
    sw = json.load(open(os.path.join(run, "compare", "comparison.json")))["shared_weights"]
    _, _, st = _load_run(srun)
    for name in res:
        b, s = arc_from_dict(res[name]["architecture"])
        assert sw["valid_accuracy"][name] == st.evaluate_arc(st.splits.valid(), b, s)
    assert sw["epoch"] == 1 and sw["architectures"] == 4
    shared = [sw["valid_accuracy"][n] for n in res]
    retrained = [res[n]["test_accuracy"] for n in res]
    tau = stats.kendalltau(shared, retrained).statistic
    assert (sw["kendall_tau"] is None and np.isnan(tau)) or np.isclose(sw["kendall_tau"], tau)
    assert "Kendall tau" in out and "shared-weight valid" in out
    # the same weights scored with each batch's BN statistics instead of the shared moving ones
    assert main(base + ["--arc", f"alt={files['b']}", "--seeds", "0,1", "--score-with", srun,
                        "--score-bn", "batch"]) == 0
    sw_b = json.load(open(os.path.join(run, "compare", "comparison.json")))["shared_weights"]
    assert sw["score_bn"] == "moving" and sw_b["score_bn"] == "batch" and sw_b["epoch"] == 1
    assert any(sw_b["valid_accuracy"][n] != sw["valid_accuracy"][n] for n in res)
    assert main(base + ["--score-bn", "batch"]) == 2  # needs --score-with
    assert main(base + ["--score-with", os.path.join(run, "compare", "derived")]) == 2  # a fixed run
    assert main(base + ["--score-with", str(tmp_path / "nowhere")]) == 2
    # bad input: one line, exit 2
    deep = tmp_path / "deep.json"
    deep.write_text(json.dumps({"architecture": arc_to_dict(np.zeros(4, np.int32), np.zeros((4, 4), np.int32))}))
    assert main(base + ["--arc", f"deep={deep}"]) == 2
    assert main(base + ["--arc", f"conv_stack={files['b']}"]) == 2
    assert main(base + ["--arc", str(files["b"])]) == 2
    assert main(base + ["--seeds", "0,x"]) == 2
    assert main(base + ["--seeds", "1,1"]) == 2
    err = capsys.readouterr().err
    assert "4 layers" in err and "taken" in err and "NAME=FILE" in err and "--seeds" in err
    assert "needs an ENAS search run" in err and "not a tf_rlnas run directory" in err and "--score-bn goes" in err


def test_compare_arcs_jobs_runs_retrains_in_parallel_processes(tmp_path, capsys, monkeypatch):
    L = 3
    arc_file = tmp_path / "architecture.json"
    arc_file.write_text(json.dumps({"architecture": arc_to_dict(np.array([0, 2, 4]),
                                                                np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]]))}))
    run = str(tmp_path / "cmp")
    base = ["compare-arcs", "--config", "digits_fixed", "--config", "smoke", "--set", f"fixed.arc_file={arc_file}",
            "--set", "child.epochs=1", "--random", "1", "--run-dir", run, "--no-progress"]
    # every child failing (here: not Python at all) is one error line naming a log, exit 2, no table rows
    monkeypatch.setattr("sys.executable", "false")
    assert main(base + ["--jobs", "2"]) == 2
    err = capsys.readouterr().err
    assert "retrain derived seed 0 failed" in err and "(and 2 more)" in err and ".log" in err
    monkeypatch.undo()
    assert main(base + ["--jobs", "2", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    table = json.load(open(os.path.join(run, "compare", "comparison.json")))
    res = table["results"]
    assert list(res) == ["derived", "random-1", "conv_stack"]  # candidate order, whatever finished first
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    for name, r in res.items():
        assert list(r["per_seed"]) == ["0", "1"]
        assert all(0.3 < a <= 1.0 for a in r["per_seed"].values()), (name, r)
        for rd in (name, f"{name}-seed1"):
            cfg = open(os.path.join(run, "compare", rd, "config.yaml")).read()
            assert f"intra_op_threads: {threads}" in cfg  # cores split between the 2 processes
            assert os.path.getsize(os.path.join(run, "compare", rd + ".log")) > 0
    assert res["random-1"]["architecture"] == arc_to_dict(*special_arc("random:1", L))
    assert out.count("finished ") == 6 and "derived: - random mean" in out
    # the in-process path reuses what the processes trained: the same figures
    assert main(base + ["--seeds", "0,1", "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["results"] == res
    assert main(base + ["--jobs", "0"]) == 2
