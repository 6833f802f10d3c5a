"""SAC (Haarnoja et al., 2018): online soft actor-critic with automatic temperature, the online baseline.

On a sim-to-real task it trains in the simulator alone (`ctx.make_envs` hands out the simulator) and is scored on
the real environment: H2O's "SAC (sim only)" baseline. On a safe task it is the unconstrained baseline: it ignores
the cost, which it only reports.

Each `update()` is one vectorized environment step and at most one gradient step:
  act:     uniform random actions for the first `learning_starts` environment steps (CleanRL
           `sac_continuous_action.py`: learning_starts 5e3, random actions before it), then a~ ~ pi(.|s)
  store:   (s, a, r, s', terminated) into a FIFO replay buffer; a time-limit truncation is not terminal, and s' is
           the true last state of an episode the vector env has already reset (algorithms/core/online.py)
  learn:   once `learning_starts` environment steps are stored (and at least a batch), one SAC step on a uniform
           batch: the SAC core (algorithms/core/sac.py): temperature, actor, critics, Polyak target critics.
States and rewards are used raw (no normalization). Evaluation acts with max_action tanh(mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.online import EnvStepper
from algorithms.core.registry import register
from algorithms.core.replay import ReplayBuffer
from algorithms.core.sac import Explorer, SACConfig, SACCore


@dataclass
class SACOnlineConfig(SACConfig):  # batch, lrs, gamma, tau, widths, temperature: the SAC core's defaults
    learning_starts: int = 5000  # environment steps of uniform random actions before the first gradient step
    buffer_size: int = 1_000_000  # replay capacity in transitions (FIFO)
    n_envs: int = 1  # training environments stepped together; each update adds n_envs transitions

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.learning_starts >= 0, "learning_starts must be >= 0")
        require(self.buffer_size >= self.batch_size, "buffer_size must be at least batch_size")
        require(self.n_envs >= 1, "n_envs must be >= 1")


@register("sac", kinds=("sim-to-real", "safe"))
class SAC(Algorithm):
    Config = SACOnlineConfig

    def __init__(self, config: SACOnlineConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        self.stepper = EnvStepper.for_context(ctx, config.n_envs, "sac")
        self.sac = SACCore(ctx, config)
        self.buffer = ReplayBuffer(config.buffer_size, ctx.obs_dim, ctx.act_dim, self.device, ctx.seed)
        self.explorer = Explorer(self.sac, ctx.action_space, self.device)

    def update(self) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        self.step += 1
        t = self.stepper.step(self.explorer.policy(self.stepper.env_steps < cfg.learning_starts))
        self.buffer.add(t.obs, t.act, t.rew, t.next_obs, t.terminated)
        metrics: dict[str, torch.Tensor | float] = dict(self.stepper.metrics())
        if self.stepper.env_steps >= cfg.learning_starts and len(self.buffer) >= cfg.batch_size:
            metrics |= self.sac.step(self.buffer.sample(cfg.batch_size))
        return metrics

    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        return self.sac.act(self.obs_tensor(obs), deterministic=True).cpu().numpy()
