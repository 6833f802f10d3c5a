"""Behavior cloning (CORL `any_percent_bc.py`): regress the dataset action with MSE.

With `top_fraction` < 1 it is %BC: only the episodes with the highest returns are cloned.

On cost-labelled data (offline safe tasks), OSRL's two BC baselines (liuzuxin/OSRL 03a4586, `osrl/algorithms/bc.py`,
`osrl/common/dataset.py::process_bc_dataset`, defaults `examples/configs/bc_configs.py`):
  bc_all   BC on every transition (bc_mode "all");
  bc_safe  BC on the episodes whose undiscounted cost is <= the budget kappa (bc_mode "safe"; OSRL's gamma = 1).
Their defaults are OSRL's: MLP 256x256 (ReLU, tanh output scaled to the action bound), Adam 1e-3, batch 512, states
not normalized. OSRL splits episodes at terminals or timeouts; the dataset's own episode ids are the same split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.data import Batch, TransitionData, offline_sampler
from algorithms.core.errors import CtrlbenchError
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


def keep_safe_episodes(data: TransitionData, kappa: float) -> TransitionData:
    """The transitions of the episodes whose undiscounted cost is within the budget (OSRL dataset.py:111-113)."""
    ids = np.unique(data.episode_ids)
    keep = ids[data.episode_costs() <= kappa]
    if len(keep) == 0:
        raise CtrlbenchError(f"bc_safe: no episode of the dataset has a cost <= {kappa:g}")
    return data.select(np.isin(data.episode_ids, keep))


@register("bc", kinds=("offline",))
class BC(Algorithm):
    Config = BCConfig

    def cloned(self, ctx: AlgoContext) -> TransitionData:
        """The transitions to clone."""
        return keep_best_episodes(ctx.require_dataset(self.name), self.config.top_fraction)

    def __init__(self, config: BCConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        data = self.cloned(ctx)
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


@dataclass
class SafeBCConfig(BCConfig):  # OSRL's BC defaults (bc_configs.py:31-37,44)
    batch_size: int = 512  # transitions per gradient step
    lr: float = 1e-3  # Adam learning rate
    normalize: bool = False  # OSRL feeds raw states


@register("bc_all", kinds=("offline-safe",))
class BCAll(BC):
    """BC on every transition of a cost-labelled dataset, whatever its cost."""

    Config = SafeBCConfig


@register("bc_safe", kinds=("offline-safe",))
class BCSafe(BC):
    """BC on the episodes within the cost budget."""

    Config = SafeBCConfig

    def cloned(self, ctx: AlgoContext) -> TransitionData:
        data = super().cloned(ctx)
        if ctx.cost_limit is None:
            raise CtrlbenchError("bc_safe needs a task with a cost budget")
        return keep_safe_episodes(data, ctx.cost_limit)
