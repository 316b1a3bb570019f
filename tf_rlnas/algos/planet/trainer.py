"""PlaNet trainer: one iteration = one compiled step of :class:`PlanetAgent` in the current phase.

Cycle of ``train.train_steps`` train-phase steps then ``train.test_steps`` test-phase steps. The
phase tensor selects, with ``tf.cond`` inside the compiled step, the dataset read
(``train_episodes/`` or ``test_episodes/``) and whether the optimiser (and SAC) step runs. The
environment lives outside TF (a spawned process for MuJoCo/DMC), so the Python loop collects a new
training episode every ``train.collect_every`` updates of a train phase and simulates
``train.test_episodes`` test episodes (no exploration noise) at the start of each test phase.

Start: ``train.seed_episodes`` random-action episodes into each folder (counted on disk, so a run
killed while seeding tops up on resume). ``init.from_run`` loads a pretrained run's variables
filtered by ``init.include`` / ``init.exclude`` regexes into a fresh run (e.g. a world model into a
run with new SAC heads) and writes ``init_report.json`` (loaded / not loaded).
"""

from __future__ import annotations

import dataclasses

import json
import os
import re
import time

import numpy as np
import tensorflow as tf

from tf_rlnas.algos.planet.agent import TEST, TRAIN, PlanetAgent
from tf_rlnas.algos.planet.serving import PlanetPolicyModule
from tf_rlnas.core.files import atomic_write_text
from tf_rlnas.core.logging import say
from tf_rlnas.core.seeding import SeedStreams
from tf_rlnas.core.trainer import Budget, ExportSpec, Trainer
from tf_rlnas.distributions import scale_action
from tf_rlnas.envs.pixels import ProcessEnv, make_pixel_env
from tf_rlnas.errors import UserError
from tf_rlnas.replay.episodes import (chunk_dataset, episode_index, episode_length, list_episodes, readable_episodes,
                                     save_episode)


# the seed streams of a PlaNet run (derive_seeds salts; worker_loaders: other workers' loader seeds
# from run.seed + 1000 x rank; eval_episodes: evaluate()'s env seeds 10000 + i)
SEEDS = SeedStreams(agent=41, worker_loaders=42, train_episodes=43, test_episodes=47, openloop=49, eval_episodes=10_000)


