"""Exact KL Hessian-vector products for MLP Gaussian meta-policies, written out by hand.

TRPO's conjugate gradient calls ``v -> H v`` about 11 times per meta-iteration with the
meta-parameters FIXED, where H is the Hessian of the mean KL(new' || old') w.r.t. theta through
the adaptation theta' = theta - alpha grad L_in(theta). Autodiff (``gauss_newton`` /
``double_backprop`` in the learner) re-runs the forward passes, the inner gradient and the tape
bookkeeping at every call. Here the products are Pearlmutter's R-operator applied by hand to the
MLP, with every quantity that depends only on theta (layer inputs, activation derivatives, the
inner loss's backward pass) computed ONCE per meta-iteration and reused by every CG iteration:

    H v = sum_k J_k^T F_k J_k v + damping v

- ``F_k``: the Fisher of the Gaussian at theta'_k on task k's validation steps, ``J_mu^T
  diag(w / sigma^2) J_mu`` for the mean plus ``2 w`` on the log-std (weights w = mask / (n_k K)).
  It equals the KL Hessian here because new' = old' (the KL's gradient w.r.t. the distribution's
  parameters is zero, so no curvature-of-the-network term).
- ``J_k = prod_j (I - alpha_j H_in,j)`` over the inner steps (``I`` when first order), with
  ``H_in,j`` the Hessian of task k's inner loss on its training episodes at theta^(j): symmetric,
  so J^T applies the same factors in reverse order. ``H_in u`` is the R-operator of the inner
  loss's backward pass (forward-over-reverse by hand), exact for the loss
  ``-masked_mean(log N(a; mu, sigma) A)`` including the log-std's terms and the min-std clip.

Each product costs 4 matmuls of the hidden width per hidden layer for F and 6 per hidden layer
and inner step for J and J^T, with nothing recomputed; equality with the autodiff products is a
unit test (relu and tanh, one and two inner steps, first and second order, padded steps).
"""

from __future__ import annotations

import tensorflow as tf


def _mm(x, w):
    """[K, N, i] x [K, i, o] -> [K, N, o]: every task with its own parameters."""
    return tf.einsum("kni,kio->kno", x, w)


def _outer(x, g):
    """sum_n x[k, n, i] g[k, n, o] -> [K, i, o]: a weight's gradient for every task."""
    return tf.einsum("kni,kno->kio", x, g)


