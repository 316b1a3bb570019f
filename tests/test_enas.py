"""ENAS: controller (log-probs, skip KL, learning on a synthetic reward), the shared child (each
branch a different op, factorized reductions), optimisation details (clipping, SGDR restarts),
data loaders (digits, IDX, tfds mock cifar10), resume mid-search, export, 2-device mirroring."""

import gzip
import json
import os
import struct
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from serving import saved_model_cli_run
from tf_rlnas import config as C
from tf_rlnas.algos.enas.child import Branch, ChildNet, FactorizedReduction, max_pool3x3
from tf_rlnas.algos.enas.config import EnasConfig
from tf_rlnas.algos.enas.controller import Controller, arc_from_dict, arc_to_dict
from tf_rlnas.algos.enas.search import advantages, make_controller_update
from tf_rlnas.algos.enas.trainer import EnasTrainer, cosine_lr
from tf_rlnas.cli import main
from tf_rlnas.core import rundir
from tf_rlnas.data.images import Splits, load_arrays
from tf_rlnas.errors import UserError

SMOKE = ["child.num_layers=3", "child.filters=8", "controller.train_steps=2", "controller.num_aggregate=3",
         "search.eval_every=1", "search.eval_archs=3", "search.derive_archs=4", "search.derive_valid_batches=1",
         "data.batch_size=64", "run.checkpoint_every=1"]


@pytest.mark.parametrize("temperature", [None, 2.0])
def test_log_prob_of_sampled_arc_equals_recomputed(temperature):
    c = Controller(5, 16, temperature=temperature)
    out = c.sample(6, tf.constant([3, 4], tf.int64))
    again = c.log_prob(out["branches"], out["skips"])
    for k in ("log_prob", "entropy", "skip_count", "skip_penalty"):
        np.testing.assert_allclose(out[k].numpy(), again[k].numpy(), rtol=1e-5, atol=1e-5)
    s = out["skips"].numpy()
    assert np.all(np.triu(s[0]) == 0)  # only earlier layers
    np.testing.assert_array_equal(out["skip_count"].numpy(), s.sum(axis=(1, 2)))
    other = c.log_prob(out["branches"][::-1], out["skips"][::-1])["log_prob"].numpy()
    np.testing.assert_allclose(other, out["log_prob"].numpy()[::-1], rtol=1e-5)
    # a different arc has a different log-prob (the scorer really reads the arc)
    flipped = tf.tensor_scatter_nd_update(out["branches"], [[0, 0]], [(int(out["branches"][0, 0]) + 1) % 6])
    assert abs(float(c.log_prob(flipped, out["skips"])["log_prob"][0]) - float(out["log_prob"][0])) > 1e-4


def test_entropy_bounds_match_a_brute_force_search_and_the_untrained_controller_is_near_uniform():
    """entropy_bounds: the lowest op / skip entropy that logits c * tanh(.) can reach, against a numpy
    search over every +-c vertex and random interior logits; op_entropy is the branches' part of the
    controller's summed entropy and starts near uniform."""
    from tf_rlnas.algos.enas.controller import entropy_bounds

    def ent(logits):
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return -(p * np.log(p)).sum(-1)

    c, L = 1.5, 5
    rng = np.random.default_rng(0)
    vertices = np.array([[c if (k >> j) & 1 else -c for j in range(6)] for k in range(1, 64)])
    inner = c * np.tanh(rng.normal(0, 3, (20000, 6)))
    op_floor = min(ent(vertices).min(), ent(inner).min())
    s = np.linspace(-c, c, 2001)
    skip_floor = ent(np.stack([-s, s], -1)).min()
    bounds = entropy_bounds(L, c)
    np.testing.assert_allclose(bounds["op_min"], L * op_floor, rtol=1e-9)
    np.testing.assert_allclose(bounds["skip_min"], L * (L - 1) / 2 * skip_floor, rtol=1e-9)
    np.testing.assert_allclose(bounds["op_uniform"], L * np.log(6))
    np.testing.assert_allclose(bounds["skip_uniform"], L * (L - 1) / 2 * np.log(2))
    assert entropy_bounds(L, None)["op_min"] == 0.0
    out = Controller(L, 16).sample(50, tf.constant([5, 6], tf.int64))
    op, total = out["op_entropy"].numpy(), out["entropy"].numpy()
    assert np.all(op > 0.99 * bounds["op_uniform"]) and np.all(op <= bounds["op_uniform"] + 1e-5)
    skip_part = total - op
    assert np.all(skip_part > 0.99 * bounds["skip_uniform"]) and np.all(skip_part <= bounds["skip_uniform"] + 1e-4)


def test_skip_penalty_matches_numpy():
    t = 0.4
    c = Controller(5, 16, skip_target=t)
    out = c.sample(4, tf.constant([1, 2], tf.int64))
    p = out["skip_prob"].numpy()  # [M, L, L] sigmoid of the (tanh-shaped) attention logit
    expected = []
    for m in range(4):
        per_layer = []
        for i in range(1, 5):
            q = p[m, i, :i]
            per_layer.append(np.sum(q * np.log(q / t) + (1 - q) * np.log((1 - q) / (1 - t))))
        expected.append(np.mean(per_layer))
    np.testing.assert_allclose(out["skip_penalty"].numpy(), expected, rtol=1e-5)


