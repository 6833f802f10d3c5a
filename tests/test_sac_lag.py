"""SAC-Lagrangian and the shared safe pieces (algorithms/core/lagrangian.py): the budget conversion, the cost critic's
TD target, the dual step on hand values; the actor term leaves the cost critic alone; a tiny run on the smoke env."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from algorithms.core.contract import AlgoContext
from algorithms.core.data import Batch
from algorithms.core.errors import CtrlbenchError
from algorithms.core.lagrangian import (
    LagrangeMultiplier,
    cost_critic_loss,
    cost_td_target,
    discounted_budget,
    episode_horizon,
)
from algorithms.core.nets import EnsembleQ
from algorithms.core.registry import get_algorithm
from algorithms.core.threads import torch_threads
from algorithms.sac_lag import SACLag, SACLagConfig, SACLagEpCost, lagrangian_term
from tests.algo_helpers import io_round_trip

SAME_STEP = gym.vector.AutoresetMode.SAME_STEP
PENDULUM_COST = "tasks.envs:ctrlbench/PendulumSpeedCost-v1"


def constant_ensemble(values, obs_dim: int = 2, act_dim: int = 1) -> EnsembleQ:
    """An EnsembleQ whose member i outputs values[i] everywhere (all weights zero, last bias = value)."""
    q = EnsembleQ(obs_dim, act_dim, (4,), n=len(values))
    with torch.no_grad():
        for p in q.parameters():
            p.zero_()
        q.net[-1].bias[:, 0, 0] = torch.tensor(values, dtype=torch.float32)
    return q


class StubActor(torch.nn.Module):
    def forward(self, obs, deterministic=False):
        return torch.zeros(obs.shape[0], 1), torch.zeros(obs.shape[0])


def cost_batch() -> Batch:
    return Batch(observations=torch.tensor([[0.0, 1.0], [1.0, -1.0], [2.0, 0.5]]),
                 actions=torch.tensor([[0.5], [-0.5], [0.0]]),
                 rewards=torch.tensor([1.0, -2.0, 0.0]),
                 next_observations=torch.tensor([[0.5, 0.5], [2.0, 0.0], [1.0, 1.0]]),
                 dones=torch.tensor([0.0, 1.0, 0.0]),
                 costs=torch.tensor([1.0, 1.0, 0.0]))


def smoke_context(seed: int = 0, cost_limit: float = 20.0) -> AlgoContext:
    probe = gym.make(PENDULUM_COST)
    ctx = AlgoContext(observation_space=probe.observation_space, action_space=probe.action_space,
                      device=torch.device("cpu"), seed=seed, total_updates=100, cost_limit=cost_limit)
    ctx.make_envs = lambda n: gym.vector.SyncVectorEnv([lambda: gym.make(PENDULUM_COST)] * n,
                                                       autoreset_mode=SAME_STEP)
    return ctx


# --- the budget -------------------------------------------------------------------------------------------------------

def test_budget_conversion_on_hand_values() -> None:
    # velocity tasks: kappa 40, T 1000, gamma 0.99: 40 (1 - 0.99^1000) / (0.01 * 1000) = 4 (1 - 4.317e-5)
    assert discounted_budget(40.0, 0.99, 1000) == pytest.approx(4.0 * (1 - 4.3171e-5), rel=1e-6)
    # smoke-safe-v0: kappa 20, T 200: 20 (1 - 0.99^200) / 2, 0.99^200 = 0.133980
    assert discounted_budget(20.0, 0.99, 200) == pytest.approx(10.0 * (1 - 0.133980), rel=1e-5)
    assert discounted_budget(20.0, 0.0, 200) == pytest.approx(0.1)  # gamma 0: the per-step share kappa / T
    assert discounted_budget(20.0, 1.0, 200) == 20.0  # undiscounted: kappa itself (the gamma -> 1 limit)
    assert discounted_budget(20.0, 1 - 1e-9, 200) == pytest.approx(20.0, rel=1e-5)
    assert discounted_budget(0.0, 0.99, 1000) == 0.0


def test_horizon_is_the_training_envs_time_limit() -> None:
    envs = smoke_context().make_envs(2)
    assert episode_horizon(envs, None, "x") == 200  # Pendulum's limit, inside the cost wrapper
    assert episode_horizon(gym.vector.VectorWrapper(envs), None, "x") == 200  # through a vector wrapper (the runner's)
    assert episode_horizon(envs, 50, "x") == 50
    unlimited = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1").unwrapped], autoreset_mode=SAME_STEP)
    with pytest.raises(CtrlbenchError, match="--episode-length"):
        episode_horizon(unlimited, None, "x")


# --- the cost critic --------------------------------------------------------------------------------------------------

def test_cost_td_target_on_a_hand_batch() -> None:
    batch = cost_batch()  # c = [1, 1, 0], d = [0, 1, 0]
    y = cost_td_target(constant_ensemble([3.0]), StubActor(), batch, discount=0.5)
    assert y.shape == (1, 3) and not y.requires_grad
    torch.testing.assert_close(y[0], torch.tensor([1 + 0.5 * 3.0, 1.0, 0.5 * 3.0]))  # terminal: c alone
    # per member: each member bootstraps on its own target member, no min, no entropy term
    y = cost_td_target(constant_ensemble([3.0, 10.0]), StubActor(), batch, discount=0.5)
    torch.testing.assert_close(y, torch.tensor([[2.5, 1.0, 1.5], [6.0, 1.0, 5.0]]))
    # the max over a random subset: with 60 draws out of 3 members the largest is in it
    torch.manual_seed(0)
    y = cost_td_target(constant_ensemble([3.0, 10.0, 4.0]), StubActor(), batch, discount=0.5, subset_max=60)
    torch.testing.assert_close(y, torch.tensor([[6.0, 1.0, 5.0]]).expand(3, 3))
    with pytest.raises(ValueError):
        cost_td_target(constant_ensemble([3.0]), StubActor(), Batch(batch.observations, batch.actions, batch.rewards,
                                                                     batch.next_observations, batch.dones), 0.5)


def test_cost_critic_loss_is_the_mean_over_members_and_batch() -> None:
    q = torch.tensor([[1.0, 2.0], [0.0, 4.0]])
    y = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    assert cost_critic_loss(q, y).item() == pytest.approx((1 + 0 + 1 + 9) / 4)


# --- the dual step ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("log_space", [False, True])
def test_dual_step_follows_the_constraint_and_keeps_lambda_nonnegative(log_space: bool) -> None:
    budget = 4.0
    above = LagrangeMultiplier(0.5, lr=0.1, log_space=log_space, device="cpu")
    for _ in range(3):
        m = above.step(torch.tensor([6.0, 8.0]), budget)  # J_c = 7 > d: lambda must grow
    assert above.value.item() > 0.5 and m["lambda"].item() == above.value.item()
    below = LagrangeMultiplier(0.5, lr=0.1, log_space=log_space, device="cpu")
    below.step(torch.tensor([1.0, 2.0]), budget)  # J_c = 1.5 < d: lambda must shrink
    assert below.value.item() < 0.5
    for _ in range(50):  # far below: lambda never goes negative; the projected one reaches exactly 0
        below.step(torch.tensor([0.0]), budget)
    if log_space:
        assert 0.0 < below.value.item() < 0.5
    else:
        assert below.value.item() == 0.0
        below.step(torch.tensor([0.0]), budget)
        assert below.value.item() == 0.0


def test_dual_step_is_lambda_plus_lr_times_the_violation_for_sgd_and_the_loss_has_the_right_sign() -> None:
    lam = LagrangeMultiplier(1.0, lr=0.1, log_space=False, device="cpu")
    lam.optimizer = torch.optim.SGD([lam.raw], lr=0.1)  # plain gradient steps: lambda <- max(0, lambda + lr (J - d))
    lam.step(torch.tensor(7.0), 4.0)
    assert lam.value.item() == pytest.approx(1.0 + 0.1 * 3.0)
    lam.step(torch.tensor(0.0), 30.0)
    assert lam.value.item() == 0.0  # 1.3 - 3 projected onto 0
    logl = LagrangeMultiplier(2.0, lr=0.1, log_space=True, device="cpu")
    loss = logl.loss(torch.tensor([5.0, 7.0]), 4.0)
    assert loss.item() == pytest.approx(2.0 * (4.0 - 6.0))  # lambda (d - J_c), CAL's lam_loss
    loss.backward()
    assert logl.raw.grad.item() == pytest.approx(2.0 * (4.0 - 6.0))  # d/dlog(lambda) = lambda (d - J_c)
    with pytest.raises(ValueError):
        LagrangeMultiplier(0.0, lr=0.1, log_space=True, device="cpu")


def test_dual_state_round_trip() -> None:
    a = LagrangeMultiplier(0.3, lr=0.01, log_space=True, device="cpu")
    a.step(torch.tensor(9.0), 1.0)
    b = LagrangeMultiplier(0.9, lr=0.01, log_space=True, device="cpu")
    b.load_state_dict(io_round_trip(a.state_dict()))
    for x in (a, b):
        x.step(torch.tensor(0.0), 1.0)
    assert a.value.item() == b.value.item()


# --- SAC-Lag ----------------------------------------------------------------------------------------------------------

def test_actor_term_is_lambda_times_qc_and_leaves_the_cost_critic_alone() -> None:
    torch.manual_seed(0)
    cfg = SACLagConfig(hidden=(16, 16), batch_size=4, buffer_size=16)
    algo = SACLag(cfg, smoke_context())
    obs = torch.randn(5, 3)
    action = torch.rand(5, 1, requires_grad=True)
    term, metrics = lagrangian_term(algo.cost, torch.tensor(2.5))(obs, action)
    with torch.no_grad():
        expected = 2.5 * algo.cost(obs, action)[0].mean()
    torch.testing.assert_close(term, expected)
    assert metrics["qc_pi"].item() == pytest.approx(expected.item() / 2.5)
    # inside the core's actor step (the cost critic in also_frozen): the actor moves, Q_c gets no gradient
    act, logp = algo.sac.actor(obs)
    algo.sac.actor_step(obs, act, logp, algo.sac.alpha, lagrangian_term(algo.cost, torch.tensor(2.5)),
                        also_frozen=(algo.cost.q,))
    assert all(p.grad is None for p in algo.cost.q.parameters())
    assert all(p.requires_grad for p in algo.cost.q.parameters())  # unfrozen again after the step


def test_config_validation_and_registration() -> None:
    for bad in ({"lambda_init": -1.0}, {"lambda_lr": 0.0}, {"episode_length": 0}, {"batch_size": 64, "buffer_size": 8}):
        with pytest.raises(ValueError):
            SACLagConfig(**bad)
    assert get_algorithm("sac_lag") is SACLag and SACLag.kinds == ("safe",)
    with pytest.raises(CtrlbenchError, match="cost budget"):
        SACLag(SACLagConfig(hidden=(8,)), smoke_context(cost_limit=None))


def test_tiny_run_stores_costs_trains_and_round_trips() -> None:
    with torch_threads(1):
        torch.manual_seed(0)
        cfg = SACLagConfig(learning_starts=20, batch_size=8, hidden=(16, 16), buffer_size=500, n_envs=2)
        algo = SACLag(cfg, smoke_context())
        assert algo.horizon == 200 and algo.budget == pytest.approx(discounted_budget(20.0, 0.99, 200))
        assert "critic_loss" not in algo.update()  # warming up: no gradient step yet
        for _ in range(59):
            metrics = algo.update()
    assert algo.stepper.env_steps == 120 and len(algo.buffer) == 120
    for k in ("critic_loss", "actor_loss", "alpha_loss", "cost_critic_loss", "lambda_loss", "lambda", "qc_pi",
              "cost_estimate", "train_cost_total"):
        assert math.isfinite(float(metrics[k])), k
    stored = algo.buffer.costs[:len(algo.buffer)]
    assert set(stored.unique().tolist()) <= {0.0, 1.0}
    assert stored.sum().item() == algo.stepper.total_cost > 0  # the env's costs, every one of them, in the buffer
    assert algo.lagrange.value.item() >= 0.0
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    a = algo.act(obs)
    assert a.shape == (5, 1) and a.dtype == np.float32 and np.all(np.abs(a) <= 2.0)
    np.testing.assert_array_equal(a, algo.act(obs))  # deterministic
    fresh = SACLag(cfg, smoke_context())
    fresh.load_state_dict(io_round_trip(algo.state_dict()))
    np.testing.assert_array_equal(fresh.act(obs), a)
    assert fresh.step == 60 and fresh.lagrange.value.item() == algo.lagrange.value.item()
    for x, y in zip(fresh.cost.q.parameters(), algo.cost.q.parameters()):
        torch.testing.assert_close(x, y)
    with torch_threads(1):
        assert math.isfinite(float(fresh.update()["cost_critic_loss"]))  # trains on after the resume


# --- SAC-Lag with OmniSafe's dual signal (the training episodes' cost) ------------------------------------------------

def test_epcost_dual_reads_the_recent_training_episodes_against_kappa() -> None:
    torch.manual_seed(0)
    cfg = SACLagConfig(hidden=(16, 16), batch_size=4, buffer_size=16, lambda_init=1.0, lambda_lr=0.1)
    algo = SACLagEpCost(cfg, smoke_context(cost_limit=20.0))
    batch = cost_batch()
    batch = Batch(torch.randn(3, 3), torch.rand(3, 1), batch.rewards, torch.randn(3, 3), batch.dones, batch.costs)
    assert algo.dual_signal(batch) is None  # no episode has finished: no dual step
    metrics = algo.gradient_step(batch)
    assert metrics["lambda"].item() == 1.0 and "lambda_loss" not in metrics and "cost_critic_loss" in metrics
    algo.stepper.recent.extend([(0.0, 30.0, 200), (0.0, 50.0, 200)])  # mean cost 40 > kappa 20: lambda grows
    estimate, budget = algo.dual_signal(batch)
    assert estimate.item() == 40.0 and budget == 20.0  # undiscounted, against kappa itself (not d)
    metrics = algo.gradient_step(batch)
    assert metrics["cost_estimate"].item() == 40.0 and metrics["lambda"].item() > 1.0
    algo.stepper.recent.extend([(0.0, 0.0, 200)] * 10)  # the window holds the last 10: mean 0 < kappa
    lam = algo.lagrange.value.item()
    algo.gradient_step(batch)
    assert algo.lagrange.value.item() < lam
    # the critic's signal of `sac_lag` on the same state: its own estimate, against d
    plain = SACLag(cfg, smoke_context(cost_limit=20.0))
    estimate, budget = plain.dual_signal(batch)
    assert budget == pytest.approx(discounted_budget(20.0, 0.99, 200))
    torch.testing.assert_close(estimate, plain.cost(batch.observations, batch.actions).mean())


def test_epcost_is_registered_and_runs() -> None:
    assert get_algorithm("sac_lag_epcost") is SACLagEpCost and SACLagEpCost.kinds == ("safe",)
    with torch_threads(1):
        torch.manual_seed(0)
        algo = SACLagEpCost(SACLagConfig(learning_starts=20, batch_size=8, hidden=(16, 16), buffer_size=500,
                                         n_envs=2), smoke_context())
        for _ in range(205):  # each of the 2 envs has finished its first episode of 200 steps
            metrics = algo.update()
    assert algo.stepper.episodes == 2
    assert metrics["cost_estimate"].item() == pytest.approx(algo.stepper.recent_episode_cost())
    assert metrics["cost_budget"] == 20.0 and math.isfinite(float(metrics["lambda"]))
    # a resumed run reads the same episodes: the stepper's window travels in the checkpoint
    fresh = SACLagEpCost(SACLagConfig(learning_starts=20, batch_size=8, hidden=(16, 16), buffer_size=500, n_envs=2),
                         smoke_context())
    assert fresh.dual_signal(cost_batch()) is None
    fresh.load_state_dict(io_round_trip(algo.state_dict()))
    assert fresh.dual_signal(cost_batch())[0].item() == algo.dual_signal(cost_batch())[0].item()
