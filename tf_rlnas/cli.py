"""``tf_rlnas`` command line: train | evaluate | export | list | bench | compare-arcs.

``main(argv)`` returns the exit code (tests call it directly). A user mistake prints one line
``error: ...`` on stderr and returns 2 before anything is written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from tf_rlnas import __version__, registry
from tf_rlnas import config as C
from tf_rlnas.core import rundir
from tf_rlnas.core.distribute import worker_role
from tf_rlnas.errors import UserError
from tf_rlnas.nn import precision

EPILOG = """examples:
  tf_rlnas train reinforce                                   # the one-shot game, built-in defaults
  tf_rlnas train --config configs/reinforce/inverted_pendulum.yaml
  tf_rlnas train reinforce --config oneshot --set train.updates=500 --run-dir runs/quick
  tf_rlnas train --run-dir runs/quick --set train.updates=1000   # resume and extend
  tf_rlnas evaluate runs/quick --episodes 20
  tf_rlnas evaluate runs/reinforce_inverted_pendulum --video      # -> RUN_DIR/videos/*.mp4
  tf_rlnas export runs/quick                                  # -> savedmodels/quick/<version>/
"""


def _import_tf_quietly() -> None:
    """Import TensorFlow with its C++ logging hidden (TF_RLNAS_TF_LOGS=1 shows everything).

    Level 3 also hides TF's C++ ERROR-level lines, such as oneDNN's "supports DT_INT32 only on
    platforms with AVX-512 ... falling back to Eigen" printed in the middle of a run: they are
    notices, and a real failure still reaches us as a Python exception. A TF_CPP_MIN_LOG_LEVEL set
    by the user wins."""
    if "tensorflow" in sys.modules:
        return
    if os.environ.get("TF_RLNAS_TF_LOGS"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        import tensorflow as tf
        import tensorflow_probability  # noqa: F401

        tf.config.list_physical_devices()  # device start-up (and its CUDA probing) happens here
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


# ---- config resolution ----------------------------------------------------------------------

def _config_path(name: str, algo: str | None) -> str:
    """A --config value: a path, or the name of a shipped config of ``algo`` (e.g. 'smoke')."""
    if os.path.exists(name) or os.sep in name or name.endswith((".yaml", ".yml")):
        return name
    if algo:
        shipped = registry.shipped_configs(algo)
        if name in shipped:
            return shipped[name]
        raise UserError(f"config file not found: {name} (shipped {algo} configs: "
                        f"{', '.join(shipped) or 'none'})")
    return name


def _resolve_train_config(args, check_run_dir: bool = True) -> tuple[str, object, type, str, bool]:
    """-> (algo, cfg, schema, run_dir, resumes); ``check_run_dir`` False: run_dir is only a parent
    folder (compare-arcs), not a run to resume."""
    algo = args.algo
    if algo:
        registry.get(algo)
    files: list[str] = []
    for name in args.config:
        path = _config_path(name, algo)
        file_algo = C.read_yaml(path).get("algo")
        if file_algo is not None:
            if not isinstance(file_algo, str):
                raise UserError(f"{path}: 'algo' must be a name, got {file_algo!r}")
            registry.get(file_algo)
            if algo and file_algo != algo:
                raise UserError(f"{path} is a '{file_algo}' config but the algorithm is '{algo}'")
            algo = file_algo
        files.append(path)
    saved = (rundir.saved_config(args.run_dir) if check_run_dir and args.run_dir and os.path.isdir(args.run_dir)
             else None)
    if algo is None and saved is not None:
        algo = saved[0]
        registry.get(algo)
    if algo is None:
        raise UserError("name an algorithm (tf_rlnas train ALGO), a --config with an 'algo' key, "
                        "or an existing --run-dir to resume; see 'tf_rlnas list'")
    schema = registry.get(algo).load("config")
    cfg = C.resolve(schema, files, args.set)
    run_dir = args.run_dir or os.path.join(cfg.run.root, cfg.run.name or algo)
    if not check_run_dir:
        return algo, cfg, schema, run_dir, False
    if args.run_dir is None and os.path.isdir(run_dir):
        saved = rundir.saved_config(run_dir)
    if saved is not None and saved[0] == algo:
        cfg = C.resolve(schema, files, args.set, base=saved[1])  # resume: the saved run is the base
    dist = getattr(cfg, "distribute", None)
    chief = worker_role(dist.strategy)[0] if dist is not None else True
    if not chief:  # the chief writes the run directory, maybe right now: read only what is complete
        return algo, cfg, schema, run_dir, rundir.has_checkpoint(run_dir)
    resumes = rundir.check_run_dir(run_dir, algo, cfg, schema)
    return algo, cfg, schema, run_dir, resumes


def _load_run(run_dir: str, adjust=None, number: int | None = None, for_evaluate: bool = False):
    """(algo, cfg, trainer) for an existing run directory, restored from its latest checkpoint or the one
    of iteration ``number`` (``adjust(cfg) -> cfg``: a change that leaves the checkpoint's content alone,
    e.g. how it is scored; ``for_evaluate``: refuse a run with nothing to evaluate, before building)."""
    if not os.path.isdir(run_dir):
        raise UserError(f"run directory not found: {run_dir}")
    saved = rundir.saved_config(run_dir)
    if saved is None:
        raise UserError(f"{run_dir} holds no config.yaml: not a tf_rlnas run directory")
    algo, data = saved
    spec = registry.get(algo)
    cfg = C.from_dict(spec.load("config"), data)
    if adjust is not None:
        cfg = adjust(cfg)
    if not rundir.has_checkpoint(run_dir):
        raise UserError(f"{run_dir} has no checkpoint yet (train it first)")
    _import_tf_quietly()
    reason = spec.load("trainer").cannot_evaluate(cfg) if for_evaluate else None
    if reason:
        raise UserError(reason)
    trainer = spec.load("trainer")(cfg, run_dir)
    trainer.restore(number)
    return algo, cfg, trainer


# ---- commands -------------------------------------------------------------------------------

def _prepare_math_mode(cfg) -> None:
    """Before TensorFlow loads: oneDNN's bf16 math mode for runs whose config computes matmuls that
    way (SAC / ACE in bfloat16; :mod:`tf_rlnas.nn.precision`). Other runs keep exact float32."""
    if precision.wants_bf16_fpmath(cfg):
        precision.request_bf16_fpmath()
    elif os.environ.get(precision.FPMATH_ENV, "").upper() == "BF16":
        print(f"note: {precision.FPMATH_ENV}=BF16 is set in the environment: this run's float32 BatchMatMuls "
              f"(einsums) compute in bfloat16; unset it for exact float32", file=sys.stderr)


def cmd_train(args) -> int:
    algo, cfg, _, run_dir, resumes = _resolve_train_config(args)
    before = set(os.listdir(run_dir)) if os.path.isdir(run_dir) else None
    rundir.ensure_writable(run_dir)
    _prepare_math_mode(cfg)
    _import_tf_quietly()
    trainer = None
    try:
        trainer = registry.get(algo).load("trainer")(cfg, run_dir)   # may raise UserError: nothing written yet
        if trainer.is_chief:
            rundir.write_config(run_dir, algo, cfg)
        if not resumes:
            role = "" if trainer.is_chief else f" (worker {trainer.task_name}: the chief writes the run directory)"
            print(f"training {algo} in {run_dir}{role}", flush=True)
        progress = False if args.no_progress else None
        summary = trainer.fit(progress=progress)
    except UserError:
        # a refusal before the first checkpoint of a new run leaves the folder as it was, so the
        # corrected command is not refused as "a different config"
        if not resumes and (trainer is None or trainer.is_chief) and not rundir.has_checkpoint(run_dir):
            rundir.remove_new_entries(run_dir, before)
        raise
    finally:
        if trainer is not None:
            trainer.close()
    print(f"done: {trainer.progress_position()} {trainer.unit}s in {run_dir}", flush=True)
    for k, v in summary["final_eval"].items():
        print(f"  {k}: {v:.6g}")
    return 0


def _int_list_or_none(text: str, distinct: bool = False) -> tuple[list[int] | None, str]:
    """(comma-separated non-negative integers, or None if the text is not such a list; what was expected)."""
    what = f"comma-separated {'distinct ' if distinct else ''}non-negative integers (e.g. 0,1,2)"
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        return None, what
    ok = values and min(values) >= 0 and not (distinct and len(set(values)) != len(values))
    return (values if ok else None), what


def _parse_seeds(text: str | None, default: int) -> list[int]:
    if text is None:
        return [default]
    seeds, what = _int_list_or_none(text, distinct=True)
    if seeds is None:
        raise UserError(f"--seeds takes {what}, got {text!r}")
    return seeds


def cmd_compare_arcs(args) -> int:
    """ENAS: retrain the derived architecture (and any --arc NAME=FILE), N random ones from the same
    space and the plain conv stack with the SAME fixed-mode config (budget, data), once per retrain
    seed (--seeds, default the config's run.seed), one run directory each under RUN_DIR/compare/
    (NAME for the config's seed, NAME-seedS for the others), and tabulate their test accuracies:
    per seed, the mean and standard deviation over seeds, the random mean and the gaps
    (RUN_DIR/compare/comparison.json is rewritten after every finished retrain; re-running resumes
    the unfinished ones and reuses the finished, so seeds can be added later). --jobs N runs N
    retrains at a time, each in its own process."""
    import dataclasses
    import re

    import numpy as np

    _import_tf_quietly()  # the controller module imports TensorFlow
    from tf_rlnas.algos.enas.controller import arc_to_dict, read_arc_file, special_arc
    from tf_rlnas.core.checkpoint import atomic_write_text

    args.algo = "enas"
    algo, cfg, schema, run_dir, _ = _resolve_train_config(args, check_run_dir=False)
    if cfg.mode != "fixed":
        raise UserError("compare-arcs retrains architectures: give a fixed-mode config "
                        "(e.g. --config fashion_mnist_fixed) whose fixed.arc_file is the derived architecture")
    if args.random < 0:
        raise UserError("--random must be >= 0")
    if args.jobs < 1:
        raise UserError("--jobs must be >= 1")
    seeds = _parse_seeds(args.seeds, cfg.run.seed)
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
    if args.score_with is not None:
        _check_search_run(args.score_with, num_layers)
    elif args.score_bn is not None:
        raise UserError("--score-bn goes with --score-with SEARCH_RUN")
    child = dataclasses.replace(cfg.child, num_layers=num_layers)
    candidates = derived_rows + [(f"random-{i}", f"random:{i}") for i in range(1, args.random + 1)]
    candidates.append(("conv_stack", "conv_stack"))
    arcs.update({name: special_arc(arc, num_layers) for name, arc in candidates[len(derived_rows):]})
    out_dir = os.path.join(run_dir, "compare")
    rundir.ensure_writable(out_dir)
    table_path = os.path.join(out_dir, "comparison.json")
    results = {name: {"arc_file": arc, "per_seed": {}} for name, arc in candidates}

    def stats():
        for r in results.values():
            r["per_seed"] = {str(s): r["per_seed"][str(s)] for s in seeds if str(s) in r["per_seed"]}  # seed order
            accs = list(r["per_seed"].values())
            r["test_accuracy"] = float(np.mean(accs)) if accs else None  # mean over the finished seeds
            r["std"] = float(np.std(accs, ddof=1)) if len(accs) > 1 else None
        randoms = [r["test_accuracy"] for k, r in results.items()
                   if k.startswith("random-") and r["test_accuracy"] is not None]
        table = {"config": {"epochs": cfg.child.epochs, "seeds": seeds, "dataset": cfg.data.dataset,
                            "num_layers": num_layers},
                 "results": {k: r for k, r in results.items() if r["per_seed"]},
                 "random_mean": float(np.mean(randoms)) if randoms else None,
                 "random_best": float(np.max(randoms)) if randoms else None}
        return table

    def record(seed, name, summary):  # a finished retrain's figure into the table, rewritten at once
        nonlocal table
        results[name]["architecture"] = arc_to_dict(*arcs[name])
        results[name]["per_seed"][str(seed)] = summary["final_eval"]["fixed/test_accuracy"]
        table = stats()
        atomic_write_text(table_path, json.dumps(table, indent=2))

    table = stats()  # what --json prints when nothing has finished
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
                record(seed, name, summary)
            else:
                pending.append((seed, name, arc, c, rd))

    if args.jobs == 1:
        for seed, name, arc, c, rd in pending:
            rundir.ensure_writable(rd)
            rundir.write_config(rd, algo, c)
            print(f"retraining {name} ({arc}), seed {seed}, in {rd}", flush=True)
            trainer = registry.get(algo).load("trainer")(c, rd)
            record(seed, name, trainer.fit(progress=False if args.no_progress else None))
    else:
        _retrain_in_parallel(pending, args.jobs, algo, record)
    shared = None
    if args.score_with is not None:
        shared = table["shared_weights"] = _shared_weight_scores(args.score_with, table, args.score_bn)
        atomic_write_text(table_path, json.dumps(table, indent=2))
    if args.json:
        print(json.dumps(table))
        return 0
    print(f"\nfixed-mode retrain, same budget, seeds {','.join(map(str, seeds))} ({cfg.data.dataset}, "
          f"{cfg.child.epochs} epochs, {num_layers} layers) -> {table_path}")
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
        for name, _ in derived_rows:
            d = results[name]["test_accuracy"]
            print(f"  {name}: - random mean {d - table['random_mean']:+.4f}, - best random "
                  f"{d - table['random_best']:+.4f}, - conv stack {d - results['conv_stack']['test_accuracy']:+.4f}")
    if shared:
        f = lambda v: "n/a" if v is None else f"{v:+.3f}"  # noqa: E731
        print(f"  shared weights of {args.score_with} (epoch {shared['epoch']}, score_bn {shared['score_bn']}) "
              f"vs retrained test accuracy over {shared['architectures']} architectures: Kendall tau "
              f"{f(shared['kendall_tau'])}, Spearman rho {f(shared['spearman_rho'])} (1: the same order, 0: "
              f"unrelated)")
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
    _, scfg, st = _load_run(run_dir, rescore if score_bn is not None else None)
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


def _record_videos(args) -> int:
    from tf_rlnas.core.seeding import derive_seeds
    from tf_rlnas.envs.video import record_episodes

    out_dir = args.video or os.path.join(args.run_dir, "videos")
    _, cfg, trainer = _load_run(args.run_dir)
    src = trainer.video_source()
    step = int(trainer.iteration.numpy())
    seeds = derive_seeds(cfg.run.seed, args.episodes or 1, salt=77)
    videos = record_episodes(src.env_id, src.max_episode_steps, src.kwargs, src.policy, src.low, src.high, seeds,
                             out_dir, prefix=f"{trainer.unit.replace(' ', '_')}{step}")
    if args.json:
        print(json.dumps({"videos": videos}))
    else:
        for v in videos:
            print(f"{v['path']}: {v['frames']} frames {v['width']}x{v['height']} at {v['fps']} fps, "
                  f"return {v['return']:.6g}")
    return 0


def cmd_evaluate(args) -> int:
    if args.video is not None:
        if args.tasks is not None or args.task_seed is not None:
            raise UserError("--tasks / --task-seed evaluate adaptation; they do not apply with --video")
        return _record_videos(args)
    if (args.tasks is not None or args.task_seed is not None) and _saved_algo(args.run_dir) not in (None, "maml_trpo"):
        raise UserError("--tasks / --task-seed apply to maml_trpo runs only")
    if args.tasks is not None and args.tasks < 1:
        raise UserError("--tasks must be >= 1")
    _, _, trainer = _load_run(args.run_dir, for_evaluate=True)
    extra = {k: v for k, v in (("tasks", args.tasks), ("task_seed", args.task_seed)) if v is not None}
    metrics = trainer.evaluate(args.episodes, **extra)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{args.run_dir} at {trainer.unit} {int(trainer.iteration.numpy())}:")
        table = getattr(trainer, "format_eval", None)
        if table is not None:
            print(table(metrics))
        else:
            for k, v in metrics.items():
                print(f"  {k}: {v:.6g}")
    return 0


def cmd_derive(args) -> int:
    """ENAS: derive the architecture a search's checkpoint of epoch E stands for, exactly as the search
    derives at its end (same sampling seed and validation batches), and write it to
    RUN_DIR/derived/epoch-E.json. With child.lr_t0 set (the shipped search configs) the shared weights'
    schedule does not depend on child.epochs, so it is the architecture.json a search of E epochs would
    write: which search budget is enough? -> retrain derived/epoch-*.json with compare-arcs --arc.
    Needs that epoch's checkpoint (keep them with --set run.keep_checkpoints=N, or derive during the
    search with --set search.derive_every=1)."""
    if args.epoch is not None and args.epoch < 1:
        raise UserError("--epoch must be >= 1")
    saved = rundir.saved_config(args.run_dir) if os.path.isdir(args.run_dir) else None
    if saved is not None and saved[0] != "enas":  # checked before the data and network are built
        raise UserError(f"derive applies to ENAS search runs; {args.run_dir} is a {saved[0]} run")
    if saved is not None and saved[1].get("mode") == "fixed":
        raise UserError(f"{args.run_dir} is a fixed-mode retrain: derive needs a search run (mode: search)")
    _, cfg, trainer = _load_run(args.run_dir, number=args.epoch)
    rundir.ensure_writable(os.path.join(args.run_dir, "derived"))  # a read-only run: one line, before the work
    if cfg.child.lr_t0 is None:
        print("note: child.lr_t0 is null (one cosine cycle over child.epochs): this is the architecture at this "
              "epoch of this run, not what a shorter search (whose cycle is shorter) would derive", file=sys.stderr)
    result = trainer.derive()
    path = trainer.write_derived(result, announce=not args.json)
    if args.json:
        print(json.dumps({**result, "path": path}))
    return 0


def _saved_algo(run_dir: str) -> str | None:
    saved = rundir.saved_config(run_dir) if os.path.isdir(run_dir) else None
    return saved[0] if saved else None


def cmd_export(args) -> int:
    from tf_rlnas.core import export

    _, _, trainer = _load_run(args.run_dir)
    spec = trainer.export_spec()
    name = os.path.basename(os.path.normpath(args.run_dir))
    path = export.publish(spec.module, spec.signatures, args.out, name, spec.examples, spec.expected)
    print(f"exported {path} (signatures: {', '.join(spec.signatures)}; reload verified)")
    return 0


def cmd_list(args) -> int:
    algos = [registry.get(args.algo)] if args.algo else list(registry.ALGOS.values())
    for spec in algos:
        print(f"{spec.name}: {spec.summary}")
        for name, path in registry.shipped_configs(spec.name).items():
            print(f"    --config {name:<22} {os.path.relpath(path)}")
        if args.keys:
            for key, tp, default, help_ in C.describe(spec.load("config")):
                print(f"    {key} ({tp}) = {default!r}  {help_}")
    return 0


def cmd_bench(args) -> int:
    spec = registry.get(args.algo)
    if spec.bench is None:
        raise UserError(f"no benchmark for '{args.algo}'")
    files = [_config_path(n, args.algo) for n in args.config]
    cfg = C.resolve(spec.load("config"), files, args.set)
    _prepare_math_mode(cfg)
    _import_tf_quietly()
    extra = {}
    if args.compare:
        if args.algo not in ("sac", "ace"):
            raise UserError("--compare is only for 'sac' and 'ace' (peers: sb3, sbx)")
        extra = {"compare": tuple(args.compare), "peer_python": args.peer_python}
    task = {k: v for k, v in (("updates", args.updates), ("trials", args.trials), ("signal", args.signal),
                              ("noise", args.noise), ("skip_share", args.skip_share),
                              ("reward_corr", args.reward_corr)) if v is not None}
    if args.controller_task:
        if args.algo != "enas":
            raise UserError("--controller-task is only for 'enas'")
        from tf_rlnas.algos.enas import controller_task
        controller_task.run(cfg, **task)
        return 0
    if task:
        raise UserError(f"--{next(iter(task)).replace('_', '-')} goes with --controller-task")
    spec.load("bench")(cfg, seconds=args.seconds, **extra)
    return 0


# ---- parser ---------------------------------------------------------------------------------

def _number_type(cast, ok, what: str):
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'")
        return value
    return parse


_positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
_positive_float = _number_type(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_nonnegative_float = _number_type(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
_fraction = _number_type(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def _int_list(text: str) -> tuple[int, ...]:
    values, what = _int_list_or_none(text)
    if values is None:
        raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'")
    return tuple(values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tf_rlnas", description="TF2/Keras reinforcement learning and RL-driven "
                                "architecture search: train, evaluate, export, benchmark.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"tf_rlnas {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train an algorithm (resumes if the run directory has a checkpoint)",
                       description="Train ALGO with its defaults, config files and overrides. Re-running "
                       "with the same run directory resumes from its latest checkpoint; budgets and "
                       "logging intervals may be changed on resume.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("algo", nargs="?", help="algorithm name (see 'tf_rlnas list'); optional with an "
                   "'algo' key in a --config or an existing --run-dir")
    t.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="YAML config; repeat to overlay (later wins). A bare name means a shipped config "
                   "of the algorithm, e.g. --config smoke")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, typed by the schema, e.g. --set train.lr=3e-4")
    t.add_argument("--run-dir", default=None, metavar="DIR", help="run directory (default: run.root/run.name)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate the latest checkpoint of a run")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--episodes", type=int, default=None, help="evaluation episodes (default: the config's)")
    e.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    e.add_argument("--tasks", type=int, default=None, metavar="N",
                   help="maml_trpo: held-out tasks to adapt to (default: the config's train.eval_tasks)")
    e.add_argument("--task-seed", type=int, default=None, metavar="S",
                   help="maml_trpo: draw the held-out tasks with this seed instead of the run's own stream, "
                        "to compare runs of different seeds on the same tasks (saved as "
                        "eval-<iteration>-tasks<N>-taskseed<S>.npz)")
    e.add_argument("--video", nargs="?", const="", default=None, metavar="DIR",
                   help="render deterministic episodes (--episodes, default 1) to MP4 files in DIR "
                   "(default RUN_DIR/videos) instead of evaluating")
    e.set_defaults(fn=cmd_evaluate)

    x = sub.add_parser("export", help="export a run's latest checkpoint as a versioned SavedModel")
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument("--out", default="savedmodels", metavar="DIR",
                   help="export root; writes DIR/<run name>/<next integer version>/ (default: savedmodels)")
    x.set_defaults(fn=cmd_export)

    d = sub.add_parser("derive", help="ENAS: the architecture a search's checkpoint of epoch E derives "
                                      "(= a search of E epochs), to RUN_DIR/derived/epoch-E.json",
                       description=cmd_derive.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  tf_rlnas train enas --config fashion_mnist   # keeps every epoch's checkpoint\n"
                              "  tf_rlnas derive runs/enas_fashion_mnist --epoch 5")
    d.add_argument("run_dir", metavar="RUN_DIR")
    d.add_argument("--epoch", type=int, default=None, metavar="E",
                   help="the checkpoint of this epoch (default: the latest)")
    d.add_argument("--json", action="store_true", help="print the result (and its path) as one JSON object")
    d.set_defaults(fn=cmd_derive)

    ls = sub.add_parser("list", help="list algorithms and shipped configs")
    ls.add_argument("algo", nargs="?", help="only this algorithm")
    ls.add_argument("--keys", action="store_true", help="also list every config key with its default")
    ls.set_defaults(fn=cmd_list)

    ca = sub.add_parser("compare-arcs", help="ENAS: retrain the derived architecture beside random ones and a "
                                             "plain conv stack (same budget and seed) and tabulate test accuracy",
                        description=cmd_compare_arcs.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  tf_rlnas compare-arcs --config fashion_mnist_fixed --random 3 --seeds 0,1,2")
    ca.add_argument("--config", action="append", default=[], metavar="FILE", help="a fixed-mode ENAS config")
    ca.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
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
    ca.set_defaults(fn=cmd_compare_arcs)

    b = sub.add_parser("bench", help="benchmark an algorithm's update and training throughput")
    b.add_argument("algo", metavar="ALGO")
    b.add_argument("--config", action="append", default=[], metavar="FILE")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--seconds", type=float, default=5.0, help="time per measurement (default 5)")
    b.add_argument("--compare", action="append", default=[], choices=["sb3", "sbx"],
                   help="sac/ace: also measure Stable-Baselines3 / SBX at the same sizes in a subprocess "
                        "(never a dependency: install it in a separate venv, see --peer-python)")
    b.add_argument("--peer-python", default=None, metavar="PYTHON",
                   help="the Python that has the peer installed (default: this one)")
    b.add_argument("--controller-task", action="store_true",
                   help="enas: instead of throughput, how far the config's controller learns in --updates "
                        "REINFORCE steps on a synthetic additive reward with a known optimum (minutes per knob, not a search)")
    b.add_argument("--updates", type=_int_list, default=None, metavar="N,N,...",
                   help="--controller-task: measure after these numbers of controller updates "
                        "(default 0,200,500,1000; a 10-epoch search with 20 steps an epoch makes 200)")
    b.add_argument("--trials", type=_positive_int, default=None, metavar="K",
                   help="--controller-task: landscapes (and fresh controllers) to average over (default 3)")
    b.add_argument("--signal", type=_positive_float, default=None,
                   help="--controller-task: sd of the true score over uniform architectures (default 0.05)")
    b.add_argument("--noise", type=_nonnegative_float, default=None,
                   help="--controller-task: sd of the noise of one reward (default 0.03: one 256-image batch)")
    b.add_argument("--skip-share", type=_fraction, default=None,
                   help="--controller-task: share of the true score's variance from the skips (default 0.3)")
    b.add_argument("--reward-corr", type=_fraction, default=None, metavar="R",
                   help="--controller-task: correlation of the reward with the true score (default 1; "
                        "shared-weight rewards misrank: R < 1 mixes in an independent landscape)")
    b.set_defaults(fn=cmd_bench)
    return p


def _positive_episodes(args) -> None:
    if getattr(args, "episodes", None) is not None and args.episodes < 1:
        raise UserError("--episodes must be >= 1")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage + one error line
        return int(e.code or 0)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        _positive_episodes(args)
        return args.fn(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume from the latest checkpoint",
              file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
