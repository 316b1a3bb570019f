"""``tf.distribute`` set-up shared by the algorithms that scale their learner (ENAS, PlaNet).

``distribute.strategy``: ``none`` | ``mirrored`` (devices of one host) | ``multi_worker``
(``MultiWorkerMirroredStrategy`` across processes/hosts described by ``TF_CONFIG``).

Order matters: TensorFlow must not have executed anything when the logical CPU split or the
multi-worker strategy is created ("Collective ops must be configured at program startup"), so
trainers call :func:`make_strategy` first thing, before any variable exists.

Roles: in a multi-worker cluster the chief (task type ``chief``, or ``worker`` 0 when the cluster
has no chief) alone writes the run directory (config.yaml, checkpoints/, tb/, summary.json,
algorithm outputs). Every other worker saves its checkpoints (the same collective save as the
chief's) under ``<run_dir>/workers/<type>-<index>/`` and writes nothing else; on resume all workers
restore the chief's newest checkpoint (so the run directory must be on a filesystem every worker
sees, as TF's own multi-worker guide assumes).
"""

from __future__ import annotations

import json
import os

from tf_rlnas.errors import UserError


def tf_config_task() -> tuple[str, int, dict] | None:
    """(task type, index, cluster) from ``TF_CONFIG``, or None when it is unset; bad JSON is a UserError."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        conf = json.loads(raw)
        task = conf.get("task") or {}
        kind, index = str(task.get("type", "worker")), int(task.get("index", 0))
        cluster = conf.get("cluster") or {}
    except (ValueError, TypeError, AttributeError) as e:
        raise UserError(f"TF_CONFIG is not valid JSON with cluster/task: {e}") from None
    if kind not in cluster or index >= len(cluster[kind]):
        raise UserError(f"TF_CONFIG task {kind}:{index} is not in its cluster ({', '.join(cluster) or 'empty'})")
    return kind, index, cluster


def worker_role(strategy_kind: str) -> tuple[bool, str]:
    """(is_chief, task name) for a run with ``distribute.strategy = strategy_kind`` (no TF needed)."""
    if strategy_kind != "multi_worker":
        return True, "chief"
    task = tf_config_task()
    if task is None:
        return True, "chief"
    kind, index, cluster = task
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return chief, f"{kind}-{index}"


def setup_cpu_devices(n: int) -> None:
    """Split the host CPU into ``n`` logical devices (before TF initialises its devices)."""
    import tensorflow as tf

    if n <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != n:
            raise UserError(f"distribute.cpu_devices={n}: TensorFlow's devices were already initialised "
                            f"in this process; set it in a fresh process") from None


def make_strategy(kind: str, cpu_devices: int = 0):
    """The strategy for ``kind`` (None for 'none'); call before TensorFlow executes anything."""
    import tensorflow as tf

    setup_cpu_devices(cpu_devices)
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(
            devices=[d.name for d in tf.config.list_logical_devices("GPU")] or
            [d.name for d in tf.config.list_logical_devices("CPU")])
    if kind == "multi_worker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:
            raise UserError(f"distribute.strategy=multi_worker must start before TensorFlow runs anything "
                            f"in the process ({str(e).splitlines()[0]}); start it from the tf_rlnas CLI "
                            f"or first thing in your script") from None
    return None
