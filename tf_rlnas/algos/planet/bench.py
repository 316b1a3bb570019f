"""``tf_rlnas bench planet``: compiled world-model steps/s (train phase, batch x chunk of the config),
seconds per agent step of the CEM planner (and of the SAC actor when enabled), and env
step+render/s, on the config's env and sizes; with each compute figure its matmul/conv GFLOP and
the share of this machine's large-GEMM rate (measured now) in the compute dtype it runs in."""

from __future__ import annotations

import tempfile
import time

import numpy as np


def _conv_macs(stack, x) -> int:
    """Multiply-adds of a Keras Sequential of Conv2D / Conv2DTranspose layers on input ``x`` (one
    image): a conv's per output pixel, a transposed conv's per input pixel."""
    import keras

    macs = 0
    for layer in stack.layers:
        k = layer.kernel.shape  # Conv2D [kh, kw, in, out]; Conv2DTranspose [kh, kw, out, in]
        y = layer(x)
        pixels = x.shape[1] * x.shape[2] if isinstance(layer, keras.layers.Conv2DTranspose) else y.shape[1] * y.shape[2]
        macs += int(pixels) * int(np.prod(k))
        x = y
    return macs


def _dense_macs(sizes) -> int:
    return sum(int(a) * int(b) for a, b in zip(sizes[:-1], sizes[1:]))


def flops(agent) -> dict:
    """Matmul/conv FLOPs (2 per multiply-add) of one world-model train step (forward + backward
    = 3x forward; the SAC heads not included) and of one CEM action."""
    import tensorflow as tf

    m, t, p = agent.cfg.model, agent.cfg.train, agent.cfg.planner
    size, a = agent.cfg.env.image_size, agent.act_dim
    D, S, Hd = m.deter, m.stoch, m.hidden
    E = int(agent.encoder(tf.zeros([1, size, size, 3])).shape[-1])
    F = D + S
    enc = _conv_macs(agent.encoder.convs, tf.zeros([1, size, size, 3]))
    dec = F * 32 * m.depth + _conv_macs(agent.decoder.deconvs, tf.zeros([1, 1, 1, 32 * m.depth]))
    reward = _dense_macs([F, *m.reward_hidden, 1])
    img_step = (S + a) * Hd + 2 * Hd * 3 * D + D * Hd + Hd * 2 * S
    obs_step = img_step + (D + E) * Hd + Hd * 2 * S
    per_frame = enc + obs_step + dec + reward
    return {"world_model_step": 2.0 * 3 * per_frame * t.batch * t.chunk,
            "cem_action": 2.0 * (img_step + reward) * p.candidates * p.horizon * p.iterations}


def run(cfg, seconds: float = 5.0) -> None:
    import tensorflow as tf

    from tf_rlnas.algos.planet.agent import TRAIN
    from tf_rlnas.algos.planet.trainer import PlanetTrainer
    from tf_rlnas.core.benchkit import gemm_rate

    with tempfile.TemporaryDirectory() as d:
        tr = PlanetTrainer(cfg, d)
        try:
            dtype = tr.agent.compute_dtype
            work = flops(tr.agent)
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
    gemm = gemm_rate(dtype)
    t, p = cfg.train, cfg.planner

    def share(f, per_s):
        return f"{f / 1e9:.1f} GFLOP, {f * per_s / 1e9:.0f} GFLOP/s = {f * per_s / gemm:.0%} of the {dtype} GEMM rate"
    print(f"planet bench: env {cfg.env.name}, batch {t.batch} x chunk {t.chunk}, RSSM {cfg.model.deter}/"
          f"{cfg.model.stoch}, depth {cfg.model.depth}, compute {dtype}"
          f"{' (auto)' if cfg.model.compute_dtype == 'auto' else ''}")
    print(f"  large GEMM (1024^3, measured now): {dtype} {gemm / 1e9:.0f} GFLOP/s")
    print(f"  world-model step (train phase{', + SAC heads' if cfg.sac.enabled else ''}): {ups:.2f} steps/s "
          f"({share(work['world_model_step'], ups)})")
    for who, s in rows:
        extra = (f" (J={p.candidates}, H={p.horizon}, I={p.iterations}; {share(work['cem_action'], 1 / s)})"
                 if who == "cem" else "")
        print(f"  acting by {who}{extra}: {s * 1000:.1f} ms per agent step")
    print(f"  env step + render (random seed episodes, action repeat included): {env_rate:.0f} agent steps/s")
