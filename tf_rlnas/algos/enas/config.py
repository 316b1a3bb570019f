"""ENAS config schema.

The defaults are the built-in default job: macro search on scikit-learn's digits, sized to finish
in a few minutes on 2 CPU cores (``tf_rlnas train enas``). ``configs/enas/cifar10.yaml`` carries
the reference hyperparameters (12 layers x 36 filters, batch 128, SGD-Nesterov cosine 0.05 ->
5e-4 with warm restarts T0 = 10, Tmul = 2, L2 2.5e-4, keep_prob 0.9; controller LSTM 64, tanh
constant 1.5, Adam 1e-3 (beta1 0, eps 1e-3), 50 steps x 20 samples per epoch, skip target 0.4,
skip weight 0.8, baseline decay 0.99, entropy weight 1e-4).

``mode: search`` runs the search and writes ``architecture.json``; ``mode: fixed`` retrains
``fixed.arc_file`` from scratch on the full train split with filters doubled at the pool layers.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

from tf_rlnas.config import DistributeConfig, RunConfig, option, schema, section
from tf_rlnas.errors import ConfigError


@dataclasses.dataclass
class EnasData:
    dataset: Literal["digits", "fashion_mnist", "cifar10"] = option("digits", help="image dataset")
    data_dir: Optional[str] = option(None, help="where the data lives (fashion_mnist: the IDX folder; "
                                                "cifar10: the tensorflow-datasets data_dir)")
    download: bool = option(True, help="cifar10: download and prepare if absent")
    valid_size: int = option(300, min=1, help="validation images carved from the train data (seeded)")
    batch_size: int = option(16, min=1, help="child minibatch size")
    eval_batch_size: int = option(128, min=1, help="validation/test batch size (a controller reward uses one batch)")
    augment_pad: int = option(0, min=0, help="random-crop padding in pixels (0 = off; CIFAR: 4)")
    augment_flip: bool = option(False, help="random horizontal flips (CIFAR: true; not for digits)")


@dataclasses.dataclass
class EnasChild:
    num_layers: int = option(6, min=3, help="layers of the macro network (reference 12)")
    filters: int = option(20, min=2, help="filters (search: every layer; fixed: doubled at each pool layer)")
    keep_prob: float = option(0.9, gt=0.0, max=1.0, help="dropout keep probability before the head")
    l2: float = option(2.5e-4, min=0.0, help="L2 weight decay")
    lr_max: float = option(0.05, min=0.0, help="cosine schedule: the learning rate at each (re)start")
    lr_min: float = option(5e-4, min=0.0, help="cosine schedule: the floor")
    lr_t0: Optional[int] = option(10, min=1, help="epochs of the first cosine cycle (null: one cycle over "
                                                   "child.epochs, so the run ends annealed whatever its length; "
                                                   "a resume with more epochs stretches that cycle)")
    lr_tmul: int = option(2, min=1, help="each cycle is this many times longer than the previous")
    lr_per_step: bool = option(False, help="advance the cosine every step (fractional epochs) instead of once "
                                           "per epoch (the reference); short runs then end at the floor")
    momentum: float = option(0.9, min=0.0, max=1.0, help="Nesterov momentum")
    grad_clip: float = option(5.0, min=0.0, help="global-norm gradient clip (0 = off)")
    epochs: int = option(30, min=1, resume_ok=True, help="training epochs (search epochs in search mode)")
    compute_dtype: Literal["float32", "bfloat16", "auto"] = option(
        "float32", help="bfloat16: dense convs compute in bfloat16 (float32 weights, BN, loss); faster only "
                        "on CPUs/GPUs with native bfloat16 (AVX512_BF16/AMX, Ampere+); auto: bfloat16 where "
                        "this CPU has it natively, else float32")


@dataclasses.dataclass
class EnasController:
    lstm_size: int = option(64, min=1)
    tanh_constant: Optional[float] = option(1.5, gt=0.0, help="logits = c * tanh(logits) (null = off)")
    temperature: Optional[float] = option(None, gt=0.0, help="logits divided by T before tanh (null = off)")
    skip_target: float = option(0.4, min=1e-6, max=1 - 1e-6, help="target skip probability of the KL penalty")
    skip_weight: float = option(0.8, min=0.0, help="weight of the skip KL penalty in the loss")
    entropy_weight: float = option(1e-4, min=0.0, help="reward += entropy_weight * entropy")
    bl_dec: float = option(0.99, min=0.0, max=1.0, help="baseline <- bl_dec baseline + (1 - bl_dec) reward")
    baseline: Literal["ema", "loo"] = option(
        "ema", help="ema: each architecture scored on its own validation batch against the EMA baseline (paper); "
                    "loo: a step's num_aggregate architectures scored on ONE shared batch, each against the mean "
                    "reward of the others (leave-one-out: the batch's difficulty cancels)")
    lr: float = option(1e-3, min=0.0, help="Adam (beta1 0, beta2 0.999, eps 1e-3)")
    train_steps: int = option(10, min=0, help="controller steps per epoch (reference 50)")
    num_aggregate: int = option(10, min=1, help="sampled architectures per step, gradients averaged (ref 20)")
    grad_clip: float = option(5.0, min=0.0, help="global-norm gradient clip (0 = off)")


@dataclasses.dataclass
class EnasSearch:
    eval_every: int = option(10, min=0, resume_ok=True,
                             help="every N epochs: best of eval_archs sampled arcs on validation + its test accuracy")
    eval_archs: int = option(10, min=1, resume_ok=True)
    warmup_epochs: int = option(0, min=0, help="epochs of shared-weight training on architectures drawn by the "
                                               "untrained controller (uniform ops, fair-coin skips) before the "
                                               "controller's first step (0 = the paper: it learns from epoch 1)")
    score_bn: Literal["moving", "batch"] = option(
        "moving", help="how a sampled architecture is scored in search mode (controller rewards, search evals, "
                       "derive): moving = BN in inference mode with the shared moving statistics (paper); batch = "
                       "each architecture normalised with the statistics of the batch it is scored on (moving "
                       "statistics untouched, no dropout): the shared moving statistics mix every architecture's")
    derive_archs: int = option(100, min=1, help="at the end: sample this many architectures ...")
    derive_top: int = option(1, min=1, resume_ok=True,
                             help="... re-score the best K of them on the whole validation split and keep the "
                                  "best of those (1 = off: the best on the derive batches)")
    derive_valid_batches: int = option(4, min=1, help="... and keep the best on this many validation batches")
    derive_every: int = option(0, min=0, resume_ok=True,
                               help="also derive after every N epochs, to derived/epoch-<E>.json (0 = only at the "
                                    "end): with child.lr_t0 set, epoch E's file is the architecture.json a search "
                                    "of child.epochs=E would write, so one search measures every budget")


@dataclasses.dataclass
class EnasFixed:
    arc_file: Optional[str] = option(None, help="architecture.json to retrain (mode: fixed); or random:SEED (an "
                                                "architecture drawn as the untrained controller draws one: "
                                                "uniform ops, fair-coin skips) or conv_stack (conv3x3, no skips)")


@schema
class EnasConfig:
    run: RunConfig = section(RunConfig, checkpoint_every=1, log_every=1)
    mode: Literal["search", "fixed"] = option("search", help="search | fixed (retrain fixed.arc_file)")
    data: EnasData
    child: EnasChild
    controller: EnasController
    search: EnasSearch
    fixed: EnasFixed
    distribute: DistributeConfig

    def validate(self) -> None:
        if self.mode == "fixed" and not self.fixed.arc_file:
            raise ConfigError("mode 'fixed' needs config key 'fixed.arc_file' (an architecture.json)")
        if self.controller.baseline == "loo" and self.controller.num_aggregate < 2:
            raise ConfigError("config key 'controller.baseline' loo needs controller.num_aggregate >= 2 "
                              f"(got {self.controller.num_aggregate})")
        if self.child.lr_min > self.child.lr_max:
            raise ConfigError(f"config key 'child.lr_min' ({self.child.lr_min}) must not exceed "
                              f"child.lr_max ({self.child.lr_max})")
