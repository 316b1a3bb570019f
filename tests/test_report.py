"""`tf_rlnas report` on synthetic runs with known values (means, IQM, intervals, misaligned steps, a
missing metric, the error cases) and the HParams record every run writes, read back through
TensorBoard's own loader."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tf_rlnas import report
from tf_rlnas.cli import main


def fake_run(root, name: str, env_id: str, series: dict[str, list[tuple[int, float]]], algo: str = "sac",
             extra: str = "") -> str:
    """A run directory as training leaves it: config.yaml (+ ``extra`` YAML) and tb/ event files."""
    path = os.path.join(str(root), name)
    os.makedirs(os.path.join(path, "tb"))
    with open(os.path.join(path, "config.yaml"), "w") as f:
        f.write(f"algo: {algo}\nenv:\n  id: {env_id}\nrun:\n  name: {name}\n{extra}")
    writer = tf.summary.create_file_writer(os.path.join(path, "tb"))
    with writer.as_default():
        for tag, points in series.items():
            for step, value in points:
                tf.summary.scalar(tag, value, step=step)
    writer.close()
    return path


def _err(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_known_values_give_known_means_iqm_and_intervals(tmp_path, capsys):
    finals = {"Hopper-v5": [1.0, 2.0, 3.0, 10.0], "Walker2d-v5": [5.0, 7.0]}
    runs = []
    for env, values in finals.items():
        for seed, v in enumerate(values):
            runs.append(fake_run(tmp_path, f"{env}-{seed}", env, {"eval/return": [(0, 0.0), (100, v / 2), (200, v)]}))
    out = tmp_path / "rep"
    assert main(["report", *runs, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = {r["group"]: r for r in csv.DictReader(open(out / "report.csv"))}
    hop = rows["sac Hopper-v5"]
    assert hop["metric"] == "eval/return" and int(hop["seeds"]) == 4 and hop["final_step"] == "200"
    assert float(hop["mean"]) == pytest.approx(4.0)
    assert float(hop["iqm"]) == pytest.approx(2.5)  # the middle half: (2 + 3) / 2
    lo, hi = float(hop["ci_low"]), float(hop["ci_high"])
    assert 1.0 <= lo < 4.0 < hi <= 10.0
    want = stats.bootstrap(([1.0, 2.0, 3.0, 10.0],), np.mean, n_resamples=report.RESAMPLES, method="percentile",
                           random_state=np.random.default_rng(0)).confidence_interval
    assert (lo, hi) == pytest.approx((want.low, want.high))
    walker = rows["sac Walker2d-v5"]
    assert int(walker["seeds"]) == 2 and float(walker["mean"]) == pytest.approx(6.0)
    assert "| sac Hopper-v5 | eval/return | 4 | 4 | 2.5 |" in printed
    assert (out / "eval_return.png").stat().st_size > 5000 and (out / "report.md").read_text() in printed
    # --last 2: each run's final value is the mean of its last two values (v/2 and v): 0.75 v
    assert main(["report", *runs, "--out", str(out), "--last", "2"]) == 0
    rows = {r["group"]: r for r in csv.DictReader(open(out / "report.csv"))}
    assert float(rows["sac Hopper-v5"]["mean"]) == pytest.approx(0.75 * 4.0)


def test_misaligned_steps_are_interpolated_not_truncated(tmp_path, capsys):
    a = fake_run(tmp_path, "a", "Hopper-v5", {"eval/return": [(0, 0.0), (10, 10.0), (20, 20.0)]})
    b = fake_run(tmp_path, "b", "Hopper-v5", {"eval/return": [(0, 0.0), (5, 5.0), (15, 30.0), (30, 60.0)]})
    rows, curves = report.build([a, b], ["algo", "task"], None, warn=print)
    grid, mean, lo, hi, n, unit, task = curves["eval/return"]["sac Hopper-v5"]
    assert task == "Hopper-v5"
    assert grid.tolist() == [0, 5, 10, 15, 20, 30] and unit == "env step"
    # a at 5 and 15 is interpolated (5, 15); b at 10 and 20 (17.5, 40); past 20 only b
    np.testing.assert_allclose(mean, [0, 5, (10 + 17.5) / 2, (15 + 30) / 2, (20 + 40) / 2, 60])
    assert n.tolist() == [2, 2, 2, 2, 2, 1] and np.isnan(lo[-1])
    assert "runs end at different steps (20, 30)" in capsys.readouterr().out
    assert rows[0].mean == pytest.approx((20 + 60) / 2) and rows[0].final_step == "20, 30"


def test_a_step_written_twice_counts_once_with_its_last_value(tmp_path):
    run = fake_run(tmp_path, "a", "Hopper-v5", {"eval/return": [(0, 1.0), (10, 2.0), (20, 3.0), (20, 5.0)]})
    steps, values, _ = report.read_scalars(os.path.join(run, "tb"))["eval/return"]
    assert steps.tolist() == [0, 10, 20] and values.tolist() == [1.0, 2.0, 5.0]
    rows, _ = report.build([run], ["algo"], None, warn=print, last=2)
    assert rows[0].mean == pytest.approx(3.5)


def test_a_run_without_the_metric_is_named_and_left_out(tmp_path, capsys):
    a = fake_run(tmp_path, "a", "Hopper-v5", {"eval/return": [(0, 1.0), (10, 3.0)]})
    b = fake_run(tmp_path, "b", "Hopper-v5", {"train/episode_return": [(0, 1.0)]})
    assert main(["report", a, b, "--out", str(tmp_path / "r")]) == 0
    err = _err(capsys)
    assert len(err) == 1 and err[0].startswith("warning: 1 run(s) without 'eval/return'") and err[0].endswith(": b")
    row = next(csv.DictReader(open(tmp_path / "r" / "report.csv")))
    assert int(row["seeds"]) == 1 and float(row["mean"]) == 3.0 and row["ci_low"] == "nan"


def test_group_by_a_config_key(tmp_path, capsys):
    runs = [fake_run(tmp_path, f"r{i}", f"Env{i % 2}-v0", {"eval/return": [(0, float(i))]}) for i in range(4)]
    assert main(["report", *runs, "--group-by", "run.name", "--out", str(tmp_path / "o")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "o" / "report.csv")))) == 4
    assert main(["report", *runs, "--group-by", "env.id", "--metric", "eval/return", "--out", str(tmp_path / "o")]) == 0
    groups = {r["group"]: r for r in csv.DictReader(open(tmp_path / "o" / "report.csv"))}
    assert float(groups["Env0-v0"]["mean"]) == 1.0 and float(groups["Env1-v0"]["mean"]) == 2.0


def test_group_by_a_key_some_runs_lack_gives_them_a_dash(tmp_path):
    """SAC beside ACE with and without its reset: one table, SAC's group shows '-' for the key."""
    runs = [fake_run(tmp_path, "sac", "Hopper-v5", {"eval/return": [(0, 1.0)]}),
            fake_run(tmp_path, "ace", "Hopper-v5", {"eval/return": [(0, 2.0)]}, "ace",
                     "ace:\n  reset_mode: causal_reset\n"),
            fake_run(tmp_path, "ace_noreset", "Hopper-v5", {"eval/return": [(0, 3.0)]}, "ace",
                     "ace:\n  reset_mode: none\n")]
    assert main(["report", *runs, "--group-by", "algo,ace.reset_mode", "--out", str(tmp_path / "o")]) == 0
    groups = {r["group"]: float(r["mean"]) for r in csv.DictReader(open(tmp_path / "o" / "report.csv"))}
    assert groups == {"sac -": 1.0, "ace causal_reset": 2.0, "ace none": 3.0}


