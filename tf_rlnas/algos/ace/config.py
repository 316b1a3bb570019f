"""ACE config: SAC's schema plus the ``ace`` section (defaults = the official ACE code:
batch 512, 3 x 1024 hidden, policy/alpha/target update every 2 critic updates, causal sample
size and interval 10,000, reset every 100,000 updates after 5,000, dormancy threshold 0.05)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from tf_rlnas.algos.sac.config import SACAgentConfig, SACConfig, SACTrainConfig
from tf_rlnas.config import option, schema, section


@dataclasses.dataclass
class ACESection:
    causal_sample_size: int = option(10_000, min=2, help="local FIFO buffer D_c of the newest transitions")
    causal_sample_interval: int = option(10_000, min=1, help="refit the causal weights every N env steps")
    reset_mode: Literal["none", "reset", "causal_reset"] = option(
        "causal_reset", help="none | reset (factor from the dormant ratio) | causal_reset (from the weights' spread)")
    reset_interval: int = option(100_000, min=1, help="soft reset every N updates ...")
    reset_start: int = option(5_000, min=0, help="... once more than N updates were made")
    dormant_threshold: float = option(0.05, min=0.0, help="a neuron is dormant below this x the layer's mean grad norm")


@schema
class ACEConfig(SACConfig):
    agent: SACAgentConfig = section(SACAgentConfig, actor_hidden=[1024, 1024, 1024],
                                     critic_hidden=[1024, 1024, 1024], policy_every=2)
    train: SACTrainConfig = section(SACTrainConfig, batch_size=512)
    ace: ACESection
