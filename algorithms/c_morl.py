"""C-MORL: "Efficient Discovery of Pareto Front for Multi-Objective Reinforcement Learning" (Liu et al., ICLR 2025;
official code RuohLiuq/C-MORL@67473b5, cited as file:line; PPO = the fork of pytorch-a2c-ppo-acktr-gail's
a2c_ppo_acktr/algo/ppo.py under externals/). Registered as `c_morl`. The MOPPO learner, rollouts, losses and the
Pareto archive are the core's (algorithms/core/mo_ppo.py), shared with the `ls_ppo` baseline.

Budget: one `update()` is one PPO iteration of one policy (n_envs x n_steps training env steps, 8 x 512 by default),
so `--steps` counts PPO iterations. Every env step is counted (`ctx.env_steps`): training rollouts and the
evaluations that estimate the archive's objectives (below).

Stage 1, Pareto initialization (morl/warm_up.py, morl/morl.py:55-104, morl/mopg.py:79-190): one MOPPO policy per
weight of the simplex grid (morl/utils.py:68-79; 6 weights for 2 objectives at step 0.2), each trained on its
weighted-sum advantage for K = round(init_fraction x steps) // n_weights iterations (morl.py:68), round-robin (update
k trains policy (k - 1) mod n_weights on its own environments, whose episodes continue across its iterations), the
learning rate decayed linearly from lr to 0 over the K iterations (mopg.py:117-121). Every `eval_interval` iterations
and after its last one, a policy is evaluated and the snapshot (weights, optimizer, normalizers) kept (mopg.py:171-176);
the snapshots enter the archive at the end of Stage 1 (morl.py:104).

The archive (morl/ep.py): non-dominated estimated returns at or above the reference point, at most `archive_size`
(pruned by crowding distance, boundary points infinite).

Stage 2, constrained extension (morl.py:138-226, mopg.py:192-305): rounds. A round starts by adding the previous
round's children to the archive and selecting `num_select` archive policies of largest crowding distance whose
objective vectors were not selected before (ep.py:84-99). For each selected policy and each objective j, a copy is
trained for n iterations with the constrained update (PPO:401-486: PPO-clip on the advantage of objective j alone,
plus the log barrier -(1/t) mean log(clip(r) R_i - beta R_i) over the other objectives, beta 0.9, t 20); every
iteration's policy is evaluated and becomes a child. n = min(update_iter, remaining updates // jobs of the round, at
least 1) (morl.py:140-147). The children of an unfinished last round enter the archive after the last update.

Objective estimates: the mean discounted (eval_gamma 0.99) vector return of `estimate_episodes` deterministic
episodes, the same seeded episodes for every policy (mopg.py:30-65; they reset with seed + i every time), on a
`ctx.make_envs(1)` environment, so their steps are counted: estimate_episodes x the episode length (up to
5 x 1000 = 5,000 env steps) per evaluation: in Stage 1 once per `eval_interval` iterations of each policy (~12% on
top of the 40,960 training steps of 10 iterations), in Stage 2 once per iteration (up to ~120% on top of its 4,096).

`act(obs, w)`: the deterministic (mean, clipped) action of the archive policy whose estimated return maximizes w . R;
before the archive has any (during Stage 1, or if every point is below the reference point), the Stage-1 policy
whose training weight is nearest to w.

Defaults: the hopper-2d script (scripts/hopper-2d.py) over morl/run.py:56-69 and morl/arguments.py: lr 3e-4 with
linear decay, gamma 0.995, GAE 0.95 with proper time limits, 8 envs x 512 steps, 10 epochs, 32 minibatches, clip 0.2,
entropy 0, value-loss weight 0.5, grad-norm 0.5, observation and objective normalization, weights step 0.2,
init 1.0M of 1.5M steps (2/3), num_select 5, update_iter 20, beta 0.9, t 20, archive 200, 5 evaluation episodes,
eval gamma 0.99, reference point -100 per objective. (hopper-3d: weights 0.2..0.8 step 0.3, num_select 6, 10 eval
episodes, init 1.5M of 2M; ant-2d: step 0.5, 10 eval episodes.)

Deviations (and why):
- The brief's "4 envs x 2048 steps" is PGMORL's MOPPO; C-MORL's morl/run.py:62-63 sets 8 x 512 (the scripts do not
  override it), which is what the defaults follow.
- Budget: the reference sizes both stages by `num_steps` (512) alone (morl.py:68,140), while each iteration steps 8
  envs, so its real interactions are 8x the nominal `--num-time-steps`, and its evaluations are not counted at all.
  Here the budget is in iterations and every env step is counted, evaluations included.
- Full episodes: the reference truncates training and evaluation episodes at 500 steps (a2c_ppo_acktr/envs.py:50-53,
  mopg.py:39-42); here the task's own time limit applies (`estimate_max_steps` 500 restores the evaluation's).
- A time-limit truncation is bootstrapped from the value of the episode's true last state (core `gae`); the
  reference's --use-proper-time-limits instead sets the truncated step's advantage to 0 (storage.py:84-94).
- Every training episode of the reference restarts from the same seeded state (envs.py:151-152, reset(seed=seed +
  rank)); here episodes follow EnvStepper's seeding.
- Actions are clipped to the action box before the env step (the reference passes the raw Gaussian sample; the energy
  objectives of the MuJoCo tasks then charge out-of-range actions); the log-probabilities are of the raw sample.
- Each objective's extension starts from the selected policy: in the reference, `sample` is reassigned inside the
  loop (mopg.py:222-289), so objective 1 starts from the last child of objective 0 (paper: from the selected policy).
- The extension learning rate is inherited with the optimizer state, as in the reference (Sample.link_policy_agent
  restores the decayed lr, sample.py:28-32): a policy snapshot at the end of Stage 1 extends with lr ~ lr / K
  (`extension_lr` > 0 sets it instead).
- Stage 2 trains the jobs of a round one after another (the reference: one process per selected policy); each job
  restarts the episodes of the Stage-2 environments (the reference builds new envs per worker).
- A round with nothing new to select (every archive point selected before) selects again from the whole archive
  (the reference idles: no worker, no progress); an empty archive (every point below the reference point) extends the
  Stage-1 policies instead.
- float32 (the reference sets float64), seeds from the run seed (the reference reseeds torch with the iteration
  index, mopg.py:116), crowding ties broken stably, and an objective with a zero range adds 0 to the crowding
  distance (the reference divides by zero).
- Resuming: networks, optimizers, normalizers, archive, pending children and the round's jobs are checkpointed; the
  training episodes restart (EnvStepper), so a resumed run's transitions differ from an uninterrupted one's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.errors import CtrlbenchError
from algorithms.core.mo_ppo import (
    MOPPO,
    Constraint,
    EnvPool,
    Member,
    MOPPOConfig,
    ParetoArchive,
    evaluate_objectives,
    linear_lr,
    new_learner,
    ppo_iteration,
    training_weights,
)
from algorithms.core.ppo import RandomStream
from algorithms.core.registry import register
from algorithms.core.seeding import derive_seed

EVAL_STREAM = 101  # seeds of the archive's evaluation episodes
STAGE2 = -1  # key of the Stage-2 environments


@dataclass
class CMORLConfig(MOPPOConfig):
    init_fraction: float = 2 / 3  # share of the updates spent in Stage 1 (hopper-2d: 1.0M of 1.5M steps)
    num_select: int = 5  # policies selected for extension per round (--num-select)
    update_iter: int = 20  # constrained iterations per selected policy and objective per round (--update-iter)
    beta: float = 0.9  # constraint relaxation: keep every other objective >= beta x its current return (--beta)
    barrier_t: float = 20.0  # log-barrier coefficient t: the barrier is weighted 1/t (--t)
    archive_size: int = 200  # the Pareto archive's capacity, pruned by crowding distance (--policy-buffer)
    estimate_episodes: int = 5  # deterministic episodes per objective estimate (--eval-num, hopper-2d: 5)
    eval_gamma: float = 0.99  # discount of the objective estimates (--eval-gamma)
    eval_interval: int = 10  # Stage 1: estimate a policy every this many of its iterations (--rl-eval-interval)
    estimate_max_steps: int = 0  # cut evaluation episodes after this many steps (0: the task's limit; reference: 500)
    extension_lr: float = 0.0  # Stage-2 learning rate; 0 inherits the parent's decayed one, as the reference
    reference_point: tuple[float, ...] = ()  # archive floor; empty: the task's reference point, else -100 each

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 < self.init_fraction <= 1.0, "init_fraction must be in (0, 1]")
        require(min(self.num_select, self.update_iter, self.archive_size, self.estimate_episodes,
                    self.eval_interval) > 0,
                "num_select, update_iter, archive_size, estimate_episodes and eval_interval must be positive")
        require(0.0 < self.beta <= 1.0 and self.barrier_t > 0, "beta must be in (0, 1] and barrier_t > 0")
        require(0.0 <= self.eval_gamma <= 1.0, "eval_gamma must be in [0, 1]")
        require(self.estimate_max_steps >= 0 and self.extension_lr >= 0,
                "estimate_max_steps and extension_lr must be >= 0")


@dataclass
class Job:
    """A Stage-2 task: `learner` (a copy of the selected policy) maximizes `objective` for `remaining` iterations."""

    learner: MOPPO
    objective: int
    remaining: int


@register("c_morl", kinds=("multi-objective",))
class CMORL(Algorithm):
    Config = CMORLConfig

    def __init__(self, config: CMORLConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        cfg = config
        self.weights = training_weights(cfg, ctx, "c_morl")
        n = len(self.weights)
        if ctx.total_updates < n:
            raise CtrlbenchError(f"c_morl: --steps {ctx.total_updates} is below one Stage-1 iteration per policy "
                                 f"({n} weights); raise --steps (one update is one PPO iteration of one policy)")
        self.init_iterations = max(1, round(cfg.init_fraction * ctx.total_updates) // n)  # K per policy
        self.stage1 = n * self.init_iterations
        reference = cfg.reference_point or ctx.reference_point or (-100.0,) * ctx.reward_dim
        if len(reference) != ctx.reward_dim:
            raise CtrlbenchError(f"c_morl: reference_point needs {ctx.reward_dim} entries, got {list(reference)}")
        self.low, self.high = ctx.action_space.low, ctx.action_space.high
        self.learners = [new_learner(cfg, ctx, w) for w in self.weights]
        self.archive = ParetoArchive(np.asarray(reference, np.float64), cfg.archive_size)
        self.pending: list[Member] = []  # evaluated policies not in the archive yet
        self.jobs: list[Job] = []  # the current round's jobs, the first one running
        self.rounds = 0
        self.eval_env_steps = 0
        self.eval_seeds = [derive_seed(ctx.seed, EVAL_STREAM, i) for i in range(cfg.estimate_episodes)]
        self.noise = RandomStream(self.device, derive_seed(ctx.seed, 1))  # exploration and minibatches
        self.envs = EnvPool(ctx, cfg.n_envs, "c_morl")  # Stage 1's per policy, then Stage 2's
        self._eval_envs = None

    # --- environments ---

    def evaluate(self, learner: MOPPO) -> np.ndarray:
        if self._eval_envs is None:
            assert self.ctx.make_envs is not None  # MOEnvs checked it
            self._eval_envs = self.ctx.make_envs(1)
        objs, steps = evaluate_objectives(learner, self._eval_envs, self.eval_seeds, self.config.eval_gamma,
                                          self.config.estimate_max_steps)
        self.eval_env_steps += steps
        return objs

    # --- training ---

    def update(self) -> dict[str, torch.Tensor | float]:
        self.step += 1
        metrics = self.init_iteration() if self.step <= self.stage1 else self.extension_iteration()
        if self.step == self.stage1 or self.step == self.ctx.total_updates:
            self.archive.update(self.pending)
            self.pending = []
        if self.step == self.stage1:  # Stage 1's environments are done with
            self.envs.close(keep=(STAGE2,))
        metrics.update(archive_size=float(len(self.archive)), eval_env_steps=float(self.eval_env_steps))
        return metrics

    def init_iteration(self) -> dict[str, float]:
        cfg = self.config
        i = (self.step - 1) % len(self.learners)
        learner = self.learners[i]
        if cfg.lr_decay:
            learner.set_lr(linear_lr(cfg.lr, learner.iterations, self.init_iterations))
        envs = self.envs(i)
        metrics = ppo_iteration(learner, envs.collect(learner, cfg.n_steps, self.noise.generator),
                                self.noise.generator)
        metrics |= {"stage": 1.0, "policy": float(i), **envs.metrics()}
        if learner.iterations % cfg.eval_interval == 0 or learner.iterations == self.init_iterations:
            objs = self.evaluate(learner)
            self.pending.append(Member(learner.clone(), objs))
            metrics |= {f"eval_objective_{j}": float(v) for j, v in enumerate(objs)}
        return metrics

    def extension_iteration(self) -> dict[str, float]:
        cfg = self.config
        if not self.jobs or self.jobs[0].remaining == 0:
            if self.jobs:
                self.jobs.pop(0)
            if not self.jobs:
                self.new_round()
            self.envs(STAGE2).restart()
            if cfg.extension_lr > 0:
                self.jobs[0].learner.set_lr(cfg.extension_lr)
        job = self.jobs[0]
        envs = self.envs(STAGE2)
        constraint = Constraint(job.objective, cfg.beta, cfg.barrier_t)
        metrics = ppo_iteration(job.learner, envs.collect(job.learner, cfg.n_steps, self.noise.generator),
                                self.noise.generator, constraint)
        job.remaining -= 1
        objs = self.evaluate(job.learner)
        self.pending.append(Member(job.learner.clone(), objs))
        return {**metrics, "stage": 2.0, "round": float(self.rounds), "objective": float(job.objective),
                **envs.metrics(), **{f"eval_objective_{j}": float(v) for j, v in enumerate(objs)}}

    def new_round(self) -> None:
        """The previous round's children join the archive; select the parents and queue one job per (parent,
        objective), each of n iterations."""
        self.archive.update(self.pending)
        self.pending = []
        if len(self.archive):
            parents = [m.learner for m in self.archive.select(self.config.num_select)]
            if not parents:  # every point was selected before: select again from the whole archive
                self.archive.history = []
                parents = [m.learner for m in self.archive.select(self.config.num_select)]
        else:  # every estimate is below the reference point
            parents = self.learners[:self.config.num_select]
        d = self.ctx.reward_dim
        remaining = self.ctx.total_updates - self.step + 1
        n = min(self.config.update_iter, max(1, remaining // (len(parents) * d)))
        self.jobs = [Job(p.clone(), j, n) for p in parents for j in range(d)]
        self.rounds += 1

    def milestones(self) -> dict[str, int]:
        """The end of Stage 1: the runner scores the initial archive there."""
        return {"pareto_init": self.stage1} if self.stage1 < self.ctx.total_updates else {}

    # --- evaluation ---

    def policy_for(self, weight: np.ndarray) -> MOPPO:
        if len(self.archive):
            return self.archive.best(weight).learner
        return self.learners[int(np.argmin(np.linalg.norm(self.weights - weight, axis=1)))]

    @torch.no_grad()
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        w = np.full(self.ctx.reward_dim, 1.0 / self.ctx.reward_dim) if weight is None else np.asarray(weight)
        return np.clip(self.policy_for(w).mean_action(obs), self.low, self.high).astype(np.float32)

    # --- checkpoints ---

    def _make(self) -> MOPPO:
        return new_learner(self.config, self.ctx, self.weights[0])

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "learners": [learner.state_dict() for learner in self.learners],
                "archive": self.archive.state_dict(),
                "pending": [{"learner": m.learner.state_dict(), "objs": m.objs.copy()} for m in self.pending],
                "jobs": [{"learner": j.learner.state_dict(), "objective": j.objective, "remaining": j.remaining}
                         for j in self.jobs],
                "rounds": self.rounds, "eval_env_steps": self.eval_env_steps, "noise": self.noise.state_dict(),
                "envs": self.envs.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        for learner, s in zip(self.learners, state["learners"], strict=True):
            learner.load_state_dict(s)
        self.archive.load_state_dict(state["archive"], self._make)
        self.pending = []
        for m in state["pending"]:
            learner = self._make()
            learner.load_state_dict(m["learner"])
            self.pending.append(Member(learner, np.asarray(m["objs"], np.float64).copy()))
        self.jobs = []
        for j in state["jobs"]:
            learner = self._make()
            learner.load_state_dict(j["learner"])
            self.jobs.append(Job(learner, int(j["objective"]), int(j["remaining"])))
        self.rounds, self.eval_env_steps = int(state["rounds"]), int(state["eval_env_steps"])
        self.noise.load_state_dict(state["noise"])
        self.envs.load_state_dict(state["envs"])
