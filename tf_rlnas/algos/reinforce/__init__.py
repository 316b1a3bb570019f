"""REINFORCE with a Gaussian actor (one-shot game and episodic continuous control)."""
