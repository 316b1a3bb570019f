"""Algorithm name -> config schema, trainer and benchmark (imported lazily: the CLI validates a
config before TensorFlow is imported)."""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys

from tf_rlnas.errors import UserError


@dataclasses.dataclass(frozen=True)
class AlgoSpec:
    name: str
    summary: str
    config: str    # "module:Class" of the config dataclass (no TF import)
    trainer: str   # "module:Class" of the Trainer subclass
    bench: str | None = None  # "module:function(cfg, seconds, **options) -> None"
    cli: str | None = None    # "module:register(ext, algo)": the algorithm's own commands and options (clikit)
    prepare: str | None = None  # "module:function(cfg)": process preparation before TensorFlow loads
    default_config: str | None = None  # the shipped config a bare `tf_rlnas train ALGO` runs (None: the schema's)

    def load(self, what: str):
        mod, attr = getattr(self, what).split(":")
        return getattr(importlib.import_module(mod), attr)


ALGOS: dict[str, AlgoSpec] = {
    "reinforce": AlgoSpec("reinforce", "REINFORCE with a Gaussian actor (one-shot game, gymnasium control)",
                          "tf_rlnas.algos.reinforce.config:ReinforceConfig",
                          "tf_rlnas.algos.reinforce.trainer:ReinforceTrainer",
                          "tf_rlnas.algos.reinforce.bench:run"),
    "enas": AlgoSpec("enas", "ENAS macro search: LSTM controller + shared CNN (REINFORCE), fixed-architecture retraining",
                     "tf_rlnas.algos.enas.config:EnasConfig", "tf_rlnas.algos.enas.trainer:EnasTrainer",
                     "tf_rlnas.algos.enas.bench:run", cli="tf_rlnas.algos.enas.cli:register"),
    "sac": AlgoSpec("sac", "Soft Actor-Critic (twin critics, automatic entropy tuning, optional bf16 matmuls)",
                    "tf_rlnas.algos.sac.config:SACConfig", "tf_rlnas.algos.sac.trainer:SACTrainer",
                    "tf_rlnas.algos.sac.bench:run", cli="tf_rlnas.algos.sac.cli:register",
                    prepare="tf_rlnas.algos.sac.cli:prepare", default_config="pendulum"),
    "ace": AlgoSpec("ace", "ACE: SAC + causality-aware entropy + dormancy-guided soft resets",
                    "tf_rlnas.algos.ace.config:ACEConfig", "tf_rlnas.algos.ace.trainer:ACETrainer",
                    "tf_rlnas.algos.sac.bench:run", cli="tf_rlnas.algos.sac.cli:register",
                    prepare="tf_rlnas.algos.sac.cli:prepare", default_config="pendulum"),
    "maml_trpo": AlgoSpec("maml_trpo", "MAML meta-RL with TRPO meta-updates (2D navigation, bandits, MDPs, "
                          "HalfCheetah/Ant velocity, direction, position tasks)",
                          "tf_rlnas.algos.maml_trpo.config:MAMLConfig", "tf_rlnas.algos.maml_trpo.trainer:MAMLTrainer",
                          "tf_rlnas.algos.maml_trpo.bench:run", cli="tf_rlnas.algos.maml_trpo.cli:register"),
    "planet": AlgoSpec("planet", "PlaNet: RSSM world model from pixels + CEM planning, optional SAC heads on the "
                       "latent state, tf.cond train/test phases",
                       "tf_rlnas.algos.planet.config:PlanetConfig", "tf_rlnas.algos.planet.trainer:PlanetTrainer",
                       "tf_rlnas.algos.planet.bench:run", default_config="point_reach"),
}


def get(name: str) -> AlgoSpec:
    if name not in ALGOS:
        raise UserError(f"unknown algorithm '{name}'; available: {', '.join(sorted(ALGOS))}")
    return ALGOS[name]


def configs_root() -> str | None:
    """The shipped configs/ folder: beside the package (source checkout) or under sys.prefix."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for cand in (os.path.join(here, "configs"), os.path.join(sys.prefix, "share", "tf_rlnas", "configs")):
        if os.path.isdir(cand):
            return cand
    return None


def config_summary(path: str) -> str:
    """What a shipped config is for and what it costs: its first header comment line, after "# "."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().strip()
    except OSError:
        return ""
    return first[1:].strip() if first.startswith("#") else ""


def shipped_configs(algo: str) -> dict[str, str]:
    root = configs_root()
    folder = os.path.join(root, algo) if root else None
    if not folder or not os.path.isdir(folder):
        return {}
    return {f[:-5]: os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".yaml")}
