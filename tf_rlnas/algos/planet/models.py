"""PlaNet's world model: conv encoder, RSSM, transposed-conv decoder and reward head (Keras 3).

RSSM (Hafner et al. 2019): deterministic state h (GRU, ``deter`` units), stochastic state s
(diagonal Gaussian, ``stoch`` dims, std = softplus(x) + min_std)::

    h_t = GRU(h_{t-1}, dense([s_{t-1}, a_t]))        (a_t led to o_t: the episode convention)
    prior      p(s_t | h_t)        = dense(dense(h_t))
    posterior  q(s_t | h_t, e_t)   = dense(dense([h_t, embed(o_t)]))
    features   [s_t, h_t]

A state is a dict ``{mean, std, stoch, deter}``; sequences are [B, T, ...]. Encoder for 64x64x3:
conv 4x4 stride 2 of depth d, 2d, 4d, 8d (d = 32: 1024 features); decoder: dense -> 1x1x(32d) ->
transposed conv 5/5/6/6 stride 2 of 4d, 2d, d, 3 -> 64x64x3 mean of Normal(mean, 1).

Precision (``compute_dtype``, resolved from ``model.compute_dtype``): with ``bfloat16`` the convs,
the transposed convs and the hidden dense layers multiply in bfloat16 (Keras' ``mixed_bfloat16``
policy: float32 variables, bfloat16 inputs and products with float32 accumulation inside oneDNN);
everything that accumulates or is compared stays float32: the GRU's gates and state (its two
products are bfloat16, :func:`RSSM.gru`), the Gaussian heads (mean, std), the reward output, the
images the loss compares, the KL, the losses and the planner's statistics. With ``float32``
every op is float32.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_rlnas.distributions import diag_gaussian_kl
from tf_rlnas.nn.layers import Conv2D, Conv2DTranspose, Dense
from tf_rlnas.nn.mlp import mlp


def _policy(compute_dtype: str):
    """The Keras dtype policy of a layer that multiplies in ``compute_dtype`` (None = float32)."""
    if compute_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"compute_dtype must be float32 or bfloat16 (resolved), not {compute_dtype!r}")
    return "mixed_bfloat16" if compute_dtype == "bfloat16" else None


class Encoder(keras.Model):
    def __init__(self, depth: int = 32, compute_dtype: str = "float32", name="encoder"):
        super().__init__(name=name)
        policy = _policy(compute_dtype)
        # the last conv (2x2 outputs at 64x64 inputs) takes its kernel gradient from one matmul of
        # its input patches in bfloat16 (nn.layers.conv2d_patch_filter_grad: 225 -> 58 ms there)
        self.convs = keras.Sequential([Conv2D(depth * m, 4, 2, activation="relu", name=f"conv{i}",
                                              dtype=policy, patch_filter_grad=bool(policy) and i == 3)
                                       for i, m in enumerate((1, 2, 4, 8))], name="convs")

    def call(self, image):  # [..., 64, 64, 3] float -> [..., 32 d] float32
        lead = tf.shape(image)[:-3]
        x = tf.cast(self.convs(tf.reshape(image, tf.concat([[-1], tf.shape(image)[-3:]], 0))), tf.float32)
        return tf.reshape(x, tf.concat([lead, [x.shape[1] * x.shape[2] * x.shape[3]]], 0))


def _subpixel_kernel(kernel, k: int):
    """A stride-2 'valid' Conv2DTranspose kernel [k, k, out, in] as the kernel [k2, k2, in, 4 out]
    (k2 = ceil(k / 2)) of a stride-1 conv whose output, ``depth_to_space(2)``, is the transposed conv
    (an odd k is padded with a zero row and column; the output then has one row and column more).

    The transposed conv writes y[2i + p, 2j + q] += x[i, j] W[p, q]; with p = 2r + a that is output
    phase a of row m = i + r, i.e. a full correlation of x with W[2r + a] reversed in r."""
    k2 = (k + 1) // 2
    if k % 2:
        kernel = tf.pad(kernel, [[0, 1], [0, 1], [0, 0], [0, 0]])
    out, cin = kernel.shape[2], kernel.shape[3]
    w = tf.reverse(tf.reshape(kernel, [k2, 2, k2, 2, out, cin]), [0, 2])  # [r, a, s, b, o, c], r reversed
    return tf.reshape(tf.transpose(w, [0, 2, 5, 1, 3, 4]), [k2, k2, cin, 4 * out])  # [r, s, c, (a, b, o)]


def _conv_transpose_s2(layer, x):
    """``layer`` (a stride-2 'valid' keras Conv2DTranspose) on x, computed as a stride-1 conv and
    ``depth_to_space`` (:func:`_subpixel_kernel`) in x's dtype: the same numbers, and its backward
    pass is a plain conv's. Faster than the transposed conv in bfloat16 for the decoder's last layer
    only (see :class:`Decoder`); in float32 Keras' own op was faster."""
    k = int(layer.kernel.shape[0])
    pad = (k + 1) // 2 - 1
    w = tf.cast(_subpixel_kernel(tf.convert_to_tensor(layer.kernel), k), x.dtype)
    y = tf.nn.conv2d(tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]]), w, 1, "VALID")
    y = tf.nn.depth_to_space(y, 2)
    if k % 2:
        y = y[:, :-1, :-1, :]
    return layer._bias_act(y)


