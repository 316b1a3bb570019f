"""Keras layers whose bias gradient is exact in bfloat16.

TensorFlow's gradient of ``BiasAdd`` (``BiasAddGrad``) on the CPU sums the incoming gradient over
every position in the tensor's own dtype. In bfloat16 (8 significant bits) that sum stops growing
once the running total is ~256x the terms it adds: 2,048,000 gradients of 0.01 (a batch of 500
64x64 images, one channel) sum to **8** instead of 20,480. Keras 3 adds every Dense and Conv bias
with ``tf.nn.bias_add``, so under a ``mixed_bfloat16`` policy each bias of a layer with many
positions per channel learns from a gradient that is mostly lost: measured on PlaNet's decoder
(2,500 images), the bias gradients of the last three transposed convs were 35-87% off (relative
L2) and PlaNet in bfloat16 stopped learning its reward (docs/planet.md). ``tf.reduce_sum`` is not
the answer either (1-2% off at millions of positions, in bfloat16 and in float32 alike: Eigen sums
in blocks in the tensor's dtype); a bfloat16 matmul of a row of ones with the gradient is, since
a bfloat16 matmul accumulates in float32 and rounds once (~0.2% off; oneDNN's, and Eigen's with
``TF_ENABLE_ONEDNN_OPTS=0``, both checked by the tests), and faster than ``BiasAddGrad`` on the
shapes measured (87 vs 221 ms for [2500, 64, 64, 3] on an AMD EPYC). The forward pass is
TensorFlow's ``BiasAdd`` as before (PlaNet's CEM, forward only: 628-638 ms per action with it,
623-662 ms with the plain op, alternating runs).

:func:`bias_add` is ``tf.nn.bias_add`` whose bias gradient is that product, and
:class:`Dense`, :class:`Conv2D`, :class:`Conv2DTranspose` are Keras' layers (same variables, same
checkpoints, same forward numbers) adding their bias with it. In float32 they are Keras' own
layers unchanged (``tf.nn.bias_add``, which grappler fuses with the product and the activation).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def bias_add(x, bias):
    """``x + bias`` over x's last axis, in x's dtype; ``bias`` may be float32 (cast here). Its
    gradient for the bias is accumulated in float32 whatever x's dtype (module docstring)."""
    bias = tf.convert_to_tensor(bias)  # a variable read outside the custom gradient: its tape sees it
    if x.dtype == tf.float32:
        return tf.nn.bias_add(x, tf.cast(bias, tf.float32))
    return _bias_add_exact_grad(x, bias)


@tf.custom_gradient
def _bias_add_exact_grad(x, bias):
    y = tf.nn.bias_add(x, tf.cast(bias, x.dtype))

    def grad(dy):
        return dy, _bias_grad(dy, bias.dtype)

    return y, grad


def _bias_grad(dy, dtype):
    """The sum of ``dy`` over all but its last axis as ones [1, N] x dy [N, C]: a bfloat16 matmul
    accumulates in float32 and rounds once (module docstring); returned in ``dtype``."""
    flat = tf.reshape(dy, [-1, tf.shape(dy)[-1]])
    db = tf.matmul(tf.ones([1, tf.shape(flat)[0]], dy.dtype), flat)
    return tf.cast(tf.reshape(db, [-1]), dtype)


class _ExactBias:
    """The end of each layer's call: the bias by :func:`bias_add`, then the activation. (These
    ``call``s are Keras' plain path: no LoRA or quantized kernels, which this package does not use.)"""

    def _bias_act(self, x):
        if self.use_bias:
            x = bias_add(x, self.bias)
        return self.activation(x) if self.activation is not None else x


class Dense(_ExactBias, keras.layers.Dense):
    """``keras.layers.Dense`` adding its bias with :func:`bias_add`."""

    def call(self, inputs, training=None):
        return self._bias_act(keras.ops.matmul(inputs, self.kernel))


def conv2d_patch_filter_grad(x, kernel, bias, stride: int, relu: bool):
    """``[relu](tf.nn.conv2d(x, kernel, stride, "VALID") + bias)`` whose kernel gradient is ONE
    matmul of the extracted input patches [positions, k*k*in] with the output gradient [positions,
    out] (the input gradient stays TF's op; the bias gradient is :func:`bias_add`'s float32 sum).
    For a conv with few output positions and many taps x channels - PlaNet's last encoder conv,
    6x6x128 -> 2x2x256 with a 4x4 kernel - oneDNN's bfloat16 backward-weights kernel runs at ~40
    GFLOP/s on an AMD EPYC (225 ms for 2,500 images) and the patch matmul at ~180 (58 ms,
    extraction included; float32's op: 108 ms). A bfloat16 matmul accumulates in float32, so the
    gradient is as exact as the op's (both 0.17% from float32's there). The forward is one graph
    chain conv -> bias -> relu, which grappler fuses into oneDNN's conv as with Keras' layer (the
    bias and ReLU applied before the bfloat16 rounding)."""
    k, cin, cout = int(kernel.shape[0]), int(kernel.shape[2]), int(kernel.shape[3])

    @tf.custom_gradient
    def conv(x, w, b):
        y = tf.nn.bias_add(tf.nn.conv2d(x, w, stride, "VALID"), tf.cast(b, x.dtype))
        if relu:
            y = tf.nn.relu(y)

        def grad(dy):
            if relu:
                dy = tf.raw_ops.ReluGrad(gradients=dy, features=y)
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=w, out_backprop=dy,
                                                strides=[1, stride, stride, 1], padding="VALID")
            patches = tf.image.extract_patches(x, [1, k, k, 1], [1, stride, stride, 1], [1, 1, 1, 1], "VALID")
            dw = tf.matmul(tf.reshape(patches, [-1, k * k * cin]), tf.reshape(dy, [-1, cout]), transpose_a=True)
            return dx, tf.reshape(dw, [k, k, cin, cout]), _bias_grad(dy, b.dtype)

        return y, grad

    return conv(x, kernel, tf.convert_to_tensor(bias))


class Conv2D(_ExactBias, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` (channels_last) adding its bias with :func:`bias_add`.
    ``patch_filter_grad``: a square-stride 'valid' conv with a bias and a linear or ReLU activation
    whose kernel gradient is computed by :func:`conv2d_patch_filter_grad` (faster for convs with few
    output positions)."""

    def __init__(self, *args, patch_filter_grad: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.patch_filter_grad = bool(patch_filter_grad)
        if self.patch_filter_grad and (self.padding != "valid" or self.strides[0] != self.strides[1]
                                       or tuple(self.dilation_rate) != (1, 1) or self.groups != 1
                                       or not self.use_bias or self.activation not in (
                                           keras.activations.relu, keras.activations.linear)):
            raise ValueError("patch_filter_grad needs a 'valid', square-stride, undilated, ungrouped conv "
                             "with a bias and a linear or ReLU activation")

    def get_config(self):
        return {**super().get_config(), "patch_filter_grad": self.patch_filter_grad}

    def call(self, inputs):
        if self.patch_filter_grad:
            return conv2d_patch_filter_grad(inputs, tf.cast(self.kernel, inputs.dtype), self.bias,
                                            int(self.strides[0]), self.activation is keras.activations.relu)
        return self._bias_act(self.convolution_op(inputs, self.kernel))


class Conv2DTranspose(_ExactBias, keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose`` (channels_last) adding its bias with :func:`bias_add`."""

    def call(self, inputs):
        return self._bias_act(keras.ops.conv_transpose(
            inputs, self.kernel, strides=list(self.strides), padding=self.padding,
            output_padding=self.output_padding, dilation_rate=self.dilation_rate, data_format=self.data_format))
