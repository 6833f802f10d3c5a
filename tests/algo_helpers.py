"""Hand-made contexts and batches for algorithm unit tests."""

from __future__ import annotations

import dataclasses
import io

import gymnasium as gym
import numpy as np
import torch

from algorithms.core.contract import AlgoContext
from algorithms.core.data import Batch, TransitionData


def tiny_dataset(n: int = 64, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> TransitionData:
    rng = np.random.default_rng(seed)
    obs = rng.normal(2.0, 3.0, (n, obs_dim)).astype(np.float32)
    return TransitionData(
        observations=obs,
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=obs + 0.1,
        terminals=(np.arange(n) % 16 == 15).astype(np.float32),
        episode_ids=np.arange(n) // 16,
    )


def tiny_context(data: TransitionData | None = None, max_action: float = 1.0, seed: int = 0) -> AlgoContext:
    data = data if data is not None else tiny_dataset()
    obs_space = gym.spaces.Box(-np.inf, np.inf, (data.obs_dim,), np.float32)
    act_space = gym.spaces.Box(-max_action, max_action, (data.act_dim,), np.float32)
    return AlgoContext(observation_space=obs_space, action_space=act_space, device=torch.device("cpu"),
                       seed=seed, total_updates=100, dataset=data)


def hand_batch() -> Batch:
    return Batch(
        observations=torch.tensor([[0.0, 1.0], [1.0, -1.0]]),
        actions=torch.tensor([[0.5], [-0.5]]),
        rewards=torch.tensor([1.0, -2.0]),
        next_observations=torch.tensor([[0.5, 0.5], [2.0, 0.0]]),
        dones=torch.tensor([0.0, 1.0]),
    )


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def io_round_trip(obj):
    """Through torch.save/torch.load, as a checkpoint goes."""
    f = io.BytesIO()
    torch.save(obj, f)
    f.seek(0)
    return torch.load(f, weights_only=False)


def safe_context(costs: np.ndarray | None = None, cost_limit: float | None = 5.0, seed: int = 0,
                 max_action: float = 1.0, n: int = 64) -> AlgoContext:
    """tiny_dataset (episodes of 16) with actions in the box, per-step costs (by default 1 where a_0 > 0) and a
    cost budget: an offline-safe context."""
    data = tiny_dataset(n=n, obs_dim=3, act_dim=2, seed=seed)
    data = dataclasses.replace(data, actions=data.actions * max_action)
    if costs is None:
        costs = (data.actions[:, 0] > 0).astype(np.float32)
    ctx = tiny_context(dataclasses.replace(data, costs=np.asarray(costs, np.float32)), max_action=max_action,
                       seed=seed)
    ctx.cost_limit = cost_limit
    return ctx
