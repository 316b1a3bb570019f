"""The ENAS macro-space controller: an LSTM policy over (branch, skip connections) per layer.

An architecture ("arc") of ``L`` layers is two int32 tensors: ``branches`` [L] (0 conv3x3,
1 sep-conv3x3, 2 conv5x5, 3 sep-conv5x5, 4 avg-pool3x3, 5 max-pool3x3) and ``skips`` [L, L]
(``skips[i, j] = 1``: layer i adds the output of layer j < i; strictly lower triangular).

Per layer i (the reference's order):
  h = LSTM(input); branch logits = c * tanh(W_soft h / T); sample branch; input = w_emb[branch];
  h = LSTM(input); if i > 0: q_j = tanh(W_1 h_j + W_2 h) for the earlier layers' anchors h_j,
  s_j = v^T q_j, skip logits [-s_j, s_j] (same temperature and tanh constant), sample skip bits,
  input = sum_j skip_j h_j / (1 + #skips); else input = g_emb; the anchor h_i is kept.

Outputs of one pass: summed log-prob, summed entropy (branches and skip bits; ``op_entropy`` the
branches' part), skip count and the
skip penalty mean_i sum_j KL(Bernoulli(p_ij) || Bernoulli(skip_target)). One code path samples
(``sample``) or scores a given arc (``log_prob``), batched over M arcs so that the
``num_aggregate`` samples of a controller step are one call.
"""

from __future__ import annotations

import json
import math

import keras
import tensorflow as tf

NUM_BRANCHES = 6
BRANCH_NAMES = ("conv3x3", "sepconv3x3", "conv5x5", "sepconv5x5", "avgpool3x3", "maxpool3x3")


def entropy_bounds(num_layers: int, tanh_constant: float | None, num_branches: int = NUM_BRANCHES) -> dict:
    """How concentrated the controller can get: the summed entropy of the op decisions and of the skip
    bits for the uniform policy and for the most peaked one the tanh constant c allows (one branch
    logit at +c, the others at -c; a skip bit's logits [-s, s] at |s| = c). Without a tanh constant
    the floor is 0."""
    pairs = num_layers * (num_layers - 1) // 2
    op_min = skip_min = 0.0
    if tanh_constant:
        c = float(tanh_constant)
        top = math.exp(c) / (math.exp(c) + (num_branches - 1) * math.exp(-c))
        rest = (1.0 - top) / (num_branches - 1)
        op_min = num_layers * -(top * math.log(top) + (num_branches - 1) * rest * math.log(rest))
        q = 1.0 / (1.0 + math.exp(-2.0 * c))
        skip_min = pairs * -(q * math.log(q) + (1.0 - q) * math.log(1.0 - q))
    return {"op_uniform": num_layers * math.log(num_branches), "op_min": op_min,
            "skip_uniform": pairs * math.log(2.0), "skip_min": skip_min}


