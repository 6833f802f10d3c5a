"""The shared batch format: a host-side transition table and a device-resident sampler.

`TransitionData` is what a task hands an algorithm: flat arrays over all transitions of a
dataset. `terminals` is 1 only for true terminations; a time-limit truncation is not terminal
(its next state is bootstrapped). Rewards are (N,) or (N, k) for vector rewards; `costs`
exist for safe tasks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

import numpy as np
import torch

from algorithms.core.errors import CtrlbenchError
from algorithms.core.normalization import StateNormalizer


@dataclass
class TransitionData:
    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray  # (N,) or (N, k) float32
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminals: np.ndarray  # (N,) float32, 1.0 only for true terminations
    episode_ids: np.ndarray  # (N,) int64, the episode each transition belongs to
    costs: np.ndarray | None = None  # (N,) float32 for safe tasks

    def __post_init__(self) -> None:
        n = len(self.observations)
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and len(value) != n:
                raise ValueError(f"TransitionData.{f.name} has {len(value)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, in episode-id order (scalar rewards only)."""
        _, inverse = np.unique(self.episode_ids, return_inverse=True)
        return np.bincount(inverse, weights=self.rewards.astype(np.float64))

    def episode_costs(self) -> np.ndarray:
        """Undiscounted cost of each episode, in episode-id order (safe datasets only)."""
        if self.costs is None:
            raise CtrlbenchError("this dataset has no per-step costs")
        _, inverse = np.unique(self.episode_ids, return_inverse=True)
        return np.bincount(inverse, weights=self.costs.astype(np.float64))

    def select(self, mask: np.ndarray) -> TransitionData:
        return TransitionData(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[mask]
                                 for f in fields(self)})


@dataclass
class Batch:
    observations: torch.Tensor  # (B, obs_dim)
    actions: torch.Tensor  # (B, act_dim)
    rewards: torch.Tensor  # (B,) or (B, k)
    next_observations: torch.Tensor  # (B, obs_dim)
    dones: torch.Tensor  # (B,) 1.0 for a true termination
    costs: torch.Tensor | None = None  # (B,)


class DeviceSampler:
    """All transitions packed into one tensor on the training device; a batch is one gather.

    States are normalized once here (when a normalizer is given), so the update never pays for it.
    """

    def __init__(self, data: TransitionData, device: torch.device | str, seed: int,
                 normalizer: StateNormalizer | None = None) -> None:
        self.device = torch.device(device)
        obs, next_obs = data.observations, data.next_observations
        if normalizer is not None:
            obs, next_obs = normalizer(obs), normalizer(next_obs)
        rewards = data.rewards.reshape(len(data), -1)
        columns = [obs, data.actions, rewards, next_obs, data.terminals.reshape(-1, 1)]
        if data.costs is not None:
            columns.append(data.costs.reshape(-1, 1))
        widths = [c.shape[1] for c in columns]
        self._bounds = np.cumsum([0, *widths]).tolist()
        self._scalar_reward = data.rewards.ndim == 1
        self._has_costs = data.costs is not None
        packed = np.concatenate([c.astype(np.float32) for c in columns], axis=1)
        self.table = torch.as_tensor(packed, device=self.device)
        self.size = len(data)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def column(self, i: int) -> torch.Tensor:
        return self.table[:, self._bounds[i]:self._bounds[i + 1]]

    def sample(self, batch_size: int) -> Batch:
        idx = torch.randint(self.size, (batch_size,), device=self.device, generator=self.generator)
        return self.gather(idx)

    def gather(self, idx: torch.Tensor) -> Batch:
        rows = self.table.index_select(0, idx)
        b = self._bounds
        rewards = rows[:, b[2]:b[3]]
        return Batch(
            observations=rows[:, b[0]:b[1]],
            actions=rows[:, b[1]:b[2]],
            rewards=rewards.squeeze(1) if self._scalar_reward else rewards,
            next_observations=rows[:, b[3]:b[4]],
            dones=rows[:, b[4]],
            costs=rows[:, b[5]] if self._has_costs else None,
        )

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def offline_sampler(data: TransitionData, device: torch.device, seed: int,
                    normalize: bool) -> tuple[StateNormalizer, DeviceSampler]:
    """The usual offline setup: fit the state normalizer on the dataset, put the data on device."""
    normalizer = StateNormalizer.fit(data.observations) if normalize else StateNormalizer.identity(data.obs_dim)
    return normalizer, DeviceSampler(data, device, seed, normalizer)


def scale_rewards_by_return_range(data: TransitionData, scale: float = 1000.0) -> TransitionData:
    """r <- r * scale / (max episode return - min episode return): CORL's `modify_reward` for locomotion
    (IQL's original reward normalization). Episodes are the dataset's own (split at terminations and time limits)."""
    returns = data.episode_returns()
    spread = float(returns.max() - returns.min())
    if spread <= 0:
        raise ValueError("cannot normalize rewards: every episode has the same return")
    return dataclasses.replace(data, rewards=(data.rewards * (scale / spread)).astype(np.float32))
