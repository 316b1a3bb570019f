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
        self.train = tf.function(self._train, input_signature=[batch_spec], jit_compile=jit_compile)
        self.train_unrolled = tf.function(self._train, jit_compile=jit_compile)
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
        return tf.cond(deterministic, dist.mode, lambda: self._sample_action(dist))

    def _sample_action(self, dist) -> tf.Tensor:
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

    def _train(self, batches, unroll: int = 0):
        """K updates on a [K, B, ...] stack of batches: a graph loop, or ``unroll`` (= K, static)
        straight-line updates (no while-loop frame: measured ~1 ms less per call at K = 1)."""
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


# ConcreteFunction._call_flat (TF 2.x, pinned < 2.22 in setup.py) runs a concrete function on its
# flat inputs without binding them to the Python signature first: ~70 us less per call measured,
# ~2% of a SAC loop step. Without it (another TF) the public call is used.
try:
    from tensorflow.python.eager.polymorphic_function.concrete_function import ConcreteFunction as _Concrete
    _CALL_FLAT = hasattr(_Concrete, "_call_flat")
except ImportError:
    _CALL_FLAT = False
try:  # one step further down: run the function's op directly (~30 us less than _call_flat, measured)
    from tensorflow.python.eager import context as _context
    from tensorflow.python.eager import execute as _execute
except ImportError:
    _execute = None


def _direct_call(fn):
    """A callable running concrete function ``fn`` (one tensor output, no cancellation context) as
    ONE eager op of its function: what ``_call_flat`` ends in, without its Python layers (argument
    count check, control-dependency and tape-pause contexts, output packing). None when this TF
    does not expose the pieces; the caller then uses ``_call_flat``."""
    try:
        atomic = fn._inference_function
        name = atomic.name.decode("utf-8")
        if len(atomic.function_type.flat_outputs) != 1 or _execute is None:
            return None
        ctx = _context.context()
        attrs = tuple(x for kv in ctx.function_call_options.as_attrs().items() for x in kv)
        captured = list(fn.captured_inputs)
    except Exception:  # another TF's internals
        return None
    return lambda inputs: _execute.execute(name, 1, inputs + captured, attrs, ctx)[0]

METRICS = ("critic_loss", "mean_q", "actor_loss", "alpha_loss", "entropy", "alpha")


class EnvStep(tf.Module):
    """The training loop's ONE compiled call per environment step.

    ``__call__(packed, updates, random)``: ``packed`` [n_envs, obs_dim + 3] holds the step's next
    observations, rewards, terminated flags and keep flags (0 for a sub-env's autoreset step and for
    the call that follows ``reset``). In one graph: the kept transitions (previous obs and action,
    kept on the TF side) go into the replay buffer, ``updates`` updates run on uniform batches drawn
    with the learner's generator, and the action for the new observation comes back in [-1, 1]
    (uniform when ``random``; the caller scales it to the env's box). The last update's metrics stay
    in variables (read when a log is due).

    Whether updates run and whether the action is random are chosen in Python between four
    straight-line concrete functions, not with ``tf.cond``: a lowered cond pushes "dead" tensors
    through every node of the branch not taken (the whole update graph), which measured ~0.4 ms a
    call. Each function runs as one eager op of its graph (:func:`_direct_call`: ~0.1 ms less
    argument dispatch than a ``tf.function`` call, ~30 us less than ``_call_flat``), or through
    ``_call_flat`` / the public call where this TF lacks the pieces.
    """

    UNROLL = 2  # up to this many updates per call run unrolled; more run in a graph loop

    def __init__(self, learner: SACLearner, buffer, num_envs: int, batch_size: int):
        super().__init__(name="env_step")
        self.learner, self.buffer, self.batch_size = learner, buffer, int(batch_size)
        self.obs_dim, self.act_dim = learner.obs_dim, learner.act_dim
        self.num_envs = int(num_envs)
        self.last_obs = tf.Variable(tf.zeros((num_envs, self.obs_dim)), trainable=False)
        self.last_act = tf.Variable(tf.zeros((num_envs, self.act_dim)), trainable=False)
        self.metrics = {k: tf.Variable(0.0, trainable=False) for k in METRICS}
        self._fns: dict = {}
        self._concrete: dict = {}
        self._counts: dict = {}  # update count -> its int32 tensor

    def __call__(self, packed: np.ndarray, updates: int, random: bool) -> tf.Tensor:
        key = (min(int(updates), self.UNROLL + 1), bool(random))
        fn = self._fns.get(key)
        if fn is None:
            spec = [tf.TensorSpec([self.num_envs, self.obs_dim + 3], tf.float32), tf.TensorSpec([], tf.int32)]
            concrete = tf.function(lambda p, k: self._call(p, k, *key), input_signature=spec).get_concrete_function()
            direct = _direct_call(concrete)
            if direct is not None:
                fn = direct
            elif _CALL_FLAT:  # the inputs are already the flat tensor list: skip the signature binding
                fn = lambda inputs, c=concrete: c._call_flat(inputs, c.captured_inputs)  # noqa: E731
            else:
                fn = lambda inputs, c=concrete: c(*inputs)  # noqa: E731
            self._fns[key] = fn
            self._concrete[key] = concrete  # keeps the function (and its graph) alive
        k = self._counts.get(updates)
        if k is None:
            k = self._counts[updates] = tf.constant(updates, tf.int32)
        return fn([tf.constant(packed), k])

    def updates_only(self, k: int):
        """A concrete function running the loop's update path alone: ``k`` uniform batches drawn
        from the TF replay buffer and ``k`` updates (unrolled up to ``UNROLL``, else a graph loop)
        in one call, no inputs; returns the last update's metrics. For ``bench sac``."""
        def fn():
            return self._updates(self.buffer.sample_tf(self.learner.rng, k, self.batch_size), k)
        return tf.function(fn).get_concrete_function()

    def _updates(self, batches, k: int):
        """``k`` updates traced into the caller's graph: unrolled up to ``UNROLL``, else a graph loop.
        Inline, not through the learner's ``tf.function``s (a nested function call measured ~10%
        of an update at 1 per call), except under XLA where the nested function is the XLA cluster."""
        learner = self.learner
        if learner.jit_compile:
            return learner.train_unrolled(batches, k) if k <= self.UNROLL else learner.train(batches)
        return learner._train(batches, unroll=k if k <= self.UNROLL else 0)

    def _call(self, packed, k, updates: int, random: bool):
        d = self.obs_dim
        next_obs, rewards, term, keep = packed[:, :d], packed[:, d], packed[:, d + 1], packed[:, d + 2]
        self.buffer.append(self.last_obs, self.last_act, rewards, next_obs, term, keep)
        if updates:
            batches = self.buffer.sample_tf(self.learner.rng, k, self.batch_size)
            out = self._updates(batches, updates)
            for name in METRICS:
                self.metrics[name].assign(out[name])
        if random:
            action = self.learner.rng.uniform(tf.stack([tf.shape(next_obs)[0], self.act_dim]), -1.0, 1.0)
        else:  # the stochastic branch of learner._act without its tf.cond (an If node per call)
            action = self.learner._sample_action(self.learner.actor.dist(next_obs, full_precision=True))
        self.last_obs.assign(next_obs)
        self.last_act.assign(action)
        return action