class Controller(keras.Model):
    def __init__(self, num_layers: int, lstm_size: int = 64, num_branches: int = NUM_BRANCHES,
                 tanh_constant: float | None = 1.5, temperature: float | None = None,
                 skip_target: float = 0.4, init_range: float = 0.1, name: str = "controller"):
        super().__init__(name=name)
        self.num_layers, self.lstm_size, self.num_branches = num_layers, lstm_size, num_branches
        self.tanh_constant, self.temperature, self.skip_target = tanh_constant, temperature, skip_target
        init = keras.initializers.RandomUniform(-init_range, init_range)
        self.cell = keras.layers.LSTMCell(lstm_size, kernel_initializer=init, recurrent_initializer=init,
                                          bias_initializer=init, name="lstm")
        self.g_emb = self.add_weight(shape=(1, lstm_size), initializer=init, name="g_emb")
        self.w_emb = self.add_weight(shape=(num_branches, lstm_size), initializer=init, name="w_emb")
        self.w_soft = keras.layers.Dense(num_branches, use_bias=False, kernel_initializer=init, name="w_soft")
        self.w_attn_1 = keras.layers.Dense(lstm_size, use_bias=False, kernel_initializer=init, name="w_attn_1")
        self.w_attn_2 = keras.layers.Dense(lstm_size, use_bias=False, kernel_initializer=init, name="w_attn_2")
        self.v_attn = keras.layers.Dense(1, use_bias=False, kernel_initializer=init, name="v_attn")
        self.log_prob(tf.zeros((1, num_layers), tf.int32), tf.zeros((1, num_layers, num_layers), tf.int32))

    # ---- one pass ------------------------------------------------------------------------------
    def _shape_logits(self, logits):
        if self.temperature:
            logits = logits / self.temperature
        if self.tanh_constant:
            logits = self.tanh_constant * tf.tanh(logits)
        return logits

    def _run(self, m, seed=None, branches=None, skips=None):
        """Sample M arcs (``seed`` a [2] int tensor) or score the given [M, L] / [M, L, L] arcs."""
        sampling = branches is None
        L, H = self.num_layers, self.lstm_size
        inputs = tf.tile(self.g_emb, [m, 1])
        state = [tf.zeros((m, H)), tf.zeros((m, H))]
        anchors, anchors_w1 = [], []
        out_branches, out_skips = [], []
        log_prob = tf.zeros((m,))
        op_entropy = tf.zeros((m,))  # of the op decisions (the skip bits' is entropy - op_entropy)
        entropy = tf.zeros((m,))
        skip_count = tf.zeros((m,))
        penalties, skip_probs = [], []
        t = self.skip_target
        kl_target = tf.constant([1.0 - t, t])
        for i in range(L):
            h, state = self.cell(inputs, state)
            logits = self._shape_logits(self.w_soft(h))  # [M, NB]
            log_p = tf.nn.log_softmax(logits)
            if sampling:
                b = tf.random.stateless_categorical(logits, 1, seed=seed + [0, 2 * i], dtype=tf.int32)[:, 0]
            else:
                b = branches[:, i]
            out_branches.append(b)
            log_prob += tf.gather(log_p, b, batch_dims=1)
            op_entropy += -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)
            h, state = self.cell(tf.gather(self.w_emb, b), state)
            if i > 0:
                prev_w1 = tf.stack(anchors_w1, axis=1)  # [M, i, H]
                query = tf.tanh(prev_w1 + self.w_attn_2(h)[:, None, :])
                s = self.v_attn(query)  # [M, i, 1]
                skip_logits = self._shape_logits(tf.concat([-s, s], axis=-1))  # [M, i, 2]
                skip_log_p = tf.nn.log_softmax(skip_logits)
                if sampling:
                    flat = tf.reshape(skip_logits, [-1, 2])
                    bits = tf.random.stateless_categorical(flat, 1, seed=seed + [0, 2 * i + 1], dtype=tf.int32)
                    bits = tf.reshape(bits, [m, i])
                else:
                    bits = skips[:, i, :i]
                log_prob += tf.reduce_sum(tf.gather(skip_log_p, bits, batch_dims=2), axis=-1)
                entropy += -tf.reduce_sum(tf.exp(skip_log_p) * skip_log_p, axis=[1, 2])
                p = tf.sigmoid(skip_logits)  # [p(0), p(1)] per bit, as the reference computes it
                penalties.append(tf.reduce_sum(p * tf.math.log(p / kl_target), axis=[1, 2]))
                skip_probs.append(tf.pad(p[:, :, 1], [[0, 0], [0, L - i]]))
                fbits = tf.cast(bits, tf.float32)
                skip_count += tf.reduce_sum(fbits, axis=-1)
                inputs = tf.einsum("mi,mih->mh", fbits, tf.stack(anchors, axis=1)) / (
                    1.0 + tf.reduce_sum(fbits, axis=-1, keepdims=True))
                out_skips.append(tf.pad(bits, [[0, 0], [0, L - i]]))
            else:
                inputs = tf.tile(self.g_emb, [m, 1])
                out_skips.append(tf.zeros((m, L), tf.int32))
                skip_probs.append(tf.zeros((m, L)))
            anchors.append(h)
            anchors_w1.append(self.w_attn_1(h))
        entropy += op_entropy
        penalty = tf.add_n(penalties) / float(len(penalties)) if penalties else tf.zeros((m,))
        return {"branches": tf.stack(out_branches, axis=1), "skips": tf.stack(out_skips, axis=1),
                "log_prob": log_prob, "entropy": entropy, "op_entropy": op_entropy, "skip_count": skip_count,
                "skip_penalty": penalty,
                "skip_prob": tf.stack(skip_probs, axis=1)}

    def sample(self, m: int, seed: tf.Tensor) -> dict:
        """M arcs with their log-probs, entropies, skip counts and skip penalties."""
        return self._run(m, seed=tf.cast(seed, tf.int64))

    def log_prob(self, branches: tf.Tensor, skips: tf.Tensor) -> dict:
        """The same outputs for given arcs ([M, L] and [M, L, L])."""
        return self._run(tf.shape(branches)[0], branches=tf.cast(branches, tf.int32),
                         skips=tf.cast(skips, tf.int32))

    def call(self, branches, skips):
        return self.log_prob(branches, skips)


