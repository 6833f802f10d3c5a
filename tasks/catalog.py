"""The built-in tasks."""

from __future__ import annotations

from tasks import smoke
from tasks.registry import TaskSpec, register_task

register_task(TaskSpec(
    id="smoke-v0", dataset_id=smoke.DATASET_ID, env_id=smoke.ENV_ID, kind="offline", family="smoke",
    build_command="ctrlbench datasets build smoke",
    description="Pendulum-v1 swing-up from a mixed-quality controller; builds in seconds",
))
