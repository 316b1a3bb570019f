"""PlaNet's export: :class:`PlanetPolicyModule`, the stateless serving module (the caller carries the
filter state) with the trained encoder, RSSM, reward head and, with SAC heads, the actor."""

from __future__ import annotations

import tensorflow as tf

from tf_rlnas.algos.planet.agent import PlanetAgent
from tf_rlnas.distributions import scale_action


class PlanetPolicyModule(tf.Module):
    """Stateless serving: the caller carries the filter state.

    ``serving_default(image [1, H, W, 3] uint8, prev_action [1, A], deter [1, D], stoch [1, S])
    -> {action, deter, stoch}``: filter the image into the posterior (its mean: deterministic),
    act with the SAC actor's mean when the run has SAC heads, else with CEM (fixed seed), and return
    the new state for the next call. Start an episode with zeros for prev_action, deter, stoch.
    ``plan(..., seed)``: the CEM planner with a caller-chosen seed."""

    def __init__(self, agent: PlanetAgent, low, high):
        super().__init__(name="planet_policy")
        # the models the signatures use are tracked; the agent itself (datasets, optimiser, ...)
        # is reached through a plain holder that SavedModel does not serialise
        self.encoder, self.rssm, self.reward = agent.encoder, agent.rssm, agent.reward
        if agent.sac is not None:
            self.actor = agent.sac.actor
        self._holder = _Holder(agent)
        self.low, self.high = tf.constant(low), tf.constant(high)
        m, size, a = agent.cfg.model, agent.cfg.env.image_size, agent.act_dim
        specs = [tf.TensorSpec([1, size, size, 3], tf.uint8, name="image"),
                 tf.TensorSpec([1, a], tf.float32, name="prev_action"),
                 tf.TensorSpec([1, m.deter], tf.float32, name="deter"),
                 tf.TensorSpec([1, m.stoch], tf.float32, name="stoch")]
        self.serving_default = tf.function(self._serve, input_signature=specs)
        self.plan = tf.function(self._plan, input_signature=specs + [tf.TensorSpec([], tf.int64, name="seed")])

    @property
    def agent(self) -> PlanetAgent:
        return self._holder.agent

    def _post(self, image, prev_action, deter, stoch):
        return self.agent.filter({"deter": deter, "stoch": stoch}, prev_action, image, None, sample=False)

    def _out(self, action, post):
        return {"action": scale_action(action, self.low, self.high)[None], "deter": post["deter"], "stoch": post["stoch"]}

    def _cem(self, post, seed):
        return self.agent.plan(post, tf.cast(tf.stack([seed, tf.constant(7, tf.int64)]), tf.int32))

    def _serve(self, image, prev_action, deter, stoch):
        post = self._post(image, prev_action, deter, stoch)
        if self.agent.sac is not None:
            from tf_rlnas.algos.planet.models import RSSM
            action = self.agent.sac.actor.dist(RSSM.features(post), full_precision=True).mode()[0]
        else:
            action = self._cem(post, tf.constant(0, tf.int64))
        return self._out(action, post)

    def _plan(self, image, prev_action, deter, stoch, seed):
        post = self._post(image, prev_action, deter, stoch)
        return self._out(self._cem(post, seed), post)


class _Holder:
    def __init__(self, agent):
        self.agent = agent
