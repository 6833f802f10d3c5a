"""The built-in tasks: the smoke task and the factory's locomotion datasets."""

from __future__ import annotations

from tasks import smoke
from tasks.locomotion import ENVS, KINDS, dataset_id, task_id
from tasks.registry import TaskSpec, register_task

register_task(TaskSpec(
    id="smoke-v0", dataset_id=smoke.DATASET_ID, env_id=smoke.ENV_ID, kind="offline", family="smoke",
    build_command="ctrlbench datasets build smoke",
    description="Pendulum-v1 swing-up from a mixed-quality controller; builds in seconds",
))

for _env, _gym_id in ENVS.items():
    for _kind in KINDS:
        register_task(TaskSpec(
            id=task_id(_env, _kind), dataset_id=dataset_id(_env, _kind), env_id=_gym_id, kind="offline",
            family="locomotion", build_command=f"ctrlbench datasets build {_env} --kinds {_kind}",
            description=f"{_gym_id}, D4RL-style {_kind} dataset built by the ctrlbench factory",
        ))