def test_each_branch_computes_a_different_op():
    x = tf.random.stateless_normal((2, 8, 8, 4), seed=[1, 2])
    outs = []
    for kind in range(6):
        br = Branch(kind, 4)
        br(x)
        outs.append(br(x).numpy())
    for i in range(6):
        for j in range(i + 1, 6):
            assert not np.allclose(outs[i], outs[j], atol=1e-3), (i, j)
    # and through the shared child: changing only layer 0's branch changes the logits, 6 ways
    net = ChildNet(3, 8, 10, (8, 8, 1), keep_prob=1.0)
    img = tf.random.stateless_normal((4, 8, 8, 1), seed=[5, 6])
    skips = tf.zeros((3, 3), tf.int32)
    logits = [net(img, tf.constant([k, 0, 0]), skips).numpy() for k in range(6)]
    for i in range(6):
        for j in range(i + 1, 6):
            assert not np.allclose(logits[i], logits[j], atol=1e-5), (i, j)
    # the max-pool branch really is a 3x3 max: compare with numpy on its 1x1-conv-BN-ReLU input
    br = Branch(5, 4)
    br(x)
    pre = tf.nn.relu(br.inp_bn(br.inp(x), training=False)).numpy()
    pad = np.pad(pre, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=-np.inf)
    ref = np.max([pad[:, a:a + 8, b:b + 8] for a in range(3) for b in range(3)], axis=0)
    np.testing.assert_allclose(br(x).numpy(), ref, rtol=1e-6)


def test_factorized_reduction_and_fixed_filter_doubling_shapes():
    x = tf.zeros((2, 8, 8, 5))
    assert FactorizedReduction(16)(x).shape == (2, 4, 4, 16)
    assert FactorizedReduction(15)(x).shape == (2, 4, 4, 15)
    assert FactorizedReduction(6)(tf.zeros((1, 7, 7, 3))).shape == (1, 4, 4, 6)
    arc = (np.zeros(6, np.int32), np.zeros((6, 6), np.int32))
    fixed = ChildNet(6, 4, 10, (16, 16, 3), fixed_arc=arc)
    assert fixed.head.kernel.shape == (16, 10)  # 4 -> 8 -> 16 filters at the two pool layers
    search = ChildNet(6, 4, 10, (16, 16, 3))
    assert search.head.kernel.shape == (4, 10)  # search mode keeps F
    assert len(fixed.trainable_variables) < len(search.trainable_variables) / 3  # only chosen branches exist


