"""REINFORCE trainer: collect ``episodes_per_update`` episodes in parallel, compute returns-to-go
and advantages, one ``tf.function`` update. Works for the one-shot game (every episode is one
action) and for episodic gymnasium continuous-control environments.

TensorBoard tags (step = update number): ``train/reward`` (mean reward per step),
``train/episode_return``, ``train/episode_length``, ``train/mu``, ``train/sigma`` (means over the
batch; in the one-shot game: the policy at its single state), ``train/loss``, ``train/entropy``,
``train/grad_norm``, ``train/baseline`` (mean baseline), ``train/value_loss`` (value baseline),
``train/env_steps``; evaluations: ``eval/return``, ``eval/return_std``, ``eval/length`` and, in the
one-shot game, ``eval/distance`` = |mu - tau|.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_rlnas.algos.reinforce.learner import ReinforceLearner
from tf_rlnas.core.seeding import SeedStreams
from tf_rlnas.core.trainer import Budget, ExportSpec, Trainer, VideoSource
from tf_rlnas.envs.factory import env_spaces, make_env_from_config, rng_state, set_rng_state
from tf_rlnas.envs.rollout import Episode, Evaluator, collect_episodes
from tf_rlnas.returns import discounted_returns, gae

ONESHOT_ID = "tf_rlnas/OneShotGame-v0"
# the seed streams of a REINFORCE run (derive_seeds salts; eval_envs seeds 1000 + i are fixed)
SEEDS = SeedStreams(envs=1, learner=2, evaluator=3, eval_envs=1000)


class ReinforceTrainer(Trainer):
    algo = "reinforce"
    unit = "update"
    HEADLINE = ("eval/return",)

    def build(self) -> None:
        cfg = self.cfg
        n = cfg.train.episodes_per_update
        seeds = SEEDS.derive(cfg.run.seed, "envs", n + 1)
        self.envs = [self._make_env(s) for s in seeds[:n]]
        self.evaluator = Evaluator(self._make_env, seeds[n], salt=SEEDS.evaluator)
        self.obs_dim, self.act_dim, self.low, self.high = env_spaces(self.envs[0])
        self.oneshot = cfg.env.id == ONESHOT_ID
        self.learner = ReinforceLearner(self.obs_dim, self.act_dim, cfg, seed=SEEDS.derive(cfg.run.seed, "learner")[0])
        self.env_steps = 0
        self.checkpoint.track(**self.learner.trackables())
        self.checkpoint.state("reinforce", self._state, self._load_state)

    def _make_env(self, seed: int):
        return make_env_from_config(self.cfg.env, seed)

    def video_source(self) -> VideoSource:
        return VideoSource.of(self.cfg.env, self.mean_action, self.low, self.high)

    def budget(self) -> Budget:
        return Budget(int(self.iteration.numpy()), self.cfg.train.updates)

    def _state(self) -> dict:
        return {"env_steps": self.env_steps, "envs": [rng_state(e) for e in self.envs]}

    def _load_state(self, state: dict) -> None:
        self.env_steps = int(state["env_steps"])
        for env, s in zip(self.envs, state["envs"]):
            set_rng_state(env, s)

    # ---- one update -------------------------------------------------------------------------
    def _policy(self, obs: np.ndarray) -> np.ndarray:
        return self.learner.act(tf.constant(obs))[0].numpy()

    def _advantages(self, episodes: list[Episode]) -> tuple[np.ndarray, np.ndarray, float]:
        t = self.cfg.train
        scale = t.reward_scale
        if t.baseline == "value":
            obs_all = np.concatenate([e.obs for e in episodes] + [e.final_obs[None] for e in episodes])
            v_all = self.learner.values(tf.constant(obs_all)).numpy()
            n_steps = sum(len(e) for e in episodes)
            v_steps, v_final = v_all[:n_steps], v_all[n_steps:]
            advs, rets, i = [], [], 0
            for k, e in enumerate(episodes):
                last = 0.0 if e.terminated else float(v_final[k])
                adv, ret = gae(e.rewards * scale, v_steps[i:i + len(e)], t.gamma, t.gae_lambda, last)
                advs.append(adv); rets.append(ret); i += len(e)
            return np.concatenate(advs), np.concatenate(rets), float(np.mean(v_steps))
        rets = np.concatenate([discounted_returns(e.rewards * scale, t.gamma) for e in episodes])
        if t.baseline == "mean":
            b = self.learner.update_mean_baseline(float(np.mean(rets)))
        elif t.baseline == "batch":  # leave-one-out mean of the other episodes' returns-to-go
            b = (rets.sum() - rets) / (len(rets) - 1)
            return rets - b, rets, float(np.mean(b))
        else:
            b = 0.0
        return rets - b, rets, b

    def train_iteration(self) -> dict[str, float]:
        t = self.cfg.train
        episodes = collect_episodes(self.envs, self._policy, self.low, self.high)
        adv, rets, baseline = self._advantages(episodes)
        if t.normalize_advantages and len(adv) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        obs = np.concatenate([e.obs for e in episodes])
        acts = np.concatenate([e.actions for e in episodes])
        out = self.learner.update(tf.constant(obs), tf.constant(acts), tf.constant(adv, tf.float32),
                                  tf.constant(rets, tf.float32))
        steps = sum(len(e) for e in episodes)
        self.env_steps += steps
        metrics = {f"train/{k}": float(v.numpy()) for k, v in out.items()}
        metrics.update({
            "train/reward": float(np.mean(np.concatenate([e.rewards for e in episodes]))),
            "train/episode_return": float(np.mean([e.ret for e in episodes])),
            "train/episode_length": steps / len(episodes),
            "train/baseline": baseline,
            "train/env_steps": float(self.env_steps),
        })
        it = int(self.iteration.numpy()) + 1
        if t.eval_every and it % t.eval_every == 0:
            metrics.update(self.evaluate())
        return metrics

    def progress_metrics(self, metrics):
        keys = ("train/mu", "train/sigma", "train/reward") if self.oneshot else \
            ("train/episode_return", "train/sigma", "eval/return")
        return {k: metrics[k] for k in keys if k in metrics}

    # ---- evaluation and export ----------------------------------------------------------------
    def mean_action(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(self.learner.actor(tf.constant(obs, tf.float32))[0].numpy(), self.low, self.high)

    def evaluate(self, episodes: int | None = None) -> dict[str, float]:
        """Deterministic (mean-action) episodes on environments seeded apart from training."""
        out = self.evaluator(self.mean_action, episodes or self.cfg.train.eval_episodes, self.low, self.high)
        if self.oneshot:
            mu, sigma = self.learner.actor(tf.ones((1, self.obs_dim)))
            out["eval/mu"] = float(mu.numpy()[0, 0])
            out["eval/sigma"] = float(sigma.numpy()[0, 0])
            out["eval/distance"] = abs(out["eval/mu"] - float(self.envs[0].unwrapped.tau))
        return out

    def export_spec(self) -> ExportSpec:
        module = ReinforcePolicyModule(self.learner.actor, self.low, self.high)
        obs = np.asarray(np.stack([self.eval_obs_example(i) for i in range(4)]), np.float32)
        seed = np.int64(7)
        return ExportSpec(
            module=module,
            signatures={"serving_default": module.serving_default, "sample": module.sample},
            examples={"serving_default": {"obs": obs}, "sample": {"obs": obs, "seed": seed}},
            expected={"serving_default": {"action": self.mean_action(obs)},
                      "sample": {"action": module.sample(tf.constant(obs), tf.constant(seed))["action"].numpy()}})

    def eval_obs_example(self, i: int) -> np.ndarray:
        env = self._make_env(SEEDS.eval_envs + i)
        return np.asarray(env.reset()[0], np.float32)


class ReinforcePolicyModule(tf.Module):
    """Serving module: ``serving_default(obs) -> action`` (the mean, clipped to the action box) and
    ``sample(obs, seed) -> action`` (a stateless Gaussian sample, clipped)."""

    def __init__(self, actor, low, high):
        super().__init__(name="reinforce_policy")
        self.actor = actor
        self.low = tf.constant(low, tf.float32)
        self.high = tf.constant(high, tf.float32)
        spec = tf.TensorSpec([None, actor.obs_dim], tf.float32, name="obs")
        self.serving_default = tf.function(self._mean, input_signature=[spec])
        self.sample = tf.function(self._sample, input_signature=[spec, tf.TensorSpec([], tf.int64, name="seed")])

    def _mean(self, obs):
        mu, _ = self.actor(obs)
        return {"action": tf.clip_by_value(mu, self.low, self.high)}

    def _sample(self, obs, seed):
        mu, sigma = self.actor(obs)
        eps = tf.random.stateless_normal(tf.shape(mu), seed=tf.stack([seed, tf.constant(0, tf.int64)]))
        return {"action": tf.clip_by_value(mu + sigma * eps, self.low, self.high)}
