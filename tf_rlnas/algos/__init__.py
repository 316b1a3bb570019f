"""Algorithms: one package each (config, networks, learner, trainer)."""
