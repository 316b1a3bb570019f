"""tf_rlnas.nn.layers: bias gradients that stay exact in bfloat16, and layers equal to Keras' own."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_rlnas.nn.layers import Conv2D, Conv2DTranspose, Dense, bias_add


def _bias_grad(add, x, dy):
    b = tf.Variable(tf.zeros([x.shape[-1]]))
    with tf.GradientTape() as tape:
        y = add(x, b)
    return tape.gradient(y, b, output_gradients=dy)


def test_bias_gradient_in_bfloat16_is_the_float32_sum_where_tensorflows_stalls():
    """2,048,000 gradients of 0.01 per channel: TF's BiasAddGrad in bfloat16 stops at 8 (its running
    sum cannot grow by 0.01 past 8); ours is the float32 sum rounded once to bfloat16 (~0.4%)."""
    x = tf.zeros([500, 64, 64, 3], tf.bfloat16)
    dy = tf.fill(x.shape, tf.constant(0.01, tf.bfloat16))
    exact = 500 * 64 * 64 * float(tf.cast(tf.constant(0.01, tf.bfloat16), tf.float32))
    stock = _bias_grad(lambda x, b: tf.nn.bias_add(x, tf.cast(b, x.dtype)), x, dy).numpy()
    ours = _bias_grad(bias_add, x, dy).numpy()
    assert np.all(stock < 0.01 * exact)  # the TF behaviour this module exists for
    np.testing.assert_allclose(ours, exact, rtol=4e-3)
    # also inside a tf.function, and a float32 x keeps TF's own op with its exact float32 sum
    b = tf.Variable(tf.zeros([3]))
    in_graph = tf.function(lambda: tf.gradients(bias_add(x, b), b, grad_ys=dy)[0])
    np.testing.assert_allclose(in_graph(), exact, rtol=4e-3)
    # (float32's own sum is 1.5% off here too: sequential float32 accumulation of 2M terms)
    x32, dy32 = tf.cast(x, tf.float32), tf.cast(dy, tf.float32)
    np.testing.assert_array_equal(_bias_grad(bias_add, x32, dy32),
                                  _bias_grad(lambda x, b: tf.nn.bias_add(x, b), x32, dy32))


def _pair(ours, theirs, x, policy):
    """The same layer as ours and as Keras' (same weights) on x: their outputs, their bias gradients
    for the loss sum(y * target), and that gradient summed exactly in numpy from our layer's output
    (the target where the activation passed the gradient, in the dtype the gradient flows in)."""
    a, b = ours(dtype=policy), theirs(dtype=policy)
    a(x), b(x)
    for va, vb in zip(a.weights, b.weights):
        vb.assign(va)
    # a positive weight on every output: the bias gradient is a sum without cancellation
    target = tf.random.stateless_uniform(a(x).shape, [1, 2], 0.5, 1.5)
    out = []
    for layer in (a, b):
        with tf.GradientTape() as tape:
            y = tf.cast(layer(x), tf.float32)
            loss = tf.reduce_sum(y * target)
        out.append((y.numpy(), tape.gradient(loss, layer.bias).numpy()))
    dy = tf.cast(tf.cast(target, a.compute_dtype), tf.float64).numpy()
    passed = out[0][0] > 0 if a.activation is keras.activations.relu else np.ones_like(dy, bool)
    exact = np.where(passed, dy, 0.0).reshape(-1, dy.shape[-1]).sum(0)
    return out, exact


@pytest.mark.parametrize("kind", ["dense", "conv", "deconv"])
def test_layers_compute_keras_numbers_and_exact_bias_gradients(kind):
    ours, theirs, shape = {
        "dense": (lambda **k: Dense(8, activation="relu", **k), lambda **k: keras.layers.Dense(8, activation="relu", **k),
                  [4000, 16]),
        "conv": (lambda **k: Conv2D(4, 4, 2, activation="relu", **k),
                 lambda **k: keras.layers.Conv2D(4, 4, 2, activation="relu", **k), [64, 34, 34, 3]),
        "deconv": (lambda **k: Conv2DTranspose(3, 6, 2, **k), lambda **k: keras.layers.Conv2DTranspose(3, 6, 2, **k),
                   [64, 30, 30, 8]),
    }[kind]
    x = tf.random.stateless_normal(shape, [3, 4])
    # float32: Keras' numbers exactly, and both gradients the exact sum
    ((ya, ga), (yb, gb)), exact = _pair(ours, theirs, x, None)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_allclose(ga, exact, rtol=1e-4)
    np.testing.assert_allclose(gb, exact, rtol=1e-4)
    # bfloat16: the same forward numbers as Keras; our bias gradient the exact sum to bfloat16
    # rounding, Keras' (TF's BiasAddGrad) far from it where each channel has many positions
    ((ya, ga), (yb, gb)), exact = _pair(ours, theirs, x, "mixed_bfloat16")
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_allclose(ga, exact, rtol=8e-3)
    if kind != "dense":
        assert np.max(np.abs(gb - exact) / exact) > 0.05


@pytest.mark.parametrize("size,stride", [(6, 2), (9, 2), (7, 1)])
def test_patch_filter_gradient_conv_is_the_conv_with_its_gradients(size, stride):
    """Conv2D(patch_filter_grad=True): the same output as Keras' conv, and input / kernel / bias
    gradients equal to the plain conv's (float32, ReLU and linear: to 1e-5 of scale; bfloat16,
    linear - a ReLU's mask may flip between precisions: within bf16 rounding of float32's, as the
    plain bf16 conv is); a bad configuration is refused."""
    x = tf.random.stateless_normal([5, size, size, 6], [1, size])
    kernel = tf.random.stateless_normal([4, 4, 6, 8], [4, size]) * 0.2
    bias = tf.random.stateless_normal([8], [3, size]) * 0.1
    for policy, act, tol in ((None, "relu", 1e-5), (None, None, 1e-5), ("mixed_bfloat16", None, 2e-2)):
        ours = Conv2D(8, 4, stride, activation=act, patch_filter_grad=True, dtype=policy)
        ref = keras.layers.Conv2D(8, 4, stride, activation=act)  # float32 reference
        for layer in (ours, ref):
            layer.build(x.shape)
            layer.kernel.assign(kernel)
            layer.bias.assign(bias)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y_ours, y_ref = tf.cast(ours(x), tf.float32), ref(x)
            dy = tf.random.stateless_normal(y_ref.shape, [2, size])
            l_ours, l_ref = tf.reduce_sum(y_ours * dy), tf.reduce_sum(y_ref * dy)
        scale = float(tf.reduce_max(tf.abs(y_ref)))
        np.testing.assert_allclose(y_ours.numpy(), y_ref.numpy(), atol=tol * scale)
        for a, b in zip(tape.gradient(l_ours, [x, ours.kernel, ours.bias]), tape.gradient(l_ref, [x, ref.kernel, ref.bias])):
            s = float(tf.reduce_max(tf.abs(b)))
            assert s > 0
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=tol * s)
    with pytest.raises(ValueError, match="patch_filter_grad"):
        Conv2D(8, 3, padding="same", patch_filter_grad=True)
    with pytest.raises(ValueError, match="patch_filter_grad"):
        Conv2D(8, 3, activation="tanh", patch_filter_grad=True)
