"""Behavior cloning (CORL `any_percent_bc.py`): regress the dataset action with MSE.

With `top_fraction` < 1 it is %BC: only the episodes with the highest returns are cloned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.data import Batch, TransitionData, offline_sampler
from algorithms.core.nets import DeterministicActor, adam
from algorithms.core.registry import register


@dataclass
class BCConfig:
    batch_size: int = 256  # transitions per gradient step
    lr: float = 3e-4  # Adam learning rate
    hidden: tuple[int, ...] = (256, 256)  # hidden layer widths of the actor (ReLU)
    normalize: bool = True  # normalize states with the dataset mean/std (also at evaluation)
    top_fraction: float = 1.0  # clone only this fraction of episodes, best returns first (1.0 = plain BC)

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size must be positive")
        require(self.lr > 0, "lr must be positive")
        require(0.0 < self.top_fraction <= 1.0, "top_fraction must be in (0, 1]")


def keep_best_episodes(data: TransitionData, fraction: float) -> TransitionData:
    """The transitions of the top `fraction` of episodes ranked by undiscounted return."""
    if fraction >= 1.0:
        return data
    ids = np.unique(data.episode_ids)
    returns = data.episode_returns()
    keep = ids[np.argsort(-returns, kind="stable")[: max(1, round(fraction * len(ids)))]]
    return data.select(np.isin(data.episode_ids, keep))


def bc_loss(actor: torch.nn.Module, batch: Batch) -> torch.Tensor:
    return F.mse_loss(actor(batch.observations), batch.actions)


@register("bc", kinds=("offline",))
class BC(Algorithm):
    Config = BCConfig

    def __init__(self, config: BCConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        data = keep_best_episodes(ctx.require_dataset("bc"), config.top_fraction)
        self.normalizer, self.sampler = offline_sampler(data, self.device, ctx.seed, config.normalize)
        self.actor = DeterministicActor(ctx.obs_dim, ctx.act_dim, ctx.max_action, config.hidden).to(self.device)
        self.optimizer = adam(self.actor.parameters(), lr=config.lr)

    def update(self) -> dict[str, torch.Tensor]:
        self.step += 1
        loss = bc_loss(self.actor, self.sampler.sample(self.config.batch_size))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"bc_loss": loss.detach()}

    def graph_period(self) -> int:
        return 1  # no host syncs, no schedule

    @torch.no_grad()
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        return self.actor(self.obs_tensor(self.normalizer(obs))).cpu().numpy()
