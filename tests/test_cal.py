"""CAL: the UCB of the cost ensemble, the rectification and the augmented-Lagrangian actor term on hand values, the
dual step on log lambda through a gradient step, the replay ratio and target period, a tiny run on the smoke env."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algorithms.cal import (
    CAL,
    CALConfig,
    augmented_lagrangian_term,
    constraint_term,
    cost_ensemble,
    rectification,
    ucb,
)
from algorithms.core.lagrangian import discounted_budget
from algorithms.core.nets import VectorizedLinear
from algorithms.core.registry import get_algorithm
from algorithms.core.threads import torch_threads
from tests.algo_helpers import io_round_trip
from tests.test_sac_lag import constant_ensemble, smoke_context

TINY = {"hidden": (16, 16), "batch_size": 8, "buffer_size": 500}


def set_constant(q, values) -> None:
    """Member i of the (SiLU) ensemble outputs values[i] everywhere: SiLU(0) = 0, so only the last bias is left."""
    with torch.no_grad():
        for p in q.parameters():
            p.zero_()
        q.net[-1].bias[:, 0, 0] = torch.tensor(values, dtype=torch.float32)


# --- UCB --------------------------------------------------------------------------------------------------------------

def test_ucb_on_a_hand_made_ensemble() -> None:
    qc = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])  # E = 3, B = 2; means [3, 2]; unbiased stds [2, 0]
    torch.testing.assert_close(ucb(qc, 0.5), torch.tensor([3.0 + 0.5 * 2.0, 2.0]))
    torch.testing.assert_close(ucb(qc, 0.0), torch.tensor([3.0, 2.0]))
    two = torch.tensor([[1.0], [4.0]])  # std with Bessel's correction (torch.std_mean): |4 - 1| / sqrt(2)
    torch.testing.assert_close(ucb(two, 1.0), torch.tensor([2.5 + 3.0 / math.sqrt(2.0)]))
    torch.testing.assert_close(ucb(torch.tensor([[7.0, -1.0]]), 0.5), torch.tensor([7.0, -1.0]))  # E = 1: no std


# --- the augmented-Lagrangian actor term ------------------------------------------------------------------------------

@pytest.mark.parametrize("ucb_data, c, lam", [
    ([3.0, 5.0], 10.0, 0.5),  # J_c = 4 > d = 2: multiplier lambda + c (J_c - d) = 20.5
    ([1.0, 1.0], 10.0, 0.5),  # J_c = 1 < d, c (d - J_c) = 10 >= lambda: multiplier 0
    ([1.0, 1.0], 0.1, 0.5),  # J_c = 1 < d, c (d - J_c) = 0.1 < lambda: multiplier 0.4
    ([2.0, 2.0], 10.0, 0.7),  # on the budget: the plain Lagrangian's lambda
])
def test_alm_term_on_hand_values(ucb_data: list[float], c: float, lam: float) -> None:
    budget = 2.0
    data, lam_t = torch.tensor(ucb_data), torch.tensor(lam)
    rect = rectification(data, budget, c, lam_t)
    assert rect.item() == pytest.approx(min(c * (budget - sum(ucb_data) / 2), lam))  # cal.py:155-156
    # the multiplier lambda - rect = max(0, lambda + c (J_c - d)) = psi'(J_c - d), psi the augmented Lagrangian's
    # term (c/2) max(0, lambda/c + g)^2 - lambda^2/(2c)
    multiplier = max(0.0, lam + c * (sum(ucb_data) / 2 - budget))
    assert (lam_t - rect).item() == pytest.approx(multiplier)
    ucb_pi = torch.tensor([1.0, 3.0], requires_grad=True)
    term = augmented_lagrangian_term(ucb_pi, lam_t, rect)
    assert term.item() == pytest.approx(multiplier * 2.0)  # mean_B[(lambda - rect) Q_c^UCB(s, a~)]
    term.backward()
    torch.testing.assert_close(ucb_pi.grad, torch.full((2,), multiplier / 2))


def test_constraint_term_takes_the_ucb_at_the_policy_actions() -> None:
    q = constant_ensemble([1.0, 3.0])  # UCB = 2 + k sqrt(2)
    obs, action = torch.zeros(4, 2), torch.zeros(4, 1)
    term, metrics = constraint_term(q, 0.5, torch.tensor(1.5), torch.tensor(0.5))(obs, action)
    assert term.item() == pytest.approx((1.5 - 0.5) * (2.0 + 0.5 * math.sqrt(2.0)), rel=1e-6)
    assert metrics["cost_multiplier"].item() == pytest.approx(1.0)


# --- the cost ensemble ------------------------------------------------------------------------------------------------

def test_cost_ensemble_is_silu_with_cals_init() -> None:
    torch.manual_seed(0)
    q = cost_ensemble(11, 3, (256, 256), n=8)
    assert q.n == 8 and not q.relu and isinstance(q.net[1], torch.nn.SiLU)
    layers = [m for m in q.net if isinstance(m, VectorizedLinear)]
    for layer in layers:
        fan_in = layer.weight.shape[1]
        assert layer.bias.abs().max() == 0
        assert layer.weight.std().item() == pytest.approx(1 / (2 * math.sqrt(fan_in)), rel=0.1)
    out = q(torch.randn(5, 11), torch.randn(5, 3))
    assert out.shape == (8, 5) and out.std(dim=0).min() > 0  # the members differ


# --- CAL's update -----------------------------------------------------------------------------------------------------

def warmed_up(**overrides) -> CAL:
    cfg = CALConfig(**{**TINY, "learning_starts": 8, "ensemble_size": 3, "utd_ratio": 1, **overrides})
    algo = CAL(cfg, smoke_context())
    for _ in range(7):  # 7 transitions stored, no gradient step yet: the next update() takes the first ones
        algo.update()
    return algo


@pytest.mark.parametrize("qc_value, grows", [(50.0, True), (0.0, False)])
def test_dual_step_on_log_lambda_follows_the_ucb_cost(qc_value: float, grows: bool) -> None:
    with torch_threads(1):
        torch.manual_seed(0)
        algo = warmed_up()
        set_constant(algo.cost.q, [qc_value] * 3)
        before = algo.lagrange.value.item()
        assert before == pytest.approx(0.6931)
        metrics = algo.gradient_step(algo.buffer.sample(8), update_targets=True)
    after = algo.lagrange.value.item()
    assert metrics["cost_estimate"].item() == pytest.approx(qc_value)  # the UCB on the batch's own actions
    assert (after > before) == grows and after != before and after > 0
    # rect = min(c (d - J_c), lambda) with the lambda the step began with
    assert metrics["rect"].item() == pytest.approx(min(10.0 * (algo.budget - qc_value), before), rel=1e-5)


@pytest.mark.parametrize("utd, period, polyak_steps", [(3, 2, 2), (4, 2, 2), (3, 1, 3), (1, 2, 1)])
def test_replay_ratio_and_target_period(utd: int, period: int, polyak_steps: int) -> None:
    with torch_threads(1):
        torch.manual_seed(0)
        algo = warmed_up(utd_ratio=utd, target_update_period=period)
        calls = {"sac": 0, "cost": 0, "grad": 0}
        sac_update, cost_update, grad_step = algo.sac.update_target, algo.cost.update_target, algo.gradient_step

        def count(key, fn):
            def wrapped(*args, **kwargs):
                calls[key] += 1
                return fn(*args, **kwargs)
            return wrapped

        algo.sac.update_target = count("sac", sac_update)
        algo.cost.update_target = count("cost", cost_update)
        algo.gradient_step = count("grad", grad_step)
        algo.update()
    assert calls == {"sac": polyak_steps, "cost": polyak_steps, "grad": utd}


def test_config_validation_defaults_and_registration() -> None:
    for bad in ({"lambda_init": 0.0}, {"utd_ratio": 0}, {"ensemble_size": 0}, {"k": -1.0}, {"c": -1.0},
                {"cost_discount": 1.5}, {"target_update_period": 0}):
        with pytest.raises(ValueError):
            CALConfig(**bad)
    cfg = CALConfig()
    assert (cfg.k, cfg.c, cfg.ensemble_size, cfg.utd_ratio, cfg.batch_size) == (0.5, 10.0, 8, 10, 12)
    assert (cfg.lambda_init, cfg.lambda_lr, cfg.init_log_alpha, cfg.target_update_period) == (0.6931, 3e-4, 0.0, 2)
    assert get_algorithm("cal") is CAL and CAL.kinds == ("safe",)


def test_tiny_run_stores_costs_trains_and_round_trips() -> None:
    with torch_threads(1):
        torch.manual_seed(0)
        cfg = CALConfig(**TINY, learning_starts=20, n_envs=2, ensemble_size=4, utd_ratio=2)
        algo = CAL(cfg, smoke_context())
        assert algo.budget == pytest.approx(discounted_budget(20.0, 0.99, 200))
        assert "critic_loss" not in algo.update()
        for _ in range(39):
            metrics = algo.update()
    assert algo.stepper.env_steps == 80 and len(algo.buffer) == 80
    for k in ("critic_loss", "actor_loss", "alpha_loss", "cost_critic_loss", "lambda_loss", "lambda", "qc_ucb_pi",
              "cost_multiplier", "rect", "cost_estimate", "train_cost_total"):
        assert math.isfinite(float(metrics[k])), k
    stored = algo.buffer.costs[:len(algo.buffer)]
    assert stored.sum().item() == algo.stepper.total_cost > 0
    assert algo.lagrange.value.item() > 0
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    a = algo.act(obs)
    assert a.shape == (5, 1) and a.dtype == np.float32 and np.all(np.abs(a) <= 2.0)
    np.testing.assert_array_equal(a, algo.act(obs))
    fresh = CAL(cfg, smoke_context())
    fresh.load_state_dict(io_round_trip(algo.state_dict()))
    np.testing.assert_array_equal(fresh.act(obs), a)
    assert fresh.lagrange.value.item() == algo.lagrange.value.item()
    for x, y in zip(fresh.cost.target.parameters(), algo.cost.target.parameters()):
        torch.testing.assert_close(x, y)
    with torch_threads(1):
        assert math.isfinite(float(fresh.update()["cost_critic_loss"]))
