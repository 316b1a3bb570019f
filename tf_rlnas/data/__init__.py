"""Datasets as tf.data pipelines."""
