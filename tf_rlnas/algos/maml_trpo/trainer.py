"""MAML-TRPO trainer: one iteration = one meta-iteration.

1. sample ``meta_batch`` tasks (the run's NumPy RNG, checkpointed);
2. for each inner step: sample ``fast_batch`` episodes per task with the current (adapted)
   parameters - every task of the meta-batch stepped together, one policy call per time step for
   all tasks, each with its own parameters - and take the inner gradient step;
3. sample the validation episodes with the adapted parameters;
4. TRPO meta-update through the adaptation (second order unless ``first_order``).

Held-out evaluation: ``eval_tasks`` tasks from a seed stream apart from training, 0..eval_steps
adaptation steps (first fast_lr, then fast_lr / 2, as in the original test script), mean +- std
of the per-task mean episode return after each step, saved as ``eval-<iteration>.npz``.
"""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf

from tf_rlnas.algos.maml_trpo.config import DISCRETE
from tf_rlnas.algos.maml_trpo.learner import MAMLLearner, to_batch
from tf_rlnas.algos.maml_trpo.policies import MetaPolicy
from tf_rlnas.core.seeding import SeedStreams, derive_seeds
from tf_rlnas.core.trainer import Budget, ExportSpec, Trainer
from tf_rlnas.envs.meta import make_task_env, make_task_vector_env
from tf_rlnas.envs.registration import META_FAMILIES


def sample_episodes(venv, act, params, tasks, episodes: int, horizon: int, rng: np.random.Generator,
                    seed: tuple[int, int], deterministic: bool = False) -> dict:
    """Run ``episodes`` episodes of every task at once; arrays [K, E, T, ...] with a validity mask."""
    venv.set_tasks(tasks, episodes)
    obs = venv.reset(rng)
    k = len(tasks)
    discrete = venv.discrete
    out_obs = np.zeros((k, episodes, horizon, obs.shape[-1]), np.float32)
    out_act = np.zeros((k, episodes, horizon) if discrete else (k, episodes, horizon, venv.act_dim), np.float32)
    rewards = np.zeros((k, episodes, horizon), np.float32)
    mask = np.zeros((k, episodes, horizon), np.float32)
    alive = np.ones((k, episodes), bool)
    det = tf.constant(deterministic)
    for t in range(horizon):
        a = act(params, tf.constant(obs), tf.constant([seed[0], seed[1] * 100_003 + t], tf.int64), det).numpy()
        out_obs[:, :, t], out_act[:, :, t], mask[:, :, t] = obs, a, alive
        env_a = a.astype(np.int64) if discrete else np.clip(a, venv.act_low, venv.act_high)
        obs, r, term = venv.step(env_a, rng)
        rewards[:, :, t] = r * alive
        alive &= ~term
        if not alive.any():
            break
    return {"obs": out_obs, "actions": out_act, "rewards": rewards, "mask": mask}


def episode_returns(data: dict) -> np.ndarray:
    """Mean episode return per task [K]."""
    return data["rewards"].sum(axis=2).mean(axis=1)


# the seed streams of a MAML-TRPO run (derive_seeds salts; sampling: the policy's action-noise salts,
# inner step i uses i, the validation episodes valid_sampling; held-out tasks: eval_tasks + the seed salt)
SEEDS = SeedStreams(env=21, tasks=30, eval_tasks=31, valid_sampling=15)