@pytest.mark.parametrize("make_args, needle", [
    (lambda t, run: [str(t / "nope")], "no such run directory"),
    (lambda t, run: [str(t)], "is not a run directory"),
    (lambda t, run: [run, "--metric", "eval/nope"], "no run has metric 'eval/nope'"),
    (lambda t, run: [run, "--group-by", "agent.nope"], "--group-by key 'agent.nope'"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, make_args, needle):
    run = fake_run(tmp_path / "runs", "a", "Hopper-v5", {"eval/return": [(0, 1.0)]})
    out = tmp_path / "out"
    assert main(["report", *make_args(tmp_path, run), "--out", str(out)]) == 2
    err = _err(capsys)
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not out.exists()
    assert main(["report"]) == 2  # no runs at all: argparse's usage line and one error line
    assert _err(capsys)[-1].endswith("the following arguments are required: RUN_DIR")


def test_every_run_logs_its_config_and_headline_metrics_for_the_hparams_dashboard(tmp_path):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    run = tmp_path / "run"
    assert main(["train", "reinforce", "--config", "smoke", "--set", "train.lr=0.004", "--run-dir", str(run),
                 "--no-progress"]) == 0
    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    content = ea.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert [m.name.tag for m in experiment.metric_infos] == ["eval/return"]
    assert "train.lr" in {h.name for h in experiment.hparam_infos}
    session = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hp = session.hparams
    assert hp["train.lr"].number_value == pytest.approx(0.004)
    assert hp["train.updates"].number_value == 20 and hp["run.checkpoint_every"].number_value == 5
    assert hp["env.id"].string_value == "tf_rlnas/OneShotGame-v0"
    assert hp["train.normalize_advantages"].WhichOneof("kind") == "bool_value"
    assert "eval/return" in report.read_scalars(str(run / "tb"))  # the metric the dashboard lists exists


def test_a_resumed_run_reads_as_tensorboard_shows_it_and_counts_training_time_only(tmp_path, capsys):
    """A run resumed from a checkpoint older than its last logged step: the values logged past the
    resume point before the stop are superseded (as TensorBoard's loader does), one note line says
    so instead of TensorBoard's own log lines; the hours column leaves out the stop (gaps longer than
    10x the median logging gap)."""
    from tf_rlnas.core.logging import TBLogger

    run = fake_run(tmp_path, "r", "Hopper-v5", {})
    # two sessions as Trainer.fit logs them: each starts with a SessionLog.START at its first step
    for start, points in ((1, ((0, 0.0), (10, 1.0), (20, 2.0), (30, 3.0))), (20, ((20, 5.0), (30, 6.0), (40, 7.0)))):
        logger = TBLogger(os.path.join(run, "tb"))
        logger.restart(start)
        for step, value in points:
            logger.scalars({"eval/return": value}, step=step)
        logger.flush()
        logger.writer.close()
    notes = []
    rows, curves = report.build([run], ["algo", "task"], None, warn=notes.append)
    assert len(notes) == 1 and "was resumed from a checkpoint" in notes[0], notes
    grid, mean = curves["eval/return"]["sac Hopper-v5"][:2]
    assert grid.tolist() == [0, 10, 20, 30, 40] and mean.tolist() == [0.0, 1.0, 5.0, 6.0, 7.0]
    assert "Purging" not in capsys.readouterr().err  # TensorBoard's own lines are not shown
    day = 86400.0
    walls = np.array([0.0, 10, 20, 30, day + 40, day + 50])
    assert report.training_hours(walls) == pytest.approx((4 * 10 + 100) / 3600)
    assert report.training_hours(np.array([5.0, 65.0])) == pytest.approx(60 / 3600)
