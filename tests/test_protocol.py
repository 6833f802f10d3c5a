"""The scoring protocol: seeded evaluation (the same episodes for every algorithm, independent of batching), the
normalized score, and what each task kind adds to it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from algorithms.core.errors import CtrlbenchError
from tasks.protocol import (
    CURVE_STREAM,
    FINAL_STREAM,
    MultiObjectiveProtocol,
    SafeProtocol,
    ScoringProtocol,
    SimToRealProtocol,
    episode_seeds,
    evaluate,
    normalized_cost,
    protocol_for,
)
from tasks.registry import get_task
from tasks.smoke import swing_up_controller
from tasks.spec import TaskSpec


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


def controller(obs: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    return swing_up_controller(obs)


def test_discounted_returns_weight_step_t_by_gamma_to_the_t() -> None:
    class OnesEnv(gym.Wrapper):  # reward 1 every step, 200 steps
        def step(self, action):
            obs, _, term, trunc, info = self.env.step(action)
            return obs, 1.0, term, trunc, info

    result = evaluate(swing_up_controller, lambda: OnesEnv(make_env()), episode_seeds(0, 0, 1), discount=0.9)
    np.testing.assert_allclose(result.returns, [(1 - 0.9**200) / (1 - 0.9)])


def test_the_score_is_the_normalized_mean_return() -> None:
    protocol = ScoringProtocol(TaskSpec(id="t", dataset_id=None, env_id="Pendulum-v1"), ref_min=-1500.0, ref_max=0.0)
    result = protocol.evaluate(controller, episode_seeds(0, FINAL_STREAM, 3))
    summary = protocol.summary(result)
    assert summary["score_mean"] == pytest.approx(100 * (result.returns.mean() + 1500) / 1500)
    assert summary["length_mean"] == 200 and protocol.metrics(result) == {"kind": "offline"}


def test_each_kind_has_its_protocol() -> None:
    kinds = {"smoke-v0": ScoringProtocol, "smoke-safe-v0": SafeProtocol, "smoke-sim-to-real-v0": SimToRealProtocol,
             "smoke-finetune-v0": ScoringProtocol}
    for task_id, cls in kinds.items():
        assert type(protocol_for(get_task(task_id), 0.0, 1.0)) is cls


def test_sim_to_real_is_scored_on_the_real_env_never_the_simulator() -> None:
    task = get_task("smoke-sim-to-real-v0")
    assert task.make_train_env().unwrapped.g == 20.0 and task.make_env().unwrapped.g == 10.0
    protocol = protocol_for(task, -1500.0, 0.0)
    seeds = episode_seeds(0, FINAL_STREAM, 2)
    real = evaluate(swing_up_controller, make_env, seeds)
    np.testing.assert_array_equal(protocol.evaluate(controller, seeds).returns, real.returns)
    assert protocol.metrics(real) == {"kind": "sim-to-real", "eval_env": "Pendulum-v1", "train_env": "Pendulum-v1",
                                      "gap": "gravity x2 (g = 20)"}


def test_safe_protocol_reports_the_cost_against_the_budget() -> None:
    task = get_task("smoke-safe-v0")  # cost 1 a step above 4 rad/s; a swing-up passes that speed
    protocol = protocol_for(task, -1500.0, 0.0)
    result = protocol.evaluate(controller, episode_seeds(0, FINAL_STREAM, 4))
    summary, metrics = protocol.summary(result), protocol.metrics(result)
    assert result.costs.min() > 0
    assert summary["cost_mean"] == pytest.approx(result.costs.mean())
    assert summary["cost_norm"] == pytest.approx(result.costs.mean() / 20.0)
    assert summary["safe"] == (result.costs.mean() <= 20.0)
    assert metrics["kind"] == "safe" and metrics["cost_limit"] == 20.0 and metrics["costs"] == result.costs.tolist()
    seeds = episode_seeds(0, FINAL_STREAM, 4)
    swinging = protocol.summary(protocol.evaluate(lambda obs, w: np.zeros((len(obs), 1), np.float32), seeds))
    damped = protocol.summary(protocol.evaluate(lambda obs, w: np.clip(-2 * obs[:, 2:], -2, 2), seeds))
    assert swinging["cost_mean"] > 20.0 and not swinging["safe"]  # a free swing passes 4 rad/s often
    assert damped["cost_mean"] <= 20.0 and damped["safe"]


@pytest.mark.parametrize(("cost", "kappa", "expected"), [(40.0, 40.0, 1.0), (0.0, 0.0, 1.0), (1.0, 0.0, 2.0),
                                                          (10.0, 20.0, 0.5)])
def test_normalized_cost_is_dsrls(cost: float, kappa: float, expected: float) -> None:
    assert normalized_cost(cost, kappa) == pytest.approx(expected)


def test_normalized_cost_refuses_a_negative_budget() -> None:
    with pytest.raises(CtrlbenchError, match="kappa must be a finite number >= 0"):
        normalized_cost(1.0, -1.0)


class TwoObjectivePendulum(gym.Wrapper):
    """Pendulum's reward split in two: the angle/speed part and the torque part (their sum is the reward)."""

    def step(self, action):
        torque = float(np.clip(action, -2, 2)[0])
        obs, reward, term, trunc, info = self.env.step(action)
        energy = -0.001 * torque**2
        return obs, np.array([reward - energy, energy]), term, trunc, info


