"""ACE trainer: SAC's loop plus the local causal buffer, periodic DirectLiNGAM refits and resets.

Extra TensorBoard tags (step = env steps): ``ace/causal_weight_<i>`` per action dimension and the
histogram ``ace/causal_weights``, ``ace/causal_fit_seconds``, ``ace/dormant_ratio``,
``ace/reset_factor`` (at each reset).
"""

from __future__ import annotations

import numpy as np

from tf_rlnas.algos.ace.causal import causal_weights
from tf_rlnas.algos.ace.learner import ACELearner, perturb_factor
from tf_rlnas.algos.sac.trainer import SACTrainer
from tf_rlnas.core.logging import say


class ACETrainer(SACTrainer):
    algo = "ace"
    learner_cls = ACELearner

    def build(self) -> None:
        super().build()
        a = self.cfg.ace
        self.learner.dormant_threshold = a.dormant_threshold
        width = self.obs_dim + self.act_dim + 1
        self.local = np.zeros((a.causal_sample_size, width), np.float32)  # FIFO D_c
        self.local_ptr, self.local_size = 0, 0
        self.next_causal = a.causal_sample_interval
        self.resets = 0
        self.last_fit_seconds = 0.0
        self.checkpoint.state("ace", self._ace_state, self._load_ace_state)
        self.checkpoint.arrays("ace", lambda: {"local": self.local}, self._load_ace_arrays)

    def _ace_state(self) -> dict:
        return {"local_ptr": self.local_ptr, "local_size": self.local_size, "next_causal": self.next_causal,
                "resets": self.resets}

    def _load_ace_state(self, s: dict) -> None:
        self.local_ptr, self.local_size = int(s["local_ptr"]), int(s["local_size"])
        self.next_causal, self.resets = int(s["next_causal"]), int(s["resets"])

    def _load_ace_arrays(self, arrays: dict) -> None:
        self.local[...] = arrays["local"]

    def observe(self, obs, actions, rewards, next_obs, terminated, truncated):
        keep = super().observe(obs, actions, rewards, next_obs, terminated, truncated)
        rows = np.concatenate([obs[keep], actions[keep], rewards[keep, None]], axis=1)
        cap = len(self.local)
        idx = (self.local_ptr + np.arange(len(rows))) % cap
        self.local[idx] = rows
        self.local_ptr = int((self.local_ptr + len(rows)) % cap)
        self.local_size = int(min(self.local_size + len(rows), cap))
        return keep

    def after_step(self) -> None:
        a = self.cfg.ace
        if self.env_steps >= self.next_causal and self.local_size == len(self.local):
            self.next_causal = self.env_steps + a.causal_sample_interval
            self.refit_causal_weights()
        updates = int(self.learner.updates.numpy())
        if a.reset_mode != "none" and updates > a.reset_start and updates // a.reset_interval > self.resets:
            self.resets = updates // a.reset_interval
            factor = perturb_factor(a.reset_mode, float(self.learner.dormant.numpy()),
                                    self.learner.causal_w.numpy())
            self.learner.soft_reset(factor)
            self.logger.scalars({"ace/reset_factor": factor}, step=self.env_steps)

    def refit_causal_weights(self) -> np.ndarray:
        d = self.obs_dim
        x = self.local[: self.local_size]
        w, raw, seconds = causal_weights(x[:, :d], x[:, d:d + self.act_dim], x[:, -1],
                                         seed=int(self.np_rng.integers(2**31)))
        self.learner.causal_w.assign(w.astype(np.float32))
        self.last_fit_seconds = seconds
        self.logger.scalars({**{f"ace/causal_weight_{i}": float(v) for i, v in enumerate(w)},
                             "ace/causal_fit_seconds": seconds}, step=self.env_steps)
        self.logger.histogram("ace/causal_weights", w, step=self.env_steps)
        if not self.progress_enabled:
            say(f"ace: causal weights at {self.env_steps} env steps: {np.round(w, 3).tolist()} "
                f"(fit {seconds:.2f} s)")
        return w

    def extra_metrics(self) -> dict[str, float]:
        out = {"ace/dormant_ratio": float(self.learner.dormant.numpy())}
        out.update({f"ace/causal_weight_{i}": float(v) for i, v in enumerate(self.learner.causal_w.numpy())})
        return out
