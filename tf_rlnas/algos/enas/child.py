"""The ENAS macro-space child network (Keras), shared by every architecture during search.

stem (conv3x3 + BN) -> L layers -> global average pool -> dropout -> dense.
Layer i computes ONE branch (``tf.switch_case`` on the arc's branch id, so the five others cost
nothing): conv branches are 1x1 conv-BN-ReLU then a k x k (separable) conv-BN; pool branches
are 1x1 conv-BN-ReLU then a 3x3 stride-1 pool. The outputs of the earlier layers chosen by the
arc's skip row are added, then BN. After each pool layer (indices L//3 - 1 and 2L//3 - 1) every
output so far goes through its own factorized reduction (two stride-2 1x1 convs, one on the
input shifted by a pixel, concatenated, BN), halving the spatial size.

Search mode: the arc is a tensor input (``branches`` [L], ``skips`` [L, L]), so one traced
function serves every architecture. Fixed mode (``fixed_arc``): only the chosen branches exist
and the filters double at each pool layer (the retraining network).
"""

from __future__ import annotations

import contextlib
import threading

import keras
import numpy as np
import tensorflow as tf

from tf_rlnas.algos.enas.controller import NUM_BRANCHES
from tf_rlnas.nn.precision import resolve_dtype

KERNEL_INIT = "he_normal"


def pool_layers(num_layers: int) -> list[int]:
    return [num_layers // 3 - 1, 2 * num_layers // 3 - 1]


_FROZEN_STATS = threading.local()


@contextlib.contextmanager
def batch_stats_frozen():
    """While tracing inside this context, a BN called with ``training=True`` normalises with the
    batch's own statistics but leaves its moving statistics untouched (search-mode scoring of a
    sampled architecture: ``search.score_bn: batch``)."""
    old = getattr(_FROZEN_STATS, "on", False)
    _FROZEN_STATS.on = True
    try:
        yield
    finally:
        _FROZEN_STATS.on = old


class FusedBN(keras.layers.Layer):
    """BatchNorm over the channel axis with TF's fused kernel (FusedBatchNormV3: one op forward,
    one backward; Keras 3's BatchNormalization is built from ~10 small ops each way)."""

    def __init__(self, momentum: float = 0.9, epsilon: float = 1e-5, replica_local: bool = False, **kw):
        super().__init__(**kw)
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.replica_local = replica_local

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
        if self.replica_local:
            # one copy per replica, updated locally (no cross-replica sync point: this BN may run
            # inside tf.switch_case), averaged over replicas when read outside a replica (saving)
            def stat(init, name):
                return keras.Variable(keras.initializers.get(init)((c,)), trainable=False, name=name,
                                      aggregation="mean", synchronization="on_read")
            self.moving_mean, self.moving_variance = stat("zeros", "moving_mean"), stat("ones", "moving_variance")
        else:
            self.moving_mean = self.add_weight(shape=(c,), initializer="zeros", trainable=False, name="moving_mean")
            self.moving_variance = self.add_weight(shape=(c,), initializer="ones", trainable=False,
                                                   name="moving_variance")

    def call(self, x, training=False):
        if training:
            # the kernel also blends the moving statistics: new = m * old + (1 - m) * batch
            y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                x, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, is_training=True, exponential_avg_factor=1.0 - self.momentum)
            if not getattr(_FROZEN_STATS, "on", False):
                self.moving_mean.assign(mean)
                self.moving_variance.assign(var)
            return y
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, self.gamma, self.beta, mean=self.moving_mean,
                                                   variance=self.moving_variance, epsilon=self.epsilon,
                                                   is_training=False)
        return y


def disable_bn_relu_fusion() -> None:
    """Turn off grappler's remapper for this process. It rewrites BN + ReLU into oneDNN's
    _FusedBatchNormEx, several times slower per call on a CPU than the plain FusedBatchNormV3 + Relu
    in a training step, so a search step is faster with it off (tf_rlnas bench enas). (Process-wide: it also drops the remapper's other fusions, which matter little here.)"""
    tf.config.optimizer.set_experimental_options({"remapping": False})


