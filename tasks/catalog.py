"""The built-in tasks: the smoke tasks, the factory's locomotion datasets, and the sim-to-real gap tasks.

Sim-to-real tasks (H2O's setting) are named `<env>-<gap>-<dataset kind>-v0`, e.g.
`halfcheetah-gravity2x-medium-replay-v0`: the real data is the factory dataset `<env>/<dataset kind>`, the real
(evaluation) env is the v5 env, and the simulator is that env with the gap (tasks/dynamics_gap.py). A grid of the
paper's gaps is listed; any other gap of the same form is made on request (`task_from_id`).

Offline-to-online tasks are named `<env>-medium-finetune-v0`: the factory's medium dataset for pretraining, the
v5 env (the evaluation env too) for fine-tuning.

Safe tasks are named `<robot>-velocity-k<kappa>-v0`, e.g. `hopper-velocity-k40-v0`: Safety-Gymnasium's velocity-v1
cost on the gymnasium MuJoCo v4 robot (tasks/velocity_cost.py), an episode cost budget kappa (OSRL: 20, 40, 80
listed, any kappa >= 0 on request), and DSRL's reward normalization constants (MIN/MAX_EPISODE_REWARD of its
velocity datasets, ../shared/reference/safe_and_morl.md A2): the normalized reward is comparable with DSRL's.
"""

from __future__ import annotations

import dataclasses
import re

from algorithms.core.errors import CtrlbenchError
from tasks import smoke
from tasks.dynamics_gap import parse_gap
from tasks.envs import DYNAMICS_GAP_ID, PENDULUM_COST_ID, VELOCITY_ID, suite_env_id
from tasks.locomotion import ENVS, KINDS, dataset_id, task_id
from tasks.mo_tasks import mo_tasks
from tasks.protocol import check_budget
from tasks.safe_datasets import LATEST as LATEST_VELOCITY
from tasks.safe_datasets import RECIPES as VELOCITY_RECIPES
from tasks.safe_datasets import velocity_build_kind, velocity_dataset_id
from tasks.spec import TaskSpec
from tasks.velocity_cost import CORE_ROBOTS, COST_BUDGETS, ROBOTS

VELOCITY_VERSIONS = tuple(VELOCITY_RECIPES)
SIM_TO_REAL_GAPS = ("gravity2x", "friction0.3x", "jointnoise1.0")  # H2O's three gaps (paper, README)
SIM_TO_REAL_KINDS = ("medium", "medium-replay", "medium-expert")  # H2O's real datasets
# DSRL's (r_min, r_max) of its velocity datasets (dsrl/infos.py): the safe tasks' reward normalization
DSRL_REWARD_RANGE = {"hopper": (37.05, 1911.40), "halfcheetah": (5.75, 2806.93), "walker2d": (18.67, 3418.22),
                     "ant": (6.15, 2976.28), "swimmer": (0.071, 238.96)}
_VELOCITY_ID = re.compile(r"(?P<robot>[a-z0-9]+)-velocity-k(?P<kappa>[^-]+|-[^-]+)-v0")
_OFFLINE_VELOCITY_ID = re.compile(r"offline-(?P<robot>[a-z0-9]+)-velocity-k(?P<kappa>[^-]+|-[^-]+)-v(?P<v>[0-9]+)")
_SIM_TO_REAL_ID = re.compile(rf"(?P<env>{'|'.join(ENVS)})-(?P<gap>.+?)-(?P<kind>{'|'.join(SIM_TO_REAL_KINDS)})-v0")


def sim_to_real_task(env: str, gap: str, kind: str) -> TaskSpec:
    parsed = parse_gap(gap)  # one-line error on a bad gap
    return TaskSpec(
        id=f"{env}-{parsed.label}-{kind}-v0", dataset_id=dataset_id(env, kind), env_id=ENVS[env],
        kind="sim-to-real", family="sim-to-real", train_env_id=suite_env_id(DYNAMICS_GAP_ID),
        train_env_kwargs={"real_env_id": ENVS[env], "gap": parsed.label}, gap=parsed.describe(),
        build_command=f"ctrlbench datasets build {env} --kinds {kind}",
        description=f"{ENVS[env]} with the {kind} dataset as real data; simulator: {parsed.describe()}",
    )


def finetune_task(env: str, kind: str = "medium") -> TaskSpec:
    """Offline-to-online: pretrain on the factory's dataset, fine-tune in the same v5 env (DPPO's setting)."""
    return TaskSpec(
        id=f"{env}-{kind}-finetune-v0", dataset_id=dataset_id(env, kind), env_id=ENVS[env], kind="offline-to-online",
        family="offline-to-online", build_command=f"ctrlbench datasets build {env} --kinds {kind}",
        description=f"pretrain on the {kind} dataset, then fine-tune online in {ENVS[env]}",
    )


def velocity_task(robot: str, kappa: float) -> TaskSpec:
    if robot not in DSRL_REWARD_RANGE:
        raise CtrlbenchError(f"unknown velocity robot {robot!r}; known: {', '.join(DSRL_REWARD_RANGE)}")
    kappa = check_budget(kappa)
    ref_min, ref_max = DSRL_REWARD_RANGE[robot]
    base = ROBOTS[robot]
    return TaskSpec(
        id=f"{robot}-velocity-k{kappa:g}-v0", dataset_id=None, env_id=suite_env_id(VELOCITY_ID),
        env_kwargs={"robot": robot}, kind="safe", family="velocity", cost_limit=kappa, ref_min_score=ref_min,
        ref_max_score=ref_max,
        description=f"{base.v4} with cost 1 a step above {base.threshold} m/s "
                    f"({'signed x' if base.rule == 'x' else 'xy'} velocity), budget {kappa:g} per episode",
    )


