"""``tf_rlnas report RUN_DIR...``: curves over seeds with 95% bootstrap confidence bands, and a table of
final values per group (mean, interquartile mean, 95% CI, seeds), from the runs' own TensorBoard
event files and saved configs.

- Groups: runs with the same value of ``--group-by`` keys (dotted config keys, ``algo``, or ``task``
  = the run's environment or dataset); default ``algo,task``.
- Metric: ``--metric TAG`` (repeatable); default the headline metric of the runs' trainers
  (``eval/return`` for SAC, ACE and REINFORCE, ``test/return`` for PlaNet, ...).
- Curves: every run's (step, value) series is linearly interpolated onto the union of the group's
  steps inside that run's own range (never extrapolated); at each step the mean over the runs that
  cover it, with a 95% percentile-bootstrap interval of the mean (SciPy's ``stats.bootstrap``).
  Runs that end at different steps are not cut to the shortest: the curve goes on with the runs
  that reach further, and a warning line says from where on it has fewer seeds.
- Final value of a run: its last logged value of the metric, or with ``--last N`` the mean of its
  last N values (evaluations of RL runs are noisy: e.g. the last 5 evaluations). Per group: mean, IQM (the 25%-trimmed
  mean, ``scipy.stats.trim_mean``: "Deep RL at the edge of the statistical precipice", Agarwal et
  al. 2021), the 95% bootstrap interval of the mean, and the number of seeds.

Reads event files with TensorBoard's own accumulator (restarts of resumed runs are purged as
TensorBoard shows them). Writes ``<metric>.png`` per metric and ``report.md`` / ``report.csv`` to
``--out``; prints the table. Bad input is one error line (exit 2): no runs, a folder that is not a
run, a metric no run has; a run without the metric is named in one warning line and left out.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import re

import numpy as np

from tf_rlnas.errors import UserError

CONFIDENCE = 0.95
RESAMPLES = 2000
TASK_KEYS = ("env.id", "env.name", "env.family", "data.dataset")  # the first one a config has


@dataclasses.dataclass
class Run:
    path: str
    algo: str
    config: dict   # flattened: {"section.key": value}
    unit: str
    headline: tuple[str, ...]
    scalars: dict  # tag -> (steps [n], values [n], wall times [n])

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    def key(self, key: str) -> str:
        if key == "algo":
            return self.algo
        if key == "task":
            return next((str(self.config[k]) for k in TASK_KEYS if k in self.config), "?")
        # a key other runs have (ACE's ace.reset_mode beside SAC runs): this run's group shows "-"
        return str(self.config[key]) if key in self.config else "-"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class _Purges(logging.Handler):
    """Collects TensorBoard's 'out of order event.step ... Purging N expired tensor events' warnings
    (a run resumed from a checkpoint older than its last logged step) as (N, from step, to step)."""

    PATTERN = re.compile(r"Purging (\d+) expired .* previous step: (\d+) .* current step: (\d+)")

    def __init__(self):
        super().__init__(logging.WARNING)
        self.found: list[tuple[int, int, int]] = []

    def emit(self, record):
        m = self.PATTERN.search(record.getMessage())
        if m:
            self.found.append(tuple(int(g) for g in m.groups()))


def read_scalars(logdir: str, warn=None) -> dict:
    """{tag: (steps, values, wall times)} of a run's float scalars, as TensorBoard reads them: where
    a run was resumed from a checkpoint, the values logged past its step before the stop are
    superseded (TensorBoard's purge; ``warn`` gets one line per resume instead of its log lines)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    ea = EventAccumulator(logdir, size_guidance={"tensors": 0})
    purges, tb_log = _Purges(), logging.getLogger("tensorboard")
    tb_log.addHandler(purges)
    propagate, tb_log.propagate = tb_log.propagate, False
    try:
        ea.Reload()
    finally:
        tb_log.removeHandler(purges)
        tb_log.propagate = propagate
    if purges.found and warn:  # TensorBoard warns once per tag with values past a resume point
        n = sum(f[0] for f in purges.found)
        warn(f"note: {os.path.dirname(os.path.normpath(logdir))} was resumed from a checkpoint (first at step "
             f"~{min(f[2] for f in purges.found)}): {n} values logged past the resume point before the stop are "
             f"superseded, as in TensorBoard")
    out = {}
    for tag in ea.Tags()["tensors"]:
        events = ea.Tensors(tag)
        values = [tensor_util.make_ndarray(e.tensor_proto) for e in events]
        if not values or values[0].ndim != 0 or values[0].dtype.kind != "f":
            continue  # scalars only (not text, images, the hparams plugin's records)
        steps = np.array([e.step for e in events], np.int64)
        order = np.argsort(steps, kind="stable")
        steps, vals = steps[order], np.array(values, np.float64)[order]
        walls = np.array([e.wall_time for e in events])[order]
        # one value per step, the last written (a run's final evaluation can land on the step of its
        # last periodic one; counted twice it would weigh double in --last N)
        keep = np.append(steps[1:] != steps[:-1], True)
        out[tag] = (steps[keep], vals[keep], walls[keep])
    return out


def training_hours(walls: np.ndarray) -> float:
    """Hours a run spent logging: the sum of the gaps between consecutive events of one tag,
    each capped at 10x the median gap, so the time between a stop and its resume (or a paused
    process) does not count as training. Runs with fewer than 3 gaps: last - first."""
    walls = np.sort(np.asarray(walls, np.float64))
    gaps = np.diff(walls)
    if len(gaps) < 3:
        return float(walls[-1] - walls[0]) / 3600 if len(walls) else 0.0
    return float(np.minimum(gaps, 10 * max(np.median(gaps), 1e-3)).sum()) / 3600


def load_run(path: str, warn=None) -> Run:
    from tf_rlnas import config as C
    from tf_rlnas import registry
    from tf_rlnas.core import rundir

    if not os.path.isdir(path):
        raise UserError(f"{path}: no such run directory")
    saved = rundir.saved_config(path)
    if saved is None or not os.path.isdir(os.path.join(path, "tb")):
        raise UserError(f"{path} is not a run directory (no config.yaml and tb/)")
    algo, data = saved
    spec = registry.get(algo)
    cfg = C.from_dict(spec.load("config"), data)
    trainer = spec.load("trainer")
    return Run(path, algo, _flatten(C.to_dict(cfg)), getattr(trainer, "unit", "step"),
               tuple(trainer.headline_metrics(cfg)), read_scalars(os.path.join(path, "tb"), warn))


def mean_ci(x: np.ndarray) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean (NaNs when fewer than 2 values or all equal)."""
    from scipy import stats

    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return float("nan"), float("nan")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = stats.bootstrap((x,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
                          random_state=np.random.default_rng(0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def iqm(x: np.ndarray) -> float:
    from scipy import stats

    return float(stats.trim_mean(np.asarray(x, np.float64), 0.25))


def align(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(grid, values [runs, grid]): each run interpolated onto the union of steps inside its own
    range, NaN outside it."""
    grid = np.unique(np.concatenate([s for s, _ in series]))
    out = np.full((len(series), len(grid)), np.nan)
    for i, (s, v) in enumerate(series):
        inside = (grid >= s[0]) & (grid <= s[-1])
        out[i, inside] = np.interp(grid[inside], s, v)
    return grid, out


def band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per grid column: mean, CI low, CI high over the runs that cover it, and how many do."""
    n = np.sum(~np.isnan(values), axis=0)
    mean = np.array([np.nanmean(c) if k else np.nan for c, k in zip(values.T, n)])
    lo, hi = np.full(len(n), np.nan), np.full(len(n), np.nan)
    for j, col in enumerate(values.T):
        if n[j] >= 2:
            lo[j], hi[j] = mean_ci(col[~np.isnan(col)])
    return mean, lo, hi, n


@dataclasses.dataclass
class Row:
    group: str
    metric: str
    seeds: int
    mean: float
    iqm: float
    ci_low: float
    ci_high: float
    final_step: str
    unit: str
    hours: float  # mean over the group's runs of first-to-last event wall time


def _slug(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag).strip("_")


def build(paths: list[str], group_by: list[str], metrics: list[str] | None, warn,
          last: int = 1) -> tuple[list[Row], dict]:
    """The table rows and, per metric, {group: (grid, mean, lo, hi, n, unit)} for the pictures."""
    if not paths:
        raise UserError("report needs at least one run directory")
    runs = [load_run(p, warn) for p in paths]
    if not metrics:
        metrics = list(dict.fromkeys(m for r in runs for m in r.headline[:1]))
    for key in group_by:
        if key not in ("algo", "task") and not any(key in r.config for r in runs):
            raise UserError(f"--group-by key '{key}' is not a config key of any run given (e.g. {runs[0].path})")
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(" ".join(r.key(k) for k in group_by), []).append(r)
    rows, curves = [], {}
    for metric in metrics:
        have = [r for r in runs if metric in r.scalars]
        if not have:
            known = sorted({t for r in runs for t in r.scalars})
            raise UserError(f"no run has metric '{metric}' (they have: {', '.join(known[:12])}"
                            f"{' ...' if len(known) > 12 else ''})")
        missing = [r.name for r in runs if metric not in r.scalars]
        if missing:
            warn(f"warning: {len(missing)} run(s) without '{metric}', left out of it: {', '.join(missing)}")
        curves[metric] = {}
        for name, members in groups.items():
            members = [r for r in members if metric in r.scalars]
            if not members:
                continue
            grid, vals = align([r.scalars[metric][:2] for r in members])
            mean, lo, hi, n = band(vals)
            ends = sorted({int(r.scalars[metric][0][-1]) for r in members})
            if len(ends) > 1:
                warn(f"warning: {name}: runs end at different steps ({', '.join(map(str, ends))}): the curve after "
                     f"{ends[0]} has fewer seeds; final values are each run's last")
            units = {r.unit for r in members}
            curves[metric][name] = (grid, mean, lo, hi, n, "/".join(sorted(units)), members[0].key("task"))
            finals = np.array([r.scalars[metric][1][-last:].mean() for r in members])
            low, high = mean_ci(finals)
            # the run's most often logged tag times its training (tags logged together share instants)
            hours = [training_hours(max((w for _, _, w in r.scalars.values()), key=len)) for r in members]
            rows.append(Row(name, metric, len(members), float(finals.mean()), iqm(finals), low, high,
                            ", ".join(map(str, ends)), "/".join(sorted(units)), float(np.mean(hours))))
    return rows, curves


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:,.0f}"


HEADER = ("group", "metric", "seeds", "final mean", "IQM", "95% CI", "final step", "unit", "hours")


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        lines.append(f"| {r.group} | {r.metric} | {r.seeds} | {_fmt(r.mean)} | {_fmt(r.iqm)} | "
                     f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] | {r.final_step} | {r.unit} | {r.hours:.2f} |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([f.name for f in dataclasses.fields(Row)])
    for r in rows:
        w.writerow(dataclasses.astuple(r))
    return buf.getvalue()


def plot(metric: str, curves: dict, path: str) -> None:
    """One panel per task (returns of different tasks have different scales), a line and its band per
    group."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(c[6] for c in curves.values()))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.2), dpi=110, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        units = set()
        for name, (grid, mean, lo, hi, n, unit, t) in curves.items():
            if t != task:
                continue
            units.add(unit)
            line, = ax.plot(grid, mean, label=f"{name} ({int(n.max())} seed{'s' if n.max() > 1 else ''})")
            ok = ~np.isnan(lo)
            ax.fill_between(grid[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel(" / ".join(sorted(units)) + "s")
        ax.set_ylabel(metric)
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{metric}: mean over seeds, 95% bootstrap CI", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(paths: list[str], group_by: str = "algo,task", metrics: list[str] | None = None,
        out: str = "report", warn=print, last: int = 1) -> list[Row]:
    from tf_rlnas.core.files import atomic_write_text

    keys = [k.strip() for k in group_by.split(",") if k.strip()]
    if not keys:
        raise UserError("--group-by needs at least one key")
    if last < 1:
        raise UserError("--last must be >= 1")
    rows, curves = build(paths, keys, metrics, warn, last)
    os.makedirs(out, exist_ok=True)
    for metric, c in curves.items():
        plot(metric, c, os.path.join(out, f"{_slug(metric)}.png"))
    table = markdown(rows)
    atomic_write_text(os.path.join(out, "report.md"), table)
    atomic_write_text(os.path.join(out, "report.csv"), csv_text(rows))
    print(table, end="")
    print(f"wrote {', '.join(f'{_slug(m)}.png' for m in curves)}, report.md, report.csv to {out}")
    return rows