def _bn(name, synchronized: bool | str = False):
    """Fused BN on one device (a faster train step than Keras' BN layer, most on pool-heavy nets);
    under a tf.distribute strategy Keras' synchronized BN, whose batch statistics
    are the global batch's, so N replicas compute what one device would.

    ``"replica"``: the BNs inside the search network's ``tf.switch_case`` branches under a
    strategy. A synchronized BN all-reduces inside the branch, which tf.distribute cannot do in
    control flow (``merge_call`` error), so these normalise over each replica's share of the batch
    (as multi-GPU training without SyncBN does) and keep replica-local moving statistics."""
    if synchronized == "replica":
        return FusedBN(name=name, replica_local=True)
    if synchronized:
        return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=True, name=name)
    return FusedBN(name=name)


class Branch(keras.layers.Layer):
    """One of the six ops: 0 conv3x3, 1 sep-conv3x3, 2 conv5x5, 3 sep-conv5x5, 4 avg-pool, 5 max-pool.

    A separable conv is a depthwise k x k conv then a 1x1 conv (what ``SeparableConv2D`` computes),
    written as two layers so that under a bfloat16 policy the depthwise part stays float32:
    oneDNN's bfloat16 depthwise 5x5 (forward + backward) is slower than float32 on the CPUs measured,
    while bfloat16 dense convs are faster (docs/benchmarks.md)."""

    def __init__(self, kind: int, filters: int, sync_bn: bool = False, policy=None, **kw):
        super().__init__(**kw)
        self.kind = int(kind)
        self.inp = keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=KERNEL_INIT,
                                       name="conv1x1", dtype=policy)
        self.inp_bn = _bn("bn1x1", sync_bn)
        self.depthwise = None
        if self.kind < 4:
            k = 3 if self.kind in (0, 1) else 5
            if self.kind in (1, 3):
                self.depthwise = keras.layers.DepthwiseConv2D(k, padding="same", use_bias=False,
                                                              depthwise_initializer=KERNEL_INIT,
                                                              name=f"sepconv{k}x{k}_depthwise", dtype="float32")
                self.op = keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=KERNEL_INIT,
                                              name=f"sepconv{k}x{k}_pointwise", dtype=policy)
            else:
                self.op = keras.layers.Conv2D(filters, k, padding="same", use_bias=False,
                                              kernel_initializer=KERNEL_INIT,
                                              name=f"conv{k}x{k}", dtype=policy)
            self.out_bn = _bn("bn_out", sync_bn)
        elif self.kind == 4:
            self.op = keras.layers.AveragePooling2D(3, 1, padding="same", name="avgpool3x3")
        else:
            self.op = max_pool3x3

    def call(self, x, training=False):
        x = tf.nn.relu(self.inp_bn(self.inp(x), training=training))
        if self.depthwise is not None:
            x = self.depthwise(x)
        x = self.op(x)
        if self.kind < 4:
            x = self.out_bn(x, training=training)
        return x


@tf.custom_gradient
def max_pool3x3(x):
    """3x3 stride-1 'same' max pool whose gradient recomputes the pool beside TF's MaxPoolGrad.

    Inside a ``tf.switch_case`` branch (the search network) the gradient function receives the
    forward output through an Optional, and oneDNN's graph rewrite only turns MaxPoolGrad into its
    own kernel when the op's ``orig_output`` comes straight from a (oneDNN) MaxPool node; otherwise
    TF's generic single-threaded MaxPoolGrad runs: ~100 ms instead of ~4 ms on a [128, 32, 32, 36]
    batch, ~20% of a 12-layer search step at CIFAR sizes. Recomputing the forward pool in the
    gradient (~1 ms) gives the rewrite its pattern; the numbers are the op's own."""
    y = tf.nn.max_pool2d(x, 3, 1, "SAME")

    def grad(g):
        y2 = tf.nn.max_pool2d(x, 3, 1, "SAME")
        return tf.raw_ops.MaxPoolGrad(orig_input=x, orig_output=y2, grad=g, ksize=[1, 3, 3, 1],
                                      strides=[1, 1, 1, 1], padding="SAME")
    return y, grad


