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
        # ones [1, N] x dy [N, C]: oneDNN accumulates in float32 and rounds once (module docstring)
        flat = tf.reshape(dy, [-1, tf.shape(dy)[-1]])
        db = tf.matmul(tf.ones([1, tf.shape(flat)[0]], dy.dtype), flat)
        return dy, tf.cast(tf.reshape(db, [-1]), bias.dtype)

    return y, grad


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


class Conv2D(_ExactBias, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` (channels_last) adding its bias with :func:`bias_add`."""

    def call(self, inputs):
        return self._bias_act(self.convolution_op(inputs, self.kernel))


class Conv2DTranspose(_ExactBias, keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose`` (channels_last) adding its bias with :func:`bias_add`."""

    def call(self, inputs):
        return self._bias_act(keras.ops.conv_transpose(
            inputs, self.kernel, strides=list(self.strides), padding=self.padding,
            output_padding=self.output_padding, dilation_rate=self.dilation_rate, data_format=self.data_format))