@pytest.mark.parametrize("size", [8, 7])
def test_factorized_reduction_values_and_gradient(size):
    """Path 1 = 1x1 stride-2 conv of x, path 2 = the same on x shifted by one pixel (zero-filled),
    written the textbook way in numpy; and its gradients (input, both kernels) == those of the
    textbook form in TF ops (two strided 1x1 convs, a shifted copy, a concat)."""
    x = tf.random.stateless_normal((2, size, size, 3), seed=[7, size])
    red = FactorizedReduction(4)
    red(x)
    xs = np.zeros_like(x.numpy())
    xs[:, :-1, :-1] = x.numpy()[:, 1:, 1:]
    k1, k2 = red.path1.kernel.numpy()[0, 0], red.path2.kernel.numpy()[0, 0]
    pre = np.concatenate([x.numpy()[:, ::2, ::2] @ k1, xs[:, ::2, ::2] @ k2], axis=-1)
    ref = (pre - pre.mean((0, 1, 2))) / np.sqrt(pre.var((0, 1, 2)) + 1e-5)  # BN, gamma 1, beta 0
    np.testing.assert_allclose(red(x, training=True).numpy(), ref, atol=2e-4)

    def textbook(x):
        shifted = tf.pad(x[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])
        y = tf.concat([tf.nn.conv2d(x, red.path1.kernel, 2, "VALID"),
                       tf.nn.conv2d(shifted, red.path2.kernel, 2, "VALID")], -1)
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(y, red.bn.gamma, red.bn.beta, epsilon=1e-5)
        return y

    w = tf.random.stateless_normal((2, (size + 1) // 2, (size + 1) // 2, 4), seed=[8, size])
    wrt = [x, red.path1.kernel, red.path2.kernel, red.bn.gamma]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        mine = tf.reduce_sum(red(x, training=True) * w)
        theirs = tf.reduce_sum(textbook(x) * w)
    for a, b in zip(tape.gradient(mine, wrt), tape.gradient(theirs, wrt)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_max_pool_gradient_routes_to_each_window_argmax_also_inside_switch_case():
    """The search network's max pool (gradient recomputes the pool so oneDNN's MaxPoolGrad runs
    inside tf.switch_case): its gradient == numpy's routing of each output's gradient to its
    window's maximum, eagerly and inside a traced switch_case, and == TF's own op's."""
    x = tf.random.stateless_normal((2, 6, 7, 3), seed=[3, 9])
    g = tf.random.stateless_normal((2, 6, 7, 3), seed=[4, 9])
    xn, gn = x.numpy(), g.numpy()
    ref = np.zeros_like(xn)
    pad = np.pad(xn, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=-np.inf)
    for n, i, j, c in np.ndindex(*xn.shape):
        win = pad[n, i:i + 3, j:j + 3, c]
        a, b = np.unravel_index(np.argmax(win), (3, 3))
        ref[n, i + a - 1, j + b - 1, c] += gn[n, i, j, c]

    def grad_of(pool):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = pool(x)
        return tape.gradient(y, x, output_gradients=g)

    @tf.function
    def in_switch(k):
        return grad_of(lambda x: tf.switch_case(k, [lambda: max_pool3x3(x), lambda: x * 2.0]))

    np.testing.assert_allclose(max_pool3x3(x).numpy(), np.max(
        [pad[:, a:a + 6, b:b + 7] for a in range(3) for b in range(3)], axis=0), rtol=0)
    np.testing.assert_allclose(grad_of(max_pool3x3).numpy(), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(in_switch(tf.constant(0)).numpy(), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(grad_of(max_pool3x3).numpy(),
                                  grad_of(lambda x: tf.nn.max_pool2d(x, 3, 1, "SAME")).numpy())


def test_auto_compute_dtype_is_bfloat16_exactly_where_the_cpu_has_it(monkeypatch):
    import tf_rlnas.nn.precision as P
    for native, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(P, "native_bfloat16", lambda: native)
        net = ChildNet(3, 4, 10, (8, 8, 1), fixed_arc=([0, 1, 0], np.zeros((3, 3), np.int32)), compute_dtype="auto")
        assert net.conv_dtype == want
        assert net.stem.compute_dtype == want  # the dense convs' Keras policy follows the choice
    with pytest.raises(ValueError, match="compute_dtype"):
        ChildNet(3, 4, 10, (8, 8, 1), compute_dtype="float16")


def test_bfloat16_child_matches_float32_and_keeps_float32_weights():
    """compute_dtype=bfloat16: same weights -> logits within bf16 rounding of the float32 net; the
    variables and their gradients stay float32; all branches and skips still run."""
    shape, L = (8, 8, 1), 4
    f32 = ChildNet(L, 8, 10, shape, keep_prob=1.0)
    b16 = ChildNet(L, 8, 10, shape, keep_prob=1.0, compute_dtype="bfloat16")
    for a, b in zip(f32.weights, b16.weights):
        b.assign(a)
    x = tf.random.stateless_normal((16, *shape), seed=[3, 4])
    y = tf.random.stateless_uniform((16,), seed=[5, 6], maxval=10, dtype=tf.int32)
    skips = tf.constant(np.tril(np.ones((L, L)), -1), tf.int32)
    for branches in ([0, 1, 2, 3], [3, 4, 5, 0]):
        lf = f32(x, tf.constant(branches), skips, training=True).numpy()
        lb = b16(x, tf.constant(branches), skips, training=True)
        assert lb.dtype == tf.float32
        assert np.max(np.abs(lb.numpy() - lf)) < 0.05 * np.max(np.abs(lf)) + 1e-2
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            y, b16(x, tf.constant([0, 1, 2, 3]), skips, training=True)))
    grads = tape.gradient(loss, b16.trainable_variables)
    assert all(v.dtype == tf.float32 for v in b16.trainable_variables)
    assert all(g is None or g.dtype == tf.float32 for g in grads)
    assert float(tf.linalg.global_norm([g for g in grads if g is not None])) > 0


def test_bfloat16_child_gradients_point_where_float32_ones_do():
    """Same weights and batch (32x32x3, 64 images, 6 layers with every branch kind): each variable's
    bfloat16 gradient has a cosine > 0.95 with its float32 gradient, except the BN offsets that
    another BN follows, whose true gradient is zero (float32 ~1e-8: rounding noise in both; skipped
    by size). Measured over 6 initialisations: 0.966-1.0, the lowest a BN offset before a separable
    conv's depthwise part (a sum with much cancellation), most above 0.99. TF's bfloat16 bias-gradient
    sums, which stopped PlaNet learning, scored 0.78-0.95 on PlaNet's decoder (tf_rlnas.nn.layers);
    the child's bf16 convs have no biases."""
    keras.utils.set_random_seed(0)
    shape, L = (32, 32, 3), 6
    f32 = ChildNet(L, 16, 10, shape, keep_prob=1.0)
    b16 = ChildNet(L, 16, 10, shape, keep_prob=1.0, compute_dtype="bfloat16")
    x = tf.random.stateless_normal((64, *shape), seed=[3, 4])
    y = tf.random.stateless_uniform((64,), seed=[5, 6], maxval=10, dtype=tf.int32)
    skips = tf.constant(np.tril(np.ones((L, L)), -1), tf.int32)
    branches = tf.constant([0, 1, 2, 3, 4, 5])
    f32(x, branches, skips, training=True), b16(x, branches, skips, training=True)
    for a, b in zip(f32.weights, b16.weights):
        b.assign(a)
    grads = []
    for net in (f32, b16):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                y, net(x, branches, skips, training=True)))
        grads.append(tape.gradient(loss, net.trainable_variables))
    pairs = [(v.path, a.numpy().ravel(), b.numpy().ravel())
             for v, a, b in zip(f32.trainable_variables, *grads) if a is not None]
    biggest = max(np.linalg.norm(a) for _, a, _ in pairs)
    checked = [(p, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
               for p, a, b in pairs if np.linalg.norm(a) > 1e-4 * biggest]
    assert len(checked) >= 40
    bad = [(p, round(c, 3)) for p, c in checked if c < 0.95]
    assert not bad, bad


def test_cosine_lr_restarts():
    lr = lambda e: cosine_lr(e, 0.05, 5e-4, 10, 2)  # noqa: E731
    for e in (0, 10, 30, 70, 150, 310):
        assert lr(e) == pytest.approx(0.05)
    assert lr(9) < 0.002 and lr(29) < 0.001 and lr(69) < 0.0006
    assert lr(5) == pytest.approx(5e-4 + 0.5 * (0.05 - 5e-4))
    assert lr(20) == pytest.approx(5e-4 + 0.5 * (0.05 - 5e-4))  # middle of the 20-epoch cycle


def test_lr_cycle_over_the_run_and_per_step_cosine(tmp_path):
    """child.lr_t0 null: one cosine cycle over child.epochs; child.lr_per_step: the cosine advances
    every step, so the last step of a 2-epoch run trains at ~the floor (per epoch: at the midpoint)."""
    assert cosine_lr(2.5, 0.05, 5e-4, 3, 2) == pytest.approx(5e-4 + 0.5 * (0.05 - 5e-4) * (1 + np.cos(np.pi * 2.5 / 3)))
    seen = {}
    for per_step in (False, True):
        cfg = C.resolve(EnasConfig, [], SMOKE + ["child.epochs=2", "child.lr_t0=null", "controller.train_steps=0",
                                                  "search.eval_every=0", f"child.lr_per_step={str(per_step).lower()}"])
        tr = EnasTrainer(cfg, str(tmp_path / f"r{per_step}"))
        lrs = []
        step = tr.child_step
        tr.child_step = lambda *a: (lrs.append(float(tr.child_opt.learning_rate.numpy())), step(*a))[1]
        tr.train_iteration(), tr.iteration.assign_add(1), tr.train_iteration()
        seen[per_step] = lrs
    n = len(seen[True]) // 2
    assert n >= 2 and len(seen[False]) == 2 * n
    np.testing.assert_allclose(seen[False], [0.05] * n + [5e-4 + 0.5 * (0.05 - 5e-4)] * n, rtol=1e-6)  # per epoch
    expected = [cosine_lr(i / n, 0.05, 5e-4, 2, 2) for i in range(2 * n)]
    np.testing.assert_allclose(seen[True], expected, rtol=1e-6)
    assert seen[True][-1] < 0.05 * 0.01 + 5e-4 * 1.5  # the last step at ~the floor
    assert all(a > b for a, b in zip(seen[True], seen[True][1:]))  # never restarts within the cycle


def test_child_gradient_clipping_really_clips(tmp_path):
    cfg = C.resolve(EnasConfig, [], SMOKE + ["child.grad_clip=0.001", "child.momentum=0", "child.l2=0",
                                              "child.lr_max=1.0", "child.keep_prob=1.0"])
    tr = EnasTrainer(cfg, str(tmp_path / "e"))
    tr.child_opt.learning_rate.assign(1.0)
    before = [v.numpy() for v in tr.child.trainable_variables]
    x, y = next(iter(tr.splits.train(0)))
    _, _, gnorm = tr.child_step(x, y, tf.constant([1, 2], tf.int64))
    change = np.sqrt(sum(np.sum((v.numpy() - b) ** 2) for v, b in zip(tr.child.trainable_variables, before)))
    assert float(gnorm) > 0.1  # the raw gradient is large ...
    assert change == pytest.approx(0.001, rel=1e-3)  # ... the applied step has norm lr * clip


def test_controller_learns_a_synthetic_reward():
    """Reward = fraction of layers using branch 3 (sep-conv 5x5): REINFORCE with the EMA baseline
    must raise that branch's probability and the mean reward."""
    c = Controller(4, 32)
    opt = keras.optimizers.Adam(1e-2, beta_1=0.0, beta_2=0.999, epsilon=1e-3)
    update = make_controller_update(c, opt, skip_weight=0.0, grad_clip=5.0)
    sample = tf.function(lambda seed: c.sample(16, seed))
    baseline, rewards = None, []
    for step in range(60):
        out = sample(tf.constant([7, step], tf.int64))
        b = out["branches"].numpy()
        r = (b == 3).mean(axis=1)
        adv = np.zeros(len(r), np.float32)
        for i, ri in enumerate(r):
            baseline = ri if baseline is None else baseline - 0.05 * (baseline - ri)
            adv[i] = ri - baseline
        update(out["branches"], out["skips"], adv)
        rewards.append(r.mean())
    assert np.mean(rewards[:5]) < 0.3  # about 1/6 at the start
    assert np.mean(rewards[-5:]) > 0.7, rewards
    final = sample(tf.constant([9, 9], tf.int64))["branches"].numpy()
    assert (final == 3).mean() > 0.7


def test_warmup_epochs_leave_the_controller_untouched_then_it_learns(tmp_path):
    """search.warmup_epochs: the shared weights train on the untrained controller's draws and the
    controller takes no step (its weights and the baseline stay) until the warm-up is over."""
    tr = EnasTrainer(C.resolve(EnasConfig, [], SMOKE + ["child.epochs=2", "search.warmup_epochs=1"]), str(tmp_path))
    before = [v.numpy().copy() for v in tr.controller.trainable_variables]
    child_before = [v.numpy().copy() for v in tr.child.trainable_variables]
    m = tr.train_iteration()
    tr.iteration.assign_add(1)
    assert "controller/loss" not in m
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, tr.controller.trainable_variables))
    assert not bool(tr.has_baseline.numpy())
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(child_before, tr.child.trainable_variables))
    m = tr.train_iteration()
    assert "controller/loss" in m
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before, tr.controller.trainable_variables))


