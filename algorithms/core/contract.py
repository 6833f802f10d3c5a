"""The algorithm contract.

The runner owns the outer loop (budget, evaluation, checkpoints, logging). An algorithm owns
one `update()` step, an `act(obs)` for evaluation, and its state. Everything a method may need
from a task arrives in `AlgoContext`: a dataset (offline), environments it steps inside its own
`update()` (online, hybrid, fine-tuning), a vector-reward size, a cost limit, preference weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from algorithms.core.data import TransitionData
from algorithms.core.errors import CtrlbenchError


@dataclass
class AlgoContext:
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box
    device: torch.device
    seed: int
    total_updates: int  # the run's update budget (for schedules)
    dataset: TransitionData | None = None  # offline data, host-side
    # make_envs(n) -> a vector env of n training environments (for sim-to-real: the simulator).
    # Steps taken through it are counted into `env_steps` and recorded.
    make_envs: Callable[[int], gym.vector.VectorEnv] | None = None
    reward_dim: int = 1  # > 1 for multi-objective tasks
    cost_limit: float | None = None  # safe tasks: the episode cost budget
    preference_weights: np.ndarray | None = None  # multi-objective: the evaluation grid (n, reward_dim)
    reference_point: tuple[float, ...] = ()  # multi-objective: the hypervolume's reference point (one per objective)
    env_steps: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.observation_space.shape))

    @property
    def act_dim(self) -> int:
        return int(np.prod(self.action_space.shape))

    @property
    def max_action(self) -> float:
        """The symmetric action bound of the TD3 family (D4RL: 1.0)."""
        low, high = self.action_space.low, self.action_space.high
        if not (np.allclose(-low, high) and np.allclose(high, high.flat[0])):
            raise CtrlbenchError("this algorithm needs a symmetric action box with equal bounds per dimension")
        return float(high.flat[0])

    def require_dataset(self, algo: str) -> TransitionData:
        if self.dataset is None:
            raise CtrlbenchError(f"{algo} is an offline algorithm and the task provides no dataset")
        return self.dataset


class Algorithm(ABC):
    """Base class: subclasses set `Config` and implement `update` and `act`."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    kinds: ClassVar[tuple[str, ...]] = ("offline",)

    def __init__(self, config: Any, ctx: AlgoContext) -> None:
        self.config = config
        self.ctx = ctx
        self.device = ctx.device
        self.step = 0  # completed update() calls

    @abstractmethod
    def update(self) -> dict[str, torch.Tensor | float]:
        """One training step. Returns scalar metrics (tensors are fine: the runner syncs rarely)."""

    @abstractmethod
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        """Deterministic actions for a batch of raw observations: (B, act_dim), or (B, H, act_dim)
        for a policy that emits action chunks. `weight` is the preference of multi-objective tasks."""

    def milestones(self) -> dict[str, int]:
        """Named update counts after which the runner evaluates too (besides every `eval_every`) and records the
        score under `metrics.milestones`, e.g. {"pretrained": 1000} for a method that pretrains, then fine-tunes."""
        return {}

    def graph_period(self) -> int | None:
        """Updates per CUDA-graph replay when `update()` is capture-safe (algorithms/core/graphs.py), else None."""
        return None

    def graph_generators(self) -> list[torch.Generator]:
        """Non-default generators `update()` draws from; a captured graph must advance them on each replay.
        By default the offline sampler's, where the algorithm has one as `self.sampler`."""
        sampler = getattr(self, "sampler", None)
        return [sampler.generator] if sampler is not None else []

    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)

    def _stateful(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()
                if k != "ctx" and callable(getattr(v, "state_dict", None))
                and callable(getattr(v, "load_state_dict", None))}

    def state_dict(self) -> dict[str, Any]:
        """Every attribute with a state_dict (networks, optimizers, schedulers, samplers, normalizers)."""
        state = {k: v.state_dict() for k, v in self._stateful().items()}
        state["step"] = self.step
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in self._stateful().items():
            v.load_state_dict(state[k])
        self.step = int(state["step"])
