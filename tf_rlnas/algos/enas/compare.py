"""``tf_rlnas compare-arcs`` (registered by :mod:`tf_rlnas.algos.enas.cli`): retrain the derived
architecture beside random ones and a plain conv stack with the same config, budget and seeds, in
parallel processes, and tabulate their test accuracies (with rank correlations to the search's
shared-weight scores when ``--score-with`` names the search run)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys

from tf_rlnas import registry
from tf_rlnas.clikit import (add_config_arguments, import_tf_quietly, int_list_or_none, load_run,
                             resolve_train_config)
from tf_rlnas.core import rundir
from tf_rlnas.errors import UserError


def _parse_seeds(text: str | None, default: int) -> list[int]:
    if text is None:
        return [default]
    seeds, what = int_list_or_none(text, distinct=True)
    if seeds is None:
        raise UserError(f"--seeds takes {what}, got {text!r}")
    return seeds


class Comparison:
    """The table of a compare-arcs run: test accuracy per architecture and retrain seed, the means,
    standard deviations, the random mean and best; rewritten to ``path`` after every finished retrain."""

    def __init__(self, path: str, candidates: list[tuple[str, str]], arcs: dict, seeds: list[int], header: dict):
        self.path, self.arcs, self.seeds, self.header = path, arcs, seeds, header
        self.results = {name: {"arc_file": arc, "per_seed": {}} for name, arc in candidates}
        self.table = self._stats()

    def _stats(self) -> dict:
        import numpy as np

        for r in self.results.values():
            r["per_seed"] = {str(s): r["per_seed"][str(s)] for s in self.seeds if str(s) in r["per_seed"]}
            accs = list(r["per_seed"].values())
            r["test_accuracy"] = float(np.mean(accs)) if accs else None  # mean over the finished seeds
            r["std"] = float(np.std(accs, ddof=1)) if len(accs) > 1 else None
        randoms = [r["test_accuracy"] for k, r in self.results.items()
                   if k.startswith("random-") and r["test_accuracy"] is not None]
        return {"config": self.header, "results": {k: r for k, r in self.results.items() if r["per_seed"]},
                "random_mean": float(np.mean(randoms)) if randoms else None,
                "random_best": float(np.max(randoms)) if randoms else None}

    def record(self, seed: int, name: str, summary: dict) -> None:
        """A finished retrain's figure into the table, written at once."""
        from tf_rlnas.algos.enas.controller import arc_to_dict

        self.results[name]["architecture"] = arc_to_dict(*self.arcs[name])
        self.results[name]["per_seed"][str(seed)] = summary["final_eval"]["fixed/test_accuracy"]
        self.table = self._stats()
        self.write()

    def write(self) -> None:
        from tf_rlnas.core.files import atomic_write_text
        atomic_write_text(self.path, json.dumps(self.table, indent=2))

    def print(self, derived_names: list[str], shared: dict | None, score_with: str | None) -> None:
        seeds, results, table = self.seeds, self.results, self.table
        print(f"\nfixed-mode retrain, same budget, seeds {','.join(map(str, seeds))} ({self.header['dataset']}, "
              f"{self.header['epochs']} epochs, {self.header['num_layers']} layers) -> {self.path}")
        w = max(12, *(len(k) for k in results))
        multi = len(seeds) > 1
        head = "".join(f"  seed {s:<3d}" for s in seeds) + ("      mean    std" if multi else "")
        print(f"  {'architecture':<{w}s}{head if multi else '  test accuracy'}"
              + ("  shared-weight valid" if shared else ""))
        for name, r in results.items():
            row = "".join(f"  {r['per_seed'][str(s)]:8.4f}" for s in seeds)
            print(f"  {name:<{w}s}{row}" + (f"  {r['test_accuracy']:8.4f} {r['std']:6.4f}" if multi else "")
                  + (f"  {shared['valid_accuracy'][name]:8.4f}" if shared else ""))
        if table["random_mean"] is not None:
            print(f"  random mean {table['random_mean']:.4f}, best random {table['random_best']:.4f}"
                  + (" (over the seed means)" if multi else ""))
            for name in derived_names:
                d = results[name]["test_accuracy"]
                print(f"  {name}: - random mean {d - table['random_mean']:+.4f}, - best random "
                      f"{d - table['random_best']:+.4f}, - conv stack {d - results['conv_stack']['test_accuracy']:+.4f}")
        if shared:
            f = lambda v: "n/a" if v is None else f"{v:+.3f}"  # noqa: E731
            print(f"  shared weights of {score_with} (epoch {shared['epoch']}, score_bn {shared['score_bn']}) "
                  f"vs retrained test accuracy over {shared['architectures']} architectures: Kendall tau "
                  f"{f(shared['kendall_tau'])}, Spearman rho {f(shared['spearman_rho'])} (1: the same order, 0: "
                  f"unrelated)")