class FactorizedReduction(keras.layers.Layer):
    """Halves the spatial size: path 1 = a 1x1 stride-2 conv of x, path 2 = the same on x shifted
    by one pixel (x[:, 1:, 1:], zero-filled at the far edge), concatenated, BN.

    Both paths are ONE 2x2 stride-2 'valid' conv whose kernel holds path 1's 1x1 kernel at tap
    (0, 0) for the first filters and path 2's at tap (1, 1) for the rest (window (2i, 2j) reads
    x[2i, 2j] for path 1 and x[2i+1, 2j+1] = shifted[2i, 2j] for path 2; an odd input gets one zero
    row/column at the far edge, the shifted input's zero fill). The numbers are the two 1x1 convs';
    the cost is one conv instead of two strided 1x1 convs, a shifted copy of x and a concat (a
    [128, 32, 32, 36] reduction forward + backward: ~22 -> ~17 ms). The variables stay the two
    1x1 kernels (``path1``, ``path2``), so checkpoints are unchanged."""

    def __init__(self, filters: int, sync_bn: bool = False, policy=None, **kw):
        super().__init__(**kw)
        self.path1 = keras.layers.Conv2D(filters // 2, 1, strides=2, use_bias=False,
                                         kernel_initializer=KERNEL_INIT, name="path1", dtype=policy)
        self.path2 = keras.layers.Conv2D(filters - filters // 2, 1, strides=2, use_bias=False,
                                         kernel_initializer=KERNEL_INIT, name="path2", dtype=policy)
        self.bn = _bn("bn", sync_bn)

    def build(self, input_shape):
        self.path1.build(input_shape)
        self.path2.build(input_shape)

    def call(self, x, training=False):
        h, w = x.shape[1], x.shape[2]
        if h % 2 or w % 2:
            x = tf.pad(x, [[0, 0], [0, h % 2], [0, w % 2], [0, 0]])
        f1, f2 = self.path1.filters, self.path2.filters
        kernel = (tf.pad(tf.convert_to_tensor(self.path1.kernel), [[0, 1], [0, 1], [0, 0], [0, f2]])
                  + tf.pad(tf.convert_to_tensor(self.path2.kernel), [[1, 0], [1, 0], [0, 0], [f1, 0]]))
        dt = self.path1.compute_dtype
        y = tf.nn.conv2d(tf.cast(x, dt), tf.cast(kernel, dt), 2, "VALID")
        return self.bn(y, training=training)


