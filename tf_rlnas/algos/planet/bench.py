"""``tf_rlnas bench planet``: compiled world-model steps/s (train phase, batch x chunk of the config),
seconds per agent step of the CEM planner (and of the SAC actor when enabled), and env
step+render/s, on the config's env and sizes."""

from __future__ import annotations

import tempfile
import time


def run(cfg, seconds: float = 5.0) -> None:
    import numpy as np
    import tensorflow as tf

    from tf_rlnas.algos.planet.agent import TRAIN
    from tf_rlnas.algos.planet.trainer import PlanetTrainer

    with tempfile.TemporaryDirectory() as d:
        tr = PlanetTrainer(cfg, d)
        try:
            tr.seed_episodes()
            env_rate = tr.env_steps / max(tr._times["episode_s"], 1e-9)
            phase = tf.constant(TRAIN, tf.int32)
            tr.agent.step(phase)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                tr.agent.step(phase)
                n += 1
            ups = n / (time.perf_counter() - t0)
            obs = np.zeros((1, cfg.env.image_size, cfg.env.image_size, 3), np.uint8)
            state, prev = tr.agent.initial_state(), tf.zeros([1, tr.act_dim])
            rows = []
            for who in (["cem", "actor"] if cfg.sac.enabled else ["cem"]):
                use = tf.constant(who == "actor")
                tr.agent.policy_step(state, prev, tf.constant(obs), tf.constant(True), use)
                k, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds / 2 or k < 3:
                    tr.agent.policy_step(state, prev, tf.constant(obs), tf.constant(True), use)
                    k += 1
                rows.append((who, (time.perf_counter() - t0) / k))
        finally:
            tr.close()
    t, p = cfg.train, cfg.planner
    print(f"planet bench: env {cfg.env.name}, batch {t.batch} x chunk {t.chunk}, RSSM {cfg.model.deter}/"
          f"{cfg.model.stoch}, depth {cfg.model.depth}")
    print(f"  world-model step (train phase{', + SAC heads' if cfg.sac.enabled else ''}): {ups:.2f} steps/s")
    for who, s in rows:
        extra = f" (J={p.candidates}, H={p.horizon}, I={p.iterations})" if who == "cem" else ""
        print(f"  acting by {who}{extra}: {s * 1000:.1f} ms per agent step")
    print(f"  env step + render (random seed episodes, action repeat included): {env_rate:.0f} agent steps/s")
