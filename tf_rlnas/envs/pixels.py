"""Pixel environments for PlaNet: 64x64 uint8 image observations with action repeat.

Three sources, one interface (gymnasium API; ``obs`` is the [size, size, 3] uint8 image):

- ``PixelWrapper(env)``: any gymnasium env made with ``render_mode="rgb_array"``. MuJoCo envs are
  made fast: the renderer is created at the target size and the model's shadow map and
  multisampling are switched off (``vis.quality.shadowsize = offsamples = 0``: ~400 step+render/s
  here instead of ~16-40).
- ``DMCEnv(domain, task)``: a DeepMind Control suite task through ``dm-control`` (the ``[dmc]``
  extra; mujoco 3.x, see setup.py). DMC episodes never terminate: ``terminated`` is True only when
  the suite's discount is 0, the time limit is ``truncated``.
- ``PointReach``: a cheap built-in pixel task (NumPy drawing, no MuJoCo): a point with inertia
  starts anywhere in [-1, 1]^2 and is pushed by a 2-D force towards the goal disc at the centre;
  reward = 1 - distance per env step, 100 env steps by default (50 agent steps at action repeat
  2: the paper's 50-step chunks fit; ``configs/planet/point_reach.yaml`` uses 50 env steps).
  At 50 env steps, random actions score 5.9, doing nothing 11.7, a PD controller on the true
  state 47.6. PlaNet learns it in minutes on 2 cores.

Rendering MuJoCo through Mesa in the same process as TensorFlow has crashed here, so the trainer
runs these envs in a spawned process (:class:`ProcessEnv`, as the original ran ``ExternalProcess``
envs); the built-in task runs in-process.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from tf_rlnas.envs.video import configure_offscreen_rendering, fast_mujoco_rendering

DMC_TASKS = {  # the PlaNet paper's tasks and action repeats
    "cartpole-swingup": 8, "reacher-easy": 4, "cheetah-run": 4, "finger-spin": 2, "cup-catch": 4,
    "walker-walk": 2,
}


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Area-average (integer factors) or nearest-neighbour resize of an HxWx3 uint8 image."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    if h % size == 0 and w % size == 0:
        f, g = h // size, w // size
        return img.reshape(size, f, size, g, 3).mean((1, 3)).astype(np.uint8)
    ys = (np.arange(size) * h / size).astype(int)
    xs = (np.arange(size) * w / size).astype(int)
    return img[ys][:, xs]


class PixelWrapper(gym.Wrapper):
    """Image observations + action repeat around a gymnasium env made with render_mode='rgb_array'."""

    def __init__(self, env: gym.Env, size: int = 64, action_repeat: int = 1):
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError("PixelWrapper needs an env made with render_mode='rgb_array'")
        self.size, self.repeat = int(size), int(action_repeat)
        fast_mujoco_rendering(env)
        self.observation_space = gym.spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        limit = env.spec.max_episode_steps if env.spec is not None else None
        self.max_agent_steps = -(-int(limit) // self.repeat) if limit else None  # None: no time limit known

    def _image(self) -> np.ndarray:
        return _resize(np.asarray(self.env.render(), np.uint8), self.size)

    def reset(self, *, seed=None, options=None):
        _, info = self.env.reset(seed=seed, options=options)
        return self._image(), info

    def step(self, action):
        total, term, trunc, info = 0.0, False, False, {}
        for _ in range(self.repeat):
            _, r, term, trunc, info = self.env.step(action)
            total += float(r)
            if term or trunc:
                break
        return self._image(), total, term, trunc, info


class DMCEnv(gym.Env):
    """A DeepMind Control suite task with image observations (camera 0) and action repeat."""

    metadata = {"render_modes": []}

    def __init__(self, name: str = "cartpole-swingup", size: int = 64, action_repeat: int | None = None,
                 camera: int = 0):
        try:
            from dm_control import suite
        except ImportError as e:
            from tf_rlnas.errors import UserError
            raise UserError(f"DeepMind Control tasks need dm-control ({e}): pip install -e \".[dmc]\"") from None
        domain, task = name.split("-", 1)
        self._suite, self._domain, self._task = suite, domain, task
        self.size, self.camera = int(size), int(camera)
        self.repeat = int(action_repeat or DMC_TASKS.get(name, 1))
        self._env = suite.load(domain, task, task_kwargs={"random": 0})
        m = self._env.physics.model
        m.vis.quality.shadowsize = 0
        m.vis.quality.offsamples = 0
        spec = self._env.action_spec()
        self.action_space = gym.spaces.Box(spec.minimum.astype(np.float32), spec.maximum.astype(np.float32),
                                           dtype=np.float32)
        self.observation_space = gym.spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        limit = getattr(self._env, "_step_limit", None)  # time limit / control timestep (inf: none)
        self.max_agent_steps = -(-int(limit) // self.repeat) if limit is not None and np.isfinite(limit) else None

    def _image(self) -> np.ndarray:
        return self._env.physics.render(self.size, self.size, camera_id=self.camera)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:  # the suite's task RNG
            self._env = self._suite.load(self._domain, self._task, task_kwargs={"random": int(seed)})
            m = self._env.physics.model
            m.vis.quality.shadowsize = 0
            m.vis.quality.offsamples = 0
        self._env.reset()
        return self._image(), {}

    def step(self, action):
        total, term, trunc = 0.0, False, False
        for _ in range(self.repeat):
            ts = self._env.step(np.asarray(action, np.float64))
            total += float(ts.reward or 0.0)
            if ts.last():
                term = ts.discount == 0.0  # a true terminal state; otherwise the time limit
                trunc = not term
                break
        return self._image(), total, term, trunc, {"discount": 0.0 if term else 1.0}

    def close(self):
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            env.close()


class PointReach(gym.Env):
    """The built-in pixel task: position p and velocity v in the plane, force a in [-1, 1]^2,
    v <- 0.8 v + 0.05 a, p <- clip(p + v, -1, 1); reward 1 - |p - goal| per env step; the goal is
    fixed at the centre and drawn in green, the point in red; start uniform in [-1, 1]^2 (a goal
    off-centre let "push into the nearest corner" score like a plan)."""

    metadata = {"render_modes": []}

    def __init__(self, size: int = 64, action_repeat: int = 2, max_steps: int = 100):
        self.size, self.repeat, self.max_steps = int(size), int(action_repeat), int(max_steps)
        self.goal = np.zeros(2)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        grid = (np.arange(self.size) + 0.5) / self.size * 2 - 1
        self._yy, self._xx = np.meshgrid(grid, grid, indexing="ij")
        self._background = np.full((self.size, self.size, 3), 24, np.uint8)
        self._background[..., 1] += self._disc(self.goal, 0.12, 140)
        self.p, self.v, self.t = np.zeros(2), np.zeros(2), 0
        self.max_agent_steps = -(-self.max_steps // self.repeat)

    def _disc(self, c, radius, value) -> np.ndarray:
        d2 = (self._xx - c[0]) ** 2 + (self._yy - c[1]) ** 2
        return (value * np.exp(-d2 / (2 * radius ** 2))).astype(np.uint8)

    def _image(self) -> np.ndarray:
        img = self._background.copy()
        img[..., 0] += self._disc(self.p, 0.08, 220)
        return img

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.p = self.np_random.uniform(-1, 1, 2)
        self.v, self.t = np.zeros(2), 0
        return self._image(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64), -1, 1)
        total = 0.0
        for _ in range(self.repeat):
            self.v = 0.8 * self.v + 0.05 * a
            self.p = np.clip(self.p + self.v, -1, 1)
            total += 1.0 - float(np.linalg.norm(self.p - self.goal))
            self.t += 1
            if self.t >= self.max_steps:
                break
        return self._image(), total, False, self.t >= self.max_steps, {"position": self.p.copy()}


def make_pixel_env(name: str, size: int = 64, action_repeat: int = 0, kwargs: dict | None = None,
                   max_episode_steps: int = 0) -> gym.Env:
    """``point_reach`` (built-in), ``dmc:<domain>-<task>`` or a gymnasium id rendered to pixels."""
    kwargs = dict(kwargs or {})
    if name == "point_reach":  # NumPy drawing: no OpenGL, and the process's MUJOCO_GL is left alone
        _check_kwargs(name, kwargs, ("max_steps",))
        return PointReach(size, action_repeat or 2, **kwargs)
    # MUJOCO_GL=osmesa without a display (apt libosmesa6; egl works too). Only in a process that renders
    # MuJoCo (the spawned env process): OSMesa's LLVM beside TensorFlow's makes the process abort at exit
    configure_offscreen_rendering()
    if name.startswith("dmc:"):
        _check_kwargs(name, kwargs, ("camera",))
        return DMCEnv(name[4:], size, action_repeat or None, **kwargs)
    from tf_rlnas.envs.factory import make_env

    kw = {"render_mode": "rgb_array", **kwargs}
    env = make_env(name, max_episode_steps=max_episode_steps or None, kwargs=kw)
    r = getattr(env.unwrapped, "mujoco_renderer", None)
    if r is not None:  # MuJoCo: render at the target size (no resize)
        r.width = r.height = size
        env.unwrapped.width = env.unwrapped.height = size
    return PixelWrapper(env, size, action_repeat or 1)


def _check_kwargs(name: str, kwargs: dict, accepted: tuple[str, ...]) -> None:
    from tf_rlnas.errors import UserError

    bad = sorted(set(kwargs) - set(accepted))
    if bad:
        raise UserError(f"env.kwargs key '{bad[0]}' is not accepted by '{name}' (it takes: "
                        f"{', '.join(accepted)})")


# ---- an env in a spawned process ------------------------------------------------------------------

def _serve(conn, spec: dict) -> None:
    """The env process: answers ("ok", result) or ("error", (is_user_error, reason)) - never a
    traceback on the terminal; the parent raises the reason as one line."""
    env = None
    try:
        from tf_rlnas.errors import UserError

        try:
            env = make_pixel_env(**spec)
        except Exception as e:  # noqa: BLE001 - every cause travels to the parent as one line
            conn.send(("error", (isinstance(e, UserError), _reason(e))))
            return
        while True:
            cmd, arg = conn.recv()
            if cmd == "close":
                return
            try:
                if cmd == "reset":
                    out = env.reset(seed=arg)
                elif cmd == "step":
                    obs, r, term, trunc, _ = env.step(arg)
                    out = (obs, r, term, trunc)
                elif cmd == "spaces":
                    out = (env.observation_space, env.action_space, getattr(env, "max_agent_steps", None))
                else:
                    raise ValueError(f"unknown command {cmd!r}")
            except Exception as e:  # noqa: BLE001
                conn.send(("error", (False, _reason(e))))
                return
            conn.send(("ok", out))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        if env is not None:
            env.close()
        conn.close()


def _reason(e: BaseException) -> str:
    from tf_rlnas.errors import UserError

    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, UserError) else f"{type(e).__name__}: {text}" if text else type(e).__name__


class ProcessEnv:
    """``make_pixel_env(**spec)`` in a spawned process: reset(seed) / step(action) / close().
    An error inside the env process surfaces here as one line carrying its reason (a
    :class:`UserError` for bad input such as an unknown env id or keyword, else a RuntimeError),
    not as a child's traceback or a hang."""

    def __init__(self, spec: dict):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, spec), daemon=True)
        self._proc.start()
        child.close()
        try:
            self.observation_space, self.action_space, self.max_agent_steps = self._call("spaces", None)
        except BaseException:
            self.close()
            raise

    def _call(self, cmd, arg):
        try:
            self._conn.send((cmd, arg))
            status, out = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._proc.join(timeout=5)
            raise RuntimeError(f"the environment process died (exit code {self._proc.exitcode})") from None
        if status == "error":
            user, reason = out
            if user:
                from tf_rlnas.errors import UserError
                raise UserError(reason)
            raise RuntimeError(f"the environment process failed: {reason}")
        return out

    def reset(self, seed=None):
        return self._call("reset", seed)

    def step(self, action):
        obs, r, term, trunc = self._call("step", np.asarray(action))
        return obs, r, term, trunc, {}

    def close(self) -> None:
        try:
            self._conn.send(("close", None))
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
