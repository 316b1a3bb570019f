"""MAML-TRPO configuration. Defaults are the user's walk-through (dragen1860/MAML-Pytorch-RL
main.py): 2DNavigation, 2 x 100 ReLU, gamma 0.95, GAE tau 1.0, fast-lr 0.1, meta-batch 30 tasks,
fast-batch 20 episodes, max-kl 0.01, CG 10 iterations, damping 1e-5, line search 15 x 0.8,
100 meta-iterations. The shipped per-family configs use the reference's per-family values."""

from __future__ import annotations

import dataclasses
from typing import Literal

from tf_rlnas.config import RunConfig, option, schema, section
from tf_rlnas.errors import ConfigError

FAMILIES = ("2dnav", "halfcheetah_vel", "halfcheetah_dir", "ant_vel", "ant_dir", "ant_pos", "bandit", "tabular_mdp")
DISCRETE = ("bandit", "tabular_mdp")


@dataclasses.dataclass
class MAMLEnv:
    family: Literal[FAMILIES] = option("2dnav", help="task family: " + ", ".join(FAMILIES))  # type: ignore[valid-type]
    kwargs: dict = option(default_factory=dict, help="family keyword arguments (bandit: k)")
    horizon: int = option(0, min=0, help="steps per episode (0 = the family's: 100 2dnav, 200 MuJoCo, 1 bandit, 10 MDP)")
    workers: int = option(1, min=1, help="processes / Ray actors stepping the MuJoCo families' envs "
                                         "(cheap families are vectorised in NumPy)")
    sampler: Literal["process", "ray"] = option("process", help="MuJoCo families: local processes, or Ray actors "
                                                "(pip install -e \".[ray]\") for many hosts")
    ray_address: str = option("", help="with sampler ray: '' starts a local Ray instance, 'auto' or host:port "
                                       "joins a cluster")


@dataclasses.dataclass
class MAMLPolicy:
    """The family decides the distribution: diagonal Gaussian for continuous families, categorical for
    bandits and MDPs (a removed key ``policy.distribution`` chose nothing else)."""

    hidden: list[int] = option([100, 100], min=1, min_len=1, help="hidden layer sizes")
    activation: Literal["relu", "tanh"] = option("relu")
    min_std: float = option(1e-6, gt=0.0, help="floor of the Gaussian std")


@dataclasses.dataclass
class MAMLSection:
    meta_batch: int = option(30, min=1, help="tasks per meta-iteration")
    fast_batch: int = option(20, min=1, help="episodes per task per sampling")
    fast_lr: float = option(0.1, gt=0.0, help="inner-loop step size alpha")
    num_steps: int = option(1, min=1, max=5, help="inner gradient steps (each on fresh episodes)")
    first_order: bool = option(False, help="stop gradients through the inner update")
    gamma: float = option(0.95, min=0.0, max=1.0)
    gae_lambda: float = option(1.0, min=0.0, max=1.0, help="GAE tau")
    normalize_advantages: bool = option(True, help="per task, over valid steps")
    max_kl: float = option(0.01, gt=0.0)
    cg_iters: int = option(10, min=1)
    cg_damping: float = option(1e-5, min=0.0)
    ls_max_steps: int = option(15, min=1)
    ls_backtrack_ratio: float = option(0.8, gt=0.0, max=0.999)
    hvp: Literal["analytic", "gauss_newton", "double_backprop"] = option(
        "analytic", help="KL Hessian-vector products (all exact at the TRPO point): J^T F J v written out with "
                         "theta-only terms cached once per meta-iteration (Gaussian policies; categorical ones use "
                         "gauss_newton), J^T F J v by autodiff (forward-mode JVP + reverse VJP), or double backprop "
                         "through the adaptation")
    curvature_subsample: int = option(1, min=1, help="use every N-th step of each task's episodes in the KL "
                                      "Hessian-vector products (the CG curvature only; the gradient, the step's KL "
                                      "check and the line search use every step); 1 = all. OpenAI baselines' TRPO "
                                      "uses 5. hvp analytic, Gaussian policies only")
    jit_compile: bool = option(False, help="XLA-compile the TRPO direction (gradient, CG on the KL Hessian): "
                                           "faster for the autodiff hvp methods, slower for analytic (README)")


@dataclasses.dataclass
class MAMLTrain:
    meta_iterations: int = option(100, min=1, resume_ok=True, help="meta-iterations (the budget)")
    eval_every: int = option(0, min=0, resume_ok=True, help="held-out evaluation every N meta-iterations (0 = at end)")
    eval_tasks: int = option(40, min=1, resume_ok=True, help="held-out tasks per evaluation")
    eval_steps: int = option(3, min=0, max=5, resume_ok=True, help="adaptation steps evaluated (0..N)")
    eval_episodes: int = option(0, min=0, resume_ok=True,
                                help="episodes per held-out task per adaptation step (0 = maml.fast_batch; the "
                                     "original 2D-navigation test used 40)")


@schema
class MAMLConfig:
    run: RunConfig = section(RunConfig, checkpoint_every=1)
    env: MAMLEnv
    policy: MAMLPolicy
    maml: MAMLSection
    train: MAMLTrain

    # keys of earlier versions: refused with the reason in new input, dropped from saved run configs
    REMOVED = {"policy.distribution": "the family decides the distribution (normal for continuous families, "
                                      "categorical for bandit and tabular_mdp)"}

    def validate(self) -> None:
        discrete = self.env.family in DISCRETE
        if self.maml.curvature_subsample > 1 and (self.maml.hvp != "analytic" or discrete):
            raise ConfigError(f"config key 'maml.curvature_subsample' = {self.maml.curvature_subsample} needs "
                              f"maml.hvp 'analytic' and a continuous family (got hvp '{self.maml.hvp}', family "
                              f"'{self.env.family}')")
        if self.env.family != "bandit" and "k" in self.env.kwargs:
            raise ConfigError("config key 'env.kwargs.k' (arms) only applies to family 'bandit'")
