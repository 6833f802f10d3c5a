"""The task registry: the built-in tasks (tasks/catalog.py), tasks registered at run time, and local Minari datasets."""

from __future__ import annotations

import json

from algorithms.core.errors import CtrlbenchError
from tasks import catalog
from tasks.datasets import dataset_exists, read_metadata
from tasks.spec import TaskSpec

_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    _TASKS[spec.id] = spec
    return spec


def available_tasks() -> dict[str, TaskSpec]:
    for spec in catalog.builtin_tasks():
        _TASKS.setdefault(spec.id, spec)
    return dict(sorted(_TASKS.items()))


def get_task(task_id: str) -> TaskSpec:
    """A registered task, or a Minari dataset id present locally (e.g. a hosted `mujoco/hopper/medium-v0`)."""
    tasks = available_tasks()
    if task_id in tasks:
        return tasks[task_id]
    made = catalog.task_from_id(task_id)
    if made is not None:
        return register_task(made)
    if "/" in task_id and dataset_exists(task_id):
        return minari_task(task_id)
    raise CtrlbenchError(f"unknown task '{task_id}'; known tasks: {', '.join(tasks)} "
                         "(or the id of a Minari dataset present locally)")


def minari_task(dataset_id: str) -> TaskSpec:
    """A task made from a local Minari dataset: evaluated on its eval_env_spec (else env_spec)."""
    meta = read_metadata(dataset_id)
    spec = meta.get("eval_env_spec") or meta.get("env_spec")
    if not spec:
        raise CtrlbenchError(f"dataset {dataset_id} names no environment (no eval_env_spec or env_spec)")
    spec = json.loads(spec) if isinstance(spec, str) else spec
    return TaskSpec(id=dataset_id, dataset_id=dataset_id, env_id=spec["id"], kind="offline",
                    family=dataset_id.split("/")[0], env_kwargs=spec.get("kwargs") or {},
                    description=f"Minari dataset {dataset_id}")
