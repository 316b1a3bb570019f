"""The synthetic controller task of `tf_rlnas bench enas --controller-task`: the landscape's
optimum, mean and spread match brute force, and the ENAS controller learns it (and does not without
a learning rate)."""

import itertools

import numpy as np
import pytest

from tf_rlnas import config as C
from tf_rlnas.algos.enas import controller_task as ct
from tf_rlnas.algos.enas.config import EnasConfig
from tf_rlnas.algos.enas.controller import NUM_BRANCHES
from tf_rlnas.cli import main


@pytest.mark.parametrize("skip_share", [0.0, 0.3, 1.0])
def test_landscape_matches_brute_force(skip_share):
    L = 3
    land = ct.Landscape(L, np.random.default_rng(5), signal=0.05, skip_share=skip_share)
    pairs = [(i, j) for i in range(L) for j in range(i)]
    bs, ss = [], []
    for ops in itertools.product(range(NUM_BRANCHES), repeat=L):
        for bits in itertools.product([0, 1], repeat=len(pairs)):
            s = np.zeros((L, L), np.int32)
            for (i, j), v in zip(pairs, bits):
                s[i, j] = v
            bs.append(ops)
            ss.append(s)
    true = land.true(np.array(bs), np.array(ss))  # every architecture, each as likely as under uniform draws
    assert true.max() == pytest.approx(land.optimum, abs=1e-12)
    assert true.mean() == pytest.approx(land.uniform_mean, abs=1e-12)
    assert true.std() == pytest.approx(0.05, rel=1e-9)
    ops_only = land.true(np.array(bs), np.zeros_like(np.array(ss)))
    assert np.var(true - ops_only) == pytest.approx(skip_share * 0.05 ** 2, abs=1e-12)
    sample = land.uniform_sample(20000, np.random.default_rng(1))
    assert sample.mean() == pytest.approx(land.uniform_mean, abs=0.002)
    assert sample.std() == pytest.approx(0.05, rel=0.03)


def _cfg(*sets):
    return C.resolve(EnasConfig, [], ["child.num_layers=4", "controller.num_aggregate=5", "search.derive_archs=10",
                                      "controller.skip_weight=0", "run.seed=0", *sets])


def test_controller_learns_the_landscape_and_not_without_a_learning_rate():
    learn = ct.run_trial(_cfg("controller.lr=0.01"), 0, [0, 150], signal=0.05, noise=0.005, skip_share=0.0,
                         eval_samples=200)
    frozen = ct.run_trial(_cfg("controller.lr=0"), 0, [150], signal=0.05, noise=0.005, skip_share=0.0,
                          eval_samples=200)
    start, end = learn
    assert abs(start["progress"]) < 0.05 and start["op_entropy"] > 7.0  # uniform: 4 ln 6 = 7.17
    assert end["progress"] > 0.3 and end["op_entropy"] < start["op_entropy"] - 2.0, end
    assert abs(frozen[0]["progress"]) < 0.05 and frozen[0]["op_entropy"] > 7.0, frozen
    # the same seed gives the same figures
    again = ct.run_trial(_cfg("controller.lr=0.01"), 0, [0, 150], signal=0.05, noise=0.005, skip_share=0.0,
                         eval_samples=200)
    assert again == learn


def test_controller_task_cli(capsys):
    assert main(["bench", "enas", "--controller-task", "--updates", "0,3", "--trials", "1",
                 "--set", "child.num_layers=3", "--set", "search.derive_archs=5"]) == 0
    out = capsys.readouterr().out
    assert "landscape: additive" in out and "      3 " in out
    assert main(["bench", "sac", "--controller-task"]) == 2  # ENAS's option: not in `bench sac` at all
    assert "unrecognized arguments: --controller-task" in capsys.readouterr().err
    assert main(["bench", "enas", "--trials", "2"]) == 2  # a task option without the task
    assert "--trials goes with --controller-task" in capsys.readouterr().err
    for bad in (["--updates", "1,x"], ["--trials", "0"], ["--skip-share", "2"], ["--noise", "-1"]):
        assert main(["bench", "enas", "--controller-task", *bad]) == 2
        assert "error: argument " + bad[0] + ": expected" in capsys.readouterr().err


def test_a_misranking_reward_derives_worse_architectures():
    """With no controller updates the derived architecture is the best of derive_archs draws by the
    reward: at the top of the true ranking for a faithful reward, at its middle for an unrelated one."""
    cfg = C.resolve(EnasConfig, [], ["search.derive_archs=50", "run.seed=0"])

    def pct(r, trials=8):
        return np.mean([ct.run_trial(cfg, t, [0], signal=0.05, noise=0.03, reward_corr=r,
                                     eval_samples=50)[0]["derived_percentile"] for t in range(trials)])
    faithful, half, unrelated = pct(1.0), pct(0.5), pct(0.0)
    assert faithful > 95 and 30 < unrelated < 70 and unrelated + 10 < half < faithful - 5, (faithful, half, unrelated)
    default = ct.run_trial(cfg, 0, [0], signal=0.05, noise=0.03, eval_samples=50)
    assert default == ct.run_trial(cfg, 0, [0], signal=0.05, noise=0.03, reward_corr=1.0, eval_samples=50)
    assert default[0]["beats_best_of_3"] == pytest.approx((default[0]["derived_percentile"] / 100) ** 3)