def _candidates(args, cfg) -> tuple[dict, list, list, int]:
    """-> (arcs by name, [(name, arc spec)] in table order, the derived rows, depth); refusals first."""
    from tf_rlnas.algos.enas.controller import read_arc_file, special_arc

    derived = cfg.fixed.arc_file
    arcs = {"derived": read_arc_file(derived, "the derived architecture")}
    num_layers = len(arcs["derived"][0])
    derived_rows = [("derived", derived)]
    for spec in args.arc:
        name, sep, path = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.]+", name) or not path:
            raise UserError(f"--arc takes NAME=FILE (NAME of letters, digits, '_' or '.'), got {spec!r}")
        if name in ("derived", "conv_stack") or name.startswith("random-") or name in dict(derived_rows):
            raise UserError(f"--arc name {name!r} is taken: choose another")
        arcs[name] = read_arc_file(path, f"architecture {name!r}")
        n = len(arcs[name][0])
        if n != num_layers:
            raise UserError(f"--arc {name}: {path} has {n} layers, the derived architecture {num_layers}: "
                            "a comparison needs one network depth")
        derived_rows.append((name, path))
    candidates = derived_rows + [(f"random-{i}", f"random:{i}") for i in range(1, args.random + 1)]
    candidates.append(("conv_stack", "conv_stack"))
    arcs.update({name: special_arc(arc, num_layers) for name, arc in candidates[len(derived_rows):]})
    return arcs, candidates, [n for n, _ in derived_rows], num_layers


def cmd_compare_arcs(args) -> int:
    """ENAS: retrain the derived architecture (and any --arc NAME=FILE), N random ones from the same
    space and the plain conv stack with the SAME fixed-mode config (budget, data), once per retrain
    seed (--seeds, default the config's run.seed), one run directory each under RUN_DIR/compare/
    (NAME for the config's seed, NAME-seedS for the others), and tabulate their test accuracies:
    per seed, the mean and standard deviation over seeds, the random mean and the gaps
    (RUN_DIR/compare/comparison.json is rewritten after every finished retrain; re-running resumes
    the unfinished ones and reuses the finished, so seeds can be added later). --jobs N runs N
    retrains at a time, each in its own process."""
    import_tf_quietly()  # the controller module imports TensorFlow
    args.algo = "enas"
    algo, cfg, schema, run_dir, _ = resolve_train_config(args, check_run_dir=False)
    if cfg.mode != "fixed":
        raise UserError("compare-arcs retrains architectures: give a fixed-mode config "
                        "(e.g. --config fashion_mnist_fixed) whose fixed.arc_file is the derived architecture")
    if args.random < 0:
        raise UserError("--random must be >= 0")
    if args.jobs < 1:
        raise UserError("--jobs must be >= 1")
    seeds = _parse_seeds(args.seeds, cfg.run.seed)
    arcs, candidates, derived_names, num_layers = _candidates(args, cfg)
    if args.score_with is not None:
        _check_search_run(args.score_with, num_layers)
    elif args.score_bn is not None:
        raise UserError("--score-bn goes with --score-with SEARCH_RUN")
    child = dataclasses.replace(cfg.child, num_layers=num_layers)
    out_dir = os.path.join(run_dir, "compare")
    rundir.ensure_writable(out_dir)
    comparison = Comparison(os.path.join(out_dir, "comparison.json"), candidates, arcs, seeds,
                            {"epochs": cfg.child.epochs, "seeds": seeds, "dataset": cfg.data.dataset,
                             "num_layers": num_layers})
    pending = []
    for seed in seeds:  # seed-major: the first seed's complete table comes first
        for name, arc in candidates:
            c = dataclasses.replace(cfg, child=child, fixed=dataclasses.replace(cfg.fixed, arc_file=arc),
                                    run=dataclasses.replace(cfg.run, seed=seed))
            rd = os.path.join(out_dir, name if seed == cfg.run.seed else f"{name}-seed{seed}")
            rundir.check_run_dir(rd, algo, c, schema)  # a changed network or seed: one line, not a restore error
            summary = _finished_retrain(rd, c.child.epochs)
            if summary is not None:  # its figures, without rebuilding the data and network
                print(f"reusing {name}, seed {seed}: finished in {rd}", flush=True)
                comparison.record(seed, name, summary)
            else:
                pending.append((seed, name, arc, c, rd))
    if args.jobs == 1:
        for seed, name, arc, c, rd in pending:
            rundir.ensure_writable(rd)
            rundir.write_config(rd, algo, c)
            print(f"retraining {name} ({arc}), seed {seed}, in {rd}", flush=True)
            trainer = registry.get(algo).load("trainer")(c, rd)
            try:
                comparison.record(seed, name, trainer.fit(progress=False if args.no_progress else None))
            finally:
                trainer.close()
    else:
        _retrain_in_parallel(pending, args.jobs, algo, comparison.record)
    shared = None
    if args.score_with is not None:
        shared = comparison.table["shared_weights"] = _shared_weight_scores(args.score_with, comparison.table,
                                                                            args.score_bn)
        comparison.write()
    if args.json:
        print(json.dumps(comparison.table))
        return 0
    comparison.print(derived_names, shared, args.score_with)
    return 0


