"""MAML-TRPO learner: returns/advantages, the inner adaptation and the TRPO meta-update, all as
``tf.function``s with fixed shapes (K tasks x E episodes x T steps): traced once per run.

A batch is a tuple ``(obs [K,E,T,D], actions [K,E,T,A] or [K,E,T], advantages [K,E,T],
mask [K,E,T])``; padded steps (after an episode ended) have mask 0 everywhere.

- inner loss of task k: ``-sum(log pi(a|s; theta_k) A mask) / sum(mask)`` over its episodes; the
  gradient of the SUM over tasks w.r.t. the task-tiled parameters is every task's own gradient,
  so one tape adapts all K tasks: ``theta_k' = theta_k - lr * grad_k`` (log-std included).
  Second order by default: the outer tape differentiates through that gradient;
  ``first_order`` stops it.
- outer (TRPO): surrogate ``-mean_k masked-mean(exp(log pi'_new - log pi'_old) A)`` on the
  validation episodes sampled with the adapted parameters; mean KL(new' || old') over valid steps;
  Hessian-vector products of the KL by double differentiation (+ damping v); conjugate gradient;
  step scaled to ``max_kl``; backtracking line search restoring theta when nothing is accepted.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_rlnas.algos.maml_trpo import baseline, trpo
from tf_rlnas.algos.maml_trpo.curvature import MLPGaussianCurvature
from tf_rlnas.algos.maml_trpo.policies import MetaPolicy
from tf_rlnas.distributions import diag_gaussian_kl
from tf_rlnas.returns import discounted_cumsum, gae_masked  # noqa: F401  (re-exported for tests)


def masked_mean(x, mask, axis=(1, 2)):
    return tf.reduce_sum(x * mask, axis=axis) / tf.maximum(tf.reduce_sum(mask, axis=axis), 1.0)


def row_weights(mask):
    """mask / (a task's valid steps): the weight of each row in that task's masked mean."""
    return mask / tf.maximum(tf.reduce_sum(mask, axis=(1, 2), keepdims=True), 1.0)


class MAMLLearner:
    def __init__(self, policy: MetaPolicy, k: int, e: int, t: int, obs_dim: int, cfg):
        self.policy, self.cfg = policy, cfg
        self.k, self.e, self.t = k, e, t
        m = cfg.maml
        self.gamma, self.lam, self.normalize = m.gamma, m.gae_lambda, m.normalize_advantages
        self.first_order, self.num_steps = m.first_order, m.num_steps
        self.max_kl, self.damping, self.cg_iters = m.max_kl, m.cg_damping, m.cg_iters
        self.hvp_method = m.hvp
        self.subsample = m.curvature_subsample
        self.variables = [p.value for p in policy.params]  # the raw tf.Variables
        f32 = tf.float32
        act = (tf.TensorSpec([k, e, t], tf.int32) if not policy.gaussian
               else tf.TensorSpec([k, e, t, policy.act_dim], f32))
        self.batch_spec = (tf.TensorSpec([k, e, t, obs_dim], f32), act, tf.TensorSpec([k, e, t], f32),
                           tf.TensorSpec([k, e, t], f32))
        raw = (tf.TensorSpec([k, e, t, obs_dim], f32), tf.TensorSpec([k, e, t], f32), tf.TensorSpec([k, e, t], f32))
        params_spec = [tf.TensorSpec([k, *p.shape], f32) for p in policy.params]
        obs_spec = tf.TensorSpec([k, e, obs_dim], f32)
        self.traces = {"advantages": 0, "act": 0, "inner": 0, "direction": 0, "evaluate": 0}
        self.advantages = tf.function(self._advantages, input_signature=raw)
        self.act = tf.function(self._act, input_signature=[params_spec, obs_spec, tf.TensorSpec([2], tf.int64),
                                                           tf.TensorSpec([], tf.bool)])
        self.inner_step = tf.function(self._inner_step, input_signature=[params_spec, self.batch_spec,
                                                                          tf.TensorSpec([], f32)])
        steps = tuple([self.batch_spec] * self.num_steps)
        lrs = tf.TensorSpec([self.num_steps], f32)
        self.direction = tf.function(self._direction, input_signature=[steps, lrs, self.batch_spec],
                                     jit_compile=m.jit_compile)
        self.evaluate = tf.function(self._evaluate, input_signature=[steps, lrs, self.batch_spec,
                                                                     tf.TensorSpec([k, e, t], f32),
                                                                     self._dist_spec()])

    def _dist_spec(self):
        """(mean, std) of a Gaussian or (log-probs, log-probs) of a categorical, per valid-batch row."""
        spec = tf.TensorSpec([self.k, self.e * self.t, self.policy.act_dim], tf.float32)
        return (spec, spec)

    # ---- data -------------------------------------------------------------------------------
    def _advantages(self, obs, rewards, mask):
        self.traces["advantages"] += 1
        returns = discounted_cumsum(rewards, mask, self.gamma)
        values = baseline.fit_predict(obs, mask, returns)
        adv = gae_masked(rewards, values, mask, self.gamma, self.lam)
        if self.normalize:  # per task, over its valid steps
            mean = masked_mean(adv, mask)[:, None, None]
            var = masked_mean(tf.square(adv - mean), mask)[:, None, None]
            adv = (adv - mean) / (tf.sqrt(var) + 1e-8) * mask
        return adv

    def _act(self, params, obs, seed, deterministic):
        self.traces["act"] += 1
        a, b = self.policy.forward(params, obs)
        if self.policy.gaussian:
            eps = tf.random.stateless_normal(tf.shape(a), seed)
            return tf.where(deterministic, a, a + b * eps)
        sample = tf.random.stateless_categorical(tf.reshape(a, [-1, a.shape[-1]]), 1, seed)
        sample = tf.reshape(tf.cast(sample, tf.float32), tf.shape(a)[:-1])
        return tf.where(deterministic, tf.cast(tf.argmax(a, -1), tf.float32), sample)

    # ---- inner loop -------------------------------------------------------------------------
    def _flat(self, x):  # [K, E, T, ...] -> [K, E*T, ...]
        return tf.reshape(x, tf.concat([[self.k, self.e * self.t], tf.shape(x)[3:]], 0))

    def log_prob(self, params, obs, actions):
        lp = self.policy.dist(params, self._flat(obs)).log_prob(self._flat(actions))
        return tf.reshape(lp, [self.k, self.e, self.t])

    def inner_loss(self, params, batch):
        obs, actions, adv, mask = batch
        return tf.reduce_sum(-masked_mean(self.log_prob(params, obs, actions) * adv, mask))

    def adapt_from(self, params, batch, lr, first_order: bool):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = self.inner_loss(params, batch)
        grads = tape.gradient(loss, params)
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        return [p - lr * g for p, g in zip(params, grads)]

    def _inner_step(self, params, batch, lr):
        self.traces["inner"] += 1
        return self.adapt_from(params, batch, lr, first_order=True)

    def adapted(self, train_batches, lrs):
        """theta' as a function of the meta-parameters (through every inner step)."""
        params = self.policy.tiled(self.k, self.variables)  # the raw variables: gradients flow to them
        for i, b in enumerate(train_batches):
            params = self.adapt_from(params, b, lrs[i], self.first_order)
        return params

    # ---- outer loop -------------------------------------------------------------------------
    def _dist_params(self, params, obs):
        a, b = self.policy.forward(params, self._flat(obs))
        return (a, b) if self.policy.gaussian else (tf.nn.log_softmax(a), tf.nn.log_softmax(a))

    def _kl(self, new, old, mask):
        """mean over tasks of the masked mean KL(new || old)."""
        if self.policy.gaussian:
            (mn, sn), (mo, so) = new, old
            kl = diag_gaussian_kl(mn, sn, mo, so)
        else:
            ln, lo = new[0], old[0]
            kl = tf.reduce_sum(tf.exp(ln) * (ln - lo), -1)
        return tf.reduce_mean(masked_mean(tf.reshape(kl, [self.k, self.e, self.t]), mask))

    def _surrogate_kl(self, train_batches, lrs, valid, old_logp, old_dist):
        obs, actions, adv, mask = valid
        params = self.adapted(train_batches, lrs)
        logp = self.log_prob(params, obs, actions)
        ratio = tf.exp(logp - old_logp)
        loss = -tf.reduce_mean(masked_mean(ratio * adv, mask))
        kl = self._kl(self._dist_params(params, obs), old_dist, mask)
        return loss, kl

    def old_policy(self, train_batches, lrs, valid):
        params = self.adapted(train_batches, lrs)
        obs, actions, _, _ = valid
        return (tf.stop_gradient(self.log_prob(params, obs, actions)),
                tuple(tf.stop_gradient(x) for x in self._dist_params(params, obs)))

    def _direction(self, train_batches, lrs, valid):
        """At the current theta: loss, the TRPO step (CG on the damped KL Hessian, scaled to
        max_kl), and the CG residual."""
        self.traces["direction"] += 1
        old_logp, old_dist = self.old_policy(train_batches, lrs, valid)
        with tf.GradientTape() as tape:
            loss, _ = self._surrogate_kl(train_batches, lrs, valid, old_logp, old_dist)
        grad = trpo.flat_concat(tape.gradient(loss, self.variables))

        hvp = self.make_hvp(train_batches, lrs, valid, old_logp, old_dist)
        step_dir, residual = trpo.conjugate_gradient(hvp, grad, self.cg_iters)
        scale = trpo.step_size(step_dir, hvp(step_dir), self.max_kl)
        return loss, step_dir * scale, residual, old_logp, old_dist, tf.linalg.norm(grad)

    def make_hvp(self, train_batches, lrs, valid, old_logp, old_dist, method: str | None = None):
        """``v -> H v + damping v`` for H the Hessian of the mean KL w.r.t. the meta-parameters at
        the current theta (where new' = old').

        ``double_backprop``: grad of <grad KL, v> through the whole adaptation (exact; third-order
        terms through the inner gradient at every call). ``gauss_newton``: J^T F (J v) with
        J = d theta' / d theta and F the Fisher of the KL at theta' - also exact at this point,
        because grad_theta' KL = 0 where new' = old', so the curvature term of theta'(theta)
        vanishes; J v is a forward-mode JVP through the adaptation, J^T u a reverse VJP on a tape
        kept for all CG iterations, F u a double backprop through the policy alone."""
        method = method or self.hvp_method
        if method == "analytic" and self.policy.gaussian:
            return self._analytic_hvp(train_batches, lrs, valid)
        if method == "double_backprop":
            def hvp(v):
                with tf.GradientTape() as outer:
                    with tf.GradientTape() as inner:
                        _, kl = self._surrogate_kl(train_batches, lrs, valid, old_logp, old_dist)
                    g = trpo.flat_concat(inner.gradient(kl, self.variables))
                    gv = tf.reduce_sum(g * tf.stop_gradient(v))
                return trpo.flat_concat(outer.gradient(gv, self.variables)) + self.damping * v
            return hvp
        obs, _, _, mask = valid
        with tf.GradientTape(persistent=True) as adapt_tape:
            adapted = self.adapted(train_batches, lrs)
        at = [tf.stop_gradient(p) for p in adapted]

        def fisher(u):
            with tf.GradientTape() as t2:
                t2.watch(at)
                with tf.GradientTape() as t1:
                    t1.watch(at)
                    kl = self._kl(self._dist_params(at, obs), old_dist, mask)
                g = t1.gradient(kl, at)
                gu = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(g, u)])
            return t2.gradient(gu, at)

        def hvp(v):
            with tf.autodiff.ForwardAccumulator(self.variables, trpo.unflatten(v, self.variables)) as acc:
                ad = self.adapted(train_batches, lrs)
            jv = [tf.zeros_like(p) if j is None else j for p, j in zip(ad, acc.jvp(ad))]
            jt = adapt_tape.gradient(adapted, self.variables, output_gradients=fisher(jv))
            return trpo.flat_concat(jt) + self.damping * v
        return hvp

    def _analytic_hvp(self, train_batches, lrs, valid):
        """``analytic``: the same J^T F J v with every theta-dependent quantity computed once and
        the R-operator products written out (``curvature.MLPGaussianCurvature``).

        With ``maml.curvature_subsample`` s > 1 the products use every s-th step of each task's
        rows (after flattening episodes x time), each task's row weights rescaled to the same
        total: an estimate of the same curvature at 1/s of the cost, as OpenAI baselines' TRPO
        computes its Fisher products on every 5th sample. The adapted parameters, the gradient,
        the KL of the scaled step and the line search still use every row."""
        s = self.subsample

        def rows(x):  # [K, E, T, ...] -> every s-th row of [K, E*T, ...]
            return self._flat(x)[:, ::s]

        def weights(mask):  # per-row weights of a task's masked mean, on the kept rows, same total
            w = tf.reshape(row_weights(mask), [self.k, -1])
            if s == 1:
                return w
            kept = w[:, ::s]
            total = tf.reduce_sum(w, axis=1, keepdims=True)
            return kept * tf.math.divide_no_nan(total, tf.reduce_sum(kept, axis=1, keepdims=True))

        params = [tf.stop_gradient(p) for p in self.policy.tiled(self.k, self.variables)]
        steps = []
        for i, b in enumerate(train_batches):
            obs, actions, adv, mask = b
            steps.append((params, rows(obs), rows(actions), rows(adv) * weights(mask)))
            params = [tf.stop_gradient(p) for p in self.adapt_from(params, b, lrs[i], first_order=True)]
        obs, _, _, mask = valid
        w = weights(mask) / self.k  # the KL is the mean over tasks of masked means
        curv = MLPGaussianCurvature(self.policy, [] if self.first_order else steps, lrs, params, rows(obs), w)

        def hvp(v):
            return trpo.flat_concat(curv.hvp(trpo.unflatten(v, self.variables), self.damping))
        return hvp

    def _evaluate(self, train_batches, lrs, valid, old_logp, old_dist):
        self.traces["evaluate"] += 1
        return self._surrogate_kl(train_batches, lrs, valid, old_logp, old_dist)

    def meta_update(self, train_batches, lrs, valid, ls_steps: int, ls_ratio: float) -> dict:
        loss, full_step, residual, old_logp, old_dist, gnorm = self.direction(train_batches, lrs, valid)

        def evaluate():
            lo, kl = self.evaluate(train_batches, lrs, valid, old_logp, old_dist)
            return float(lo), float(kl)

        steps, new_loss, kl = trpo.backtracking_line_search(self.variables, full_step, evaluate, float(loss),
                                                            self.max_kl, ls_steps, ls_ratio)
        return {"meta/surrogate_before": float(loss), "meta/surrogate_after": new_loss, "meta/kl_after": kl,
                "meta/line_search_steps": float(steps), "meta/step_accepted": float(steps >= 0),
                "meta/cg_residual": float(residual), "meta/grad_norm": float(gnorm)}


def to_batch(data: dict, adv) -> tuple:
    actions = data["actions"].astype(np.int32) if data["actions"].ndim == 3 else data["actions"]
    return (tf.constant(data["obs"]), tf.constant(actions), tf.convert_to_tensor(adv), tf.constant(data["mask"]))
