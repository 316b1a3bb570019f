"""MP4 videos of deterministic evaluation episodes (``tf_rlnas evaluate RUN_DIR --video [DIR]``).

Environments are made with ``render_mode="rgb_array"``; one ``.mp4`` per episode is written with
imageio's ffmpeg plugin (the imageio-ffmpeg wheel ships the ffmpeg binary), under a temporary
name and renamed when complete. MuJoCo is made fast on a CPU: with no display, offscreen rendering
uses OSMesa (``MUJOCO_GL=osmesa``, Debian's ``libosmesa6``) unless ``MUJOCO_GL`` is set, and the
model's shadows and multisampling are switched off before the renderer exists (both cost a lot
with software OpenGL).

The environment runs in a separate process started with ``spawn`` (a one-env gymnasium
``AsyncVectorEnv``), the policy here: Mesa's software renderer and TensorFlow both carry LLVM,
and the two in one process segfault at the first rendered frame (seen here, whichever loads first).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from tf_rlnas.errors import UserError


def configure_offscreen_rendering() -> None:
    """In the rendering process, before gymnasium's renderers load: an offscreen OpenGL backend for
    MuJoCo and SDL's dummy video driver for pygame (classic control) when there is no display."""
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "osmesa")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    if os.environ.get("MUJOCO_GL") in ("osmesa", "egl"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


# the seed stream of `evaluate --video` episodes (derive_seeds salt, from run.seed)
VIDEO_SEED_SALT = 77


def offscreen_gl_backend() -> str | None:
    """The OpenGL backend MuJoCo will render with here, found by looking for its library (no
    rendering, no import of mujoco): "glfw" with a display, else the MUJOCO_GL the environment asks
    for if its library exists, else "osmesa" or "egl" if installed; None when there is none (apt
    libosmesa6 provides OSMesa)."""
    import ctypes.util

    libs = {"osmesa": "OSMesa", "egl": "EGL"}
    asked = os.environ.get("MUJOCO_GL")
    if asked in libs:
        return asked if ctypes.util.find_library(libs[asked]) else None
    if os.environ.get("DISPLAY"):
        return "glfw"
    for name, lib in libs.items():
        if ctypes.util.find_library(lib):
            return name
    return None


def fast_mujoco_rendering(env) -> None:
    """No shadows, no multisampling: both cost a lot with software OpenGL."""
    model = getattr(env.unwrapped, "model", None)
    vis = getattr(model, "vis", None)
    if vis is not None:
        vis.quality.shadowsize = 0
        vis.quality.offsamples = 0


def _worker(conn, env_id: str, max_episode_steps: int, kwargs: dict) -> None:
    """The rendering process: commands ("reset", seed) | ("step", action) | ("close", None)."""
    configure_offscreen_rendering()
    from tf_rlnas.envs.factory import _env_class, make_env, register_envs

    try:
        register_envs()
        cls = _env_class(env_id)
        modes = getattr(cls, "metadata", {}).get("render_modes") if cls is not None else None
        if modes is not None and "rgb_array" not in modes:
            raise UserError(f"'{env_id}' cannot render frames (its render modes: {list(modes) or 'none'})")
        env = make_env(env_id, max_episode_steps=max_episode_steps, kwargs={**kwargs, "render_mode": "rgb_array"})
        fast_mujoco_rendering(env)
        while True:
            cmd, arg = conn.recv()
            if cmd == "close":
                break
            if cmd == "reset":
                obs, _ = env.reset(seed=arg)
                out = (obs, 0.0, False, env.metadata.get("render_fps"))
            else:
                obs, r, term, trunc, _ = env.step(arg)
                out = (obs, float(r), bool(term or trunc), None)
            conn.send(("ok", out, _frame(env, env_id)))
    except UserError as e:
        conn.send(("error", str(e), None))
    except Exception as e:
        conn.send(("error", f"cannot render '{env_id}': {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", None))
    finally:
        conn.close()


class _RenderProcess:
    def __init__(self, env_id: str, max_episode_steps: int, kwargs: dict):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, env_id, max_episode_steps, dict(kwargs)), daemon=True)
        self.proc.start()
        child.close()

    def call(self, cmd, arg):
        self.conn.send((cmd, arg))
        try:
            status, out, frame = self.conn.recv()
        except EOFError:
            raise UserError(f"the rendering process died (exit code {self.proc.exitcode})") from None
        if status == "error":
            raise UserError(out)
        return out, frame

    def close(self):
        try:
            self.conn.send(("close", None))
        except OSError:
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()


def _frame(env, env_id: str) -> np.ndarray:
    try:
        frame = env.render()
    except Exception as e:  # a missing GL library, no display, a broken driver ...
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(f"cannot render '{env_id}' offscreen ({type(e).__name__}: {msg}); MuJoCo needs "
                        f"MUJOCO_GL=osmesa (apt-get install libosmesa6) or MUJOCO_GL=egl with a GPU driver") from None
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise UserError(f"'{env_id}' cannot render rgb_array frames (render() gave {type(frame).__name__})")
    return np.ascontiguousarray(frame[..., :3].astype(np.uint8))


def record_episodes(env_id: str, max_episode_steps: int, kwargs: dict, policy: Callable[[np.ndarray], np.ndarray],
                    low: np.ndarray, high: np.ndarray, seeds: Sequence[int], out_dir: str, prefix: str) -> list[dict]:
    """Run one deterministic episode per seed and write ``out_dir/<prefix>-episode<i>.mp4``.

    Returns one record per video: path, frames, return, width, height, fps."""
    import imageio.v2 as imageio

    results = []
    for i, seed in enumerate(seeds):
        env = _RenderProcess(env_id, max_episode_steps, kwargs)
        try:
            (obs, _, _, fps), frame = env.call("reset", int(seed))
            frames, ret, done = [frame], 0.0, False
            while not done:
                a = np.asarray(policy(np.asarray(obs, np.float32)[None]), np.float32)[0]
                (obs, r, done, _), frame = env.call("step", np.clip(a, low, high))
                ret += r
                frames.append(frame)
        finally:
            env.close()
        fps = int(fps or 30)
        try:
            os.makedirs(out_dir, exist_ok=True)  # only once there is a video to write
        except OSError as e:
            raise UserError(f"cannot create video folder {out_dir}: {e.strerror or e}") from None
        path = os.path.join(out_dir, f"{prefix}-episode{i}.mp4")
        tmp = os.path.join(out_dir, f".{prefix}-episode{i}.tmp-{os.getpid()}.mp4")
        try:
            with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=2,
                                    ffmpeg_log_level="error") as w:
                for f in frames:
                    w.append_data(f)
            os.replace(tmp, path)
        except OSError as e:
            raise UserError(f"cannot write video {path}: {e.strerror or e}") from None
        h, w_ = frames[0].shape[:2]
        results.append({"path": path, "frames": len(frames), "return": ret, "width": w_, "height": h, "fps": fps})
    return results