def test_advantages_ema_and_leave_one_out():
    """ema: the paper's running baseline, moved before each reward's advantage; loo: r_i minus the
    mean of the other rewards of the step (sums to 0; equal rewards give 0), EMA still tracked."""
    r = np.array([0.5, 0.7, 0.6, 0.9])
    adv, b, has = advantages(r, 0.0, False, 0.9, "ema")
    ref_b, ref = None, []
    for x in r:
        ref_b = x if ref_b is None else 0.9 * ref_b + 0.1 * x
        ref.append(x - ref_b)
    np.testing.assert_allclose(adv, ref, rtol=1e-6)
    assert has and abs(b - ref_b) < 1e-12 and adv[0] == 0.0
    adv2, b2, _ = advantages(r, 0.3, True, 0.9, "loo")
    others = np.array([(r.sum() - x) / 3 for x in r])
    np.testing.assert_allclose(adv2, r - others, rtol=1e-6)
    assert abs(adv2.sum()) < 1e-6 and adv2.argmax() == 3 and adv2.argmin() == 0
    ema_b = 0.3
    for x in r:
        ema_b = 0.9 * ema_b + 0.1 * x
    assert abs(b2 - ema_b) < 1e-12
    np.testing.assert_allclose(advantages(np.full(3, 0.8), 0.1, True, 0.99, "loo")[0], np.zeros(3), atol=1e-7)
    with pytest.raises(Exception, match="num_aggregate >= 2"):
        C.resolve(EnasConfig, [], ["controller.baseline=loo", "controller.num_aggregate=1"]).validate()


