"""Cost-labelled datasets: costs written into Minari and read back, the velocity recipe on tiny sizes with stand-in
policies, the smoke cost dataset, and the offline-safe task's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from algorithms.bc import keep_safe_episodes
from algorithms.core.errors import CtrlbenchError
from tasks import safe_datasets, smoke, velocity_cost
from tasks.datasets import load_transitions, read_metadata
from tasks.envs import pendulum_speed_cost
from tasks.registry import get_task
from tests.test_factory import fake_policies


def test_velocity_dataset_stores_costs_and_the_reward_cost_ranges(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    # random-init stand-in policies rarely pass hopper's 0.7402: a low threshold makes both labels occur
    monkeypatch.setitem(velocity_cost.ROBOTS, "hopper", velocity_cost.ROBOTS["hopper"]._replace(threshold=0.05))
    did = safe_datasets.build("hopper", source_steps=60, policies_dir=fake_policies(tmp_path / "policies"))
    loaded = load_transitions(did)
    data, meta = loaded.transitions, loaded.metadata
    n_sources = 2 + len(safe_datasets.ACTION_SCALES)  # the last 2 of 3 snapshots, expert-c
    assert len(data) == 60 * n_sources and data.costs is not None and set(np.unique(data.costs)) <= {0.0, 1.0}
    returns, costs = data.episode_returns(), data.episode_costs()
    assert meta["ref_min_score"] == pytest.approx(returns.min())
    assert meta["ref_max_score"] == pytest.approx(returns.max())
    assert meta["cost_min_score"] == costs.min() and meta["cost_max_score"] == costs.max()
    recipe = meta["ctrlbench_recipe"]["sources"]
    assert list(recipe)[:2] == ["replay-150", "replay-200"] and recipe["expert-0.5"]["action_scale"] == 0.5
    assert sum(r["episodes"] for r in recipe.values()) == len(returns)
    assert 0 < data.costs.sum() < len(data)
    with pytest.raises(CtrlbenchError, match="already exists"):
        safe_datasets.build("hopper", source_steps=30, policies_dir=tmp_path / "policies")


def test_scaled_policy_multiplies_the_action() -> None:
    policy = lambda obs, rngs: np.stack([r.uniform(-1, 1, 2) for r in rngs]).astype(np.float32)  # noqa: E731
    obs = np.zeros((5, 3), np.float32)
    full = policy(obs, [np.random.default_rng(i) for i in range(5)])
    half = safe_datasets.scaled(policy, 0.5)(obs, [np.random.default_rng(i) for i in range(5)])
    np.testing.assert_allclose(half, 0.5 * full, rtol=1e-6)


def test_smoke_cost_dataset_labels_each_step_from_its_next_state(minari_root: Path) -> None:
    data = load_transitions(smoke.COST_DATASET_ID).transitions
    plain = load_transitions(smoke.DATASET_ID).transitions
    np.testing.assert_array_equal(data.observations, plain.observations)
    np.testing.assert_array_equal(data.costs, pendulum_speed_cost(data.next_observations))
    assert 0 < data.costs.sum() < len(data)
    meta = read_metadata(smoke.COST_DATASET_ID)
    assert meta["cost_max_score"] == data.episode_costs().max()
    kappa = get_task("smoke-offline-safe-v0").cost_limit
    safe = keep_safe_episodes(data, kappa)
    assert 0 < len(safe) < len(data) and safe.episode_costs().max() <= kappa


def test_offline_safe_tasks_name_their_dataset_and_refuse_a_robot_without_one() -> None:
    task = get_task("offline-halfcheetah-velocity-k40-v0")
    assert task.kind == "offline-safe" and task.cost_limit == 40.0
    assert task.dataset_id == "ctrlbench/halfcheetah/velocity-v0" and task.ref_min_score is None
    assert task.build_command == "ctrlbench datasets build halfcheetah --kinds velocity"
    assert get_task("offline-walker2d-velocity-k25-v0").cost_limit == 25.0
    with pytest.raises(CtrlbenchError, match="no cost-labelled dataset for 'ant'"):
        get_task("offline-ant-velocity-k40-v0")
    with pytest.raises(CtrlbenchError, match="cost budget"):
        get_task("offline-hopper-velocity-k-5-v0")