def arc_to_dict(branches, skips) -> dict:
    """A JSON-able architecture: per layer the op name and the earlier layers it adds."""
    import numpy as np

    b, s = np.asarray(branches), np.asarray(skips)
    return {"num_layers": int(len(b)),
            "layers": [{"layer": i, "op": BRANCH_NAMES[int(b[i])], "branch": int(b[i]),
                        "skips": [int(j) for j in np.flatnonzero(s[i, :i])]} for i in range(len(b))]}


def read_arc_file(path: str, what: str = "architecture file"):
    """(branches, skips) from an architecture.json (a search's record or a bare architecture);
    every failure is one UserError line naming the file."""
    from tf_rlnas.errors import UserError

    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        hint = (" - run the search first (e.g. 'tf_rlnas train enas' writes runs/enas/architecture.json) "
                "or point --set fixed.arc_file=... at one") if isinstance(e, FileNotFoundError) else ""
        raise UserError(f"cannot read {what} {path}: {e.strerror}{hint}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e.msg} (line {e.lineno})") from None
    try:
        return arc_from_dict(data.get("architecture", data) if isinstance(data, dict) else data)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def arc_from_dict(d: dict):
    import numpy as np

    try:
        layers = d["layers"]
        L = len(layers)
        b = np.array([int(x["branch"]) for x in layers], np.int32)
        s = np.zeros((L, L), np.int32)
        for i, x in enumerate(layers):
            for j in x.get("skips", []):
                if not 0 <= int(j) < i:
                    raise ValueError(f"layer {i} skips to {j}, which is not an earlier layer")
                s[i, int(j)] = 1
        if np.any((b < 0) | (b >= NUM_BRANCHES)):
            raise ValueError("branch ids must be in 0..5")
    except (KeyError, TypeError, ValueError) as e:
        from tf_rlnas.errors import UserError
        raise UserError(f"malformed architecture: {e}") from None
    return b, s


def arc_string(branches, skips) -> str:
    """One line per layer: ``layer 3: sepconv5x5  + skips from [0, 2]``."""
    d = arc_to_dict(branches, skips)
    return "\n".join(f"layer {x['layer']:2d}: {x['op']:<11s}" + (f" + skips from {x['skips']}" if x["skips"] else "")
                     for x in d["layers"])


def random_arc(num_layers: int, rng, skip_prob: float = 0.5):
    """An architecture drawn as the UNTRAINED controller draws one: its logits start near 0 (weights
    U(-0.1, 0.1)), so each layer's op is uniform over the 6 branches and each skip bit is a fair
    coin (``skip_prob`` 0.5; a test checks this against a freshly built controller)."""
    import numpy as np

    b = rng.integers(0, NUM_BRANCHES, size=num_layers).astype(np.int32)
    s = np.tril((rng.random((num_layers, num_layers)) < skip_prob).astype(np.int32), k=-1)
    return b, s


def conv_stack_arc(num_layers: int):
    """The plain baseline: conv3x3 at every layer, no skips."""
    import numpy as np

    return np.zeros(num_layers, np.int32), np.zeros((num_layers, num_layers), np.int32)


def special_arc(spec: str, num_layers: int):
    """``random:SEED`` or ``conv_stack`` as ``fixed.arc_file`` values; None for a file path."""
    import numpy as np

    if spec == "conv_stack":
        return conv_stack_arc(num_layers)
    if spec.startswith("random:"):
        try:
            seed = int(spec.split(":", 1)[1])
        except ValueError:
            from tf_rlnas.errors import UserError
            raise UserError(f"fixed.arc_file '{spec}': expected random:SEED with an integer seed") from None
        return random_arc(num_layers, np.random.default_rng([seed, 4099]))
    return None