@pytest.mark.parametrize("mode", ["ema", "loo"])
def test_loo_baseline_scores_a_step_on_one_shared_batch(tmp_path, mode):
    """controller.baseline loo: the step's architectures are scored on the same validation batch
    (ema: each on its own), and the controller still takes its steps."""
    tr = EnasTrainer(C.resolve(EnasConfig, [], SMOKE + [f"controller.baseline={mode}"]), str(tmp_path))
    seen, acc = [], tr.accuracy
    tr.accuracy = lambda x, y, b, s: (seen.append(float(np.sum(x.numpy() * np.arange(1, x.shape[1] + 1)[None, :, None, None]))),
                                      acc(x, y, b, s))[1]
    before = [v.numpy().copy() for v in tr.controller.trainable_variables]
    m = tr._train_controller(0)
    steps = np.array(seen).reshape(2, 3)  # train_steps 2 x num_aggregate 3
    if mode == "loo":
        assert np.all(steps == steps[:, :1]) and steps[0, 0] != steps[1, 0]
    else:
        assert len(set(seen)) == 6
    assert np.isfinite(m["controller/loss"])
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before, tr.controller.trainable_variables))


def test_search_resume_restores_everything(tmp_path):
    full = EnasTrainer(C.resolve(EnasConfig, [], SMOKE + ["child.epochs=3"]), str(tmp_path / "full"))
    full.fit(progress=False)
    part = EnasTrainer(C.resolve(EnasConfig, [], SMOKE + ["child.epochs=2"]), str(tmp_path / "part"))
    part.fit(progress=False)
    del part
    resumed = EnasTrainer(C.resolve(EnasConfig, [], SMOKE + ["child.epochs=3"]), str(tmp_path / "part"))
    resumed.fit(progress=False)
    for a, b in zip(full.child.weights + full.controller.weights, resumed.child.weights + resumed.controller.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert float(full.baseline.numpy()) == float(resumed.baseline.numpy())
    assert float(full.child_opt.learning_rate.numpy()) == float(resumed.child_opt.learning_rate.numpy())
    for a, b in zip(full.child_opt.m, resumed.child_opt.m):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(full.ctrl_opt.iterations.numpy()) == int(resumed.ctrl_opt.iterations.numpy()) == 6
    arch = json.load(open(tmp_path / "full" / "architecture.json"))
    assert arch == json.load(open(tmp_path / "part" / "architecture.json"))
    b, s = arc_from_dict(arch["architecture"])
    assert arc_to_dict(b, s) == arch["architecture"] and len(b) == 3


def test_score_bn_batch_ignores_and_keeps_the_moving_statistics(tmp_path):
    """search.score_bn batch: an architecture's score uses the scored batch's own BN statistics, so
    corrupting the shared moving statistics leaves it unchanged (moving: it changes), and scoring
    never writes the moving statistics."""
    scores = {}
    for mode in ("moving", "batch"):
        tr = EnasTrainer(C.resolve(EnasConfig, [], SMOKE + [f"search.score_bn={mode}"]), str(tmp_path / mode))
        tr.train_iteration()
        tr.iteration.assign_add(1)
        x, y = next(iter(tr.splits.valid_stream(0)))
        out = tr.sample_n(4, tf.constant([1, 2], tf.int64))
        arcs = list(zip(out["branches"].numpy(), out["skips"].numpy()))
        before = [float(tr.accuracy(x, y, b, s)) for b, s in arcs]
        stats = [v for v in tr.child.non_trainable_weights if "moving" in v.name]
        assert stats
        for v in stats:
            v.assign(v + 50.0)
        snap = [v.numpy().copy() for v in stats]
        after = [float(tr.accuracy(x, y, b, s)) for b, s in arcs]
        assert all(np.array_equal(a, v.numpy()) for a, v in zip(snap, stats))  # scoring writes no statistics
        scores[mode] = (before, after)
    before, after = scores["batch"]
    np.testing.assert_allclose(after, before, atol=1e-6)
    before, after = scores["moving"]
    assert after != before, scores  # the moving statistics do enter a moving-mode score


def test_derive_top_rescores_the_best_samples_on_the_whole_validation_split(tmp_path):
    """search.derive_top K: the K best samples on the derive batches are re-scored on the whole
    validation split and the best of THOSE is kept; resuming the finished run with another K
    re-derives from the same final state (no training)."""
    run = str(tmp_path / "run")
    tr = EnasTrainer(C.resolve(EnasConfig, [], SMOKE + ["child.epochs=1", "search.derive_archs=6"]), run)
    tr.fit(progress=False)
    plain = json.load(open(os.path.join(run, "architecture.json")))
    assert "derive_top" not in plain
    del tr
    tr = EnasTrainer(C.resolve(EnasConfig, [], SMOKE + ["child.epochs=1", "search.derive_archs=6",
                                                        "search.derive_top=3"]), run)
    tr.fit(progress=False)
    assert int(tr.iteration.numpy()) == 1  # nothing trained again
    res = json.load(open(os.path.join(run, "architecture.json")))
    top = res["derive_top"]
    assert len(top) == 3
    assert [t["derive_batches_accuracy"] for t in top] == sorted((t["derive_batches_accuracy"] for t in top), reverse=True)
    assert top[0]["derive_batches_accuracy"] == plain["search_valid_accuracy"]  # the plain winner is among them
    best = max(top, key=lambda t: t["valid_accuracy"])
    out = tr.sample_n(6, tf.constant([0, 424242], tf.int64))
    b, s = out["branches"].numpy()[best["sample"]], out["skips"].numpy()[best["sample"]]
    assert res["architecture"] == arc_to_dict(b, s)
    np.testing.assert_allclose(best["valid_accuracy"], tr.evaluate_arc(tr.splits.valid(), b, s), rtol=1e-6)
    # the concentration record: the derive samples' entropies and repeats, recomputed here
    keys = {(bb.tobytes(), ss.tobytes()) for bb, ss in zip(out["branches"].numpy(), out["skips"].numpy())}
    assert res["distinct_samples"] == len(keys)
    assert 1 <= res["derived_sample_count"] <= 6
    np.testing.assert_allclose(res["controller_op_entropy"], out["op_entropy"].numpy().mean(), rtol=1e-5)
    np.testing.assert_allclose(res["controller_entropy"], out["entropy"].numpy().mean(), rtol=1e-5)
    np.testing.assert_allclose(res["op_entropy_uniform"], 3 * np.log(6))
    np.testing.assert_allclose(res["entropy_uniform"], 3 * np.log(6) + 3 * np.log(2))
    assert res["op_entropy_floor"] < res["controller_op_entropy"] < res["op_entropy_uniform"]


def test_derive_every_and_derive_give_each_budgets_architecture_as_a_shorter_search(tmp_path, capsys):
    """search.derive_every 1 writes derived/epoch-E.json at every epoch; with child.lr_t0 set, epoch 2's
    equals the architecture.json of a 2-epoch search, the last one equals the run's own, and deriving
    changes no training state (a 2-epoch search resumed to 3 ends with the same weights). The post-hoc
    ``tf_rlnas derive RUN --epoch E`` rebuilds epoch E's file from its checkpoint; bad input: one line, 2."""
    base = SMOKE + ["child.lr_t0=10", "run.keep_checkpoints=5"]
    every = str(tmp_path / "every")
    cfg = C.resolve(EnasConfig, [], base + ["child.epochs=3", "search.derive_every=1"])
    tr = EnasTrainer(cfg, every)
    rundir.write_config(every, "enas", cfg)  # as `tf_rlnas train` does: derive reads it
    tr.fit(progress=False)
    files = sorted(os.listdir(os.path.join(every, "derived")))
    assert files == ["epoch-1.json", "epoch-2.json", "epoch-3.json"]
    derived = {e: json.load(open(os.path.join(every, "derived", f"epoch-{e}.json"))) for e in (1, 2, 3)}
    assert [derived[e]["epochs"] for e in (1, 2, 3)] == [1, 2, 3]
    assert derived[3] == json.load(open(os.path.join(every, "architecture.json")))
    short = str(tmp_path / "short")
    EnasTrainer(C.resolve(EnasConfig, [], base + ["child.epochs=2"]), short).fit(progress=False)
    assert json.load(open(os.path.join(short, "architecture.json"))) == derived[2]
    assert not os.path.exists(os.path.join(short, "derived"))  # derive_every 0: only the end
    cfg = C.resolve(EnasConfig, [], base + ["child.epochs=3"])
    resumed = EnasTrainer(cfg, short)
    rundir.write_config(short, "enas", cfg)
    resumed.fit(progress=False)
    for a, b in zip(tr.child.weights + tr.controller.weights, resumed.child.weights + resumed.controller.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # post hoc, from the kept checkpoint of epoch 1: the same file again
    os.remove(os.path.join(every, "derived", "epoch-1.json"))
    capsys.readouterr()
    assert main(["derive", every, "--epoch", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed.pop("path") == os.path.join(every, "derived", "epoch-1.json")
    assert printed == derived[1] == json.load(open(os.path.join(every, "derived", "epoch-1.json")))
    assert main(["derive", short]) == 0  # the latest checkpoint: the run's own architecture.json
    assert json.load(open(os.path.join(short, "derived", "epoch-3.json"))) == derived[3]
    fixed = str(tmp_path / "fixed")  # a retrain's run directory: refused from its config alone
    rundir.write_config(fixed, "enas", C.resolve(EnasConfig, [], ["mode=fixed", "fixed.arc_file=conv_stack"]))
    capsys.readouterr()
    for argv, words in ((["derive", every, "--epoch", "9"], "no checkpoint of iteration 9 (kept: 1, 2, 3"),
                        (["derive", fixed], "is a fixed-mode retrain"),
                        (["derive", every, "--epoch", "0"], "--epoch must be >= 1"),
                        (["derive", str(tmp_path / "nowhere")], "run directory not found")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and len(err.splitlines()) == 1, err


def test_search_then_fixed_retrain_and_export(tmp_path, capsys):
    search = str(tmp_path / "search")
    assert main(["train", "enas", *sum([["--set", s] for s in SMOKE], []), "--run-dir", search]) == 0
    out = capsys.readouterr().out
    arc_file = os.path.join(search, "architecture.json")
    assert os.path.exists(arc_file) and "derived architecture at epoch " in out, out
    fixed = str(tmp_path / "fixed")
    assert main(["train", "enas", "--config", "digits_fixed", "--set", f"fixed.arc_file={arc_file}",
                 "--set", "child.epochs=2", "--set", "child.filters=8", "--run-dir", fixed]) == 0
    summary = json.load(open(os.path.join(fixed, "summary.json")))
    assert summary["final_eval"]["fixed/test_accuracy"] > 0.5
    assert main(["export", fixed, "--out", str(tmp_path / "sm")]) == 0
    m = tf.saved_model.load(str(tmp_path / "sm" / "fixed" / "1"))
    digits = load_arrays("digits")
    probs = m.signatures["serving_default"](images=tf.constant(digits.x_test[:50], tf.float32))["probabilities"].numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.argmax(1) == digits.y_test[:50]).mean() > 0.5
    # TF Serving's loader path (saved_model_cli run: TF1 loader in a Session), fresh process
    served = saved_model_cli_run(str(tmp_path / "sm" / "fixed" / "1"), "serving_default",
                                 {"images": digits.x_test[:50].astype(np.float32)}, str(tmp_path / "cli"))
    np.testing.assert_allclose(served["probabilities"], probs, rtol=1e-5, atol=1e-6)
    # bad architecture files: one clear error, exit 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"layers": [{"branch": 9}]}')
    assert main(["train", "enas", "--config", "digits_fixed", "--set", f"fixed.arc_file={bad}",
                 "--run-dir", str(tmp_path / "bad")]) == 2
    assert main(["export", search, "--out", str(tmp_path / "sm")]) == 2  # a search run exports nothing


def test_fused_bn_matches_keras_bn():
    from tf_rlnas.algos.enas.child import FusedBN
    x = tf.random.stateless_normal((8, 5, 5, 3), seed=[1, 2]) * 2 + 1
    w = tf.random.stateless_normal((8, 5, 5, 3), seed=[3, 4])
    fused, ref = FusedBN(), keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    fused.build(x.shape)
    ref.build(x.shape)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ya, yb = fused(x, training=True), ref(x, training=True)
        la, lb = tf.reduce_sum(ya * w), tf.reduce_sum(yb * w)
    np.testing.assert_allclose(ya.numpy(), yb.numpy(), atol=1e-5)
    for p, q in zip(tape.gradient(la, [x, fused.gamma, fused.beta]), tape.gradient(lb, [x, ref.gamma, ref.beta])):
        np.testing.assert_allclose(p.numpy(), q.numpy(), atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), ref.moving_mean.numpy(), atol=1e-6)
    # moving variance: 0.9 * 1 + 0.1 * the unbiased batch variance (TF's fused-kernel convention)
    xs = x.numpy().reshape(-1, 3)
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.9 + 0.1 * xs.var(0, ddof=1), rtol=1e-5)
    # inference uses the moving statistics
    xi = tf.random.stateless_normal((4, 5, 5, 3), seed=[5, 6])
    mean, var = fused.moving_mean.numpy(), fused.moving_variance.numpy()
    np.testing.assert_allclose(fused(xi).numpy(), (xi.numpy() - mean) / np.sqrt(var + 1e-5), atol=1e-5)


def _write_idx(path, arr):
    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_fashion_mnist_idx_loader_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 50), ("t10k", 20)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    a = load_arrays("fashion_mnist", str(tmp_path))
    assert a.x_train.shape == (50, 28, 28, 1) and a.x_test.shape == (20, 28, 28, 1) and a.y_train.max() < 10
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 20) + b"\x01" * 5)  # truncated
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_arrays("fashion_mnist", str(tmp_path))
    with pytest.raises(UserError, match="not found"):
        load_arrays("fashion_mnist", str(tmp_path / "absent"))


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_real_debian_files_load():
    real = load_arrays("fashion_mnist")
    assert real.x_train.shape == (60000, 28, 28, 1) and real.x_test.shape == (10000, 28, 28, 1)
    assert sorted(np.unique(real.y_test)) == list(range(10)) and np.bincount(real.y_test).min() == 1000