class Decoder(keras.Model):
    """``subpixel`` (default: where the layers compute in bfloat16): the first transposed conv, on a
    1x1 input, runs as one matmul and the last one (32 -> 3 channels) as a stride-1 conv +
    depth_to_space on its own variables (:func:`_conv_transpose_s2`); the middle two stay Keras'
    transposed convs. The same function as Keras' layers. Chosen per layer by timing forward + both
    backward ops on 2,500 images in bfloat16 (AMD EPYC with AVX512_BF16): deconv1 (5x5 -> 13x13,
    128 -> 64) 907 ms as a sub-pixel conv vs 409 ms transposed (the sub-pixel form of a 5x5 input
    is mostly zero padding), deconv2 822 vs 725 ms, deconv3 338 vs 505 ms; the decoder's forward +
    backward 3.10 s with all three sub-pixel, 1.85 s this way."""

    def __init__(self, depth: int = 32, compute_dtype: str = "float32", name="decoder", subpixel: bool | None = None):
        super().__init__(name=name)
        self.depth = depth
        self.subpixel = compute_dtype == "bfloat16" if subpixel is None else bool(subpixel)
        policy = _policy(compute_dtype)
        self.dense = Dense(32 * depth, name="dense", dtype=policy)
        self.deconvs = keras.Sequential(
            [Conv2DTranspose(depth * m, k, 2, activation="relu", name=f"deconv{i}", dtype=policy)
             for i, (m, k) in enumerate(((4, 5), (2, 5), (1, 6)))]
            + [Conv2DTranspose(3, 6, 2, name="deconv3", dtype=policy)], name="deconvs")

    def call(self, features):  # [..., F] -> [..., 64, 64, 3] mean, float32
        lead = tf.shape(features)[:-1]
        x = tf.reshape(self.dense(features), [-1, 1, 1, 32 * self.depth])
        x = tf.cast(self._subpixel(x) if self.subpixel else self.deconvs(x), tf.float32)
        return tf.reshape(x, tf.concat([lead, tf.shape(x)[1:]], 0))

    def _subpixel(self, x):
        first, *rest = self.deconvs.layers
        if not first.built:
            self.deconvs.build(x.shape)
        # the first transposed conv sees a 1x1 input: y[p, q, o] = sum_c x[c] W[p, q, o, c], one matmul
        k, out, cin = int(first.kernel.shape[0]), int(first.kernel.shape[2]), int(first.kernel.shape[3])
        w = tf.reshape(tf.transpose(tf.cast(first.kernel, x.dtype), [3, 0, 1, 2]), [cin, k * k * out])
        y = tf.reshape(tf.matmul(tf.reshape(x, [-1, cin]), w), [-1, k, k, out])
        x = first._bias_act(y)
        *middle, last = rest
        for layer in middle:
            x = layer(x)
        return _conv_transpose_s2(last, x)


class RewardHead(keras.Model):
    def __init__(self, hidden=(300, 300, 300), compute_dtype: str = "float32", name="reward"):
        super().__init__(name=name)
        self.body = mlp(hidden, "relu", name="body", dtype=_policy(compute_dtype))
        self.out = keras.layers.Dense(1, name="out")  # float32: the reward the planner sums

    def call(self, features):  # [..., F] -> [...] float32 (the Sequential body takes rank-2 inputs)
        flat = tf.reshape(features, [-1, features.shape[-1]])
        return tf.reshape(self.out(tf.cast(self.body(flat), tf.float32)), tf.shape(features)[:-1])