class ChildNet(keras.Model):
    def __init__(self, num_layers: int, filters: int, num_classes: int, image_shape, keep_prob: float = 0.9,
                 fixed_arc: tuple | None = None, synchronized_bn: bool = False,
                 compute_dtype: str = "float32", name: str = "child"):
        super().__init__(name=name)
        sync = synchronized_bn
        compute_dtype = resolve_dtype(compute_dtype)
        if compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be float32, bfloat16 or auto, not {compute_dtype!r}")
        self.conv_dtype = compute_dtype  # the resolved choice (Keras owns the name compute_dtype)
        # bfloat16: the dense convolutions (3x3, 5x5, every 1x1) compute in bfloat16 with float32
        # variables (Keras' mixed_bfloat16 policy on those layers: inputs and kernels are cast);
        # everything else is float32 (Keras casts a conv's bfloat16 output back at the next
        # float32 layer, e.g. its BN).
        # oneDNN's bfloat16 convs are faster than float32 where the CPU has native bf16, but its
        # bfloat16 FusedBatchNorm (forward + gradient) and depthwise 5x5 are slower, so BN, depthwise
        # convs, pools, skip adds, the head and the loss are float32 (docs/benchmarks.md).
        policy = "mixed_bfloat16" if compute_dtype == "bfloat16" else None
        self.num_layers, self.num_classes = num_layers, num_classes
        self.fixed = fixed_arc is not None
        self.pools = pool_layers(num_layers)
        self.stem = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                        kernel_initializer=KERNEL_INIT, name="stem", dtype=policy)
        self.stem_bn = _bn("stem_bn", sync)
        if self.fixed:
            b, s = (np.asarray(a, np.int32) for a in fixed_arc)
            self.fixed_branches, self.fixed_skips = b, s
        f = filters
        self.layer_branches, self.layer_bns, self.reductions = [], [], []
        for i in range(num_layers):
            kinds = [int(self.fixed_branches[i])] if self.fixed else range(NUM_BRANCHES)
            branch_bn = sync if (self.fixed or not sync) else "replica"  # search: inside tf.switch_case
            branches = [Branch(k, f, branch_bn, policy, name=f"layer{i}_branch{k}") for k in kinds]
            for j, br in enumerate(branches):
                setattr(self, f"_l{i}_b{j}", br)  # tracked attributes (lists are not checkpointed)
            self.layer_branches.append(branches)
            bn = _bn(f"layer{i}_bn", sync)
            setattr(self, f"_l{i}_bn", bn)
            self.layer_bns.append(bn)
            if i in self.pools:
                if self.fixed:
                    f *= 2
                reds = [FactorizedReduction(f, sync, policy, name=f"reduce{i}_{j}") for j in range(i + 1)]
                for j, r in enumerate(reds):
                    setattr(self, f"_r{i}_{j}", r)
                self.reductions.append(reds)
        self.drop_rate = 1.0 - float(keep_prob)
        self.head = keras.layers.Dense(num_classes, kernel_initializer="glorot_uniform", name="head")
        self._build_all(image_shape)

    def _build_all(self, image_shape) -> None:
        """Build every variable eagerly (layers must not create variables inside switch_case)."""
        x = tf.zeros((1, *image_shape))
        x = self.stem_bn(self.stem(x))
        red = iter(self.reductions)
        for i in range(self.num_layers):
            ys = [br(x) for br in self.layer_branches[i]]
            x = self.layer_bns[i](ys[0])
            if i in self.pools:
                reds = next(red)
                for r in reds:
                    x2 = r(x)
                x = x2
        self.head(tf.reduce_mean(x, axis=[1, 2]))

    def call(self, images, branches=None, skips=None, training=False, dropout_seed=None):
        """``dropout_seed`` ([2] int) makes the training-time dropout mask a function of the step
        seed (so a resumed run draws the same masks); without it dropout is off."""
        x = self.stem_bn(self.stem(images), training=training)
        outs = []
        red = iter(self.reductions)
        for i in range(self.num_layers):
            if self.fixed:
                y = self.layer_branches[i][0](x, training=training)
                for j in np.flatnonzero(self.fixed_skips[i, :i]):
                    y = y + outs[j]
            else:
                fns = [lambda br=br: br(x, training=training) for br in self.layer_branches[i]]
                y = tf.switch_case(branches[i], fns)
                # y + s_ij * out_j, not tf.cond(s_ij > 0, y + out_j, y): the cond saved the
                # multiplies but made training nondeterministic across runs (float-rounding
                # differences in the child loss, found by running the same seed twice)
                for j in range(i):
                    y = y + tf.cast(skips[i, j], y.dtype) * outs[j]
            x = self.layer_bns[i](y, training=training)
            outs.append(x)
            if i in self.pools:
                outs = [r(o, training=training) for r, o in zip(next(red), outs)]
                x = outs[-1]
        x = tf.reduce_mean(x, axis=[1, 2])
        if training and self.drop_rate > 0 and dropout_seed is not None:
            x = tf.nn.experimental.stateless_dropout(x, self.drop_rate, seed=dropout_seed)
        return self.head(x)