def test_cifar10_through_tfds_mock_and_missing_data_error(tmp_path):
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=40):
        a = load_arrays("cifar10", str(tmp_path), download=False)
    assert a.x_train.shape[1:] == (32, 32, 3) and a.num_classes == 10 and len(a.y_train) == 40
    sp = Splits(a, valid_size=8, batch_size=16, eval_batch_size=8, seed=0, augment_pad=4, augment_flip=True)
    x, y = next(iter(sp.train(0)))
    assert x.shape == (16, 32, 32, 3) and abs(float(tf.reduce_mean(x))) < 0.5
    with pytest.raises(UserError, match="cifar10 is not available"):
        load_arrays("cifar10", str(tmp_path / "empty"), download=False)


def test_digits_splits_are_seeded_and_normalised():
    a = load_arrays("digits")
    assert a.x_train.shape == (1438, 8, 8, 1) and a.x_test.shape == (359, 8, 8, 1)
    sp = Splits(a, valid_size=300, batch_size=32, eval_batch_size=64, seed=1)
    assert sp.sizes == {"train": 1138, "valid": 300, "test": 359}
    assert abs(sp.x_train.mean()) < 1e-4 and abs(sp.x_train.std() - 1) < 1e-3
    b1 = [y.numpy() for _, y in sp.train(3)]
    b2 = [y.numpy() for _, y in sp.train(3)]
    b3 = [y.numpy() for _, y in sp.train(4)]
    assert all(np.array_equal(p, q) for p, q in zip(b1, b2)) and not np.array_equal(b1[0], b3[0])
    with pytest.raises(UserError, match="valid_size"):
        Splits(a, valid_size=5000, batch_size=32, eval_batch_size=64, seed=1)


