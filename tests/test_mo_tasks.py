"""The multi-objective tasks (tasks/mo_tasks.py): their environments, weight grids, reference points and anchors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from algorithms.core.errors import CtrlbenchError
from tasks import pareto
from tasks.catalog import builtin_tasks
from tasks.mo_floors import EXPERTS, measure
from tasks.mo_tasks import FLOOR_POINTS, MO_TASKS, N_WEIGHTS, WEIGHTS, mo_tasks
from tasks.protocol import FINAL_STREAM, episode_seeds, protocol_for
from tasks.smoke import swing_up_controller
from tasks.spec import TaskSpec

REPO = Path(__file__).resolve().parent.parent
TASKS = {t.id: t for t in mo_tasks()}
CORE = ("mo-halfcheetah-v5", "mo-hopper-2obj-v5", "mo-walker2d-v5", "mo-ant-2obj-v5", "mo-swimmer-v5",
        "mo-hopper-v5", "smoke-mo-v0")


def test_the_issue_lists_tasks_each_once_and_no_id_collides_with_the_catalog() -> None:
    assert sorted(TASKS) == sorted(CORE)
    assert not set(TASKS) & {t.id for t in builtin_tasks() if t.kind != "multi-objective"}
    assert {t.id: t.reward_dim for t in TASKS.values()} == {**dict.fromkeys(CORE, 2), "mo-hopper-v5": 3}
    for t in TASKS.values():
        assert t.kind == "multi-objective" and t.dataset_id is None and t.eval_discount == 0.99
        assert t.ref_min_score is not None and t.ref_max_score is not None and t.ref_max_score > t.ref_min_score


@pytest.mark.parametrize("task_id", CORE)
def test_the_env_makes_and_steps_with_the_declared_reward_dim(task_id: str) -> None:
    task = TASKS[task_id]
    env = task.make_env()
    obs, _ = env.reset(seed=0)
    obs, reward, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert np.shape(reward) == (task.reward_dim,) == env.unwrapped.reward_space.shape
    assert env.spec.max_episode_steps == (200 if task_id == "smoke-mo-v0" else 1000)
    gym.envs.registration.EnvSpec.from_json(env.spec.to_json())  # serializable: string entry points (Minari)
    env.close()


def test_env_ids_resolve_in_a_fresh_process() -> None:
    code = ("import gymnasium as gym, sys\n"
            f"for i in {[TASKS[t].env_id for t in ('mo-hopper-v5', 'smoke-mo-v0')]!r}:\n"
            "    e = gym.make(i, disable_env_checker=True); e.reset(seed=0)\n"
            "    print(len(e.step(e.action_space.sample())[1]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "2"]


@pytest.mark.parametrize("d", [2, 3])
def test_weight_grids_cover_the_simplex_with_its_extremes(d: int) -> None:
    grid = np.asarray(WEIGHTS[d])
    assert grid.shape == (N_WEIGHTS[d], d) and (grid >= 0).all() and np.allclose(grid.sum(axis=1), 1.0)
    assert all(any(np.allclose(w, e) for w in grid) for e in np.eye(d))  # each objective alone is evaluated
    assert len({tuple(np.round(w, 6)) for w in grid}) == len(grid)
    for t in TASKS.values():
        if t.reward_dim == d:
            assert t.preference_weights == WEIGHTS[d]


@pytest.mark.slow  # pymoo's Riesz s-energy optimization: a few seconds on a busy CPU
@pytest.mark.parametrize("d", [2, 3])
def test_stored_grids_are_pymoos_riesz_directions(d: int) -> None:
    np.testing.assert_allclose(WEIGHTS[d], pareto.weight_grid(d, N_WEIGHTS[d]), atol=1e-12)


@pytest.mark.parametrize("task_id", CORE)
def test_the_reference_point_is_below_the_floor_points(task_id: str) -> None:
    task = TASKS[task_id]
    floor = np.asarray(FLOOR_POINTS[task_id])
    pareto.check_reference_point(floor, task.reference_point)  # strictly below: raises otherwise
    assert pareto.hypervolume(floor, task.reference_point) > 0


def test_the_energy_reference_is_minus_1000_where_v5_energy_is_unscaled() -> None:
    refs = {t.id: t.reference_point for t in MO_TASKS}
    assert refs["mo-halfcheetah-v5"] == refs["mo-swimmer-v5"] == refs["mo-walker2d-v5"] == (-100.0, -1000.0)
    assert refs["mo-hopper-2obj-v5"] == refs["mo-ant-2obj-v5"] == (-100.0, -100.0)
    assert refs["mo-hopper-v5"] == (-100.0, -100.0, -100.0)


def test_a_weight_of_the_wrong_length_is_a_one_line_error() -> None:
    task = TASKS["mo-hopper-v5"]
    with pytest.raises(CtrlbenchError, match="must have 3 entries") as err:
        pareto.expected_utility(FLOOR_POINTS["mo-hopper-v5"], np.asarray(WEIGHTS[2]))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="every preference weight needs 3 entries"):
        TaskSpec(id=task.id, dataset_id=None, env_id=task.env_id, kind="multi-objective", reward_dim=3,
                 preference_weights=WEIGHTS[2], reference_point=task.reference_point)


def test_a_reference_point_not_below_the_front_is_a_one_line_error() -> None:
    front = np.asarray(FLOOR_POINTS["mo-hopper-2obj-v5"])  # (76.1, 45.5) dominates (17.4, 13.9)
    with pytest.raises(CtrlbenchError, match="is not below every point of the front") as err:
        pareto.hypervolume(front, (80.0, 0.0))
    assert "\n" not in str(err.value)


def test_smoke_anchors_reproduce_the_stored_floors_and_reference_scores() -> None:
    task = TASKS["smoke-mo-v0"]
    a = measure(task)
    np.testing.assert_allclose([a.zero, a.random], FLOOR_POINTS["smoke-mo-v0"], atol=1e-3)
    assert a.utility_floor == pytest.approx(task.ref_min_score, abs=1e-3)
    assert a.anchor_eum == pytest.approx(task.ref_max_score, abs=1e-3)
    assert a.hv_floor == pytest.approx(pareto.hypervolume(FLOOR_POINTS["smoke-mo-v0"], task.reference_point))
    assert a.zero[1] == 0.0 and a.random[1] < 0  # standing still spends no energy
    assert a.expert is not None and a.expert[0] > a.zero[0]  # the swing-up buys upright with torque
    assert set(EXPERTS) <= set(TASKS)


def test_smoke_task_runs_the_multi_objective_protocol() -> None:
    task = TASKS["smoke-mo-v0"]
    protocol = protocol_for(task, task.ref_min_score, task.ref_max_score)

    def policy(obs: np.ndarray, w: np.ndarray | None) -> np.ndarray:  # weight on upright: swing up
        return swing_up_controller(obs) * (w[0] > 0.5)

    result = protocol.evaluate(policy, episode_seeds(0, FINAL_STREAM, 2))
    metrics = protocol.metrics(result)
    assert result.returns.shape == (11, 2, 2) and metrics["points_below_reference"] == 0
    assert metrics["cardinality"] == 2 and metrics["hypervolume"] > 0
    assert protocol.summary(result)["score_mean"] > 0  # better than the trivial floor
