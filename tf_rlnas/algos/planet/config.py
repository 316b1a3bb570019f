"""PlaNet (+ SAC heads) configuration. Defaults are the paper's (google-research/planet): RSSM
GRU 200 / stochastic 30 / hidden 200 / min std 0.1, conv depth 32, reward MLP 3 x 300, batch 50
chunks x 50 steps, Adam 1e-3 (eps 1e-4), clip 1000, free nats 3, 5-bit images, CEM horizon 12 x
10 iterations x 1000 candidates, top 100, exploration noise 0.3, 5 seed episodes, a training
episode every 100 updates. ``configs/planet/point_reach.yaml`` is the small CPU config."""

from __future__ import annotations

import dataclasses
from typing import Literal

from tf_rlnas.algos.sac.config import SACAgentConfig
from tf_rlnas.config import DistributeConfig, RunConfig, option, schema, section
from tf_rlnas.errors import ConfigError


@dataclasses.dataclass
class PlanetEnv:
    name: str = option("point_reach", help="point_reach (built-in), dmc:<domain>-<task> (pip install -e \".[dmc]\") "
                                            "or a gymnasium id rendered with render_mode='rgb_array'")
    image_size: int = option(64, choices=(64,), help="square image side (the conv stack is built for 64)")
    action_repeat: int = option(0, min=0, help="0 = the task's (DMC: the paper's per-task values; point_reach 2)")
    kwargs: dict = option(default_factory=dict, help="keyword arguments of the env")
    max_episode_steps: int = option(0, min=0, help="gymnasium time limit override (0 = the env's)")
    process: Literal["auto", "yes", "no"] = option(
        "auto", help="run the env in a spawned process (auto: MuJoCo/DMC yes, point_reach no)")


@dataclasses.dataclass
class PlanetModel:
    deter: int = option(200, min=1, help="GRU state size")
    stoch: int = option(30, min=1, help="stochastic state size")
    hidden: int = option(200, min=1, help="RSSM hidden layer size")
    min_std: float = option(0.1, gt=0.0)
    depth: int = option(32, min=1, help="conv depth multiplier (encoder d, 2d, 4d, 8d)")
    reward_hidden: list[int] = option([300, 300, 300], min=1, min_len=1)
    free_nats: float = option(3.0, min=0.0)
    kl_scale: float = option(1.0, min=0.0)
    reward_scale: float = option(10.0, min=0.0)
    overshooting: int = option(0, min=0, help="latent overshooting distance (0 = off; the first release used 49)")
    overshooting_scale: float = option(1.0, min=0.0)
    global_divergence: float = option(0.0, min=0.0, help="scale of KL(posterior || N(0, I)) (first release: 0.1)")
    image_bits: int = option(5, min=1, max=8)
    lr: float = option(1e-3, gt=0.0)
    adam_eps: float = option(1e-4, gt=0.0)
    grad_clip: float = option(1000.0, gt=0.0)
    compute_dtype: Literal["auto", "float32", "bfloat16"] = option(
        "auto", help="dtype of the convs' and dense layers' products (auto: bfloat16 where the CPU has native "
                     "bf16, else float32); state, heads, losses, KL and planner statistics stay float32. On the "
                     "built-in task bfloat16 learns and plans as float32 does (3 seeds each; docs/planet.md)")


@dataclasses.dataclass
class PlanetPlanner:
    horizon: int = option(12, min=1)
    iterations: int = option(10, min=1)
    candidates: int = option(1000, min=2)
    top_k: int = option(100, min=1)
    exploration_noise: float = option(0.3, min=0.0, help="Gaussian action noise of training episodes")


@dataclasses.dataclass
class PlanetSAC:
    enabled: bool = option(False, help="train SAC heads (actor + twin critics) on the latent features")
    act_with: Literal["cem", "actor"] = option("cem", help="who picks actions in the env")
    train_world_model: bool = option(True, help="false = world model frozen (e.g. loaded with init.from_run)")
    burn_in: int = option(3, min=0, help="first steps of each chunk dropped (filter burn-in)")
    agent: SACAgentConfig = dataclasses.field(default_factory=lambda: SACAgentConfig(
        actor_hidden=[500, 400, 300], critic_hidden=[500, 400, 300], actor_lr=1e-3, critic_lr=1e-3,
        alpha_lr=1e-3, tau=0.005, init_alpha=0.2, autotune_alpha=False, matmul_dtype="float32"))


@dataclasses.dataclass
class PlanetInit:
    from_run: str = option("", help="run directory of a pretrained run to load variables from")
    include: list[str] = option([".*"], help="regexes over variable paths to load")
    exclude: list[str] = option([], help="regexes over variable paths NOT to load")


@dataclasses.dataclass
class PlanetTrain:
    steps: int = option(100_000, min=1, resume_ok=True, help="the budget: compiled steps (train + test phases)")
    batch: int = option(50, min=1, help="chunks per batch")
    chunk: int = option(50, min=2, help="steps per chunk")
    seed_episodes: int = option(5, min=1, help="random episodes written to each of train/test at the start")
    train_steps: int = option(50_000, min=1, help="steps of a train phase")
    test_steps: int = option(100, min=1, help="steps of a test phase (no update)")
    collect_every: int = option(100, min=1, resume_ok=True, help="a new training episode every N updates")
    test_episodes: int = option(1, min=1, resume_ok=True, help="test episodes simulated in each test phase")
    max_cache_steps: int = option(100_000, min=1, help="env steps kept in the loader's episode cache")
    image_summary_every: int = option(5000, min=0, resume_ok=True, help="open-loop prediction images (0 = off)")


@schema
class PlanetConfig:
    run: RunConfig = section(RunConfig, checkpoint_every=1000, log_every=100)
    env: PlanetEnv
    model: PlanetModel
    planner: PlanetPlanner
    sac: PlanetSAC
    init: PlanetInit
    train: PlanetTrain
    distribute: DistributeConfig

    def validate(self) -> None:
        if self.planner.top_k > self.planner.candidates:
            raise ConfigError("config key 'planner.top_k' must not exceed planner.candidates")
        if self.sac.act_with == "actor" and not self.sac.enabled:
            raise ConfigError("config key 'sac.act_with' = 'actor' needs sac.enabled: true")
        if not self.sac.train_world_model and not self.init.from_run:
            raise ConfigError("config key 'sac.train_world_model' = false needs init.from_run (a pretrained world model)")
        if self.sac.burn_in >= self.train.chunk - 1:
            raise ConfigError("config key 'sac.burn_in' must be below train.chunk - 1")
        import re
        for key in ("include", "exclude"):
            for pat in getattr(self.init, key):
                try:
                    re.compile(pat)
                except re.error as e:
                    raise ConfigError(f"config key 'init.{key}': bad regex '{pat}' ({e})") from None
