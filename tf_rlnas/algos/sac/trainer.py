"""SAC trainer: gymnasium vector envs -> replay -> fused K-update tf.function calls.

One iteration = one vector-env step (``num_envs`` env steps). TensorBoard steps are env steps.
Tags: ``train/episode_return``, ``train/episode_length``, ``train/critic_loss``, ``train/actor_loss``,
``train/alpha_loss``, ``train/alpha``, ``train/mean_q``, ``train/entropy``, ``train/env_steps_per_s``,
``train/updates_per_s``, ``eval/return``, ``eval/return_std``, ``eval/best_return``.

Resume restores models, optimizers, alpha, counters, RNG states and the replay buffer; the
environments start fresh episodes (a simulator's mid-episode state is not checkpointed).
The best evaluation's actor and critics are kept in ``checkpoints/best/`` beside the latest.
"""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf

from tf_rlnas.algos.sac.env_step import EnvStep
from tf_rlnas.algos.sac.learner import SACLearner
from tf_rlnas.core.seeding import SeedStreams
from tf_rlnas.core.trainer import Budget, ExportSpec, Trainer, VideoSource
from tf_rlnas.distributions import scale_action
from tf_rlnas.envs.factory import env_spaces, make_env_from_config, make_vector_env
from tf_rlnas.envs.rollout import Evaluator
from tf_rlnas.replay.uniform import ReplayBuffer, VectorTransitions


# the seed streams of a SAC / ACE run (derive_seeds salts; export_env seeds the env whose observation
# space gives the export's example inputs)
SEEDS = SeedStreams(envs=11, learner=12, evaluator=13, export_env=4242)