class MAMLTrainer(Trainer):
    algo = "maml_trpo"
    unit = "meta-iteration"
    HEADLINE = ("eval/return_after_1_steps", "train/return_after")

    def build(self) -> None:
        cfg, m = self.cfg, self.cfg.maml
        fam = cfg.env.family
        self.discrete = fam in DISCRETE
        self.horizon = cfg.env.horizon or META_FAMILIES[fam][3]
        self._last_eval = (cfg.train.eval_tasks, None)  # (tasks, file) of the latest evaluate(), for format_eval
        self.task_env = make_task_env(fam, cfg.env.kwargs)
        k, e = m.meta_batch, m.fast_batch
        self.venv = make_task_vector_env(fam, cfg.env.kwargs, k * e, cfg.env.workers, cfg.env.sampler,
                                    cfg.env.ray_address)
        self.eval_venv = None
        obs_dim = self.venv.obs_dim
        act_dim = self.venv.num_actions if self.discrete else self.venv.act_dim
        self.policy = MetaPolicy(obs_dim, act_dim, cfg.policy.hidden, gaussian=not self.discrete,
                                 activation=cfg.policy.activation, min_std=cfg.policy.min_std)
        self.learner = MAMLLearner(self.policy, k, e, self.horizon, obs_dim, cfg)
        self.env_rng = np.random.default_rng(SEEDS.derive(cfg.run.seed, "env")[0])
        self.env_steps = 0
        self.lrs = np.full(m.num_steps, m.fast_lr, np.float32)  # meta-training: alpha at every inner step
        self.checkpoint.track(policy=self.policy)
        self.checkpoint.state("maml", self._state, self._load_state)

    def close(self) -> None:
        super().close()
        for v in (self.venv, self.eval_venv):
            if v is not None and hasattr(v, "close"):
                v.close()

    def budget(self) -> Budget:
        return Budget(int(self.iteration.numpy()), self.cfg.train.meta_iterations)

    def _state(self) -> dict:
        return {"env_rng": self.env_rng.bit_generator.state, "env_steps": self.env_steps}

    def _load_state(self, state: dict) -> None:
        self.env_rng.bit_generator.state = state["env_rng"]
        self.env_steps = int(state["env_steps"])

    # ---- one meta-iteration -----------------------------------------------------------------
    def _sample(self, venv, params, tasks, episodes, salt, deterministic=False):
        seed = (int(self.cfg.run.seed), int(self.iteration.numpy()) * 16 + salt)
        data = sample_episodes(venv, self.learner.act, params, tasks, episodes, self.horizon, self.env_rng, seed,
                               deterministic)
        self.env_steps += int(data["mask"].sum())
        return data

    def _batch(self, data):
        adv = self.learner.advantages(tf.constant(data["obs"]), tf.constant(data["rewards"]), tf.constant(data["mask"]))
        return to_batch(data, adv)

    def train_iteration(self) -> dict[str, float]:
        m = self.cfg.maml
        t0 = time.perf_counter()
        tasks = self.task_env.sample_tasks(m.meta_batch, self.np_rng)
        params = self.policy.tiled(m.meta_batch)
        timing = {"sample": 0.0, "inner": 0.0}
        train_batches, before = [], None
        for i in range(m.num_steps):
            ts = time.perf_counter()
            data = self._sample(self.venv, params, tasks, m.fast_batch, salt=i)
            timing["sample"] += time.perf_counter() - ts
            before = episode_returns(data) if before is None else before
            ti = time.perf_counter()
            batch = self._batch(data)
            params = self.learner.inner_step(params, batch, tf.constant(self.lrs[i]))
            train_batches.append(batch)
            timing["inner"] += time.perf_counter() - ti
        ts = time.perf_counter()
        valid = self._sample(self.venv, params, tasks, m.fast_batch, salt=SEEDS.valid_sampling)
        timing["sample"] += time.perf_counter() - ts
        tt = time.perf_counter()
        vbatch = self._batch(valid)
        metrics = self.learner.meta_update(tuple(train_batches), tf.constant(self.lrs), vbatch,
                                           m.ls_max_steps, m.ls_backtrack_ratio)
        timing["trpo"] = time.perf_counter() - tt
        total = time.perf_counter() - t0
        after = episode_returns(valid)
        steps = int(sum(b[3].numpy().sum() for b in train_batches) + valid["mask"].sum())
        metrics.update({
            "total_rewards/before_update": float(before.mean()), "total_rewards/after_update": float(after.mean()),
            "train/return_before": float(before.mean()), "train/return_after": float(after.mean()),
            "train/adaptation_gain": float(after.mean() - before.mean()), "train/env_steps": float(self.env_steps),
            "time/sample_s": timing["sample"], "time/inner_s": timing["inner"], "time/trpo_s": timing["trpo"],
            "time/iteration_s": total, "time/env_steps_per_s": steps / max(timing["sample"], 1e-9)})
        ev = self.cfg.train.eval_every
        if ev and int(self.iteration.numpy()) + 1 < self.budget().total and (int(self.iteration.numpy()) + 1) % ev == 0:
            metrics.update(self.evaluate())
        return metrics

    def progress_metrics(self, metrics):
        return {k: metrics[k] for k in ("train/return_before", "train/return_after", "time/iteration_s") if k in metrics}

    # ---- held-out evaluation ----------------------------------------------------------------
    def adaptation_returns(self, tasks, steps: int, episodes: int, seed_salt: int = 0) -> np.ndarray:
        """Mean episode return per task after 0..steps adaptation steps: [steps + 1, K]."""
        k = len(tasks)
        venv = self.venv if k == self.cfg.maml.meta_batch and episodes == self.cfg.maml.fast_batch else None
        if venv is None:
            if self.eval_venv is None or getattr(self, "_eval_shape", None) != (k, episodes):
                if self.eval_venv is not None and hasattr(self.eval_venv, "close"):
                    self.eval_venv.close()
                self.eval_venv = make_task_vector_env(self.cfg.env.family, self.cfg.env.kwargs, k * episodes,
                                                 self.cfg.env.workers, self.cfg.env.sampler,
                                                 self.cfg.env.ray_address)
                self._eval_learner = MAMLLearner(self.policy, k, episodes, self.horizon, self.eval_venv.obs_dim,
                                                 self.cfg)
                self._eval_shape = (k, episodes)
            venv = self.eval_venv
        learner = self.learner if venv is self.venv else self._eval_learner
        rng = np.random.default_rng(derive_seeds(self.cfg.run.seed, 1, salt=SEEDS.eval_tasks + seed_salt)[0])
        params = self.policy.tiled(k)
        out = []
        lrs = [self.cfg.maml.fast_lr] + [self.cfg.maml.fast_lr / 2] * steps
        for i in range(steps + 1):
            data = sample_episodes(venv, learner.act, params, tasks, episodes, self.horizon, rng, (7_777, i))
            out.append(episode_returns(data))
            if i < steps:
                adv = learner.advantages(tf.constant(data["obs"]), tf.constant(data["rewards"]), tf.constant(data["mask"]))
                params = learner.inner_step(params, to_batch(data, adv), tf.constant(lrs[i], tf.float32))
        return np.stack(out)

    def held_out_tasks(self, n: int):
        return self.task_env.sample_tasks(n, np.random.default_rng(SEEDS.derive(self.cfg.run.seed, "tasks")[0]))

    def evaluate(self, episodes: int | None = None, tasks: int | None = None,
                 task_seed: int | None = None) -> dict[str, float]:
        """Held-out adaptation returns. ``tasks``: how many (default ``train.eval_tasks``);
        ``task_seed``: draw them with ``numpy.random.default_rng(task_seed)`` instead of the run's
        own held-out stream, so runs of different seeds can be compared on the same tasks."""
        t = self.cfg.train
        n = tasks or t.eval_tasks
        if task_seed is None:
            task_list = self.held_out_tasks(n)
        else:
            task_list = self.task_env.sample_tasks(n, np.random.default_rng(task_seed))
        rets = self.adaptation_returns(task_list, t.eval_steps, episodes or t.eval_episodes or self.cfg.maml.fast_batch)
        it = int(self.iteration.numpy())
        suffix = ("" if tasks is None else f"-tasks{n}") + ("" if task_seed is None else f"-taskseed{task_seed}")
        name = f"eval-{it}{suffix}.npz"  # the training-time evaluations are never overwritten by others
        self._last_eval = (n, name)
        if self.is_chief:
            path = os.path.join(self.run_dir, name)
            tmp = path + ".tmp.npz"
            np.savez(tmp, returns=rets, steps=np.arange(rets.shape[0]), iteration=it)
            os.replace(tmp, path)
        out = {}
        for i, r in enumerate(rets):
            out[f"eval/return_after_{i}_steps"] = float(r.mean())
            out[f"eval/return_std_after_{i}_steps"] = float(r.std())
        return out

    def format_eval(self, metrics: dict) -> str:
        """The held-out table: mean +- std of the per-task mean return after 0..N steps."""
        n, name = self._last_eval
        name = name or f"eval-{int(self.iteration.numpy())}.npz"
        lines = [f"  held-out tasks: {n} (saved as {name})",
                 "  adaptation steps   return (mean +- std over tasks)"]
        i = 0
        while f"eval/return_after_{i}_steps" in metrics:
            lines.append(f"  {i:>16d}   {metrics[f'eval/return_after_{i}_steps']:9.3f} +- "
                         f"{metrics[f'eval/return_std_after_{i}_steps']:.3f}")
            i += 1
        return "\n".join(lines)

    # ---- export -----------------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        m = self.cfg.maml
        one_task = MAMLLearner(self.policy, 1, m.fast_batch, self.horizon, self.policy.obs_dim, self.cfg)
        module = MetaPolicyModule(self.policy, one_task, m.fast_lr)
        obs = np.random.default_rng(0).normal(size=(5, self.policy.obs_dim)).astype(np.float32) * 0.3
        if self.discrete:
            obs = np.abs(obs)
        live = module.serving_default(tf.constant(obs))
        # a batch of episodes of one held-out task, and what the live learner adapts to from it
        task = self.held_out_tasks(1)
        venv = make_task_vector_env(self.cfg.env.family, self.cfg.env.kwargs, m.fast_batch, 1)
        data = sample_episodes(venv, one_task.act, self.policy.tiled(1), task, m.fast_batch, self.horizon,
                               np.random.default_rng(0), (1, 2))
        if hasattr(venv, "close"):
            venv.close()
        adv = one_task.advantages(tf.constant(data["obs"]), tf.constant(data["rewards"]), tf.constant(data["mask"]))
        adapted = one_task.inner_step(self.policy.tiled(1), to_batch(data, adv), tf.constant(m.fast_lr, tf.float32))
        want, _ = self.policy.forward([p[0] for p in adapted], tf.constant(obs))
        ex = {"episode_obs": data["obs"][0], "episode_actions": to_batch(data, adv)[1].numpy()[0],
              "episode_rewards": data["rewards"][0], "episode_mask": data["mask"][0], "obs": obs}
        want = {"action": want.numpy()} if self.policy.gaussian else {"probabilities": tf.nn.softmax(want).numpy()}
        return ExportSpec(module, {"serving_default": module.serving_default, "adapt": module.adapt},
                          {"serving_default": {"obs": obs}, "adapt": ex},
                          {"serving_default": {k: v.numpy() for k, v in live.items()}, "adapt": want})


