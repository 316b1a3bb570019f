"""Measures pytorch-maml-rl (github.com/tristandeleu/pytorch-maml-rl) on one of its shipped configs:
seconds per meta-iteration of its own train.py loop body (sample tasks, ``sample_async`` with its
sampler processes, ``MAMLTRPO.step``, ``sample_wait``), the first (warm-up) iteration not counted.
Run as a script with the port's Python::

    python port_bench.py SRC CONFIG WORKERS SECONDS

``SRC`` is the port's source tree (made to run on torch 2.x: ``torch.lstsq`` -> ``torch.linalg.lstsq``);
``CONFIG`` its YAML (e.g. ``configs/maml/2d-navigation.yaml``). Prints one JSON line. It imports
nothing from tf_rlnas: the port is never our dependency.

Threads: the port does not pin torch's threads; its default (one per core in the learner and in each
forked sampler worker) oversubscribes a small machine (more than twice as slow on 2 cores,
docs/benchmarks.md), so one torch thread per process is set before torch loads, as its sampler
design intends (parallelism from the worker processes).
"""

import json
import os
import statistics
import sys
import time


def main() -> None:
    src, config, workers, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    sys.path.insert(0, os.path.abspath(src))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import gym
    import torch

    torch.set_num_threads(1)
    import yaml

    import maml_rl.envs  # noqa: F401  (registers the port's envs)
    from maml_rl.baseline import LinearFeatureBaseline
    from maml_rl.metalearners import MAMLTRPO
    from maml_rl.samplers import MultiTaskSampler
    from maml_rl.utils.helpers import get_input_size, get_policy_for_env

    with open(config if os.path.isabs(config) else os.path.join(src, config)) as f:
        c = yaml.load(f, Loader=yaml.FullLoader)
    torch.manual_seed(1)
    env = gym.make(c["env-name"], **c.get("env-kwargs", {}))
    env.close()
    policy = get_policy_for_env(env, hidden_sizes=c["hidden-sizes"], nonlinearity=c["nonlinearity"])
    policy.share_memory()
    baseline = LinearFeatureBaseline(get_input_size(env))
    sampler = MultiTaskSampler(c["env-name"], env_kwargs=c.get("env-kwargs", {}), batch_size=c["fast-batch-size"],
                               policy=policy, baseline=baseline, env=env, seed=1, num_workers=workers)
    learner = MAMLTRPO(policy, fast_lr=c["fast-lr"], first_order=c["first-order"], device="cpu")
    times = []
    t_end = None
    while t_end is None or time.perf_counter() < t_end or len(times) < 3:
        t0 = time.perf_counter()
        tasks = sampler.sample_tasks(num_tasks=c["meta-batch-size"])
        futures = sampler.sample_async(tasks, num_steps=c["num-steps"], fast_lr=c["fast-lr"], gamma=c["gamma"],
                                       gae_lambda=c["gae-lambda"], device="cpu")
        learner.step(*futures, max_kl=c["max-kl"], cg_iters=c["cg-iters"], cg_damping=c["cg-damping"],
                     ls_max_steps=c["ls-max-steps"], ls_backtrack_ratio=c["ls-backtrack-ratio"])
        sampler.sample_wait(futures)
        if t_end is None:  # the first iteration warms up and is not counted
            t_end = time.perf_counter() + seconds
        else:
            times.append(time.perf_counter() - t0)
    sampler.close()
    print(json.dumps({"lib": "pytorch-maml-rl", "torch": torch.__version__, "workers": workers, "threads": 1,
                      "meta_batch": c["meta-batch-size"], "fast_batch": c["fast-batch-size"],
                      "hidden": c["hidden-sizes"], "first_order": c["first-order"],
                      "median_s_per_iteration": statistics.median(times), "iterations": len(times)}))


if __name__ == "__main__":
    main()
