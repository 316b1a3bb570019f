"""The SAC learner. ``train(batches)`` runs K updates (critics, actor, alpha, Polyak targets) inside
ONE ``tf.function`` (a ``tf.range`` loop over a [K, B, ...] stack of replay batches).

Critic target:  y = r + gamma (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s'))
Actor loss:     mean(alpha log pi(a|s) - min_i Q_i(s, a))
Alpha loss:     -mean(log_alpha (log pi(a|s) + target_entropy))

``agent.update_order``: ``sequential`` (default) evaluates the actor's loss with the critics
already updated on the batch (SB3, SBX, CleanRL); ``simultaneous`` with the critics before that
step (rlkit): the same arithmetic, but the actor's forward/backward no longer waits for the
critics' step, so on few cores the two run side by side (``tf_rlnas bench sac`` reports both).

``log pi`` is ``entropy_log_prob(per-dimension terms)``: their plain sum here; ACE overrides it
with causality weights (the one hook ACE needs).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_rlnas.algos.sac.networks import TanhGaussianActor, TwinCritic
from tf_rlnas.nn.fpmath import bf16_path
from tf_rlnas.nn.precision import resolve_dtype
from tf_rlnas.nn.optim import FusedAdam


class SACLearner(tf.Module):
    def __init__(self, obs_dim: int, act_dim: int, agent_cfg, seed: int, jit_compile: bool = False):
        super().__init__(name="sac")
        c = agent_cfg
        self.cfg, self.obs_dim, self.act_dim = c, obs_dim, act_dim
        # the process's precision, decided once: "auto" resolved here, the bf16 path probed once
        kw = {"matmul_dtype": resolve_dtype(c.matmul_dtype), "bf16_via": bf16_path(jit_compile)}
        self.actor = TanhGaussianActor(obs_dim, act_dim, c.actor_hidden, c.log_std_min, c.log_std_max, **kw)
        self.critic = TwinCritic(obs_dim, act_dim, c.critic_hidden, **kw)
        self.target_critic = TwinCritic(obs_dim, act_dim, c.critic_hidden, name="target_critic", **kw)
        # how the bf16 layers multiply, as built ("fpmath", "cast", both, or "none" in float32)
        bf16 = {layer.bf16_via for net in (self.actor, self.critic) for layer in net.dense_layers()
                if layer.matmul_dtype == tf.bfloat16}
        self.bf16_via = "+".join(sorted(bf16)) or "none"
        for t, s in zip(self.target_critic.weights, self.critic.weights):
            t.assign(s)
        self.log_alpha = tf.Variable(np.log(c.init_alpha), dtype=tf.float32, name="log_alpha")
        self.target_entropy = float(-act_dim if c.target_entropy is None else c.target_entropy)
        self.actor_opt = FusedAdam(c.actor_lr, name="actor_adam")
        self.critic_opt = FusedAdam(c.critic_lr, name="critic_adam")
        self.alpha_opt = FusedAdam(c.alpha_lr, name="alpha_adam")
        self.actor_opt.build(self.actor.trainable_variables)
        self.critic_opt.build(self.critic.trainable_variables)
        self.alpha_opt.build([self.log_alpha])
        self.rng = tf.random.Generator.from_seed(seed)
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
        obs_spec = tf.TensorSpec([None, obs_dim], tf.float32)
        self.act = tf.function(self._act, input_signature=[obs_spec, tf.TensorSpec([], tf.bool)])
        batch_spec = {"obs": tf.TensorSpec([None, None, obs_dim], tf.float32),
                      "actions": tf.TensorSpec([None, None, act_dim], tf.float32),
                      "rewards": tf.TensorSpec([None, None], tf.float32),
                      "next_obs": tf.TensorSpec([None, None, obs_dim], tf.float32),
                      "terminated": tf.TensorSpec([None, None], tf.float32)}
        self.jit_compile = bool(jit_compile)
        self.train = tf.function(self.train_graph, input_signature=[batch_spec], jit_compile=jit_compile)
        self.train_unrolled = tf.function(self.train_graph, jit_compile=jit_compile)
        self.build_extra()

    def build_extra(self) -> None:
        """Hook for subclasses (ACE) to add state before checkpoints are made."""
        return None

    def trackables(self) -> dict:
        return {"actor": self.actor, "critic": self.critic, "target_critic": self.target_critic,
                "log_alpha": self.log_alpha, "actor_opt": self.actor_opt, "critic_opt": self.critic_opt,
                "alpha_opt": self.alpha_opt, "rng": self.rng, "updates": self.updates}

    # ---- acting -------------------------------------------------------------------------------
    def _act(self, obs, deterministic):
        dist = self.actor.dist(obs, full_precision=True)
        return tf.cond(deterministic, dist.mode, lambda: self.sample_action(dist))

    def sample_action(self, dist) -> tf.Tensor:
        return dist.sample(self.rng.make_seeds(1)[:, 0])[0]

    # ---- update -------------------------------------------------------------------------------
    def entropy_log_prob(self, per_dim: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(per_dim, axis=-1)

    def _critic_step(self, b, next_a, next_lp, alpha):
        q_next = tf.reduce_min(self.target_critic(b["next_obs"], next_a), axis=0)
        y = b["rewards"] + self.cfg.gamma * (1.0 - b["terminated"]) * (q_next - alpha * next_lp)
        y = tf.stop_gradient(y)
        with tf.GradientTape() as tape:
            q = self.critic(b["obs"], b["actions"])
            loss = 0.5 * tf.reduce_sum(tf.reduce_mean(tf.square(q - y[None]), axis=1))
        grads = tape.gradient(loss, self.critic.trainable_variables)
        self.critic_opt.apply_gradients(zip(grads, self.critic.trainable_variables))
        return loss, tf.reduce_mean(q)

    def _actor_step(self, tape, obs, a, lp_dim):
        """Actor (with the critics as they are now: just updated in the sequential order, not yet in
        the simultaneous one) and alpha; ``tape`` recorded a, lp_dim."""
        alpha = tf.exp(self.log_alpha)
        with tape:
            lp = self.entropy_log_prob(lp_dim)
            q = tf.reduce_min(self.critic(obs, a), axis=0)
            actor_loss = tf.reduce_mean(alpha * lp - q)
        grads = tape.gradient(actor_loss, self.actor.trainable_variables)
        self.actor_opt.apply_gradients(zip(grads, self.actor.trainable_variables))
        self.after_actor_grads(grads)
        lp = tf.stop_gradient(lp)
        if self.cfg.autotune_alpha:
            # d/d log_alpha of -mean(log_alpha (lp + H_target)), applied directly
            alpha_grad = -tf.reduce_mean(lp + self.target_entropy)
            self.alpha_opt.apply_gradients([(alpha_grad, self.log_alpha)])
            alpha_loss = -self.log_alpha * tf.reduce_mean(lp + self.target_entropy)
        else:
            alpha_loss = tf.constant(0.0)
        return actor_loss, alpha_loss, -tf.reduce_mean(lp)

    def after_actor_grads(self, grads) -> None:
        """Hook: ACE measures gradient dormancy here."""
        return None

    @staticmethod
    def polyak(source, target, tau: float) -> None:
        # t <- t - tau (t - s): one fused in-place kernel per variable (ResourceApplyGradientDescent)
        tau = tf.constant(tau, tf.float32)
        for s, t in zip(source, target):
            tf.raw_ops.ResourceApplyGradientDescent(var=t.handle, alpha=tau, delta=t - s)

    def _update(self, b, metrics):
        """One update on batch ``b``; ``metrics`` = the previous (critic_loss, mean_q, actor_loss,
        alpha_loss, entropy), kept for the policy terms when the policy step is skipped."""
        alpha = tf.exp(self.log_alpha)
        # a' ~ pi(s') for the critic target outside the tape, a ~ pi(s) on the tape: the actor's
        # backward pass then runs over B rows, not over a zero-padded [s'; s] (2B rows).
        seeds = self.rng.make_seeds(2)
        a_next, lp_next = self.actor.dist(b["next_obs"]).sample_per_dim(seeds[:, 0])
        tape = tf.GradientTape()
        with tape:  # every op between the actor's weights and a_pi must be recorded
            a_pi, lp_pi = self.actor.dist(b["obs"]).sample_per_dim(seeds[:, 1])
        next_lp = tf.stop_gradient(self.entropy_log_prob(lp_next))
        every = self.cfg.policy_every
        due = tf.equal((self.updates + 1) % every, 0)  # this update's count (incremented below)
        step = lambda: self._actor_step(tape, b["obs"], a_pi, lp_pi)  # noqa: E731
        keep = lambda: (metrics[2], metrics[3], metrics[4])  # noqa: E731
        policy = lambda: step() if every == 1 else tf.cond(due, step, keep)  # noqa: E731
        if self.cfg.update_order == "simultaneous":
            # the actor's step first in program order: it reads the critics before their update
            # (automatic control dependencies order a resource's reads and writes as written);
            # only those reads precede the critics' step, the rest runs beside it.
            out = policy()
            critic_loss, mean_q = self._critic_step(b, tf.stop_gradient(a_next), next_lp, alpha)
        else:
            critic_loss, mean_q = self._critic_step(b, tf.stop_gradient(a_next), next_lp, alpha)
            out = policy()
        self.updates.assign_add(1)
        # the targets follow the critics just updated, on the policy's schedule (TD3-style delay)
        if every == 1:
            self._polyak_targets()
        else:
            tf.cond(due, self._polyak_targets, tf.no_op)
        return (critic_loss, mean_q) + tuple(out)

    def _polyak_targets(self):
        self.polyak(self.critic.weights, self.target_critic.weights, self.cfg.tau)
        return tf.no_op()

    def _metrics(self, m):
        return {"critic_loss": m[0], "mean_q": m[1], "actor_loss": m[2], "alpha_loss": m[3], "entropy": m[4],
                "alpha": tf.exp(self.log_alpha)}

    def train_graph(self, batches, unroll: int = 0):
        """K updates on a [K, B, ...] stack of batches, traced into the caller's graph: a graph loop, or
        ``unroll`` (= K, static) straight-line updates (no while-loop frame: cheaper at small K)."""
        zero = tf.constant(0.0)
        metrics = (zero, zero, zero, zero, zero)
        if unroll:
            for i in range(unroll):
                metrics = self._update({key: v[i] for key, v in batches.items()}, metrics)
            return self._metrics(metrics)
        k = tf.shape(batches["rewards"])[0]
        for i in tf.range(k):
            metrics = self._update({key: v[i] for key, v in batches.items()}, metrics)
        return self._metrics(metrics)
