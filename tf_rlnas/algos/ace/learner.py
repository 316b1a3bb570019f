"""ACE learner: SAC with a causality-weighted log-prob, gradient dormancy and soft resets.

- ``entropy_log_prob``: log pi_c = sum_i w_i l_i with per-dimension tanh-Gaussian terms l_i; used
  in the critic target, the actor loss and the alpha loss (SAC's one hook).
- ``after_actor_grads``: dormant ratio of the policy from the latest actor gradients: per output
  neuron of every Dense layer the L2 norm of its kernel-gradient column; dormant below
  ``threshold`` x the layer's mean; ratio = dormant / all neurons.
- ``soft_reset(f)``: theta <- f theta + (1 - f) theta_fresh for the policy, the critic and the target
  critic (each with its own fresh, seeded initialisation), and the actor and critic optimizers' moments
  cleared. log_alpha and its optimizer are kept.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tf_rlnas.algos.sac.learner import SACLearner


def dormant_ratio(kernel_grads: list[tf.Tensor], threshold: float) -> tf.Tensor:
    dormant, total = tf.constant(0.0), 0
    for g in kernel_grads:
        norms = tf.norm(g, axis=0)  # [out]: one norm per output neuron
        dormant += tf.reduce_sum(tf.cast(norms < threshold * tf.reduce_mean(norms), tf.float32))
        total += int(g.shape[-1])
    return dormant / float(total)


def perturb_factor(mode: str, dormant: float, weights: np.ndarray) -> float:
    if mode == "causal_reset":
        diff = float(np.max(weights) - np.min(weights))
        return float(np.clip(1.0 - (math.exp(-8.0 * diff) - 0.5), 0.2, 0.9))
    return float(np.clip(1.0 - dormant, 0.2, 0.9))


class ACELearner(SACLearner):
    dormant_threshold = 0.05

    def build_extra(self) -> None:
        self.causal_w = tf.Variable(tf.ones(self.act_dim), trainable=False, name="causal_weights")
        self.dormant = tf.Variable(0.0, trainable=False, name="dormant_ratio")
        kernels = {id(l.kernel) for l in self.actor.dense_layers()}
        self._kernel_idx = [i for i, v in enumerate(self.actor.trainable_variables) if id(v) in kernels]

    def trackables(self) -> dict:
        return {**super().trackables(), "causal_w": self.causal_w, "dormant": self.dormant}

    def entropy_log_prob(self, per_dim: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(per_dim * self.causal_w, axis=-1)

    def after_actor_grads(self, grads) -> None:
        self.dormant.assign(dormant_ratio([grads[i] for i in self._kernel_idx], self.dormant_threshold))

    def soft_reset(self, factor: float) -> None:
        """theta <- f theta + (1 - f) theta_fresh for actor, critic and target critic; a fresh draw of
        the layers' own initialisation (Glorot-uniform kernels, zero biases), seeded from the
        learner's checkpointed generator so a resumed run resets to the same values."""
        for model in (self.actor, self.critic, self.target_critic):
            seeds = self.rng.make_seeds(len(model.weights))
            for i, v in enumerate(model.weights):
                v.assign(factor * v + (1.0 - factor) * fresh_init(v, seeds[:, i]))
        for opt in (self.actor_opt, self.critic_opt):
            opt.reset_moments()


def fresh_init(v: tf.Variable, seed: tf.Tensor) -> tf.Tensor:
    """A new draw of ``Linear``'s initialisation for ``v``: Glorot-uniform if 2-D, zeros otherwise."""
    if len(v.shape) != 2:
        return tf.zeros_like(v)
    fan_in, fan_out = int(v.shape[0]), int(v.shape[1])
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tf.random.stateless_uniform(v.shape, seed, -limit, limit, dtype=v.dtype)