class MLPGaussianCurvature:
    """Cache of one meta-iteration's theta-dependent quantities and the product ``v -> H v``.

    ``policy``: a Gaussian :class:`MetaPolicy` (relu or tanh); ``steps``: per inner step
    ``(params_j [K, ...] list, obs [K, N, D], actions [K, N, A], coef [K, N])`` with coef =
    advantage * mask / n_k (the inner loss's per-row weight), empty when first order (J = I);
    ``adapted``: theta' [K, ...]; ``valid_obs`` [K, N, D] and ``valid_w`` [K, N] = mask / (n_k K)."""

    def __init__(self, policy, steps, lrs, adapted, valid_obs, valid_w):
        self.policy = policy
        self.n_layers = len(policy.layer_params) // 2
        self.act = policy.activation_name
        self.lrs = lrs
        self.inner = [self._inner_cache(p, o, a, c) for p, o, a, c in steps]
        self.valid = self._forward_cache(adapted, valid_obs)
        self.valid_w = valid_w

    # ---- caches -----------------------------------------------------------------------------
    def _forward_cache(self, params, obs):
        xs, d1, d2 = [obs], [], []
        h = obs
        for i in range(self.n_layers):
            z = _mm(h, params[2 * i]) + params[2 * i + 1][:, None, :]
            if i < self.n_layers - 1:
                if self.act == "relu":
                    h = tf.nn.relu(z)
                    d1.append(tf.cast(z > 0, z.dtype))
                    d2.append(None)
                else:
                    h = tf.tanh(z)
                    d1.append(1.0 - tf.square(h))
                    d2.append(-2.0 * h * d1[-1])
                xs.append(h)
        s = params[-1]
        smask = tf.cast(s > self.policy.min_log_std, s.dtype)
        std = tf.exp(tf.maximum(s, self.policy.min_log_std))
        return {"params": params, "xs": xs, "d1": d1, "d2": d2, "mu": z, "inv_var": 1.0 / tf.square(std)[:, None, :],
                "smask": smask}

    def _inner_cache(self, params, obs, actions, coef):
        c = self._forward_cache(params, obs)
        diff = c["mu"] - actions
        gmu = coef[..., None] * diff * c["inv_var"]  # dL/dmu
        c["gmu"] = gmu
        c["coef_inv_var"] = coef[..., None] * c["inv_var"]
        c["s_curv"] = 2.0 * tf.reduce_sum(coef[..., None] * tf.square(diff) * c["inv_var"], axis=1)  # d2L/ds2 [K, A]
        gz, gzs, gxs = gmu, [None] * self.n_layers, [None] * self.n_layers
        for i in reversed(range(self.n_layers)):
            gzs[i] = gz
            if i > 0:
                gx = tf.einsum("kno,kio->kni", gz, c["params"][2 * i])
                gxs[i] = gx
                gz = gx * c["d1"][i - 1]
        c["gz"], c["gx"] = gzs, gxs
        return c

    # ---- building blocks --------------------------------------------------------------------
    def _jvp(self, c, v):
        """R-operator of the forward pass: the change of every pre-activation along ``v``."""
        rzs, rx = [], None
        for i in range(self.n_layers):
            rz = _mm(c["xs"][i], v[2 * i]) + v[2 * i + 1][:, None, :]
            if rx is not None:
                rz = rz + _mm(rx, c["params"][2 * i])
            rzs.append(rz)
            if i < self.n_layers - 1:
                rx = c["d1"][i] * rz
        return rzs

    def _vjp(self, c, gmu):
        """Backward pass of the mean: per-task gradients of sum(gmu * mu) w.r.t. the layers."""
        out = [None] * (2 * self.n_layers)
        gz = gmu
        for i in reversed(range(self.n_layers)):
            out[2 * i] = _outer(c["xs"][i], gz)
            out[2 * i + 1] = tf.reduce_sum(gz, axis=1)
            if i > 0:
                gz = tf.einsum("kno,kio->kni", gz, c["params"][2 * i]) * c["d1"][i - 1]
        return out

    def inner_hvp(self, c, v):
        """H_in v per task: the R-operator of the inner loss's backward pass."""
        rzs = self._jvp(c, v)
        rmu = rzs[-1]
        rs = c["smask"] * v[-1]  # the clipped log-std's change
        # d gmu = coef / sigma^2 d mu - 2 gmu d s  (gmu = coef (mu - a) / sigma^2)
        rg = c["coef_inv_var"] * rmu - 2.0 * c["gmu"] * rs[:, None, :]
        out = [None] * (2 * self.n_layers)
        for i in reversed(range(self.n_layers)):
            rx = None if i == 0 else c["d1"][i - 1] * rzs[i - 1]
            gw = _outer(c["xs"][i], rg)
            if rx is not None:
                gw = gw + _outer(rx, c["gz"][i])
            out[2 * i] = gw
            out[2 * i + 1] = tf.reduce_sum(rg, axis=1)
            if i > 0:
                rgx = tf.einsum("kno,kio->kni", rg, c["params"][2 * i]) + tf.einsum("kno,kio->kni", c["gz"][i], v[2 * i])
                rg = rgx * c["d1"][i - 1]
                if c["d2"][i - 1] is not None:
                    rg = rg + c["gx"][i] * c["d2"][i - 1] * rzs[i - 1]
        # log-std: d(dL/ds) = -2 sum_n gmu d mu + s_curv d s, through the clip mask
        rgs = c["smask"] * (-2.0 * tf.reduce_sum(c["gmu"] * rmu, axis=1) + c["s_curv"] * rs)
        return out + [rgs]

    def fisher(self, u):
        c = self.valid
        rmu = self._jvp(c, u)[-1]
        w = self.valid_w[..., None]
        grads = self._vjp(c, w * c["inv_var"] * rmu)
        s2 = c["smask"] * c["smask"] * 2.0 * tf.reduce_sum(self.valid_w, axis=1)[:, None]
        return grads + [s2 * u[-1]]

    def hvp(self, v_list, damping: float):
        """``H v + damping v`` for ``v`` a list shaped like the meta-parameters (no task axis)."""
        k = self.valid_w.shape[0]
        lrs = tf.unstack(self.lrs)[:len(self.inner)]
        u = [tf.broadcast_to(p[None], [k, *p.shape]) for p in v_list]
        for c, lr in zip(self.inner, lrs):
            u = [a - lr * b for a, b in zip(u, self.inner_hvp(c, u))]
        w = self.fisher(u)
        for c, lr in reversed(list(zip(self.inner, lrs))):
            w = [a - lr * b for a, b in zip(w, self.inner_hvp(c, w))]
        return [tf.reduce_sum(x, axis=0) + damping * p for x, p in zip(w, v_list)]
