"""Normalization statistics: `StateNormalizer`, fitted once on the dataset and applied identically to every
observation the agent sees (buffer states, next states, auxiliary models, evaluation observations); and
`RunningMeanStd`, the running statistics that online learners update from their own rollouts."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class StateNormalizer:
    """(s - mean) / std with std = S.std(0) + eps (eps 1e-3, as TD3+BC/CORL)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    @classmethod
    def fit(cls, observations: np.ndarray, eps: float = 1e-3) -> StateNormalizer:
        obs = np.asarray(observations, dtype=np.float64)
        return cls(obs.mean(0), obs.std(0) + eps)

    @classmethod
    def identity(cls, dim: int) -> StateNormalizer:
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return ((np.asarray(obs, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def torch(self, obs: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, device=obs.device)
        std = torch.as_tensor(self.std, device=obs.device)
        return (obs - mean) / std

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.copy(), "std": self.std.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.mean = np.asarray(state["mean"], dtype=np.float32)
        self.std = np.asarray(state["std"], dtype=np.float32)


class RunningMeanStd:
    """Running mean and variance with the parallel update of baselines' RunningMeanStd: count starts at 1e-4, mean
    0, var 1, and a batch of n values combines as M2 = var count + var_B n + delta^2 count n / (count + n).
    `bessel=False` keeps var = M2 / (count + n), baselines' population variance (VecNormalize, the MORL learners);
    `bessel=True` divides by (count + n - 1), as DPPO's util/reward_scaling.py does (its variance is then not exactly
    the sample variance, since the previous var enters M2 times count: the reference's recursion, kept)."""

    def __init__(self, shape: tuple[int, ...] = (), bessel: bool = False, eps: float = 1e-8) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4
        self.bessel, self.eps = bessel, eps

    def update(self, x: np.ndarray) -> None:
        """x: (B, *shape)."""
        x = np.asarray(x, dtype=np.float64)
        batch_mean, batch_var, n = x.mean(axis=0), x.var(axis=0), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + n
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean, self.count = self.mean + delta * n / total, total
        self.var = m2 / (total - 1.0) if self.bessel else m2 / total

    @property
    def std(self) -> np.ndarray:
        """sqrt(var + eps)."""
        return np.sqrt(self.var + self.eps)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": np.copy(self.mean), "var": np.copy(self.var), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = np.array(state["mean"], np.float64)
        self.var = np.array(state["var"], np.float64)
        self.count = float(state["count"])
