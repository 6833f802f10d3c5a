"""IQL: each loss term on hand-made batches, the cosine schedule, per-task overrides."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from algorithms.core.config import build_config, task_overrides
from algorithms.core.registry import get_algorithm, overrides_file
from algorithms.iql import IQL, IQLConfig, actor_loss, advantage_weights, expectile_loss, q_loss, value_loss
from tests.algo_helpers import hand_batch, tiny_context
from tests.test_td3_bc import constant_critic


class ConstantValue(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.full((obs.shape[0], 1), self.value)


def test_expectile_loss_by_hand() -> None:
    # u = [1, -2], tau 0.7: (0.7 * 1 + 0.3 * 4) / 2
    assert expectile_loss(torch.tensor([1.0, -2.0]), 0.7).item() == pytest.approx(0.95)


def test_value_loss_regresses_on_min_target_q() -> None:
    loss, u = value_loss(ConstantValue(1.0), constant_critic((3.0, 5.0)), hand_batch(), expectile=0.7)
    torch.testing.assert_close(u, torch.tensor([2.0, 2.0]))  # min(3, 5) - 1
    assert loss.item() == pytest.approx(0.7 * 4.0)


def test_q_loss_is_mean_of_two_mses_toward_r_plus_gamma_v() -> None:
    batch = hand_batch()  # r = [1, -2], d = [0, 1]
    loss = q_loss(constant_critic((1.0, 4.0)), batch, next_v=torch.tensor([2.0, 5.0]), discount=0.9)
    y = [1 + 0.9 * 2.0, -2.0]
    mse1 = ((1 - y[0]) ** 2 + (1 - y[1]) ** 2) / 2
    mse2 = ((4 - y[0]) ** 2 + (4 - y[1]) ** 2) / 2
    assert loss.item() == pytest.approx((mse1 + mse2) / 2)


def test_advantage_weights_are_capped_at_100() -> None:
    w = advantage_weights(torch.tensor([10.0, 0.0, -1.0]), beta=3.0)
    torch.testing.assert_close(w, torch.tensor([100.0, 1.0, math.exp(-3.0)]))


class FixedGaussian(torch.nn.Module):
    def forward(self, obs: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(torch.zeros(obs.shape[0], 1), torch.full((obs.shape[0], 1), 0.5))


def test_gaussian_actor_loss_is_weighted_negative_log_likelihood() -> None:
    batch = hand_batch()  # actions 0.5 and -0.5
    u = torch.tensor([0.0, math.log(2.0)])  # weights exp(1 * u) = [1, 2]
    loss = actor_loss(FixedGaussian(), batch, u, beta=1.0, max_action=1.0)
    nll = 0.5 * (0.5 / 0.5) ** 2 + math.log(0.5) + 0.5 * math.log(2 * math.pi)  # same for +-0.5
    assert loss.item() == pytest.approx((1 * nll + 2 * nll) / 2)


def test_deterministic_actor_loss_sums_squared_error_over_dims() -> None:
    batch = hand_batch()
    actor = lambda s: torch.full((s.shape[0], 1), 0.25)  # noqa: E731
    loss = actor_loss(actor, batch, torch.zeros(2), beta=3.0, max_action=1.0)
    assert loss.item() == pytest.approx(((0.25 - 0.5) ** 2 + (0.25 + 0.5) ** 2) / 2)


def test_update_order_and_cosine_schedule() -> None:
    ctx = tiny_context()
    ctx.total_updates = 4
    algo = IQL(IQLConfig(batch_size=8), ctx)
    target_before = [p.clone() for p in algo.critic_target.parameters()]
    metrics = algo.update()
    assert set(metrics) == {"value_loss", "q_loss", "actor_loss", "advantage"}
    assert any(not torch.equal(a, b) for a, b in zip(target_before, algo.critic_target.parameters()))
    lrs = [float(algo.actor_optimizer.param_groups[0]["lr"])]
    for _ in range(3):
        algo.update()
        lrs.append(float(algo.actor_optimizer.param_groups[0]["lr"]))
    expected = [3e-4 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(1, 5)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-6, atol=1e-12)  # the lr is a float32 tensor


def test_cosine_schedule_matches_torch_and_survives_a_checkpoint() -> None:
    """The device-side schedule gives torch's CosineAnnealingLR values, and a resumed run continues it."""
    ctx = tiny_context()
    ctx.total_updates = 10
    algo = IQL(IQLConfig(batch_size=8), ctx)
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-4)
    torch_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(reference, 10)
    for _ in range(6):
        algo.update()
        reference.step()  # a no-op step (no gradients) keeps torch from warning about the call order
        torch_schedule.step()
    assert float(algo.actor_optimizer.param_groups[0]["lr"]) == pytest.approx(reference.param_groups[0]["lr"],
                                                                             rel=1e-6)
    resumed = IQL(IQLConfig(batch_size=8), ctx)
    resumed.load_state_dict(copy.deepcopy(algo.state_dict()))  # as through torch.save: no shared tensors
    for _ in range(2):
        algo.update()
        resumed.update()
    group = resumed.actor_optimizer.param_groups[0]
    assert group["lr"] is resumed.actor_schedule.lr  # still the tensor the schedule rewrites
    assert float(group["lr"]) == float(algo.actor_optimizer.param_groups[0]["lr"]) > 0
    assert all(torch.equal(a, b) for a, b in zip(resumed.actor.parameters(), algo.actor.parameters()))


def test_act_uses_the_mean_action() -> None:
    algo = IQL(IQLConfig(), tiny_context(max_action=2.0))
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    mean = algo.actor(torch.as_tensor(algo.normalizer(obs))).mean.detach().numpy()
    np.testing.assert_allclose(algo.act(obs), 2.0 * mean, rtol=1e-6)


def test_per_task_overrides_come_from_yaml() -> None:
    path = overrides_file(get_algorithm("iql"))
    hopper = build_config(IQLConfig, task_overrides(path, "hopper-medium-v0"))
    assert hopper.deterministic and hopper.normalize_reward
    me = build_config(IQLConfig, task_overrides(path, "hopper-medium-expert-v0"))
    assert (me.beta, me.expectile, me.deterministic) == (6.0, 0.5, False)
    assert build_config(IQLConfig, task_overrides(path, "walker2d-medium-v0")) == IQLConfig()
