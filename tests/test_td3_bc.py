"""TD3+BC: each loss term on hand-made batches, the policy delay, target updates, state round trip."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from algorithms.core.nets import EnsembleQ
from algorithms.core.td3 import actor_loss, critic_loss, smoothed_target_action, td_target
from algorithms.td3_bc import TD3BC, TD3BCConfig, bc_term
from tests.algo_helpers import hand_batch, params, same, tiny_context


def constant_critic(values: tuple[float, float], obs_dim: int = 2, act_dim: int = 1) -> EnsembleQ:
    """An EnsembleQ whose members output constants (all weights zero, last bias = value)."""
    q = EnsembleQ(obs_dim, act_dim, (4,), n=2)
    with torch.no_grad():
        for p in q.parameters():
            p.zero_()
        q.net[-1].bias[:, 0, 0] = torch.tensor(values)
    return q


class LinearCritic(torch.nn.Module):
    """Q_i(s, a) = k_i . a: a critic with a known action gradient."""

    def __init__(self, k1: float, k2: float) -> None:
        super().__init__()
        self.k = torch.tensor([k1, k2])

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.k[:, None] * act.sum(-1)[None, :]

    def member(self, i: int, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self(obs, act)[i]


def test_target_action_without_noise_is_the_target_policy() -> None:
    actor = lambda s: torch.full((s.shape[0], 1), 0.3)  # noqa: E731
    a = smoothed_target_action(actor, torch.zeros(4, 2), max_action=1.0, policy_noise=0.0, noise_clip=0.5)
    torch.testing.assert_close(a, torch.full((4, 1), 0.3))


def test_target_noise_is_clipped_then_action_is_clipped() -> None:
    actor = lambda s: torch.zeros(s.shape[0], 1)  # noqa: E731
    a = smoothed_target_action(actor, torch.zeros(10_000, 2), max_action=2.0, policy_noise=10.0, noise_clip=0.5)
    assert a.abs().max().item() == pytest.approx(1.0)  # noise clipped to 0.5 * max_action = 1.0
    actor_edge = lambda s: torch.full((s.shape[0], 1), 1.9)  # noqa: E731
    b = smoothed_target_action(actor_edge, torch.zeros(10_000, 2), max_action=2.0, policy_noise=10.0,
                               noise_clip=0.5)
    assert b.max().item() == pytest.approx(2.0) and b.min().item() == pytest.approx(0.9)


def test_td_target_by_hand() -> None:
    batch = hand_batch()  # r = [1, -2], d = [0, 1]
    y = td_target(constant_critic((3.0, 5.0)), batch, torch.zeros(2, 1), discount=0.9)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 3.0, -2.0]))
    assert not y.requires_grad


def test_critic_loss_is_sum_of_two_mses() -> None:
    batch = hand_batch()
    target = torch.tensor([2.0, 0.0])
    loss = critic_loss(constant_critic((1.0, 4.0)), batch, target)
    expected = ((1 - 2) ** 2 + (1 - 0) ** 2) / 2 + ((4 - 2) ** 2 + (4 - 0) ** 2) / 2
    assert loss.item() == pytest.approx(expected)


def test_actor_loss_value_and_detached_lambda() -> None:
    batch = hand_batch()
    pi = torch.nn.Linear(2, 1)
    with torch.no_grad():
        pi.weight.copy_(torch.tensor([[0.2, -0.1]]))
        pi.bias.fill_(0.05)
    critic = LinearCritic(2.0, 7.0)
    loss, info = actor_loss(pi, critic, batch.observations, 2.5, bc_term(batch))
    lmbda = info["lambda_"]
    out = pi(batch.observations).detach().squeeze(1)  # [-0.05, 0.35]
    q1 = 2.0 * out
    expected_lambda = 2.5 / q1.abs().mean()
    expected = -expected_lambda * q1.mean() + ((out - batch.actions.squeeze(1)) ** 2).mean()
    assert lmbda.item() == pytest.approx(expected_lambda.item())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    # With lambda a constant: dL/dpi_b = -lambda * 2 / B + 2 (pi_b - a_b) / B, and dpi/dbias = 1.
    grad_bias = (-expected_lambda * 2.0 / 2 + 2 * (out - batch.actions.squeeze(1)) / 2).sum()
    assert pi.bias.grad.item() == pytest.approx(grad_bias.item(), rel=1e-5)


def test_policy_delay_and_target_updates() -> None:
    algo = TD3BC(TD3BCConfig(batch_size=8, tau=0.5), tiny_context())
    actor0, critic0 = params(algo.actor), params(algo.critic)
    actor_t0, critic_t0 = params(algo.actor_target), params(algo.critic_target)

    m1 = algo.update()
    assert set(m1) == {"critic_loss"}
    assert same(actor0, params(algo.actor)), "the actor must not move on the first critic step"
    assert same(actor_t0, params(algo.actor_target)) and same(critic_t0, params(algo.critic_target))
    assert not same(critic0, params(algo.critic))

    critic_before_targets = params(algo.critic)
    m2 = algo.update()
    assert {"critic_loss", "actor_loss", "lambda_"} <= set(m2)
    assert not same(actor0, params(algo.actor))
    # targets moved half way (tau = 0.5) toward the online nets after the second critic step
    for t, t0, online in zip(params(algo.critic_target), critic_t0, params(algo.critic)):
        torch.testing.assert_close(t, 0.5 * t0 + 0.5 * online)
    assert not same(critic_before_targets, params(algo.critic))


def test_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    a = TD3BC(TD3BCConfig(batch_size=8), tiny_context())
    for _ in range(3):
        a.update()
    b = TD3BC(TD3BCConfig(batch_size=8), tiny_context(seed=99))
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    rng = torch.get_rng_state()
    a.update()
    torch.set_rng_state(rng)
    b.update()
    assert b.step == a.step == 4
    assert same(params(a.actor), params(b.actor)) and same(params(a.critic), params(b.critic))


def test_act_is_deterministic_and_bounded() -> None:
    algo = TD3BC(TD3BCConfig(), tiny_context(max_action=2.0))
    obs = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    a1, a2 = algo.act(obs), algo.act(obs)
    np.testing.assert_array_equal(a1, a2)
    assert a1.shape == (6, 2) and np.abs(a1).max() <= 2.0
