"""The task registry: a task is a dataset, an evaluation environment, a scoring rule and a kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from algorithms.core.errors import CtrlbenchError
from algorithms.core.registry import TASK_KINDS


@dataclass(frozen=True)
class TaskSpec:
    id: str  # e.g. "hopper-medium-v0"
    dataset_id: str | None  # Minari dataset id; None for purely online tasks
    env_id: str  # evaluation environment (gymnasium id)
    kind: str = "offline"  # one of TASK_KINDS
    family: str = "locomotion"  # leaderboard grouping
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    ref_min_score: float | None = None  # None: taken from the dataset metadata
    ref_max_score: float | None = None
    build_command: str | None = None  # how to build the dataset when it is missing
    reward_dim: int = 1
    cost_limit: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.id}: unknown kind {self.kind!r}; known: {TASK_KINDS}")


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    _TASKS[spec.id] = spec
    return spec


def available_tasks() -> dict[str, TaskSpec]:
    import tasks.catalog  # noqa: F401  (registers the built-in tasks)

    return dict(sorted(_TASKS.items()))


def get_task(task_id: str) -> TaskSpec:
    """A registered task, or a Minari dataset id present locally (e.g. a hosted `mujoco/hopper/medium-v0`)."""
    tasks = available_tasks()
    if task_id in tasks:
        return tasks[task_id]
    if "/" in task_id:
        from tasks.datasets import dataset_exists

        if dataset_exists(task_id):
            return minari_task(task_id)
    raise CtrlbenchError(f"unknown task '{task_id}'; known tasks: {', '.join(tasks)} "
                         "(or the id of a Minari dataset present locally)")


def minari_task(dataset_id: str) -> TaskSpec:
    """A task made from a local Minari dataset: evaluated on its eval_env_spec (else env_spec)."""
    import json

    from tasks.datasets import read_metadata

    meta = read_metadata(dataset_id)
    spec = meta.get("eval_env_spec") or meta.get("env_spec")
    if not spec:
        raise CtrlbenchError(f"dataset {dataset_id} names no environment (no eval_env_spec or env_spec)")
    spec = json.loads(spec) if isinstance(spec, str) else spec
    return TaskSpec(id=dataset_id, dataset_id=dataset_id, env_id=spec["id"], kind="offline",
                    family=dataset_id.split("/")[0], env_kwargs=spec.get("kwargs") or {},
                    description=f"Minari dataset {dataset_id}")
