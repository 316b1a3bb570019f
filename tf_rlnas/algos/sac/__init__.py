"""Soft Actor-Critic (twin fused critics, automatic entropy tuning, one tf.function update)."""
