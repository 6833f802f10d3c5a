"""State normalization fitted on the dataset and applied identically to every observation
the agent sees: buffer states, next states, auxiliary models and evaluation observations."""

from __future__ import annotations

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
