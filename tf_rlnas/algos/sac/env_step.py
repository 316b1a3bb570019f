"""The SAC training loop's compiled step (:class:`EnvStep`): one call per environment step stores
the step's transitions in the TF-side replay, runs the updates owed and returns the next action,
through the learner's public methods (``sample_action``, ``train_graph``, ``actor``, ``rng``).

Calling a concrete function costs Python-side argument handling per call; at one call per env step
it matters, so :func:`fast_caller` calls it through TensorFlow internals where this TF has them and
falls back to the public call where it does not (tested both ways).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def fast_caller(concrete):
    """A callable ``f([inputs...]) -> output`` running ``concrete`` as cheaply as this TF allows:
    one eager op of its function (TF internals: ``execute`` of the inference function), else
    ``ConcreteFunction._call_flat``, else the public call. The only place that touches TF internals."""
    direct = _direct_call(concrete)
    if direct is not None:
        return direct
    if _CALL_FLAT:  # the inputs are already the flat tensor list: skip the signature binding
        return lambda inputs, c=concrete: c._call_flat(inputs, c.captured_inputs)
    return lambda inputs, c=concrete: c(*inputs)


# ConcreteFunction._call_flat (TF 2.x, pinned < 2.22 in setup.py) runs a concrete function on its
# flat inputs without binding them to the Python signature first: ~70 us less per call 
# a few percent of a SAC loop step. Without it (another TF) the public call is used.
try:
    from tensorflow.python.eager.polymorphic_function.concrete_function import ConcreteFunction as _Concrete
    _CALL_FLAT = hasattr(_Concrete, "_call_flat")
except ImportError:
    _CALL_FLAT = False
try:  # one step further down: run the function's op directly
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
    through every node of the branch not taken (the whole update graph), which costs a
    large share of a call. Each function is called through :func:`fast_caller`.
    """

    UNROLL = 2  # up to this many updates per call run unrolled; more run in a graph loop

    def __init__(self, learner, buffer, num_envs: int, batch_size: int):
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
            fn = self._fns[key] = fast_caller(concrete)
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
        Inline, not through the learner's ``tf.function``s (a nested function call costs a
        noticeable share of an update at 1 per call), except under XLA where the nested function is the XLA cluster."""
        learner = self.learner
        if learner.jit_compile:
            return learner.train_unrolled(batches, k) if k <= self.UNROLL else learner.train(batches)
        return learner.train_graph(batches, unroll=k if k <= self.UNROLL else 0)

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
            action = self.learner.sample_action(self.learner.actor.dist(next_obs, full_precision=True))
        self.last_obs.assign(next_obs)
        self.last_act.assign(action)
        return action
