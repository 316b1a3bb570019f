"""PlaNet agent: world model + CEM planner + optional SAC heads, and the ONE compiled step.

``step(phase)`` (a ``tf.function``, traced once) does, for phase 0 = train / 1 = test:

- ``tf.cond(phase == train, train_iterator.get_next, test_iterator.get_next)``: only the chosen
  dataset is read;
- world-model losses (image NLL + reward NLL (x reward_scale) + KL with free nats, optional latent
  overshooting and global divergence); the loss that is differentiated is
  ``tf.cond(train, loss, 0)`` and the optimiser step itself sits in a ``tf.cond``: the test phase
  computes the losses for monitoring but never updates (its gradient is of the zero branch only);
- with SAC heads: the SAC learner's update (``algos.sac``) on posterior features of the chunk
  ``(feat_t, a_t+1, r_t+1, feat_t+1, 1 - discount_t+1)`` after ``burn_in`` steps, also under
  the train-phase ``tf.cond``; features are ``stop_gradient``: SAC never changes the world model.

``policy_step(state, prev_action, image, explore)`` filters one observation into the posterior
and acts: CEM over imagined prior rollouts scored by the reward head (exploration noise on training
episodes), or the SAC actor (sample when exploring, mean otherwise).
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from tf_rlnas.algos.planet.models import RSSM, Decoder, Encoder, RewardHead, kl_divergence, postprocess, preprocess
from tf_rlnas.algos.planet.planner import cem
from tf_rlnas.nn.precision import resolve_dtype

TRAIN, TEST = 0, 1


class PlanetAgent(tf.Module):
    def __init__(self, cfg, act_dim: int, seed: int, strategy=None):
        super().__init__(name="planet")
        self._strategy = [strategy]  # (a list: not tracked)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self._build_world_model(cfg, act_dim, seed)
        self.sac = None
        if cfg.sac.enabled:  # small: on the host, outside the strategy (its update runs in cross-replica context)
            from tf_rlnas.algos.sac.learner import SACLearner
            self.sac = SACLearner(self.rssm.feat_dim, act_dim, cfg.sac.agent, seed + 1)
        m = cfg.model
        size = cfg.env.image_size
        self.traces = {"step": 0, "policy": 0}
        self._iterators = None
        a = tf.TensorSpec([1, act_dim], tf.float32)
        st = {"deter": tf.TensorSpec([1, m.deter], tf.float32), "stoch": tf.TensorSpec([1, m.stoch], tf.float32)}
        img = tf.TensorSpec([1, size, size, 3], tf.uint8)
        self.policy_step = tf.function(self._policy_step, input_signature=[st, a, img, tf.TensorSpec([], tf.bool),
                                                                           tf.TensorSpec([], tf.bool)])
        self.openloop = tf.function(self._openloop)

    @property
    def strategy(self):
        return self._strategy[0]

    def _build_world_model(self, cfg, act_dim: int, seed: int) -> None:
        m = cfg.model
        self.cfg, self.act_dim = cfg, int(act_dim)
        size = cfg.env.image_size
        self.compute_dtype = dt = resolve_dtype(m.compute_dtype)
        self.encoder = Encoder(m.depth, dt)
        embed_dim = int(self.encoder(tf.zeros([1, size, size, 3])).shape[-1])
        self.rssm = RSSM(act_dim, embed_dim, m.deter, m.stoch, m.hidden, m.min_std, dt)
        self.decoder = Decoder(m.depth, dt)
        self.reward = RewardHead(m.reward_hidden, dt)
        feat = tf.zeros([1, self.rssm.feat_dim])
        self.decoder(feat)
        self.reward(feat)
        self.wm_variables = (self.encoder.trainable_variables + self.rssm.trainable_variables
                             + self.decoder.trainable_variables + self.reward.trainable_variables)
        self.optimizer = keras.optimizers.Adam(m.lr, epsilon=m.adam_eps)
        self.optimizer.build(self.wm_variables)
        self.rng = tf.random.Generator.from_seed(seed)
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")

    # ---- checkpoint content / variable paths ------------------------------------------------
    def trackables(self) -> dict:
        out = {"encoder": self.encoder, "rssm": self.rssm, "decoder": self.decoder, "reward": self.reward,
               "optimizer": self.optimizer, "rng": self.rng, "updates": self.updates}
        if self.sac is not None:
            out["sac"] = tf.train.Checkpoint(**self.sac.trackables())
        return out

    def named_variables(self) -> dict[str, tf.Variable]:
        """Every model variable by a readable path, e.g. ``rssm/gru/...`` or ``sac/actor/...``
        (the paths ``init.include`` / ``init.exclude`` match)."""
        out = {}
        for comp in (self.encoder, self.rssm, self.decoder, self.reward):
            for v in comp.weights:
                out[v.path if v.path.startswith(comp.name + "/") else f"{comp.name}/{v.path}"] = v
        if self.sac is not None:
            for comp in (self.sac.actor, self.sac.critic, self.sac.target_critic):
                for v in comp.weights:
                    out[f"sac/{v.path}"] = v
            out["sac/log_alpha"] = self.sac.log_alpha
        assert len(out) == len({id(v) for v in out.values()}), "variable paths must be unique"
        return out

    # ---- the compiled step --------------------------------------------------------------------
    def set_datasets(self, train_ds, test_ds, per_worker: bool = False) -> None:
        """Under a strategy: global batches split over the replicas, or (``per_worker``,
        multi-worker with one replica per worker) each worker's own pipeline - its own loader seed
        over the shared episode folders - gives its replica's batch."""
        st = self.strategy
        if st is not None and per_worker:
            train_ds = st.distribute_datasets_from_function(lambda ctx, ds=train_ds: ds)
            test_ds = st.distribute_datasets_from_function(lambda ctx, ds=test_ds: ds)
        elif st is not None:
            train_ds = st.experimental_distribute_dataset(train_ds)
            test_ds = st.experimental_distribute_dataset(test_ds)
        self._iterators = (iter(train_ds), iter(test_ds))
        self.step = tf.function(self._step, input_signature=[tf.TensorSpec([], tf.int32)])

    def losses(self, batch, seeds):
        m = self.cfg.model
        image = preprocess(batch["image"], seeds[0], m.image_bits)
        embed = self.encoder(image)
        post, prior = self.rssm.observe(embed, batch["action"], seeds[1])
        feat = RSSM.features(post)
        recon = self.decoder(feat)
        out = {"image": tf.reduce_mean(0.5 * tf.reduce_sum(tf.square(recon - image), [-3, -2, -1])),
               "reward": tf.reduce_mean(0.5 * tf.square(self.reward(feat) - batch["reward"]))}
        kl = kl_divergence(post, prior)
        out["kl_raw"] = tf.reduce_mean(kl)
        out["kl"] = tf.reduce_mean(tf.maximum(kl, m.free_nats))
        total = out["image"] + m.reward_scale * out["reward"] + m.kl_scale * out["kl"]
        if m.overshooting > 1:
            out["overshooting"] = self._overshooting(post, batch["action"], seeds[2])
            total += m.overshooting_scale * out["overshooting"]
        if m.global_divergence > 0:
            unit = {"mean": tf.zeros_like(post["mean"]), "std": tf.ones_like(post["std"])}
            out["global_divergence"] = tf.reduce_mean(kl_divergence(post, unit))
            total += m.global_divergence * out["global_divergence"]
        out["total"] = total
        return out, feat

    def _overshooting(self, post, actions, seed):
        """Mean over distances d = 2..D of KL(stop_grad(posterior_{t+d}) || d-step open-loop prior)
        with free nats (d = 1 is the ordinary KL term)."""
        m = self.cfg.model
        d_max = min(m.overshooting, self.cfg.train.chunk - 1)
        seeds = tf.random.experimental.stateless_split(seed, d_max)
        cur = {k: v[:, :-1] for k, v in post.items()}
        terms = []
        for d in range(1, d_max + 1):
            a = actions[:, d:]
            shape = tf.shape(a)
            flat = {k: tf.reshape(v, [-1, v.shape[-1]]) for k, v in cur.items()}
            nxt = self.rssm.img_step(flat, tf.reshape(a, [-1, self.act_dim]), True, seeds[d - 1])
            nxt = {k: tf.reshape(v, [shape[0], shape[1], v.shape[-1]]) for k, v in nxt.items()}
            if d > 1:
                target = {k: tf.stop_gradient(post[k][:, d:]) for k in ("mean", "std")}
                terms.append(tf.reduce_mean(tf.maximum(kl_divergence(target, nxt), m.free_nats)))
            cur = {k: v[:, :-1] for k, v in nxt.items()}
        return tf.add_n(terms) / len(terms)

    def _sac_batch(self, feat, batch):
        b = self.cfg.sac.burn_in
        feat = tf.stop_gradient(feat)
        flat = lambda x: tf.reshape(x, tf.concat([[1, -1], tf.shape(x)[2:]], 0))  # noqa: E731
        return {"obs": flat(feat[:, b:-1]), "actions": flat(batch["action"][:, b + 1:]),
                "rewards": flat(batch["reward"][:, b + 1:]), "next_obs": flat(feat[:, b + 1:]),
                "terminated": flat(1.0 - batch["discount"][:, b + 1:])}

    def _grads(self, batch, seeds, is_train, scale: float = 1.0):
        """Losses and world-model gradients of one (replica's) batch; the differentiated loss is
        ``tf.cond(train, total, 0)``: the test phase's backward pass is that of a constant."""
        with tf.GradientTape() as tape:
            out, feat = self.losses(batch, seeds)
            loss = tf.cond(is_train, lambda: out["total"] * scale, lambda: tf.constant(0.0))
        grads = tape.gradient(loss, self.wm_variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return out, feat, grads

    def _step(self, phase):
        self.traces["step"] += 1
        is_train = tf.equal(phase, TRAIN)
        train_it, test_it = self._iterators
        batch = tf.cond(is_train, train_it.get_next, test_it.get_next)
        seeds = tf.unstack(self.rng.make_seeds(4), axis=1)
        st = self.strategy
        if st is None:
            out, feat, grads = self._grads(batch, seeds, is_train)
        else:
            n = st.num_replicas_in_sync

            def replica(b):  # each replica: its shard, its own noise; gradients of mean / n, summed
                rid = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, seeds[0].dtype)
                return self._grads(b, [s + tf.stack([rid * 7919, 0]) for s in seeds], is_train, 1.0 / n)
            out_r, feat_r, grads_r = st.run(replica, args=(batch,))
            grads = [st.reduce("SUM", g, axis=None) for g in grads_r]
            out = {k: st.reduce("MEAN", v, axis=None) for k, v in out_r.items()}
            feat = st.gather(feat_r, axis=0)
            batch = {k: st.gather(batch[k], axis=0) for k in ("action", "reward", "discount")}  # for SAC
        clip = self.cfg.model.grad_clip
        learn_wm = tf.logical_and(is_train, tf.constant(bool(self.cfg.sac.train_world_model)))
        variables = self.wm_variables

        def apply():
            clipped, norm = tf.clip_by_global_norm(grads, clip)
            self.optimizer.apply_gradients(zip(clipped, variables))
            self.updates.assign_add(1)
            return norm
        out["grad_norm"] = tf.cond(learn_wm, apply, lambda: tf.constant(0.0))
        if self.sac is not None:
            zero = tf.constant(0.0)
            keys = ("critic_loss", "mean_q", "actor_loss", "alpha_loss", "entropy", "alpha")
            sac_batch = self._sac_batch(feat, batch)

            def sac_update():
                m = self.sac.train_graph(sac_batch)
                return tuple(m[k] for k in keys)
            vals = tf.cond(is_train, sac_update, lambda: (zero,) * len(keys))
            out.update({f"sac_{k}": v for k, v in zip(keys, vals)})
        out["phase"] = tf.cast(phase, tf.float32)
        return out

    # ---- acting -------------------------------------------------------------------------------
    def _objective(self, post):
        def objective(actions, seed):
            j = tf.shape(actions)[0]
            start = {k: tf.tile(post[k], [j, 1]) for k in post}
            feats = self.rssm.imagine_features(start, actions, seed)  # [H, J, F]
            return tf.reduce_sum(self.reward(feats), axis=0)
        return objective

    def plan(self, post, seed):
        p = self.cfg.planner
        return cem(self._objective(post), self.act_dim, p.horizon, p.iterations, p.candidates, p.top_k, seed)[0]

    def filter(self, state, prev_action, image, seed, sample: bool = True):
        m = self.cfg.model
        prev = {"stoch": state["stoch"], "deter": state["deter"]}
        embed = self.encoder(preprocess(image, None, m.image_bits))
        post, _ = self.rssm.obs_step(prev, prev_action, embed, seed)
        if not sample:
            post = {**post, "stoch": post["mean"]}
        return {k: post[k] for k in ("mean", "std", "stoch", "deter")}

    def _policy_step(self, state, prev_action, image, explore, use_actor):
        """One agent step: filter ``image`` and act (actor if ``use_actor`` and there are SAC
        heads, else CEM + exploration noise when ``explore``). Actions in [-1, 1]."""
        self.traces["policy"] += 1
        seeds = tf.unstack(self.rng.make_seeds(3), axis=1)
        post = self.filter(state, prev_action, image, seeds[0])

        def by_cem():
            action = self.plan(post, seeds[1])
            noise = tf.random.stateless_normal(tf.shape(action), seeds[2]) * self.cfg.planner.exploration_noise
            return tf.clip_by_value(tf.where(explore, action + noise, action), -1.0, 1.0)

        if self.sac is None:
            action = by_cem()
        else:
            def by_actor():
                dist = self.sac.actor.dist(RSSM.features(post), full_precision=True)  # one row: float32
                return tf.cond(explore, lambda: dist.sample(seeds[1])[0], dist.mode)[0]
            action = tf.cond(use_actor, by_actor, by_cem)
        return action, {"deter": post["deter"], "stoch": post["stoch"]}

    def initial_state(self) -> dict:
        s = self.rssm.initial(1)
        return {"deter": s["deter"], "stoch": s["stoch"]}

    # ---- monitoring ---------------------------------------------------------------------------
    def _openloop(self, batch, context: int = 5, rows: int = 3):
        """Truth / open-loop prediction / error strips of ``rows`` sequences: the model filters
        ``context`` frames, then imagines the rest from the actions alone."""
        image = preprocess(batch["image"][:rows], None, self.cfg.model.image_bits)
        actions = batch["action"][:rows]
        seed = tf.constant([0, 1], tf.int32)
        post, _ = self.rssm.observe(self.encoder(image[:, :context]), actions[:, :context], seed)
        last = {k: v[:, -1] for k, v in post.items()}
        imagined = self.rssm.imagine(last, actions[:, context:], seed)
        recon = self.decoder(tf.concat([RSSM.features(post), RSSM.features(imagined)], 1))
        err = (recon - image + 1.0) / 2.0 - 0.5
        strip = tf.concat([image, recon, err], axis=2)  # [rows, T, 3H, W, 3]
        strip = tf.transpose(strip, [0, 2, 1, 3, 4])  # [rows, 3H, T, W, 3]
        s = tf.shape(strip)
        return postprocess(tf.reshape(strip, [s[0], s[1], s[2] * s[3], 3]))