def _retrain_in_parallel(pending: list, jobs: int, algo: str, record) -> None:
    """compare-arcs --jobs N: the pending retrains (seed-major), N at a time, each a `tf_rlnas train
    --run-dir RD` subprocess resuming the config written to RD (its output in RD.log).
    Intra- and inter-op thread counts the config leaves at 0 (TensorFlow's default: every core, which
    N processes would oversubscribe) become cores // N. ``record(seed, name, summary)`` is called as
    each one finishes. A failed retrain does not stop the others; the first failure is then raised
    as one UserError line naming its log. Ctrl-C stops every child (each resumes on the next run)."""
    import dataclasses
    import subprocess
    import time

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // jobs)
    running: dict = {}  # Popen -> (seed, name, rd, log path, log file, start time, epochs)
    failed = []
    queue = list(pending)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                seed, name, arc, c, rd = queue.pop(0)
                run = c.run
                run = dataclasses.replace(run, intra_op_threads=run.intra_op_threads or threads,
                                          inter_op_threads=run.inter_op_threads or threads)
                c = dataclasses.replace(c, run=run)
                rundir.ensure_writable(rd)
                rundir.write_config(rd, algo, c)
                log = rd + ".log"
                f = open(log, "a")
                cmd = [sys.executable, "-m", "tf_rlnas", "train", "--run-dir", rd, "--no-progress"]
                try:
                    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                except OSError as e:
                    f.close()
                    raise UserError(f"cannot start a retrain process ({cmd[0]}): {e.strerror}") from None
                running[p] = (seed, name, rd, log, f, time.monotonic(), c.child.epochs)
                print(f"retraining {name} ({arc}), seed {seed}, in {rd} ({run.intra_op_threads} threads; "
                      f"log {log})", flush=True)
            time.sleep(0.5)
            for p in [p for p in running if p.poll() is not None]:
                seed, name, rd, log, f, t0, epochs = running.pop(p)
                f.close()
                summary = _finished_retrain(rd, epochs)
                if p.returncode != 0 or summary is None:
                    last = _last_line(log)
                    failed.append(f"retrain {name} seed {seed} failed (exit {p.returncode}): {last} - see {log}")
                    print(f"FAILED {name}, seed {seed} (exit {p.returncode}); log {log}", flush=True)
                    continue
                record(seed, name, summary)
                print(f"finished {name}, seed {seed}: test accuracy "
                      f"{summary['final_eval']['fixed/test_accuracy']:.4f} in {(time.monotonic() - t0) / 60:.1f} min",
                      flush=True)
    except BaseException:
        for p in running:
            p.terminate()
        for p in running:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    if failed:
        raise UserError(failed[0] + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        return lines[-1] if lines else "no output"
    except OSError:
        return "no log"


def _finished_retrain(run_dir: str, epochs: int) -> dict | None:
    """The summary of a retrain that finished ``epochs`` (the trainer writes summary.json only at the
    end of a completed run; a resume killed on the way leaves the older, shorter one), else None."""
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        done = int(summary["iterations"]) >= epochs and rundir.has_checkpoint(run_dir)
        return summary if done and "fixed/test_accuracy" in summary["final_eval"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: (re)train or resume it


def _check_search_run(run_dir: str, num_layers: int) -> None:
    """--score-with must name a finished-or-running ENAS search with the comparison's depth."""
    saved = rundir.saved_config(run_dir) if os.path.isdir(run_dir) else None
    if saved is None:
        raise UserError(f"--score-with {run_dir}: not a tf_rlnas run directory")
    algo, data = saved
    if algo != "enas" or data.get("mode", "search") != "search":
        raise UserError(f"--score-with {run_dir}: needs an ENAS search run (mode: search), got {algo} "
                        f"mode {data.get('mode')}")
    depth = (data.get("child") or {}).get("num_layers")
    if depth != num_layers:
        raise UserError(f"--score-with {run_dir}: its network has {depth} layers, the compared "
                        f"architectures {num_layers}")
    if not rundir.has_checkpoint(run_dir):
        raise UserError(f"--score-with {run_dir} has no checkpoint yet (train it first)")


def _shared_weight_scores(run_dir: str, table: dict, score_bn: str | None = None) -> dict:
    """Each compared architecture's validation accuracy with the search run's latest shared weights
    (scored as that search scores its samples: its score_bn, unless ``score_bn``), and the rank
    agreement (Kendall tau, Spearman rho) with the retrained test accuracies: does the reward the
    controller learns from order architectures as retraining them does?"""
    import dataclasses
    import warnings

    import numpy as np
    from scipy import stats

    from tf_rlnas.algos.enas.controller import arc_from_dict

    def rescore(cfg):  # score as another search would: the weights are the run's either way
        return dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, score_bn=score_bn))
    _, scfg, st = load_run(run_dir, rescore if score_bn is not None else None)
    st.close()  # scoring needs the models and data only
    names = list(table["results"])
    scores = {n: st.evaluate_arc(st.splits.valid(), *arc_from_dict(table["results"][n]["architecture"]))
              for n in names}
    a = [scores[n] for n in names]
    r = [table["results"][n]["test_accuracy"] for n in names]

    def finite(v):
        return float(v) if np.isfinite(v) else None  # constant input: undefined
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input (the result is nan: reported as None)
        tau, rho = stats.kendalltau(a, r).statistic, stats.spearmanr(a, r).statistic
    return {"run": run_dir, "epoch": int(st.iteration.numpy()), "score_bn": scfg.search.score_bn,
            "valid_accuracy": scores, "architectures": len(names),
            "kendall_tau": finite(tau) if len(names) > 1 else None,
            "spearman_rho": finite(rho) if len(names) > 1 else None}


