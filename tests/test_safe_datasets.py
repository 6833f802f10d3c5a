"""Cost-labelled datasets: costs written into Minari and read back, the velocity recipe on tiny sizes with stand-in
policies, the smoke cost dataset, and the offline-safe task's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from algorithms.bc import keep_safe_episodes
from algorithms.core.errors import CtrlbenchError
from tasks import safe_datasets, smoke, velocity_cost
from tasks.datasets import Episode, load_transitions, read_metadata
from tasks.envs import pendulum_speed_cost
from tasks.registry import get_task
from tests.test_factory import fake_policies


def test_velocity_dataset_stores_costs_and_the_reward_cost_ranges(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    # random-init stand-in policies rarely pass hopper's 0.7402: a low threshold makes both labels occur
    monkeypatch.setitem(velocity_cost.ROBOTS, "hopper", velocity_cost.ROBOTS["hopper"]._replace(threshold=0.05))
    did = safe_datasets.build("hopper", source_steps=60, policies_dir=fake_policies(tmp_path / "policies"), version=0)
    assert did == "ctrlbench/hopper/velocity-v0"
    loaded = load_transitions(did)
    data, meta = loaded.transitions, loaded.metadata
    n_sources = 2 + len(safe_datasets.RECIPES[0].action_scales)  # the last 2 of 3 snapshots, expert-c
    assert len(data) == 60 * n_sources and data.costs is not None and set(np.unique(data.costs)) <= {0.0, 1.0}
    returns, costs = data.episode_returns(), data.episode_costs()
    assert meta["ref_min_score"] == pytest.approx(returns.min())
    assert meta["ref_max_score"] == pytest.approx(returns.max())
    assert meta["cost_min_score"] == costs.min() and meta["cost_max_score"] == costs.max()
    recipe = meta["ctrlbench_recipe"]["sources"]
    assert list(recipe)[:2] == ["replay-150", "replay-200"] and recipe["expert-0.5"]["action_scale"] == 0.5
    assert sum(r["episodes"] for r in recipe.values()) == len(returns)
    assert 0 < data.costs.sum() < len(data)
    # v0's metadata is what it was before versions existed: its records' run ids hash it
    assert set(meta["ctrlbench_recipe"]) == {"builder", "robot", "seed", "source_steps", "sources"}
    assert set(recipe["replay-150"]) == {"policy", "policy_sha256", "episodes", "reward_mean", "cost_mean",
                                         "cost_min", "cost_max"}
    assert set(recipe["expert-0.5"]) == set(recipe["replay-150"]) | {"action_scale", "policy_env_steps"}
    with pytest.raises(CtrlbenchError, match="already exists"):
        safe_datasets.build("hopper", source_steps=30, policies_dir=tmp_path / "policies", version=0)


def test_v1_keeps_only_the_episodes_within_dsrls_cost_range(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setitem(velocity_cost.ROBOTS, "hopper", velocity_cost.ROBOTS["hopper"]._replace(threshold=0.05))
    # stand-in policies pay 0-15 an episode here: a cap of 1.5 keeps some episodes of a source and drops others
    monkeypatch.setitem(safe_datasets.DSRL_MAX_EPISODE_COST, "hopper", 1.5)
    policies = fake_policies(tmp_path / "policies")
    did = safe_datasets.build("hopper", source_steps=60, policies_dir=policies)  # the latest version
    assert did == "ctrlbench/hopper/velocity-v1" and safe_datasets.LATEST == 1
    loaded = load_transitions(did)
    costs, meta = loaded.transitions.episode_costs(), loaded.metadata
    recipe = meta["ctrlbench_recipe"]
    assert recipe["version"] == 1 and recipe["max_episode_cost"] == 1.5
    assert costs.max() <= 1.5 and meta["cost_max_score"] == costs.max()
    kept = sum(r["episodes"] for r in recipe["sources"].values())
    rolled = sum(r["episodes_rolled"] for r in recipe["sources"].values())
    assert kept == len(costs) < rolled  # some episodes were over the cap and left out
    assert list(recipe["sources"])[2:] == [f"expert-{c:g}" for c in safe_datasets.RECIPES[1].action_scales]
    monkeypatch.setitem(safe_datasets.DSRL_MAX_EPISODE_COST, "hopper", -1.0)
    with pytest.raises(CtrlbenchError, match="nothing to write"):
        safe_datasets.build("hopper", source_steps=60, policies_dir=policies, overwrite=True)


def test_the_cap_judges_whole_episodes_only() -> None:
    def episode(length: int, terminated: bool) -> Episode:
        flags = np.zeros(length, dtype=bool)
        term, trunc = flags.copy(), flags.copy()
        (term if terminated else trunc)[-1] = True
        return Episode(np.zeros((length + 1, 2)), np.zeros((length, 1)), np.zeros(length), term, trunc)

    assert safe_datasets.whole(episode(1000, terminated=False), 1000)  # the time limit
    assert safe_datasets.whole(episode(40, terminated=True), 1000)  # fell
    assert not safe_datasets.whole(episode(400, terminated=False), 1000)  # cut by `collect` to fit its count


def test_velocity_versions_name_their_datasets_and_builds(tmp_path: Path) -> None:
    assert safe_datasets.velocity_dataset_id("walker2d", 0) == "ctrlbench/walker2d/velocity-v0"
    assert safe_datasets.version_of_kind("velocity") == 1 and safe_datasets.version_of_kind("velocity-v0") == 0
    assert safe_datasets.version_of_kind("velocity-v1") == 1
    with pytest.raises(CtrlbenchError, match="no behavior policies"):  # a robot without policies: one line
        safe_datasets.build("foo", policies_dir=tmp_path)
    for bad in (lambda: safe_datasets.velocity_dataset_id("hopper", 9), lambda: safe_datasets.version_of_kind("vel")):
        with pytest.raises(CtrlbenchError, match="unknown velocity dataset"):
            bad()


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
    assert task.build_command == "ctrlbench datasets build halfcheetah --kinds velocity-v0"
    latest = get_task("offline-halfcheetah-velocity-k40-v1")
    assert latest.dataset_id == "ctrlbench/halfcheetah/velocity-v1"
    assert latest.build_command == "ctrlbench datasets build halfcheetah --kinds velocity"
    assert get_task("offline-walker2d-velocity-k25-v0").cost_limit == 25.0
    assert get_task("offline-walker2d-velocity-k25-v1").cost_limit == 25.0
    with pytest.raises(CtrlbenchError, match="unknown velocity dataset version 9"):
        get_task("offline-hopper-velocity-k40-v9")
    with pytest.raises(CtrlbenchError, match="no cost-labelled dataset for 'ant'"):
        get_task("offline-ant-velocity-k40-v0")
    with pytest.raises(CtrlbenchError, match="cost budget"):
        get_task("offline-hopper-velocity-k-5-v0")

