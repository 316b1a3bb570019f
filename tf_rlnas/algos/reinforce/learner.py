"""The REINFORCE learner: acting and the update, each one ``tf.function`` traced once.

Loss (weighted Gaussian log-likelihood):
    L = -mean_t [ log N(a_t | mu(s_t), sigma(s_t)) * A_t ]  -  c_ent * mean entropy
with A_t = G_t - b (returns-to-go minus a running-mean baseline) or the (GAE) advantage
under a learned V(s). V(s) is fitted to the returns in the same graph.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_rlnas.algos.reinforce.networks import GaussianActor, value_network
from tf_rlnas.distributions import diag_gaussian


class ReinforceLearner(tf.Module):
    def __init__(self, obs_dim: int, act_dim: int, cfg, seed: int):
        super().__init__(name="reinforce")
        a, t = cfg.actor, cfg.train
        self.train_cfg = t
        self.actor = GaussianActor(obs_dim, act_dim, a.hidden, a.activation, a.init_mu, a.init_sigma,
                                   a.min_sigma, a.state_dependent_sigma)
        self.actor_opt = keras.optimizers.Adam(t.lr)
        self.actor_opt.build(self.actor.trainable_variables)
        self.value = None
        if t.baseline == "value":
            self.value = value_network(obs_dim, t.value_hidden)
            self.value_opt = keras.optimizers.Adam(t.value_lr)
            self.value_opt.build(self.value.trainable_variables)
        self.baseline = tf.Variable(0.0, trainable=False, name="baseline")
        self.baseline_ready = tf.Variable(False, trainable=False, name="baseline_ready")
        self.rng = tf.random.Generator.from_seed(seed)
        spec = tf.TensorSpec([None, obs_dim], tf.float32)
        self.act = tf.function(self._act, input_signature=[spec])
        self.values = tf.function(self._values, input_signature=[spec])
        self.update = tf.function(self._update, input_signature=[
            spec, tf.TensorSpec([None, act_dim], tf.float32), tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None], tf.float32)])

    def trackables(self) -> dict:
        out = {"actor": self.actor, "actor_opt": self.actor_opt, "baseline": self.baseline,
               "baseline_ready": self.baseline_ready, "rng": self.rng}
        if self.value is not None:
            out.update(value=self.value, value_opt=self.value_opt)
        return out

    def _act(self, obs):
        """Sample a ~ N(mu, sigma); returns (action, mu, sigma)."""
        mu, sigma = self.actor(obs)
        return mu + sigma * self.rng.normal(tf.shape(mu)), mu, sigma

    def _values(self, obs):
        return tf.squeeze(self.value(obs), -1)

    def _update(self, obs, actions, advantages, returns):
        t = self.train_cfg
        with tf.GradientTape() as tape:
            mu, sigma = self.actor(obs)
            dist = diag_gaussian(mu, sigma)
            logp = dist.log_prob(actions)
            pg_loss = -tf.reduce_mean(logp * advantages)
            entropy = tf.reduce_mean(dist.entropy())
            loss = pg_loss - t.entropy_coef * entropy
        grads = tape.gradient(loss, self.actor.trainable_variables)
        grad_norm = tf.linalg.global_norm(grads)
        if t.max_grad_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, t.max_grad_norm, use_norm=grad_norm)
        self.actor_opt.apply_gradients(zip(grads, self.actor.trainable_variables))
        out = {"loss": loss, "entropy": entropy, "grad_norm": grad_norm,
               "mu": tf.reduce_mean(mu), "sigma": tf.reduce_mean(sigma)}
        if self.value is not None:
            for _ in range(t.value_epochs):  # unrolled: a handful of steps
                with tf.GradientTape() as vtape:
                    v_loss = tf.reduce_mean(tf.square(self._values(obs) - returns))
                vgrads = vtape.gradient(v_loss, self.value.trainable_variables)
                self.value_opt.apply_gradients(zip(vgrads, self.value.trainable_variables))
            out["value_loss"] = v_loss
        return out

    def update_mean_baseline(self, batch_mean: float) -> float:
        """EMA baseline b <- decay * b + (1 - decay) * mean; the first batch sets it. Returns b before."""
        before = float(self.baseline.numpy()) if bool(self.baseline_ready.numpy()) else float(batch_mean)
        d = self.train_cfg.baseline_decay
        self.baseline.assign(d * before + (1.0 - d) * batch_mean)
        self.baseline_ready.assign(True)
        return before