class MetaPolicyModule(tf.Module):
    """``serving_default(obs) -> action`` of the meta-policy (before adaptation): the Gaussian mean,
    or for bandits / MDPs the most likely action and the action probabilities.

    ``adapt(episode_obs, episode_actions, episode_rewards, episode_mask, obs) -> action``: one
    inner-loop step on a batch of episodes of a NEW task (fast_batch x horizon, padded steps mask 0;
    the linear baseline, GAE and the policy gradient run inside the SavedModel), then the adapted
    policy's action for ``obs``. Served policies can adapt to a task without tf_rlnas."""

    def __init__(self, policy: MetaPolicy, one_task: MAMLLearner, fast_lr: float):
        super().__init__(name="maml_policy")
        self.policy = policy
        self._one_task, self._lr = one_task, float(fast_lr)
        spec = tf.TensorSpec([None, policy.obs_dim], tf.float32, name="obs")
        self.serving_default = tf.function(self._serve, input_signature=[spec])
        e, t = one_task.e, one_task.t
        act = (tf.TensorSpec([e, t, policy.act_dim], tf.float32, name="episode_actions") if policy.gaussian
               else tf.TensorSpec([e, t], tf.int32, name="episode_actions"))
        self.adapt = tf.function(self._adapt, input_signature=[
            tf.TensorSpec([e, t, policy.obs_dim], tf.float32, name="episode_obs"), act,
            tf.TensorSpec([e, t], tf.float32, name="episode_rewards"),
            tf.TensorSpec([e, t], tf.float32, name="episode_mask"), spec])

    def _out(self, params, obs):
        a, _ = self.policy.forward(params, obs)
        if self.policy.gaussian:
            return {"action": a}
        return {"action": tf.argmax(a, -1, output_type=tf.int32), "probabilities": tf.nn.softmax(a)}

    def _serve(self, obs):
        return self._out(self.policy.params, obs)

    def _adapt(self, episode_obs, episode_actions, episode_rewards, episode_mask, obs):
        L = self._one_task
        o, r, m = episode_obs[None], episode_rewards[None], episode_mask[None]
        adv = L._advantages(o, r, m)
        params = [tf.convert_to_tensor(p)[None] for p in self.policy.params]
        adapted = L.adapt_from(params, (o, episode_actions[None], adv, m), self._lr, first_order=True)
        return self._out([p[0] for p in adapted], obs)