def add_arguments(ca: argparse.ArgumentParser) -> None:
    add_config_arguments(ca, "a fixed-mode ENAS config")
    ca.add_argument("--run-dir", default=None, metavar="DIR", help="default: run.root/run.name of the config")
    ca.add_argument("--random", type=int, default=3, metavar="N",
                    help="random architectures random:1..N (default 3)")
    ca.add_argument("--arc", action="append", default=[], metavar="NAME=FILE",
                    help="another architecture.json to retrain beside the derived one (e.g. another search "
                         "seed's; repeatable)")
    ca.add_argument("--seeds", default=None, metavar="S,S,...",
                    help="retrain seeds (default: the config's run.seed); the table gives each seed, the mean "
                         "and std: the retrain's seed noise is often the size of the gaps being measured")
    ca.add_argument("--score-with", default=None, metavar="SEARCH_RUN",
                    help="also score every compared architecture with this ENAS search run's shared weights "
                         "(validation accuracy, as the controller's reward sees it) and report the rank "
                         "agreement with the retrained accuracies (Kendall tau, Spearman rho)")
    ca.add_argument("--score-bn", default=None, choices=["moving", "batch"],
                    help="with --score-with: score with this BN mode instead of the search's search.score_bn "
                         "(moving statistics shared by every architecture, or each batch's own)")
    ca.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="retrain N architectures at a time, each in its own process with cores/N threads "
                         "(where the config leaves run.intra_op_threads / inter_op_threads at 0) and its output in "
                         "compare/RUN.log. Thread counts can change "
                         "the last digits of a retrain, so compare figures made with one --jobs")
    ca.add_argument("--json", action="store_true", help="print the table as JSON")
    ca.add_argument("--no-progress", action="store_true")
