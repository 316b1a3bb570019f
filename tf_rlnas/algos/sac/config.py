"""SAC config schema (defaults = pranz24/ACE's SAC: 2x256, Adam 3e-4, batch 256, tau 0.005,
gamma 0.99, 10k random start steps, 1 update per env step, target entropy -|A|)."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

from tf_rlnas.config import RunConfig, option, schema, section
from tf_rlnas.errors import ConfigError


@dataclasses.dataclass
class SACEnvConfig:
    id: str = option("HalfCheetah-v5", help="gymnasium id with Box observations and actions")
    kwargs: dict = option(default_factory=dict, help="keyword arguments for gymnasium.make")
    max_episode_steps: int = option(0, min=0, help="time limit override (0 = the env's own)")
    num_envs: int = option(1, min=1, help="parallel training environments (one vector step = num_envs env "
                                          "steps; the update-to-data ratio is kept per stored transition)")
    vector: Literal["auto", "sync", "async"] = option(
        "auto", help="gymnasium SyncVectorEnv or AsyncVectorEnv (one process per env); auto = async "
                     "for num_envs > 1, sync for 1")


@dataclasses.dataclass
class SACAgentConfig:
    actor_hidden: list[int] = option([256, 256], min=1, min_len=1,
                                     help="actor hidden sizes (at least one layer: ACE's dormancy is defined on hidden units)")
    critic_hidden: list[int] = option([256, 256], min=1, min_len=1,
                                      help="critic hidden sizes (twin critics; at least one layer: a Q linear in the action has no interior maximum)")
    actor_lr: float = option(3e-4, min=0.0)
    critic_lr: float = option(3e-4, min=0.0)
    alpha_lr: float = option(3e-4, min=0.0)
    gamma: float = option(0.99, min=0.0, max=1.0)
    tau: float = option(0.005, min=0.0, max=1.0, help="Polyak factor of the target critics")
    init_alpha: float = option(1.0, gt=0.0, help="initial entropy temperature")
    autotune_alpha: bool = option(True, help="automatic entropy tuning")
    target_entropy: Optional[float] = option(None, help="default -|A|")
    log_std_min: float = option(-20.0)
    log_std_max: float = option(2.0)
    policy_every: int = option(1, min=1, help="actor, alpha and target updates every N critic updates")
    update_order: Literal["sequential", "simultaneous"] = option(
        "sequential", help="sequential: the actor's loss uses the critics just updated on the same batch "
                           "(SB3, SBX, CleanRL, pranz24); simultaneous: all losses of an update from the same "
                           "parameters, the actor's and the critics' gradients computed side by side (rlkit; "
                           "the original SAC code ran its train ops in one session call)")
    matmul_dtype: Literal["auto", "float32", "bfloat16"] = option(
        "auto", help="dtype of the matmuls of hidden layers with a fan-in >= 64 (smaller first layers, the output "
                     "layers and acting stay float32, as do parameters and losses); auto = bfloat16 where the "
                     "CPU has native bf16 (AVX512_BF16 / AMX), else float32")

    def validate(self) -> None:
        if self.log_std_min >= self.log_std_max:
            raise ConfigError(f"config key 'agent.log_std_min' ({self.log_std_min}) must be below "
                              f"agent.log_std_max ({self.log_std_max})")


@dataclasses.dataclass
class SACTrainConfig:
    total_env_steps: int = option(1_000_000, min=1, resume_ok=True, help="the budget in env steps")
    buffer_size: int = option(1_000_000, min=1)
    batch_size: int = option(256, min=1)
    start_steps: int = option(10_000, min=0, help="uniform random actions for the first N env steps")
    updates_per_step: float = option(1.0, min=0.0, help="gradient updates per env step")
    update_every: int = option(1, min=1, help="env steps between update calls (each call runs "
                                              "update_every * updates_per_step updates in one graph)")
    jit_compile: bool = option(False, help="XLA-compile the update (slower than tf.function on the CPUs measured: tf_rlnas bench sac)")
    eval_every: int = option(5000, min=0, resume_ok=True, help="evaluate every N env steps (0 = at end)")
    eval_episodes: int = option(10, min=1, resume_ok=True)

    def validate(self) -> None:
        if self.batch_size > self.buffer_size:
            raise ConfigError("config key 'train.batch_size' must not exceed train.buffer_size")


@schema
class SACConfig:
    # intra-op 1: the update's small matmuls run one per core side by side (inter-op) instead of
    # each split over the cores (faster on few cores: tf_rlnas bench sac, docs/benchmarks.md).
    run: RunConfig = section(RunConfig, checkpoint_every=10_000, log_every=1000, intra_op_threads=1)
    env: SACEnvConfig
    agent: SACAgentConfig
    train: SACTrainConfig