class SACTrainer(Trainer):
    algo = "sac"
    unit = "env step"
    HEADLINE = ("eval/return",)
    learner_cls = SACLearner

    def build(self) -> None:
        cfg = self.cfg
        n = cfg.env.num_envs
        seeds = SEEDS.derive(cfg.run.seed, "envs", n + 1)
        self.env_seeds = seeds[:n]
        self.evaluator = Evaluator(self._make_env, seeds[n], salt=SEEDS.evaluator)
        self.venv = make_vector_env(cfg.env.id, self.env_seeds, cfg.env.max_episode_steps, cfg.env.kwargs,
                                    cfg.env.vector)
        probe = self._make_env(self.env_seeds[0])
        self.obs_dim, self.act_dim, self.low, self.high = env_spaces(probe)
        probe.close()
        self.learner = self.learner_cls(self.obs_dim, self.act_dim, cfg.agent,
                                        seed=SEEDS.derive(cfg.run.seed, "learner")[0],
                                        jit_compile=cfg.train.jit_compile)
        self.buffer = ReplayBuffer(cfg.train.buffer_size, self.obs_dim, self.act_dim)
        self.env_step = EnvStep(self.learner, self.buffer, n, cfg.train.batch_size)
        self.env_steps = 0
        self.episodes = 0
        self.best_eval = -np.inf
        self.next_eval = cfg.train.eval_every or 0
        self.last_eval: dict[str, float] = {}
        self._obs = None
        self._window = (time.perf_counter(), 0, 0)  # (t, env steps, updates) at the last log
        self._pending_updates = 0.0
        self._updated = False
        # the best evaluation's return travels WITH its weights: a crash between a best save and the
        # next regular checkpoint must not lower best_eval on resume (see restore)
        self._best_return = tf.Variable(-np.inf, dtype=tf.float64, trainable=False, name="best_return")
        self.best = tf.train.CheckpointManager(
            tf.train.Checkpoint(actor=self.learner.actor, critic=self.learner.critic, best_return=self._best_return),
            os.path.join(self.run_dir, "checkpoints", "best"), max_to_keep=1)
        self.checkpoint.track(**self.learner.trackables())
        self.checkpoint.state("sac", self._state, self._load_state)
        self.checkpoint.arrays("replay", self.buffer.state, self.buffer.load_state)

    def close(self) -> None:
        super().close()
        venv, self.venv = getattr(self, "venv", None), None
        if venv is not None:
            venv.close()

    def _make_env(self, seed: int):
        return make_env_from_config(self.cfg.env, seed)

    def video_source(self) -> VideoSource:
        return VideoSource.of(self.cfg.env, self.deterministic_action, self.low, self.high)

    def budget(self) -> Budget:
        """Env steps: stored transitions (an autoreset step of a vector env stores none)."""
        return Budget(self.env_steps, self.cfg.train.total_env_steps)

    # ---- checkpoint content -------------------------------------------------------------------
    def _state(self) -> dict:
        return {"env_steps": self.env_steps, "episodes": self.episodes, "best_eval": float(self.best_eval),
                "next_eval": self.next_eval, "pending_updates": self._pending_updates,
                "envs": list(self.venv.get_attr("tf_rlnas_rng"))}

    def _load_state(self, s: dict) -> None:
        self.env_steps, self.episodes = int(s["env_steps"]), int(s["episodes"])
        self.best_eval, self.next_eval = float(s["best_eval"]), int(s["next_eval"])
        self._pending_updates = float(s["pending_updates"])
        self.venv.set_attr("tf_rlnas_rng", list(s["envs"]))
        self._obs = None  # fresh episodes, from the restored RNG streams

    def restore(self, number: int | None = None) -> str | None:
        """The regular checkpoint, then best_eval = max(its best_eval, the return stored with
        ``checkpoints/best``): the best checkpoint may be newer than the last regular one."""
        path = super().restore(number)
        best = self.best.latest_checkpoint
        if best is not None:
            try:
                stored = float(tf.train.load_variable(best, "best_return/.ATTRIBUTES/VARIABLE_VALUE"))
            except (tf.errors.OpError, ValueError):  # a best checkpoint from before the return was stored
                stored = -np.inf
            self.best_eval = max(self.best_eval, stored)
        return path

    # ---- one vector step ----------------------------------------------------------------------
    def _reset(self) -> None:
        self._obs, _ = self.venv.reset()
        self._obs = self._obs.astype(np.float32)
        n = self.cfg.env.num_envs
        self._transitions = VectorTransitions(n)
        self._ep_ret = np.zeros(n)
        self._ep_len = np.zeros(n, np.int64)
        self._finished: list[tuple[float, int]] = []
        self._packed = np.zeros((n, self.obs_dim + 3), np.float32)
        self._size = len(self.buffer)
        self._iter = int(self.iteration.numpy())
        self._act(self._obs, np.zeros(n, bool), np.zeros(n, np.float32), np.zeros(n, bool), 0)

    def _act(self, next_obs, keep, rewards, terminated, updates: int) -> None:
        """The one compiled call: store the kept transitions, run ``updates`` updates, act."""
        p, d = self._packed, self.obs_dim
        p[:, :d] = next_obs
        p[:, d] = rewards
        p[:, d + 1] = terminated
        p[:, d + 2] = keep
        self._action = self.env_step(p, updates, self.env_steps < self.cfg.train.start_steps).numpy()
        self._updated = self._updated or updates > 0

    def scale(self, a: np.ndarray) -> np.ndarray:
        return scale_action(a, self.low, self.high)

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards, next_obs, terminated, truncated) -> np.ndarray:
        """Bookkeeping of a vector step (the transitions are stored on the TF side): returns the keep
        mask (False for an autoreset step). ACE also fills its causal buffer here."""
        keep = self._transitions.keep(terminated, truncated)
        kept = int(keep.sum())
        self.env_steps += kept
        self._size = min(self._size + kept, self.buffer.capacity)
        self._ep_ret += rewards * keep
        self._ep_len += keep
        ended = keep & (terminated | truncated)
        if ended.any():
            for i in np.flatnonzero(ended):
                self._finished.append((float(self._ep_ret[i]), int(self._ep_len[i])))
                self._ep_ret[i], self._ep_len[i] = 0.0, 0
                self.episodes += 1
        return keep

    def train_iteration(self) -> dict[str, float]:
        cfg, t = self.cfg, self.cfg.train
        if self._obs is None:
            self._reset()
        actions = self._action
        next_obs, rewards, term, trunc, _ = self.venv.step(self.scale(actions))
        before = self.env_steps
        keep = self.observe(self._obs, actions, rewards, next_obs, term, trunc)
        self._obs = next_obs
        self._pending_updates += (self.env_steps - before) * t.updates_per_step  # per stored transition
        self._iter += 1
        k = 0
        if self._size < t.batch_size or self.env_steps < t.start_steps:
            self._pending_updates = 0.0  # updates are owed only for transitions from start_steps on
        elif self._iter % t.update_every == 0:
            k = int(self._pending_updates)
            self._pending_updates -= k
        self._act(next_obs, keep, rewards, term, k)
        self.after_step()
        if t.eval_every and self.env_steps >= self.next_eval:
            self.next_eval += t.eval_every
            self.last_eval = self._evaluate_and_keep_best()
            self.logger.scalars(self.last_eval, step=self.env_steps)
        if self._iter % cfg.run.log_every == 0 or self.budget().done:
            return self._train_metrics()
        return {}

    def _train_metrics(self) -> dict[str, float]:
        out = {f"train/{k}": float(v.numpy()) for k, v in self.env_step.metrics.items()} if self._updated else {}
        if self._finished:
            out["train/episode_return"] = float(np.mean([r for r, _ in self._finished]))
            out["train/episode_length"] = float(np.mean([l for _, l in self._finished]))
            self._finished = []
        now, updates = time.perf_counter(), int(self.learner.updates.numpy())
        t0, s0, u0 = self._window
        if now > t0 and self.env_steps > s0:
            out["train/env_steps_per_s"] = (self.env_steps - s0) / (now - t0)
            out["train/updates_per_s"] = (updates - u0) / (now - t0)
        self._window = (now, self.env_steps, updates)
        out.update(self.extra_metrics())
        return out

    def after_step(self) -> None:
        """Hook run after every vector step and its updates (ACE: causal refits, resets)."""

    def extra_metrics(self) -> dict[str, float]:
        return {}

    def _evaluate_and_keep_best(self) -> dict[str, float]:
        ev = self.evaluate()
        if ev["eval/return"] > self.best_eval:
            self.best_eval = ev["eval/return"]
            self._best_return.assign(self.best_eval)
            self.best.save(checkpoint_number=self.env_steps)
        ev["eval/best_return"] = self.best_eval
        return ev

    def progress_metrics(self, metrics):
        metrics = {**metrics, **self.last_eval}
        return {k: metrics[k] for k in ("train/episode_return", "eval/return", "train/alpha") if k in metrics}

    # ---- evaluation and export ------------------------------------------------------------------
    def deterministic_action(self, obs: np.ndarray) -> np.ndarray:
        return self.scale(self.learner.act(tf.constant(obs, tf.float32), tf.constant(True)).numpy())

    def evaluate(self, episodes: int | None = None) -> dict[str, float]:
        return self.evaluator(self.deterministic_action, episodes or self.cfg.train.eval_episodes,
                              self.low, self.high)

    def export_spec(self) -> ExportSpec:
        module = TanhPolicyModule(self.learner.actor, self.low, self.high)
        env = self._make_env(SEEDS.export_env)
        obs = np.stack([env.observation_space.sample() for _ in range(4)]).astype(np.float32)
        obs = np.clip(obs, -5, 5)
        seed = np.int64(3)
        return ExportSpec(module, {"serving_default": module.serving_default, "sample": module.sample},
                          {"serving_default": {"obs": obs}, "sample": {"obs": obs, "seed": seed}},
                          {"serving_default": {"action": self.deterministic_action(obs)},
                           "sample": {"action": module.sample(tf.constant(obs), tf.constant(seed))["action"].numpy()}})


class TanhPolicyModule(tf.Module):
    """``serving_default(obs) -> action`` (tanh of the mean, scaled to the action box) and
    ``sample(obs, seed) -> action`` (a stateless tanh-Gaussian sample, scaled)."""

    def __init__(self, actor, low, high):
        super().__init__(name="tanh_policy")
        self.actor = actor
        self.low, self.high = tf.constant(low, tf.float32), tf.constant(high, tf.float32)
        spec = tf.TensorSpec([None, actor.obs_dim], tf.float32, name="obs")
        self.serving_default = tf.function(self._mode, input_signature=[spec])
        self.sample = tf.function(self._sample, input_signature=[spec, tf.TensorSpec([], tf.int64, name="seed")])

    def _mode(self, obs):
        return {"action": scale_action(self.actor.dist(obs, full_precision=True).mode(), self.low, self.high)}

    def _sample(self, obs, seed):
        a, _ = self.actor.dist(obs, full_precision=True).sample(tf.stack([seed, tf.constant(1, tf.int64)]))
        return {"action": scale_action(a, self.low, self.high)}