def _gates(gx, gh, bias, h):
    """Keras' GRU gating (reset_after; gates z, r, h) from the two products ``gx = x Wx`` and
    ``gh = h Wh`` (any float dtype) and the cell's biases [2, 3 units], in float32: the new state."""
    xz, xr, xh = tf.split(tf.cast(gx, tf.float32) + bias[0], 3, axis=-1)
    hz, hr, hh = tf.split(tf.cast(gh, tf.float32) + bias[1], 3, axis=-1)
    z = tf.sigmoid(xz + hz)
    r = tf.sigmoid(xr + hr)
    return z * h + (1.0 - z) * tf.tanh(xh + r * hh)


def _mean_std(x, min_std):
    """A diagonal Gaussian head's output [..., 2 n] -> mean, std = softplus(raw) + min_std."""
    mean, raw = tf.split(x, 2, axis=-1)
    return mean, tf.nn.softplus(raw) + min_std


@tf.function(jit_compile=True)
def _fused_gates(gx, gh, bias, h):
    """:func:`_gates` as one XLA kernel (~15 element-wise ops TensorFlow would run one by one over
    [N, 3 units]); also returns the new state in the products' dtype (the next step's input)."""
    new = _gates(gx, gh, bias, h)
    return new, tf.cast(new, gh.dtype)


@tf.function(jit_compile=True)
def _fused_sample(x, noise, min_std):
    """mean + std * noise of :func:`_mean_std` as one XLA kernel."""
    mean, std = _mean_std(x, min_std)
    return mean + std * noise


