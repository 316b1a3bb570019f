"""tf_rlnas: TensorFlow 2 / Keras reinforcement learning and RL-driven neural architecture search."""

__version__ = "0.1.0"
