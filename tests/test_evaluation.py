"""Seeded evaluation: the same episodes for every algorithm, independent of batching."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from runners.evaluation import CURVE_STREAM, FINAL_STREAM, episode_seeds, evaluate
from tasks.smoke import swing_up_controller


def make_env() -> gym.Env:
    return gym.make("Pendulum-v1")


def test_same_seeds_same_returns_regardless_of_parallelism() -> None:
    seeds = episode_seeds(0, FINAL_STREAM, 6)
    a = evaluate(swing_up_controller, make_env, seeds, n_parallel=1)
    b = evaluate(swing_up_controller, make_env, seeds, n_parallel=4)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert a.lengths.tolist() == [200] * 6


def test_streams_and_run_seeds_give_different_episodes() -> None:
    assert episode_seeds(0, FINAL_STREAM, 5) != episode_seeds(1, FINAL_STREAM, 5)
    assert episode_seeds(0, FINAL_STREAM, 5) != episode_seeds(0, CURVE_STREAM, 5)
    assert episode_seeds(0, FINAL_STREAM, 5) == episode_seeds(0, FINAL_STREAM, 10)[:5]


def test_action_chunks_are_executed_in_full() -> None:
    calls = []

    def chunked(obs: np.ndarray) -> np.ndarray:
        calls.append(len(obs))
        return np.zeros((len(obs), 4, 1), np.float32)  # 4 actions per decision

    result = evaluate(chunked, make_env, episode_seeds(0, FINAL_STREAM, 2), n_parallel=2)
    assert result.lengths.tolist() == [200, 200]
    assert len(calls) == 50  # 200 steps / 4 actions per chunk


def test_costs_are_summed_from_info() -> None:
    class CostEnv(gym.Wrapper):
        def step(self, action):
            obs, r, term, trunc, info = self.env.step(action)
            return obs, r, term, trunc, {**info, "cost": 0.5}

    result = evaluate(swing_up_controller, lambda: CostEnv(make_env()), episode_seeds(0, 0, 2))
    np.testing.assert_allclose(result.costs, [100.0, 100.0])
