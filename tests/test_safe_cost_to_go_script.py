"""scripts/safe_cost_to_go.py: the cost-to-go sums and the braking probe measure what they say."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import safe_cost_to_go

from tasks.velocity_cost import ROBOTS


def test_discounted_to_go_on_hand_values() -> None:
    out = safe_cost_to_go.discounted_to_go(np.array([1.0, 0.0, 1.0]), 0.5)
    np.testing.assert_allclose(out, [1.0 + 0.25, 0.5, 1.0])


@pytest.fixture(scope="module")
def cheetah() -> gym.Env:
    env = gym.make(ROBOTS["halfcheetah"].v4)
    env.reset(seed=0)
    return env


def state_obs(qpos_without_x: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    return np.concatenate([qpos_without_x, qvel])


def test_braking_cost_is_zero_at_rest_and_positive_when_fast(cheetah: gym.Env) -> None:
    task = ROBOTS["halfcheetah"]
    base = cheetah.unwrapped
    rest = state_obs(base.init_qpos[1:], np.zeros(base.model.nv))
    zero = np.zeros(cheetah.action_space.shape[0])
    assert safe_cost_to_go.braking_cost(cheetah, rest, zero, 20, 0.99, task.rule, task.threshold) == 0.0

    qvel = np.zeros(base.model.nv)
    qvel[0] = 3.0 * task.threshold  # sliding forward at three times the threshold: it cannot stop in one step
    fast = state_obs(base.init_qpos[1:], qvel)
    cost = safe_cost_to_go.braking_cost(cheetah, fast, zero, 20, 0.99, task.rule, task.threshold)
    assert 1.0 <= cost <= sum(0.99**t for t in range(20))
