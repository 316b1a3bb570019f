"""``tf_rlnas`` command line: the generic verbs train | evaluate | export | list | bench, and the
commands the algorithms register (``tf_rlnas.clikit.Extensions``: ENAS's compare-arcs and derive,
MAML's evaluate options, SAC's bench options). This module names no algorithm.

``main(argv)`` returns the exit code (tests call it directly). A user mistake prints one line
``error: ...`` on stderr and returns 2 before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tf_rlnas import __version__, registry
from tf_rlnas import config as C
from tf_rlnas.clikit import (add_config_arguments, config_path, import_tf_quietly, load_extensions, load_run,
                             prepare_process, resolve_train_config, saved_algo)
from tf_rlnas.core import rundir
from tf_rlnas.errors import UserError
from tf_rlnas.nn.precision import cpu_line

EPILOG = """examples:
  tf_rlnas train reinforce                                   # the one-shot game, built-in defaults
  tf_rlnas train --config configs/reinforce/inverted_pendulum.yaml
  tf_rlnas train reinforce --config oneshot --set train.updates=500 --run-dir runs/quick
  tf_rlnas train --run-dir runs/quick --set train.updates=1000   # resume and extend
  tf_rlnas evaluate runs/quick --episodes 20
  tf_rlnas evaluate runs/reinforce_inverted_pendulum --video      # -> RUN_DIR/videos/*.mp4
  tf_rlnas export runs/quick                                  # -> savedmodels/quick/<version>/
