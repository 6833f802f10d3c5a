"""Tasks and datasets: Minari round trip, terminals vs truncations, reference scores, errors."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

from algorithms.core.errors import CtrlbenchError
from tasks import smoke
from tasks.datasets import Episode, dataset_exists, load_transitions, read_metadata, write_minari_dataset
from tasks.registry import get_task


def _episode(length: int, terminated: bool, start: float) -> Episode:
    obs = (start + np.arange(length + 1, dtype=np.float32))[:, None].repeat(3, axis=1)
    terms = np.zeros(length, bool)
    truncs = np.zeros(length, bool)
    (terms if terminated else truncs)[-1] = True
    return Episode(obs, np.full((length, 1), 0.5, np.float32), np.ones(length, np.float32), terms, truncs, seed=1)


def test_terminals_count_only_true_terminations(minari_root, monkeypatch) -> None:
    env = gym.make("Pendulum-v1")
    episodes = [_episode(4, terminated=True, start=0.0), _episode(3, terminated=False, start=100.0)]
    write_minari_dataset("test/toy/terminals-v0", episodes, env, eval_env="Pendulum-v1", ref_min_score=0.0,
                         ref_max_score=1.0, algorithm_name="hand", description="toy", extra_metadata={})
    data = load_transitions("test/toy/terminals-v0").transitions
    assert len(data) == 7
    np.testing.assert_array_equal(data.terminals, [0, 0, 0, 1, 0, 0, 0])  # the truncation is not terminal
    np.testing.assert_array_equal(data.episode_ids, [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(data.next_observations[:, 0], [1, 2, 3, 4, 101, 102, 103])
    np.testing.assert_array_equal(data.observations[:, 0], [0, 1, 2, 3, 100, 101, 102])


def test_write_refuses_to_overwrite(minari_root) -> None:
    env = gym.make("Pendulum-v1")
    args = dict(eval_env="Pendulum-v1", ref_min_score=0.0, ref_max_score=1.0, algorithm_name="hand",
                description="toy", extra_metadata={})
    write_minari_dataset("test/toy/once-v0", [_episode(2, True, 0.0)], env, **args)
    with pytest.raises(CtrlbenchError, match="already exists"):
        write_minari_dataset("test/toy/once-v0", [_episode(2, True, 0.0)], env, **args)
    assert not any(p.name.startswith(".staging") for p in minari_root.iterdir())


def test_smoke_dataset_metadata_and_reference_scores(minari_root) -> None:
    meta = read_metadata(smoke.DATASET_ID)
    assert meta["total_episodes"] == smoke.N_EPISODES and meta["total_steps"] == 200 * smoke.N_EPISODES
    assert meta["ref_min_score"] < -900 < -300 < meta["ref_max_score"]
    assert meta["ctrlbench_recipe"]["builder"] == "tasks.smoke"
    # rounded so that the dataset's identity does not depend on the CPU it was built on (see mean_return)
    for key in ("ref_min_score", "ref_max_score"):
        assert meta[key] == round(meta[key], smoke.REFERENCE_DECIMALS)
    data = load_transitions(smoke.DATASET_ID).transitions
    assert data.terminals.sum() == 0  # Pendulum only truncates
    returns = data.episode_returns()
    assert returns.min() < meta["ref_min_score"] / 2 and returns.max() > meta["ref_max_score"] * 1.5


def test_smoke_controller_beats_random() -> None:
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=0)
    total = 0.0
    for _ in range(200):
        obs, r, *_ = env.step(smoke.swing_up_controller(obs))
        total += r
    assert total > -400


def test_missing_dataset_names_the_build_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert not dataset_exists(smoke.DATASET_ID)
    with pytest.raises(CtrlbenchError, match=r"not found under .*ctrlbench datasets build smoke"):
        load_transitions(smoke.DATASET_ID, get_task("smoke-v0").build_command)


def test_corrupt_dataset_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    data_dir = tmp_path / "test" / "toy" / "corrupt-v0" / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "metadata.json").write_text('{"dataset_id": "test/toy/corrupt-v0", "data_format": "hdf5"}')
    (data_dir / "main_data.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(CtrlbenchError, match="cannot be read"):
        load_transitions("test/toy/corrupt-v0", "ctrlbench datasets build toy")


def test_unknown_task_lists_known_ones() -> None:
    with pytest.raises(CtrlbenchError, match=r"unknown task 'nope'; known tasks: .*smoke-v0"):
        get_task("nope")


def test_sim_to_real_tasks_train_in_the_gapped_simulator_and_evaluate_on_the_real_env() -> None:
    task = get_task("halfcheetah-gravity2x-medium-replay-v0")
    assert task.kind == "sim-to-real" and task.dataset_id == "ctrlbench/halfcheetah/medium-replay-v0"
    sim, real = task.make_train_env(), task.make_env()
    assert sim.unwrapped.model.opt.gravity[2] == pytest.approx(-19.62)
    assert real.unwrapped.model.opt.gravity[2] == pytest.approx(-9.81)
    assert task.gap == "gravity x2 (sim)"
    walker = get_task("walker2d-friction0.3x-medium-replay-v0").make_train_env()
    assert walker.unwrapped.model.geom_friction[0, 0] == pytest.approx(0.3 * gym.make("Walker2d-v5").unwrapped
                                                                        .model.geom_friction[0, 0])


def test_a_sim_to_real_task_with_an_unlisted_gap_is_made_on_request() -> None:
    task = get_task("hopper-gravity1.5x-medium-v0")
    assert task.train_env_kwargs == {"real_env_id": "Hopper-v5", "gap": "gravity1.5x"}
    assert task.make_train_env().unwrapped.model.opt.gravity[2] == pytest.approx(-1.5 * 9.81)


@pytest.mark.parametrize(("task_id", "message"), [
    ("halfcheetah-gravity0x-medium-v0", "task halfcheetah-gravity0x-medium-v0: gravity factor must be > 0"),
    ("halfcheetah-gravity-2x-medium-v0", "gravity factor must be > 0, got -2"),
    ("walker2d-wind2x-medium-replay-v0", "unknown dynamics gap 'wind2x'"),
    ("hopper-jointnoise-1-medium-v0", "joint noise sigma must be >= 0"),
])
def test_bad_sim_to_real_parameters_are_one_line_errors(task_id: str, message: str) -> None:
    with pytest.raises(CtrlbenchError, match=re.escape(message)) as err:
        get_task(task_id)
    assert "\n" not in str(err.value)


def test_velocity_tasks_are_safe_tasks_with_the_budget_in_their_id() -> None:
    task = get_task("halfcheetah-velocity-k40-v0")
    assert task.kind == "safe" and task.cost_limit == 40.0 and task.dataset_id is None
    assert (task.ref_min_score, task.ref_max_score) == (5.75, 2806.93)  # DSRL's normalization constants
    env = task.make_env()
    assert env.observation_space.shape == (17,) and env.spec.max_episode_steps == 1000
    env.reset(seed=0)
    env.unwrapped.set_state(env.unwrapped.init_qpos, env.unwrapped.init_qvel + np.eye(9)[0] * 10.0)  # fast forward
    *_, info = env.step(np.zeros(6, np.float32))
    assert info["cost"] == 1.0 and info["velocity"] > 3.2096
    assert get_task("swimmer-velocity-k25-v0").cost_limit == 25.0  # any budget on request


@pytest.mark.parametrize(("task_id", "message"), [
    ("hopper-velocity-k-5-v0", "task hopper-velocity-k-5-v0: cost budget kappa must be a finite number >= 0"),
    ("robot-velocity-k40-v0", "unknown velocity robot 'robot'; known: hopper, halfcheetah, walker2d, ant, swimmer"),
    ("hopper-velocity-kmany-v0", "cannot read the cost budget 'many' as a number"),
])
def test_bad_velocity_task_parameters_are_one_line_errors(task_id: str, message: str) -> None:
    with pytest.raises(CtrlbenchError, match=re.escape(message)) as err:
        get_task(task_id)
    assert "\n" not in str(err.value)
