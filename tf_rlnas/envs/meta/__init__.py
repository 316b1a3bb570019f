"""Meta-RL task families (MAML): each a gymnasium env with ``sample_tasks(n, rng)`` and
``reset_task(task)``; the cheap ones also come as native vector envs stepping every task x
episode of a meta-batch as one NumPy array (:mod:`tf_rlnas.envs.meta.vector`)."""
