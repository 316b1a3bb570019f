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
    bench: str | None = None  # "module:function(args) -> None"

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
                     "tf_rlnas.algos.enas.bench:run"),
    "sac": AlgoSpec("sac", "Soft Actor-Critic (twin critics, automatic entropy tuning, optional bf16 matmuls)",
                    "tf_rlnas.algos.sac.config:SACConfig", "tf_rlnas.algos.sac.trainer:SACTrainer",
                    "tf_rlnas.algos.sac.bench:run"),
    "ace": AlgoSpec("ace", "ACE: SAC + causality-aware entropy + dormancy-guided soft resets",
                    "tf_rlnas.algos.ace.config:ACEConfig", "tf_rlnas.algos.ace.trainer:ACETrainer",
                    "tf_rlnas.algos.sac.bench:run"),
    "maml_trpo": AlgoSpec("maml_trpo", "MAML meta-RL with TRPO meta-updates (2D navigation, bandits, MDPs, "
                          "HalfCheetah/Ant velocity, direction, position tasks)",
                          "tf_rlnas.algos.maml_trpo.config:MAMLConfig", "tf_rlnas.algos.maml_trpo.trainer:MAMLTrainer",
                          "tf_rlnas.algos.maml_trpo.bench:run"),
    "planet": AlgoSpec("planet", "PlaNet: RSSM world model from pixels + CEM planning, optional SAC heads on the "
                       "latent state, tf.cond train/test phases",
                       "tf_rlnas.algos.planet.config:PlanetConfig", "tf_rlnas.algos.planet.trainer:PlanetTrainer",
                       "tf_rlnas.algos.planet.bench:run"),
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


def shipped_configs(algo: str) -> dict[str, str]:
    root = configs_root()
    folder = os.path.join(root, algo) if root else None
    if not folder or not os.path.isdir(folder):
        return {}
    return {f[:-5]: os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".yaml")}