def _budget(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CtrlbenchError(f"cannot read the cost budget {text!r} as a number") from None


def offline_velocity_task(robot: str, kappa: float, version: int = LATEST_VELOCITY) -> TaskSpec:
    """The velocity task learned from version `version` of the factory's cost-labelled dataset of the robot
    (tasks/safe_datasets.py; the task id ends in the dataset's version): rewards normalized with the dataset's own
    episode reward range (DSRL's MIN/MAX_EPISODE_REWARD, taken from its metadata), costs with kappa."""
    if robot not in ENVS:
        raise CtrlbenchError(f"no cost-labelled dataset for {robot!r} (no committed behavior policies); "
                             f"known: {', '.join(ENVS)}")
    online = velocity_task(robot, kappa)
    did = velocity_dataset_id(robot, version)
    return dataclasses.replace(
        online, id=f"offline-{online.id.removesuffix('-v0')}-v{version}", dataset_id=did, kind="offline-safe",
        ref_min_score=None, ref_max_score=None,
        build_command=f"ctrlbench datasets build {robot} --kinds {velocity_build_kind(version)}",
        description=f"{online.description}; learned offline from the cost-labelled dataset {did}")


def task_from_id(task_id: str) -> TaskSpec | None:
    """A task that is not listed but whose id has a listed form (a sim-to-real task with another gap, a velocity
    task with another budget); None when the id has no such form. A bad parameter is a one-line error."""
    try:
        if (match := _SIM_TO_REAL_ID.fullmatch(task_id)) is not None:
            task = sim_to_real_task(match["env"], match["gap"], match["kind"])
        elif (match := _VELOCITY_ID.fullmatch(task_id)) is not None:
            task = velocity_task(match["robot"], _budget(match["kappa"]))
        elif (match := _OFFLINE_VELOCITY_ID.fullmatch(task_id)) is not None:
            task = offline_velocity_task(match["robot"], _budget(match["kappa"]), int(match["v"]))
        else:
            return None
    except CtrlbenchError as e:
        raise CtrlbenchError(f"task {task_id}: {e}") from None
    return task if task.id == task_id else None  # one name per task: "gravity2.0x" is "gravity2x", "k40.0" "k40"


def builtin_tasks() -> list[TaskSpec]:
    tasks = [TaskSpec(
        id="smoke-v0", dataset_id=smoke.DATASET_ID, env_id=smoke.ENV_ID, kind="offline", family="smoke",
        build_command="ctrlbench datasets build smoke",
        description="Pendulum-v1 swing-up from a mixed-quality controller; builds in seconds",
    ), TaskSpec(
        id="smoke-sim-to-real-v0", dataset_id=smoke.DATASET_ID, env_id=smoke.ENV_ID, kind="sim-to-real",
        family="smoke", train_env_id=smoke.ENV_ID, train_env_kwargs={"g": 20.0}, gap="gravity x2 (g = 20)",
        build_command="ctrlbench datasets build smoke",
        description="the smoke dataset as real data, a Pendulum-v1 simulator with twice the gravity; seconds",
    ), TaskSpec(
        id="smoke-safe-v0", dataset_id=smoke.DATASET_ID, env_id=suite_env_id(PENDULUM_COST_ID), kind="safe",
        family="smoke", cost_limit=20.0, build_command="ctrlbench datasets build smoke",
        description="Pendulum-v1 with cost 1 a step above 4 rad/s, budget 20 per episode; seconds",
    ), TaskSpec(
        id="smoke-offline-safe-v0", dataset_id=smoke.COST_DATASET_ID, env_id=suite_env_id(PENDULUM_COST_ID),
        kind="offline-safe", family="smoke", cost_limit=20.0, build_command="ctrlbench datasets build smoke",
        description="the smoke episodes labelled with the cost of smoke-safe-v0, budget 20 per episode; seconds",
    ), TaskSpec(
        id="smoke-finetune-v0", dataset_id=smoke.DATASET_ID, env_id=smoke.ENV_ID, kind="offline-to-online",
        family="smoke", build_command="ctrlbench datasets build smoke",
        description="pretrain on the smoke dataset, fine-tune in Pendulum-v1; seconds",
    )]
    for env, gym_id in ENVS.items():
        for kind in KINDS:
            tasks.append(TaskSpec(
                id=task_id(env, kind), dataset_id=dataset_id(env, kind), env_id=gym_id, kind="offline",
                family="locomotion", build_command=f"ctrlbench datasets build {env} --kinds {kind}",
                description=f"{gym_id}, D4RL-style {kind} dataset built by the ctrlbench factory",
            ))
    tasks += [sim_to_real_task(env, gap, kind)
              for env in ENVS for gap in SIM_TO_REAL_GAPS for kind in SIM_TO_REAL_KINDS]
    tasks += [velocity_task(robot, kappa) for robot in CORE_ROBOTS for kappa in COST_BUDGETS]
    tasks += [offline_velocity_task(robot, kappa, version)
              for robot in ENVS for kappa in COST_BUDGETS for version in VELOCITY_VERSIONS]
    tasks += [finetune_task(env) for env in ENVS]
    tasks += mo_tasks()
    return tasks