class RSSM(keras.Model):
    def __init__(self, act_dim: int, embed_dim: int, deter: int = 200, stoch: int = 30, hidden: int = 200,
                 min_std: float = 0.1, compute_dtype: str = "float32", name="rssm"):
        super().__init__(name=name)
        self.act_dim, self.deter, self.stoch, self.min_std = act_dim, deter, stoch, float(min_std)
        policy = _policy(compute_dtype)
        self.mm_dtype = tf.bfloat16 if policy else tf.float32
        self.inp = Dense(hidden, activation="relu", name="input", dtype=policy)
        # Keras' cell holds the GRU's variables (and their checkpoint paths); :meth:`gru` computes it
        self.cell = keras.layers.GRUCell(deter, name="gru")
        self.cell.build((None, hidden))
        self.prior_h = Dense(hidden, activation="relu", name="prior_hidden", dtype=policy)
        self.prior_out = keras.layers.Dense(2 * stoch, name="prior_out")  # float32: mean and std
        self.post_h = Dense(hidden, activation="relu", name="post_hidden", dtype=policy)
        self.post_out = keras.layers.Dense(2 * stoch, name="post_out")
        # build every layer once (so that variables exist before checkpoints and optimisers)
        s = self.initial(1)
        s, _ = self.obs_step(s, tf.zeros([1, act_dim]), tf.zeros([1, embed_dim]))

    def gru(self, x, h):
        """Keras' GRUCell (reset_after, sigmoid/tanh, gates z, r, h) on its own variables, with the
        two products in the compute dtype and the gates and the state in float32."""
        c, dt = self.cell, self.mm_dtype
        return _gates(tf.matmul(tf.cast(x, dt), tf.cast(c.kernel, dt)),
                      tf.matmul(tf.cast(h, dt), tf.cast(c.recurrent_kernel, dt)), c.bias, h)

    @property
    def feat_dim(self) -> int:
        return self.deter + self.stoch

    def initial(self, batch) -> dict:
        z = tf.zeros([batch, self.stoch])
        return {"mean": z, "std": tf.ones_like(z), "stoch": z, "deter": tf.zeros([batch, self.deter])}

    def _gaussian(self, x) -> tuple:
        return _mean_std(x, self.min_std)

    def img_step(self, prev: dict, action, sample: bool = True, seed=None) -> dict:
        x = self.inp(tf.concat([prev["stoch"], action], -1))
        deter = self.gru(x, prev["deter"])
        mean, std = self._gaussian(self.prior_out(tf.cast(self.prior_h(deter), tf.float32)))
        stoch = mean + std * tf.random.stateless_normal(tf.shape(mean), seed) if sample else mean
        return {"mean": mean, "std": std, "stoch": stoch, "deter": deter}

    def obs_step(self, prev: dict, action, embed, seed=None) -> tuple[dict, dict]:
        prior = self.img_step(prev, action, sample=False)
        mean, std = self._gaussian(self.post_out(tf.cast(self.post_h(tf.concat([prior["deter"], embed], -1)),
                                                         tf.float32)))
        seed = tf.zeros([2], tf.int32) if seed is None else seed
        stoch = mean + std * tf.random.stateless_normal(tf.shape(mean), seed)
        return {"mean": mean, "std": std, "stoch": stoch, "deter": prior["deter"]}, prior

    def observe(self, embed, actions, seed, state: dict | None = None) -> tuple[dict, dict]:
        """Filter a sequence: posteriors and priors, each a dict of [B, T, ...]."""
        b = tf.shape(embed)[0]
        state = self.initial(b) if state is None else state
        t = tf.shape(embed)[1]
        seeds = tf.random.experimental.stateless_split(seed, t)
        xs = (tf.transpose(embed, [1, 0, 2]), tf.transpose(actions, [1, 0, 2]), seeds)

        def step(carry, x):
            post, _ = carry
            return self.obs_step(post, x[1], x[0], x[2])
        init = (state, state)
        post, prior = tf.scan(step, xs, initializer=init)
        swap = lambda d: {k: tf.transpose(v, [1, 0, 2]) for k, v in d.items()}  # noqa: E731
        return swap(post), swap(prior)

    def imagine(self, state: dict, actions, seed) -> dict:
        """Open-loop prior rollout from ``state`` ([N, ...]) under actions [N, H, A] (sampled s)."""
        h = tf.shape(actions)[1]
        seeds = tf.random.experimental.stateless_split(seed, h)
        xs = (tf.transpose(actions, [1, 0, 2]), seeds)
        out = tf.scan(lambda prev, x: self.img_step(prev, x[0], True, x[1]), xs, initializer=state)
        return {k: tf.transpose(v, [1, 0, 2]) for k, v in out.items()}

    def imagine_features(self, state: dict, actions, seed):
        """The planner's rollout: time-major features [H, N, F] of the open-loop prior rollout that
        :meth:`imagine` computes (the same ops, the same random numbers: it equals
        ``features(imagine(...))`` transposed, up to float rounding), made for speed: the horizon
        (static) unrolled, each step's GRU gating and Gaussian sample one fused XLA kernel each
        (:func:`_fused_gates`, :func:`_fused_sample`), the cell's kernels cast to the compute
        dtype once per rollout instead of once per step, and no mean/std sequences kept. On the
        paper's CEM (J=1000, H=12, I=10, AMD EPYC) an action took 762-789 -> 632-651 ms in bfloat16
        and 1,027 -> 945 ms in float32 (`tf_rlnas bench planet`, docs/planet.md)."""
        horizon = actions.shape[1]
        if horizon is None:
            raise ValueError("imagine_features needs a static horizon (actions [N, H, A] with H known)")
        c, dt = self.cell, self.mm_dtype
        kx, kh = tf.cast(c.kernel, dt), tf.cast(c.recurrent_kernel, dt)
        bias = tf.convert_to_tensor(c.bias)
        seeds = tf.random.experimental.stateless_split(seed, horizon)
        stoch, deter = state["stoch"], state["deter"]
        deter_c = tf.cast(deter, dt)
        feats = []
        for t in range(horizon):
            x = self.inp(tf.concat([stoch, actions[:, t]], -1))
            deter, deter_c = _fused_gates(tf.matmul(tf.cast(x, dt), kx), tf.matmul(deter_c, kh), bias, deter)
            prior = self.prior_out(tf.cast(self.prior_h(deter_c), tf.float32))
            noise = tf.random.stateless_normal(tf.stack([tf.shape(prior)[0], self.stoch]), seeds[t])
            stoch = _fused_sample(prior, noise, tf.constant(self.min_std))
            feats.append(tf.concat([stoch, deter], -1))
        return tf.stack(feats)

    @staticmethod
    def features(state: dict):
        return tf.concat([state["stoch"], state["deter"]], -1)


def kl_divergence(post: dict, prior: dict):
    """KL(post || prior) of diagonal Gaussians, summed over the stochastic dims."""
    return diag_gaussian_kl(post["mean"], post["std"], prior["mean"], prior["std"])


def preprocess(image, seed, bits: int = 5):
    """uint8 -> float in [-0.5, 0.5): quantise to ``bits`` bits, add uniform dequantisation noise."""
    bins = 2 ** bits
    x = tf.floor(tf.cast(image, tf.float32) / 2 ** (8 - bits))
    if seed is not None:
        x = x + tf.random.stateless_uniform(tf.shape(x), seed)
    else:
        x = x + 0.5
    return x / bins - 0.5


def postprocess(x):
    """Model image space -> uint8 (for TensorBoard)."""
    return tf.cast(tf.clip_by_value((x + 0.5) * 255.0, 0, 255), tf.uint8)
