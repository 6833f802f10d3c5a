"""What a task is: a dataset, the environments, a scoring rule and a kind (DESIGN.md, "Tasks and datasets").

Environments are named by gymnasium id (plus keyword arguments), never passed as objects, so that a task can be
rebuilt in another process (sweep workers, Ray) from its id alone. A kind that needs a special environment (the
simulator of a sim-to-real task, a velocity-cost wrapper) registers it with gymnasium under its own id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from algorithms.core.registry import SAFE_KINDS, TASK_KINDS


@dataclass(frozen=True)
class TaskSpec:
    id: str  # e.g. "hopper-medium-v0"
    dataset_id: str | None  # Minari dataset id; None for purely online tasks
    env_id: str  # the evaluation environment (gymnasium id); for sim-to-real, the real one
    kind: str = "offline"  # one of TASK_KINDS
    family: str = "locomotion"  # leaderboard grouping
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    # The environment online and hybrid algorithms step inside update() (sim-to-real: the simulator);
    # None means the evaluation environment.
    train_env_id: str | None = None
    train_env_kwargs: dict[str, Any] = field(default_factory=dict)
    gap: str = ""  # sim-to-real: how the training env differs from the evaluation env, in words
    ref_min_score: float | None = None  # None: taken from the dataset metadata
    ref_max_score: float | None = None
    build_command: str | None = None  # how to build the dataset when it is missing
    reward_dim: int = 1
    cost_limit: float | None = None  # safe: the episode cost budget kappa
    preference_weights: tuple[tuple[float, ...], ...] = ()  # multi-objective: the evaluation weight grid
    reference_point: tuple[float, ...] = ()  # multi-objective: the hypervolume's reference point (one per objective)
    eval_discount: float = 1.0  # discount of the evaluation returns (multi-objective protocols use 0.99)
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.id}: unknown kind {self.kind!r}; known: {TASK_KINDS}")
        if self.kind in SAFE_KINDS and (self.cost_limit is None or self.cost_limit < 0):
            raise ValueError(f"task {self.id}: a safe task needs a cost_limit >= 0")
        if self.kind == "offline-safe" and self.dataset_id is None:
            raise ValueError(f"task {self.id}: an offline safe task needs a cost-labelled dataset")
        if self.kind == "multi-objective":
            if self.reward_dim < 2 or not self.preference_weights:
                raise ValueError(f"task {self.id}: a multi-objective task needs reward_dim >= 2 and a weight grid")
            if any(len(w) != self.reward_dim for w in self.preference_weights):
                raise ValueError(f"task {self.id}: every preference weight needs {self.reward_dim} entries")
            if self.reference_point and len(self.reference_point) != self.reward_dim:
                raise ValueError(f"task {self.id}: the reference point needs {self.reward_dim} entries")
        if not 0.0 < self.eval_discount <= 1.0:
            raise ValueError(f"task {self.id}: eval_discount must be in (0, 1]")

    def make_env(self) -> gym.Env:
        """The evaluation environment (for sim-to-real: the real one)."""
        return gym.make(self.env_id, **self.env_kwargs)

    def make_train_env(self) -> gym.Env:
        """The environment algorithms step while training (for sim-to-real: the simulator)."""
        if self.train_env_id is None:
            return self.make_env()
        return gym.make(self.train_env_id, **self.train_env_kwargs)
