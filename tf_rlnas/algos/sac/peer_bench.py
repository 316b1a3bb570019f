"""Measures a peer SAC (Stable-Baselines3 or SBX) at our bench's sizes; run as a script with the
peer's Python (``python peer_bench.py sb3|sbx ENV_ID HIDDEN BATCH SECONDS THREADS [K]``) and prints one
JSON line. It imports nothing from tf_rlnas: the peers are never our dependencies.

- ``updates_per_s``: ``model.train(gradient_steps=10, batch_size)`` on a buffer filled with random
  transitions, after a warm-up call (SBX compiles there).
- ``env_steps_per_s``: ``model.learn`` with train_freq 1, gradient_steps 1 (1 update per env step),
  after a first ``learn`` call (warm-up, compilation, learning_starts done): the steady rate from two
  further ``learn`` calls of different lengths, (n2 - n1) / (t2 - t1), so the fixed cost of starting
  a ``learn`` call (callbacks, logger) counts in neither (our loop is timed inside one long run).
- ``env_steps_per_s_k`` (with K > 1): the same with train_freq K, gradient_steps K (our
  ``train.update_every: K``; the same update-to-data ratio).
"""

import json
import sys
import time


def main() -> None:
    peer, env_id, hidden, batch, seconds, threads = sys.argv[1:7]
    k = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    hidden, batch, seconds, threads = [int(h) for h in hidden.split(",")], int(batch), float(seconds), int(threads)
    import gymnasium as gym
    if peer == "sb3":
        import torch
        torch.set_num_threads(threads)
        from stable_baselines3 import SAC
        version = __import__("stable_baselines3").__version__ + f" (torch {torch.__version__})"
        kwargs = dict(policy_kwargs=dict(net_arch=hidden), device="cpu")
    else:
        import jax
        from sbx import SAC
        version = __import__("sbx").__version__ + f" (jax {jax.__version__})"
        kwargs = dict(policy_kwargs=dict(net_arch=hidden))
    env = gym.make(env_id)
    start = 1000
    model = SAC("MlpPolicy", env, batch_size=batch, learning_starts=start, train_freq=1, gradient_steps=1,
                buffer_size=200_000, seed=0, verbose=0, **kwargs)
    model.learn(start + 200)  # fills the buffer past learning_starts, compiles
    # update alone
    model.train(gradient_steps=10, batch_size=batch)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.train(gradient_steps=10, batch_size=batch)
        n += 10
    ups = n / (time.perf_counter() - t0)
    out = {"peer": peer, "version": version, "updates_per_s": ups, "env_steps_per_s": _loop(model, seconds)}
    if k > 1:
        from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit
        model.train_freq, model.gradient_steps = TrainFreq(k, TrainFrequencyUnit.STEP), k
        model.learn(10 * k, reset_num_timesteps=False)  # warm-up: SBX compiles K gradient steps
        out["env_steps_per_s_k"] = _loop(model, seconds)
    print(json.dumps(out))


def _loop(model, seconds: float) -> float:
    """Steady env steps/s: the difference of a short and a long learn() call."""
    n1, n2 = 100, max(400, int(seconds * 150))
    times = []
    for n in (n1, n2):
        t0 = time.perf_counter()
        model.learn(n, reset_num_timesteps=False)
        times.append(time.perf_counter() - t0)
    return (n2 - n1) / (times[1] - times[0])


if __name__ == "__main__":
    main()
