"""TD3+BC (Fujimoto & Gu, 2021): TD3 with a behavior-cloning term in the actor loss.

Follows CORL `algorithms/offline/td3_bc.py` (itself sfujim/TD3_BC):
  critic:  the TD3 core (algorithms/core/td3.py): clipped double-Q target with target-policy smoothing.
  actor (every `policy_freq` critic steps):
           lambda = alpha / sg(mean |Q1(s, pi(s))|)
           L_pi = -lambda mean Q1(s, pi(s)) + mean (pi(s) - a)^2
  targets: Polyak averaging of critic and actor targets, on actor steps only.
States are normalized with dataset statistics, at evaluation too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext
from algorithms.core.data import Batch
from algorithms.core.registry import register
from algorithms.core.td3 import MSETerm, TD3Config, TD3Family


@dataclass
class TD3BCConfig(TD3Config):  # batch, lrs, gamma, tau, noise and policy_freq: the TD3 core's defaults
    alpha: float = 2.5  # weight of the Q term, lambda = alpha / mean|Q1(s, pi(s))|; larger means less BC
    hidden: tuple[int, ...] = (256, 256)  # hidden layer widths of actor and critics (ReLU)
    normalize: bool = True  # normalize states with the dataset mean/std (also at evaluation)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.alpha >= 0, "alpha must be >= 0")


def bc_term(batch: Batch) -> MSETerm:
    """R(pi) = MSE(pi(s), a): the actor loss's pull towards the dataset action (the Q term is the TD3 core's
    `actor_loss`)."""
    return MSETerm(lambda pi: batch.actions)


@register("td3_bc", kinds=("offline",))
class TD3BC(TD3Family):
    Config = TD3BCConfig

    def __init__(self, config: TD3BCConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        self.setup_offline_td3(actor_hidden=config.hidden, critic_hidden=config.hidden)

    def update(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.step += 1
        batch = self.sampler.sample(cfg.batch_size)
        q_loss, *_ = self.td3.critic_step(batch)
        metrics = {"critic_loss": q_loss}
        if self.step % cfg.policy_freq == 0:
            metrics |= self.td3.actor_step(batch.observations, cfg.alpha, bc_term(batch))
        return metrics

    def graph_period(self) -> int:
        return self.config.policy_freq  # the update has no host syncs; its only schedule is the delayed actor
