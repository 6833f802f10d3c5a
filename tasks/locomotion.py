"""The MuJoCo locomotion environments the dataset factory covers, and their D4RL-style kinds."""

from __future__ import annotations

ENVS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}
KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
# Expert return targets of the dataset-factory issue (deterministic policy, 100 seeded episodes).
EXPERT_TARGETS = {"hopper": 3000.0, "halfcheetah": 8000.0, "walker2d": 3500.0}
MEDIUM_FRACTION = (0.25, 0.45)  # medium = the checkpoint at about one third of the expert's return
MEDIUM_TARGET = 1.0 / 3.0


def env_id(env: str) -> str:
    from algorithms.core.errors import CtrlbenchError

    if env not in ENVS:
        raise CtrlbenchError(f"unknown environment '{env}'; known: {', '.join(ENVS)}")
    return ENVS[env]


def dataset_id(env: str, kind: str) -> str:
    return f"ctrlbench/{env}/{kind}-v0"


def task_id(env: str, kind: str) -> str:
    return f"{env}-{kind}-v0"