@pytest.mark.timeout(600)
def test_mirrored_on_two_cpu_devices_matches_one_device(tmp_path):
    """Fresh processes (TF's devices must be split before start-up): one epoch of fixed-arc
    training with MirroredStrategy on 2 logical CPUs vs 1 device: the same training loss and the
    same trainable weights up to float rounding (BN batch statistics are synchronised; the BN
    moving averages, used only at inference, are updated from per-replica statistics and differ)."""
    arc = tmp_path / "arc.json"
    arc.write_text(json.dumps(arc_to_dict(np.array([0, 1, 4]), np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]]))))
    common = ["--config", "digits_fixed", "--set", f"fixed.arc_file={arc}", "--set", "child.epochs=1",
              "--set", "child.filters=8", "--set", "child.keep_prob=1.0", "--set", "data.batch_size=256",
              "--no-progress"]
    # batch 256: 5 steps. (At batch 64, 23 steps, the float rounding of half-batch sums grows through
    # momentum SGD to ~7e-3 on kernels of scale 1 on this machine; after 5 steps it is ~2e-7.)
    env = {**os.environ, "PYTHONPATH": REPO}
    # both runs use MirroredStrategy (synchronized Keras BN): 1 device vs 2; the default no-strategy
    # path uses fused BN, equal up to rounding (test_fused_bn_matches_keras_bn)
    for name, extra in (("one", ["--set", "distribute.strategy=mirrored"]),
                        ("two", ["--set", "distribute.strategy=mirrored", "--set", "distribute.cpu_devices=2"])):
        r = subprocess.run([sys.executable, "-m", "tf_rlnas", "train", "enas", *common, *extra,
                            "--run-dir", str(tmp_path / name)], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
    one = tf.train.load_checkpoint(str(tmp_path / "one" / "checkpoints"))
    two = tf.train.load_checkpoint(str(tmp_path / "two" / "checkpoints"))
    names = [n for n in one.get_variable_to_shape_map() if n.startswith("child/") and "moving_" not in n]
    assert len(names) > 20
    worst = 0.0
    for n in names:
        a, b = one.get_tensor(n), two.get_tensor(n)
        if a.dtype.kind == "f":
            worst = max(worst, float(np.max(np.abs(a - b))))
            # (relative terms would mislead for BN offsets that feed another BN: their gradient is
            # ~0, so they hold rounding noise near zero)
    print("largest absolute difference 1 vs 2 devices:", worst)
    assert worst < 1e-4
    l1, l2 = (json.load(open(tmp_path / n / "summary.json"))["final_metrics"]["child/loss"] for n in ("one", "two"))
    assert abs(l1 - l2) < 1e-4 * abs(l1)


@pytest.mark.timeout(600)
def test_same_seed_same_search_in_fresh_processes(tmp_path):
    """Two fresh processes, same config and seed: bit-identical child, controller and baseline
    after two search epochs (a tf.cond formulation of the skip adds once broke this with
    float-rounding differences that only showed across processes)."""
    env = {**os.environ, "PYTHONPATH": REPO}
    for name in ("a", "b"):
        r = subprocess.run([sys.executable, "-m", "tf_rlnas", "train", "enas", "--set", "child.epochs=2",
                            "--set", "controller.train_steps=2", "--set", "search.derive_archs=2",
                            "--set", "search.eval_every=0", "--no-progress", "--run-dir", str(tmp_path / name)],
                           env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
    a = tf.train.load_checkpoint(str(tmp_path / "a" / "checkpoints"))
    b = tf.train.load_checkpoint(str(tmp_path / "b" / "checkpoints"))
    names = [n for n in a.get_variable_to_shape_map() if n.startswith(("child/", "controller/", "baseline"))]
    assert len(names) > 50
    for n in names:
        np.testing.assert_array_equal(a.get_tensor(n), b.get_tensor(n), err_msg=n)


def test_fixed_flip_average_accuracy_matches_numpy(tmp_path):
    """With data.augment_flip the fixed-mode evaluation also reports the accuracy of the class
    probabilities averaged over each test image and its mirror: checked against NumPy on the
    same network's logits, and different from the plain accuracy's inputs (the mirror is used)."""
    tr = EnasTrainer(C.resolve(EnasConfig, [], SMOKE + ["mode=fixed", "fixed.arc_file=conv_stack",
                                                        "data.augment_flip=true", "child.epochs=1"]), str(tmp_path))
    tr.train_iteration()
    L = tr.num_layers
    b, s = np.zeros(L, np.int32), np.zeros((L, L), np.int32)
    x, y = tr.splits.x_test, tr.splits.y_test
    p = tf.nn.softmax(tr.child(tf.constant(x), b, s, training=False)).numpy()
    p_m = tf.nn.softmax(tr.child(tf.constant(x[:, :, ::-1]), b, s, training=False)).numpy()
    assert not np.allclose(p, p_m)
    ev = tr.evaluate()
    np.testing.assert_allclose(ev["fixed/test_accuracy_flip_avg"], ((p + p_m).argmax(1) == y).mean(), atol=1e-6)
    np.testing.assert_allclose(ev["fixed/test_accuracy"], (p.argmax(1) == y).mean(), atol=1e-6)