class PlanetTrainer(Trainer):
    algo = "planet"
    unit = "step"
    HEADLINE = ("test/return",)

    # ---- construction -----------------------------------------------------------------------
    def env_spec(self) -> dict:
        e = self.cfg.env
        return {"name": e.name, "size": e.image_size, "action_repeat": e.action_repeat, "kwargs": dict(e.kwargs),
                "max_episode_steps": e.max_episode_steps}

    def make_env(self):
        e = self.cfg.env
        in_process = e.process == "no" or (e.process == "auto" and e.name == "point_reach")
        try:
            return make_pixel_env(**self.env_spec()) if in_process else ProcessEnv(self.env_spec())
        except UserError as err:
            raise UserError(f"cannot make pixel environment '{e.name}': {str(err).removeprefix('error: ')}") from None
        except RuntimeError as err:
            raise UserError(f"cannot make pixel environment '{e.name}': {err}") from None

    def build(self) -> None:
        cfg = self.cfg
        self.env = self.make_env()
        space = self.env.action_space
        if len(space.shape) != 1:
            raise UserError(f"env '{cfg.env.name}' needs a Box action space of rank 1, got {space}")
        self.low, self.high = space.low.astype(np.float32), space.high.astype(np.float32)
        self.act_dim = int(space.shape[0])
        # checked before anything is written (seed episodes, config.yaml): an episode has at most
        # max_agent_steps + 1 entries (see replay/episodes.py), and a chunk must fit in one
        longest = getattr(self.env, "max_agent_steps", None)
        if longest is not None and longest + 1 < cfg.train.chunk:
            raise UserError(f"config key 'train.chunk' ({cfg.train.chunk}) is longer than any episode of "
                            f"'{cfg.env.name}' can be ({longest} agent steps + 1 at action repeat "
                            f"{cfg.env.action_repeat or 'default'}): lower train.chunk or raise the episode length")
        self.dirs = {"train": os.path.join(self.run_dir, "train_episodes"),
                     "test": os.path.join(self.run_dir, "test_episodes")}
        for d in self.dirs.values():
            if os.path.exists(d) and not os.path.isdir(d):
                raise UserError(f"episode directory {d} exists and is not a directory")
        s = SEEDS.derive(cfg.run.seed, "agent", 4)
        self.agent = PlanetAgent(cfg, self.act_dim, s[0], self.strategy)
        # init.from_run is read (and refused if unusable) now, before anything is written; it is
        # applied when restore() finds no checkpoint of this run
        from tf_rlnas.core.rundir import has_checkpoint
        self._init_source = (self.load_init_source(cfg.init.from_run)
                             if cfg.init.from_run and not has_checkpoint(self.run_dir) else None)
        t = cfg.train
        size = cfg.env.image_size
        # multi-worker: each worker's pipeline gives its share of the global batch, from its own
        # loader seed (worker 0 = the chief keeps the single-process seeds)
        workers = 1
        if cfg.distribute.strategy == "multi_worker":
            from tf_rlnas.core.distribute import tf_config_task
            task = tf_config_task()
            workers = sum(len(v) for k, v in task[2].items() if k in ("chief", "worker")) if task else 1
        if t.batch % max(workers, 1):
            raise UserError(f"config key 'train.batch' ({t.batch}) must be a multiple of the {workers} workers")
        rank = 0 if self.is_chief else int(self.task_name.rsplit("-", 1)[-1]) + 1
        ls = SEEDS.derive(cfg.run.seed + 1_000 * rank, "worker_loaders", 2) if rank else s[1:3]
        per = t.batch // max(workers, 1)
        train_ds, self.train_loader = chunk_dataset(self.dirs["train"], t.chunk, per, size, self.act_dim, ls[0],
                                                    max_cache_steps=t.max_cache_steps)
        test_ds, self.test_loader = chunk_dataset(self.dirs["test"], t.chunk, per, size, self.act_dim, ls[1],
                                                  max_cache_steps=t.max_cache_steps)
        self.agent.set_datasets(train_ds, test_ds, per_worker=workers > 1)
        self.episodes = {"train": 0, "test": 0}  # episodes this run has simulated (the env seeds)
        self.env_steps = 0
        self._times = {"episodes": 0, "episode_s": 0.0, "steps": 0, "step_s": 0.0}
        self._seeded = False            # seed episodes checked this session
        self._last_episode_metrics: dict[str, float] = {}  # for the progress bar
        self._ol_iter = None            # test chunks for the open-loop images (made on first use)
        self.checkpoint.track(agent=tf.train.Checkpoint(**self.agent.trackables()))
        self.checkpoint.state("planet", self._state, self._load_state)

    def close(self) -> None:
        super().close()
        if hasattr(self, "env") and hasattr(self.env, "close"):
            self.env.close()

    def budget(self) -> Budget:
        return Budget(int(self.iteration.numpy()), self.cfg.train.steps)

    def _state(self) -> dict:
        # the chunk loaders' state, keyed by this process's role: a multi-worker worker restores the
        # chief's checkpoint and must not take over the chief's loader (its own seed, its own stream)
        loaders = {self.task_name: {"train": self.train_loader.state(), "test": self.test_loader.state()}}
        return {"episodes": dict(self.episodes), "env_steps": self.env_steps, "loaders": loaders}

    def _load_state(self, state: dict) -> None:
        self.episodes = dict(state["episodes"])
        self.env_steps = int(state["env_steps"])
        mine = state.get("loaders", {}).get(self.task_name)
        if mine is not None:
            self.train_loader.load_state(mine["train"])
            self.test_loader.load_state(mine["test"])

    def _remove_episodes_after_checkpoint(self) -> None:
        """Episode files an interrupted session wrote after its last checkpoint (their index, the
        episode counter in the name, is above the restored counter; with no checkpoint: all) would be
        seen a second time beside their re-simulated copies: remove them (the chief, the only writer)."""
        if not self.is_chief:
            return
        removed = 0
        for split, d in self.dirs.items():
            for path in list_episodes(d):
                index = episode_index(path)
                if index is not None and index > self.episodes[split]:
                    os.remove(path)
                    removed += 1
        if removed:
            say(f"removed {removed} episode file(s) written after the last checkpoint by the interrupted session "
                f"(they are simulated again, identically)")

    # ---- acting -----------------------------------------------------------------------------
    def _scale(self, a: np.ndarray) -> np.ndarray:
        return scale_action(np.clip(a, -1, 1), self.low, self.high)

    def run_episode(self, split: str | None, mode: str, seed: int, index: int | None = None) -> tuple[float, int]:
        """One episode acting by ``mode`` ('random', 'explore', 'greedy', 'actor', 'cem'); saved
        to ``split``'s folder unless split is None. Returns (return, env transitions)."""
        t0 = time.perf_counter()
        obs, _ = self.env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        zero = np.zeros(self.act_dim, np.float32)
        ep = {"image": [obs], "action": [zero], "reward": [0.0], "discount": [1.0]}
        state, prev = self.agent.initial_state(), tf.zeros([1, self.act_dim])
        explore = tf.constant(mode == "explore")
        use_actor = {"actor": True, "cem": False}.get(mode, self.cfg.sac.act_with == "actor")
        total = 0.0
        while True:
            if mode == "random":
                a = rng.uniform(-1, 1, self.act_dim).astype(np.float32)
            else:
                a_t, state = self.agent.policy_step(state, prev, tf.constant(obs[None]), explore,
                                                    tf.constant(use_actor))
                a = a_t.numpy()
            prev = tf.constant(a[None])
            obs, r, term, trunc, _ = self.env.step(self._scale(a))
            total += float(r)
            for k, v in zip(("image", "action", "reward", "discount"), (obs, a, float(r), 0.0 if term else 1.0)):
                ep[k].append(v)
            if term or trunc:
                break
        n = len(ep["reward"]) - 1
        if split is not None:
            save_episode(self.dirs[split], {"image": np.stack(ep["image"]).astype(np.uint8),
                                            "action": np.stack(ep["action"]).astype(np.float32),
                                            "reward": np.asarray(ep["reward"], np.float32),
                                            "discount": np.asarray(ep["discount"], np.float32)},
                         index=self.episodes[split] if index is None else index)
        self._times["episodes"] += 1
        self._times["episode_s"] += time.perf_counter() - t0
        return total, n

    def _episode_seed(self, split: str) -> int:
        base = SEEDS.derive(self.cfg.run.seed, f"{split}_episodes")[0]
        self.episodes[split] += 1
        return int((base + self.episodes[split]) % (2**31 - 1))

    def wait_for_seed_episodes(self, timeout: float = 1800.0) -> None:
        """A non-chief worker: wait until the chief has written the seed episodes."""
        t0 = time.time()
        while any(len(readable_episodes(self.dirs[s])) < self.cfg.train.seed_episodes for s in ("train", "test")):
            if time.time() - t0 > timeout:
                raise UserError(f"no seed episodes from the chief in {self.run_dir} after {timeout:.0f} s "
                                f"(is the run directory on a filesystem every worker sees?)")
            time.sleep(0.5)

    def seed_episodes(self) -> None:
        """Once per training session, before the first step (not on evaluate/export's restore: a
        training process may be writing episodes right then)."""
        if not self.is_chief:
            return self.wait_for_seed_episodes()
        self._remove_episodes_after_checkpoint()
        for split in ("train", "test"):
            have = len(readable_episodes(self.dirs[split]))  # corrupt files do not count
            for _ in range(max(0, self.cfg.train.seed_episodes - have)):
                _, n = self.run_episode(split, "random", self._episode_seed(split))
                self.env_steps += n
        for split in ("train", "test"):
            lengths = [episode_length(p) for p in readable_episodes(self.dirs[split])]
            if not lengths or max(lengths) + 1 < self.cfg.train.chunk:
                raise UserError(f"config key 'train.chunk' ({self.cfg.train.chunk}) is longer than every "
                                f"{split} episode (longest {max(lengths, default=0)} steps + 1)")

    # ---- one iteration ----------------------------------------------------------------------
    def phase_of(self, iteration: int) -> int:
        t = self.cfg.train
        return TRAIN if iteration % (t.train_steps + t.test_steps) < t.train_steps else TEST

    def train_iteration(self) -> dict[str, float]:
        t = self.cfg.train
        it = int(self.iteration.numpy())
        if not self._seeded:
            self.seed_episodes()
            self._seeded = True
        phase = self.phase_of(it)
        t0 = time.perf_counter()
        try:
            out = self.agent.step(tf.constant(phase, tf.int32))
        except tf.errors.OpError as e:  # the episode loader found nothing usable on disk
            if "no episode of" not in str(e):
                raise
            msg = next(line for line in str(e).splitlines() if "no episode of" in line)
            raise UserError(msg.split("RuntimeError: ")[-1].strip()) from None
        metrics = {_tag(k, phase): float(v) for k, v in out.items()}
        self._times["steps"] += 1
        self._times["step_s"] += time.perf_counter() - t0
        step = it + 1
        episode_metrics = {}
        # the environment: the chief alone (the policy's weights are the same on every worker)
        if self.is_chief and phase == TRAIN and int(self.agent.updates.numpy()) % t.collect_every == 0:
            ret, n = self.run_episode("train", "explore", self._episode_seed("train"))
            self.env_steps += n
            episode_metrics.update({"train/return": ret, "train/episode_length": float(n)})
        if self.is_chief and phase == TEST and it % (t.train_steps + t.test_steps) == t.train_steps:
            episode_metrics.update(self.test_episodes(t.test_episodes))
        if episode_metrics:
            episode_metrics.update({"train/agent_steps": float(self.env_steps),
                                    "time/episodes_per_s": self._times["episodes"] / max(self._times["episode_s"], 1e-9),
                                    "time/updates_per_s": self._times["steps"] / max(self._times["step_s"], 1e-9)})
            self.logger.scalars(episode_metrics, step=step)
        if t.image_summary_every and step % t.image_summary_every == 0:
            self.log_openloop(step)
        self._last_episode_metrics.update(episode_metrics)
        return metrics  # episode metrics were logged above at this step (not on log_every)

    def test_episodes(self, n: int, split: str | None = "test") -> dict[str, float]:
        """``n`` episodes without exploration noise by the acting policy (written to
        ``test_episodes/``); with SAC heads also one by the other policy, so CEM and actor returns
        can be compared."""
        rets = []
        for _ in range(n):
            r, k = self.run_episode(split, "greedy", self._episode_seed("test"))
            self.env_steps += k
            rets.append(r)
        out = {"test/return": float(np.mean(rets))}
        acting = self.cfg.sac.act_with
        out[f"test/return_{acting}"] = out["test/return"]
        if self.agent.sac is not None:
            other = "cem" if acting == "actor" else "actor"
            out[f"test/return_{other}"], _ = self.run_episode(None, other, self._episode_seed("test"))
        return out

    def log_openloop(self, step: int) -> None:
        batch = next(self._openloop_iter())
        self.logger.images("openloop/truth_model_error", self.agent.openloop(batch), step)

    def _openloop_iter(self):
        if self._ol_iter is None:
            t = self.cfg.train
            ds, _ = chunk_dataset(self.dirs["test"], t.chunk, 3, self.cfg.env.image_size, self.act_dim,
                                  SEEDS.derive(self.cfg.run.seed, "openloop")[0], every=30)
            self._ol_iter = iter(ds)
        return self._ol_iter

    def progress_metrics(self, metrics):
        metrics = {**metrics, **self._last_episode_metrics}
        keys = ("loss/total", "loss/image", "train/return", "test/return")
        return {k: metrics[k] for k in keys if k in metrics}

    def evaluate(self, episodes: int | None = None) -> dict[str, float]:
        if not self.is_chief:
            return {}
        rets = [self.run_episode(None, "greedy", SEEDS.eval_episodes + i)[0] for i in range(episodes or self.cfg.train.test_episodes)]
        return {"eval/return": float(np.mean(rets)), "eval/return_std": float(np.std(rets)),
                "eval/episodes": float(len(rets))}

    # ---- filtered restore -------------------------------------------------------------------
    def restore(self, number: int | None = None) -> str | None:
        path = super().restore(number)
        if path is None and self.cfg.init.from_run:
            self.init_from_run(self.cfg.init.from_run)
        return path

    def load_init_source(self, source: str) -> tuple[PlanetAgent, str]:
        """(an agent holding run ``source``'s latest checkpoint, that checkpoint's path); one error
        line when ``source`` is not a readable PlaNet run of an env with this run's action size."""
        from tf_rlnas import config as C
        from tf_rlnas.algos.planet.config import PlanetConfig

        cfg_path = os.path.join(source, "config.yaml")
        ckpt = tf.train.latest_checkpoint(os.path.join(source, "checkpoints"))
        if not os.path.isfile(cfg_path) or ckpt is None:
            raise UserError(f"init.from_run '{source}' is not a PlaNet run directory with a checkpoint")
        try:
            src_cfg = C.resolve(PlanetConfig, [cfg_path], [])
            src = PlanetAgent(src_cfg, self.act_dim, 0)
            tf.train.Checkpoint(agent=tf.train.Checkpoint(**src.trackables())).read(ckpt).expect_partial()
        except (UserError, ValueError, tf.errors.OpError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"init.from_run '{source}' does not match this run (not a PlaNet run of an env with "
                            f"{self.act_dim}-dim actions?): {first}") from None
        return src, ckpt

    def init_from_run(self, source: str) -> dict:
        """Copy from run ``source``'s latest checkpoint (read at build time) every variable whose path
        matches an include regex and no exclude regex (and whose shape fits) into this run's agent.
        Returns and saves the report."""
        src, ckpt = self._init_source or self.load_init_source(source)
        self._init_source = None
        theirs, ours = src.named_variables(), self.agent.named_variables()
        inc = [re.compile(p) for p in self.cfg.init.include]
        exc = [re.compile(p) for p in self.cfg.init.exclude]
        loaded, skipped = [], {}
        for name, var in ours.items():
            if not any(p.search(name) for p in inc) or any(p.search(name) for p in exc):
                skipped[name] = "filtered out"
            elif name not in theirs:
                skipped[name] = "not in the source run"
            elif tuple(theirs[name].shape) != tuple(var.shape):
                skipped[name] = f"shape {tuple(theirs[name].shape)} != {tuple(var.shape)}"
            else:
                var.assign(theirs[name])
                loaded.append(name)
        report = {"source": os.path.abspath(ckpt), "loaded": loaded, "not_loaded": skipped}
        if self.is_chief:
            os.makedirs(self.run_dir, exist_ok=True)
            atomic_write_text(os.path.join(self.run_dir, "init_report.json"), json.dumps(report, indent=2))
        say(f"init: loaded {len(loaded)} variables from {ckpt}; {len(skipped)} not loaded "
            f"(see init_report.json)")
        return report

    # ---- export -----------------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        module = PlanetPolicyModule(self._float32_agent(), self.low, self.high)
        rng = np.random.default_rng(0)
        size = self.cfg.env.image_size
        m = self.cfg.model
        ex = {"image": rng.integers(0, 256, (1, size, size, 3)).astype(np.uint8),
              "prev_action": rng.uniform(-1, 1, (1, self.act_dim)).astype(np.float32),
              "deter": rng.normal(size=(1, m.deter)).astype(np.float32) * 0.1,
              "stoch": rng.normal(size=(1, m.stoch)).astype(np.float32)}
        plan_ex = {**ex, "seed": np.int64(5)}
        sigs = {"serving_default": module.serving_default, "plan": module.plan}
        live = {"serving_default": {k: v.numpy() for k, v in module.serving_default(**ex).items()},
                "plan": {k: v.numpy() for k, v in module.plan(**plan_ex).items()}}
        return ExportSpec(module, sigs, {"serving_default": ex, "plan": plan_ex}, live)


    def _float32_agent(self) -> PlanetAgent:
        """The agent to serve: this one, or where it trains in bfloat16 a float32 copy with its weights
        (bfloat16 is this machine's training speed; the served model runs on any CPU and converts to
        ONNX / LiteRT, whose CPU kernels take no bfloat16 convolutions)."""
        if self.agent.compute_dtype == "float32":
            return self.agent
        cfg = dataclasses.replace(self.cfg, model=dataclasses.replace(self.cfg.model, compute_dtype="float32"))
        agent = PlanetAgent(cfg, self.act_dim, 0)
        theirs = agent.named_variables()
        for path, v in self.agent.named_variables().items():
            theirs[path].assign(v)
        return agent


def _tag(key: str, phase: int) -> str:
    """TensorBoard tag of a step output: world-model losses under ``loss/`` in the train phase and
    ``test_loss/`` in the test phase (computed on test episodes, no update)."""
    if key.startswith("sac_"):
        return "sac/" + key[4:]
    if key in ("grad_norm", "phase"):
        return "train/" + key
    prefix = "loss/" if phase == TRAIN else "test_loss/"
    return prefix + ("kl_before_free_nats" if key == "kl_raw" else key)
