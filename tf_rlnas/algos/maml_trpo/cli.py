"""MAML-TRPO's options of ``tf_rlnas evaluate`` (registered with the CLI: ``tf_rlnas.clikit``)."""

from __future__ import annotations

from tf_rlnas.errors import UserError


def register(ext, algo: str) -> None:
    ext.evaluate_options(algo, add_arguments=_evaluate_arguments, kwargs=_evaluate_kwargs, check=_check)


def _evaluate_arguments(group) -> None:
    group.add_argument("--tasks", type=int, default=None, metavar="N",
                       help="held-out tasks to adapt to (default: the config's train.eval_tasks)")
    group.add_argument("--task-seed", type=int, default=None, metavar="S",
                       help="draw the held-out tasks with this seed instead of the run's own stream, to compare "
                            "runs of different seeds on the same tasks (saved as "
                            "eval-<iteration>-tasks<N>-taskseed<S>.npz)")


def _check(args) -> None:
    if args.tasks is not None and args.tasks < 1:
        raise UserError("--tasks must be >= 1")


def _evaluate_kwargs(args) -> dict:
    return {k: v for k, v in (("tasks", args.tasks), ("task_seed", args.task_seed)) if v is not None}
