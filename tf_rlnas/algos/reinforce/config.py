"""REINFORCE with a Gaussian actor: config schema (defaults = the reference one-shot game).

Reference: van Heeswijk, "Implementing Gaussian Actor Networks for Continuous Control in
TensorFlow 2.0": input 1 -> 2 x 5 ReLU -> (mu, sigma), mu = 0 and sigma = 1 at the start,
Adam 1e-3, loss -log N(a | mu, sigma) * (reward - baseline). This module imports no TF so the
CLI can reject a bad config instantly.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from tf_rlnas.config import RunConfig, option, schema
from tf_rlnas.errors import ConfigError


@dataclasses.dataclass
class EnvConfig:
    id: str = option("tf_rlnas/OneShotGame-v0", help="gymnasium id (tf_rlnas/OneShotGame-v0, Pendulum-v1, "
                                                     "InvertedPendulum-v5, MountainCarContinuous-v0 ...)")
    kwargs: dict = option(default_factory=dict, help="keyword arguments for gymnasium.make (one-shot game: "
                                                     "tau 4.0, zeta 0.05, beta 1.0 by default)")
    max_episode_steps: int = option(0, min=0, help="time limit override (0 = the env's own)")


@dataclasses.dataclass
class ActorConfig:
    hidden: list[int] = option([5, 5], min=1, min_len=0,
                               help="hidden layer sizes ([] = a linear Gaussian policy)")
    activation: str = option("relu", choices=("relu", "tanh", "elu", "gelu"), help="hidden activation")
    init_mu: float = option(0.0, help="initial mean (output bias; output kernel starts at zero)")
    init_sigma: float = option(1.0, min=1e-6, help="initial standard deviation")
    min_sigma: float = option(1e-4, min=0.0, help="floor added to the softplus sigma")
    state_dependent_sigma: bool = option(True, help="sigma from the network (True) or a learned vector")

    def validate(self) -> None:
        if self.init_sigma <= self.min_sigma:
            raise ConfigError("config key 'actor.init_sigma' must exceed actor.min_sigma")


@dataclasses.dataclass
class TrainConfig:
    updates: int = option(4000, min=1, resume_ok=True, help="policy updates (the budget)")
    episodes_per_update: int = option(1, min=1, help="episodes (one-shot game: actions) per update, "
                                                     "collected in parallel")
    lr: float = option(1e-3, min=0.0, help="Adam learning rate of the actor")
    gamma: float = option(0.99, min=0.0, max=1.0, help="discount for returns-to-go")
    baseline: Literal["none", "mean", "batch", "value"] = option(
        "mean", help="none | mean (running average of returns) | batch (leave-one-out mean of the "
                     "update's other returns) | value (learned V(s))")
    baseline_decay: float = option(0.9, min=0.0, max=1.0, help="EMA decay of the 'mean' baseline")
    value_hidden: list[int] = option([64, 64], min=1, min_len=0,
                                     help="V(s) hidden sizes (baseline: value; [] = a linear V)")
    value_lr: float = option(1e-3, min=0.0, help="Adam learning rate of V(s)")
    value_epochs: int = option(1, min=1, help="V(s) gradient steps per update")
    gae_lambda: float = option(1.0, min=0.0, max=1.0,
                               help="1.0 = Monte-Carlo returns-to-go minus V; < 1 blends in V (GAE)")
    normalize_advantages: bool = option(False, help="standardise advantages per update")
    reward_scale: float = option(1.0, min=0.0, help="rewards are multiplied by this before learning")
    entropy_coef: float = option(0.0, min=0.0, help="entropy bonus weight")
    max_grad_norm: float = option(0.0, min=0.0, help="clip the actor gradient's global norm (0 = off)")
    eval_every: int = option(0, min=0, resume_ok=True, help="deterministic evaluation every N updates (0 = at end)")
    eval_episodes: int = option(10, min=1, resume_ok=True, help="episodes per evaluation")

    def validate(self) -> None:
        if self.baseline == "batch" and self.episodes_per_update < 2:
            raise ConfigError("config key 'train.baseline' = 'batch' needs train.episodes_per_update >= 2")


@schema
class ReinforceConfig:
    run: RunConfig
    env: EnvConfig
    actor: ActorConfig
    train: TrainConfig