def mo_task(weights: tuple[tuple[float, ...], ...] = ((1.0, 0.0), (0.5, 0.5), (0.0, 1.0))) -> TaskSpec:
    if "test/TwoObjectivePendulum-v0" not in gym.registry:
        gym.register("test/TwoObjectivePendulum-v0", disable_env_checker=True,  # the checker wants scalar rewards
                     entry_point=lambda: TwoObjectivePendulum(gym.make("Pendulum-v1")))
    return TaskSpec(id="mo", dataset_id=None, env_id="test/TwoObjectivePendulum-v0", kind="multi-objective",
                    reward_dim=2, preference_weights=weights, eval_discount=0.99, ref_min_score=-1000.0,
                    ref_max_score=0.0, reference_point=(-2000.0, -100.0))


def test_multi_objective_protocol_evaluates_every_weight_on_the_same_episodes() -> None:
    seen: list[tuple[float, ...]] = []

    def policy(obs: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
        assert weight is not None
        seen.append(tuple(weight))
        return swing_up_controller(obs) * weight[0]  # weight on the torque objective: apply less torque

    protocol = protocol_for(mo_task(), -1000.0, 0.0)
    assert isinstance(protocol, MultiObjectiveProtocol)
    seeds = episode_seeds(0, FINAL_STREAM, 2)
    result = protocol.evaluate(policy, seeds)
    assert result.returns.shape == (3, 2, 2) and set(seen) == {(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)}
    assert result.returns[2, :, 1].tolist() == [0.0, 0.0]  # weight (0, 1) applies no torque: no energy spent
    utility = np.einsum("wd,wnd->wn", protocol.weights, result.returns).mean(axis=0)
    np.testing.assert_allclose(protocol.episode_returns(result), utility)
    metrics = protocol.metrics(result)
    assert metrics["vector_returns"] == result.returns.mean(axis=1).tolist()
    points = result.returns.mean(axis=1)
    eum = np.mean([max(w @ p for p in points) for w in protocol.weights])  # the front's best point per weight
    assert metrics["expected_utility"] == pytest.approx(eum) and metrics["eval_discount"] == 0.99
    assert metrics["cardinality"] == len(metrics["front"]) <= 3
    assert metrics["hypervolume"] > 0 and metrics["points_below_reference"] == 0


def test_a_weight_grid_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="every preference weight needs 2 entries"):
        mo_task(((1.0, 0.0), (0.2, 0.3, 0.5)))