"""

# ---- commands -------------------------------------------------------------------------------

def cmd_train(args) -> int:
    algo, cfg, _, run_dir, resumes = resolve_train_config(args)
    before = set(os.listdir(run_dir)) if os.path.isdir(run_dir) else None
    rundir.ensure_writable(run_dir)
    prepare_process(algo, cfg)
    import_tf_quietly()
    trainer = None
    try:
        trainer = registry.get(algo).load("trainer")(cfg, run_dir)   # may raise UserError: nothing written yet
        if trainer.is_chief:
            rundir.write_config(run_dir, algo, cfg)
        if not resumes:
            role = "" if trainer.is_chief else f" (worker {trainer.task_name}: the chief writes the run directory)"
            print(f"training {algo} in {run_dir}{role}", flush=True)
        summary = trainer.fit(progress=False if args.no_progress else None)
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


def _record_videos(args) -> int:
    from tf_rlnas.core.seeding import derive_seeds
    from tf_rlnas.envs.video import VIDEO_SEED_SALT, record_episodes

    out_dir = args.video or os.path.join(args.run_dir, "videos")
    _, cfg, trainer = load_run(args.run_dir)
    try:
        src = trainer.video_source()
        step = int(trainer.iteration.numpy())
        seeds = derive_seeds(cfg.run.seed, args.episodes or 1, salt=VIDEO_SEED_SALT)
        videos = record_episodes(src.env_id, src.max_episode_steps, src.kwargs, src.policy, src.low, src.high,
                                 seeds, out_dir, prefix=f"{trainer.unit.replace(' ', '_')}{step}")
    finally:
        trainer.close()
    if args.json:
        print(json.dumps({"videos": videos}))
    else:
        for v in videos:
            print(f"{v['path']}: {v['frames']} frames {v['width']}x{v['height']} at {v['fps']} fps, "
                  f"return {v['return']:.6g}")
    return 0


def cmd_evaluate(args, ext) -> int:
    algo = saved_algo(args.run_dir)
    for name, opts in ext.evaluate.items():  # an algorithm's options apply to its runs only
        given = [a for a in _dests(opts) if getattr(args, a) is not None]
        if not given:
            continue
        flags = " / ".join("--" + a.replace("_", "-") for a in _dests(opts))
        if args.video is not None:
            raise UserError(f"{flags} evaluate {name} runs; they do not apply with --video")
        if algo not in (None, name):
            raise UserError(f"{flags} apply to {name} runs only")
        if opts.check is not None:
            opts.check(args)
    if args.video is not None:
        return _record_videos(args)
    _, _, trainer = load_run(args.run_dir, for_evaluate=True)
    try:
        opts = ext.evaluate.get(algo)
        metrics = trainer.evaluate(args.episodes, **(opts.kwargs(args) if opts else {}))
        if args.json:
            print(json.dumps(metrics))
        else:
            print(f"{args.run_dir} at {trainer.unit} {int(trainer.iteration.numpy())}:")
            print(trainer.format_eval(metrics))
    finally:
        trainer.close()
    return 0


def _dests(opts) -> list[str]:
    probe = argparse.ArgumentParser(add_help=False)
    opts.add_arguments(probe)
    return [a.dest for a in probe._actions]


def cmd_export(args) -> int:
    from tf_rlnas.core import export

    formats = tuple(dict.fromkeys(["savedmodel"] + [f for x in args.format for f in x.split(",") if f]))
    from tf_rlnas.core import convert
    convert.check_available(formats)  # before the run loads
    _, _, trainer = load_run(args.run_dir)
    try:
        spec = trainer.export_spec()
        name = os.path.basename(os.path.normpath(args.run_dir))
        path, converted = export.publish(spec.module, spec.signatures, args.out, name, spec.examples,
                                         spec.expected, formats=formats,
                                         note=lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        trainer.close()
    print(f"exported {path} (signatures: {', '.join(spec.signatures)}; reload verified)")
    for fname, info in converted.items():
        print(f"  {fname}: {', '.join(info['signatures'])}; {info['bytes'] / 1e3:.0f} kB; matches the live model "
              f"to {info['max_diff']:.1e} in its runtime")
    return 0


def cmd_list(args) -> int:
    algos = [registry.get(args.algo)] if args.algo else list(registry.ALGOS.values())
    for spec in algos:
        print(f"{spec.name}: {spec.summary}")
        for name, path in registry.shipped_configs(spec.name).items():
            about = registry.config_summary(path)
            bare = f"  [the bare 'tf_rlnas train {spec.name}']" if name == spec.default_config else ""
            print(f"    --config {name:<26} {about}{bare}")
        if args.keys:
            for key, tp, default, help_ in C.describe(spec.load("config")):
                print(f"    {key} ({tp}) = {default!r}  {help_}")
    return 0


def cmd_bench(args, ext) -> int:
    spec = registry.get(args.algo)
    if spec.bench is None:
        raise UserError(f"no benchmark for '{args.algo}'")
    files = [config_path(n, args.algo) for n in args.config]
    cfg = C.resolve(spec.load("config"), files, args.set)
    prepare_process(args.algo, cfg)
    import_tf_quietly()
    opts = ext.bench.get(args.algo)
    extra = opts.kwargs(args) if opts is not None and opts.kwargs is not None else {}  # checks the options
    print(cpu_line())  # every figure below is this CPU's
    if opts is not None and opts.run is not None and opts.run(cfg, args):
        return 0
    spec.load("bench")(cfg, seconds=args.seconds, **extra)
    return 0


def cmd_report(args) -> int:
    from tf_rlnas import report

    import_tf_quietly()  # the runs' trainer classes name their step unit and headline metrics
    report.run(args.run_dirs, args.group_by, args.metric, args.out,
               warn=lambda line: print(line, file=sys.stderr, flush=True), last=args.last)
    return 0


# ---- parser ---------------------------------------------------------------------------------

def build_parser(ext=None) -> argparse.ArgumentParser:
    ext = ext or load_extensions()
    p = argparse.ArgumentParser(prog="tf_rlnas", description="TF2/Keras reinforcement learning and RL-driven "
                                "architecture search: train, evaluate, export, benchmark.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"tf_rlnas {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train an algorithm (resumes if the run directory has a checkpoint)",
                       description="Train ALGO with its defaults, config files and overrides. Re-running "
                       "with the same run directory resumes from its latest checkpoint; budgets and "
                       "logging intervals may be changed on resume. A bare 'tf_rlnas train ALGO' runs the "
                       "algorithm's default config ('tf_rlnas list ALGO' marks it).", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("algo", nargs="?", help="algorithm name (see 'tf_rlnas list'); optional with an "
                   "'algo' key in a --config or an existing --run-dir")
    add_config_arguments(t)
    t.add_argument("--run-dir", default=None, metavar="DIR", help="run directory (default: run.root/run.name)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate the latest checkpoint of a run")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--episodes", type=int, default=None, help="evaluation episodes (default: the config's)")
    e.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    e.add_argument("--video", nargs="?", const="", default=None, metavar="DIR",
                   help="render deterministic episodes (--episodes, default 1) to MP4 files in DIR "
                   "(default RUN_DIR/videos) instead of evaluating")
    for name, opts in ext.evaluate.items():
        opts.add_arguments(e.add_argument_group(f"{name} runs"))
    e.set_defaults(fn=lambda a: cmd_evaluate(a, ext))

    x = sub.add_parser("export", help="export a run's latest checkpoint as a versioned SavedModel")
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument("--out", default="savedmodels", metavar="DIR",
                   help="export root; writes DIR/<run name>/<next integer version>/ (default: savedmodels)")
    x.add_argument("--format", action="append", default=[], metavar="FMT",
                   help="also write onnx (model.onnx, onnxruntime) and/or tflite (model.tflite, LiteRT) beside the "
                        "SavedModel, each checked in its runtime before anything is published (repeatable or "
                        "comma-separated; savedmodel is always written; needs pip install -e \".[export]\")")
    x.set_defaults(fn=cmd_export)

    ls = sub.add_parser("list", help="list algorithms and shipped configs (what each is for, what it costs)")
    ls.add_argument("algo", nargs="?", help="only this algorithm")
    ls.add_argument("--keys", action="store_true", help="also list every config key with its default")
    ls.set_defaults(fn=cmd_list)

    r = sub.add_parser("report", help="curves over seeds (95%% bootstrap bands) and a table of final values "
                       "(mean, IQM, 95%% CI) from runs' TensorBoard logs",
                       description="Group runs by config keys, plot each metric's mean over seeds with a 95% "
                       "bootstrap confidence band (x = the runs' own step unit; one panel per task) and write a "
                       "table of final values: mean, interquartile mean, 95% CI, seeds.")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (seeds of one or more configs)")
    r.add_argument("--group-by", default="algo,task", metavar="KEY[,KEY]",
                   help="config keys (dotted), 'algo' or 'task' (the env or dataset) whose values make a group "
                        "(default: algo,task)")
    r.add_argument("--metric", action="append", default=None, metavar="TAG",
                   help="TensorBoard tag to report (repeatable; default: the runs' headline metric)")
    r.add_argument("--last", type=int, default=1, metavar="N",
                   help="a run's final value = the mean of its last N values of the metric (default 1)")
    r.add_argument("--out", default="report", metavar="DIR", help="where the PNGs, report.md and report.csv go "
                   "(default: report)")
    r.set_defaults(fn=cmd_report)

    b = sub.add_parser("bench", help="benchmark an algorithm's update and training throughput",
                       description="Benchmark ALGO (see 'tf_rlnas bench ALGO --help' for its own options).")
    bsub = b.add_subparsers(dest="algo", metavar="ALGO", required=True)
    for spec in registry.ALGOS.values():
        if spec.bench is None:
            continue
        ba = bsub.add_parser(spec.name, help=f"benchmark {spec.name}")
        add_config_arguments(ba)
        ba.add_argument("--seconds", type=float, default=5.0, help="time per measurement (default 5)")
        if spec.name in ext.bench:
            ext.bench[spec.name].add_arguments(ba)
        ba.set_defaults(fn=lambda a: cmd_bench(a, ext))

    for cmd in ext.commands.values():  # the algorithms' own commands
        c = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description, epilog=cmd.epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_arguments(c)
        c.set_defaults(fn=cmd.run)
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
