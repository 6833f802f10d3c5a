"""A2PR: the value target, the advantage-filtered VAE loss, the per-sample BC target and weight, the update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.a2pr import A2PR, A2PRConfig, bc_term, vae_loss, value_target
from algorithms.core.config import build_config, task_overrides
from algorithms.core.registry import get_algorithm, overrides_file
from algorithms.core.td3 import actor_loss
from tests.algo_helpers import hand_batch, params, same, tiny_context
from tests.test_spot import zero_vae
from tests.test_td3_bc import constant_critic


def test_value_target_is_the_smaller_of_current_and_target_backups() -> None:
    batch = hand_batch()  # r = [1, -2], d = [0, 1]
    y_tgt = torch.tensor([5.0, 7.0])
    y = value_target(batch, constant_critic((2.0, 3.0), 2, 1), torch.zeros(2, 1), y_tgt, discount=0.5)
    torch.testing.assert_close(y, torch.tensor([min(1 + 0.5 * 2.0, 5.0), min(-2.0, 7.0)]))


def test_vae_reconstruction_counts_only_positive_advantage_samples() -> None:
    batch = hand_batch()  # actions 0.5, -0.5; a zero decoder reconstructs 0; KL 0 at mean 0, std 1
    vae = zero_vae(0.0, 0.0)
    loss = vae_loss(vae, batch, q1_data=torch.tensor([2.0, 0.0]), v_data=torch.tensor([1.0, 1.0]), vae_weight=1.5)
    assert loss.item() == pytest.approx(1.5 * 0.25 / 2)  # only the first sample, (0 - 0.5)^2, weight 1.5


class ActionCritic(torch.nn.Module):
    """Q1(s, a) = 10 a (one action dim)."""

    def member(self, i, obs, act):
        return 10.0 * act.sum(-1)


class ShiftVAE(torch.nn.Module):
    """'Reconstructs' pi(s) as a fixed action per sample, keeping a gradient path to pi."""

    def __init__(self, fixed: torch.Tensor) -> None:
        super().__init__()
        self.fixed = fixed

    def forward(self, obs, act):
        return self.fixed + 0.0 * act, None, None


def test_actor_target_and_weight_by_hand() -> None:
    batch = hand_batch()  # dataset actions 0.5 and -0.5 -> Q1 5 and -5
    actor = lambda s: torch.full((s.shape[0], 1), 0.05)  # noqa: E731
    vae = ShiftVAE(torch.tensor([[0.2], [0.1]]))  # a~ = 0.2 (Q1 2) and 0.1 (Q1 1)
    v = torch.tensor([3.0, 0.0])
    loss, extra = actor_loss(actor, ActionCritic(), batch.observations, 0.0,
                             lambda pi: bc_term(pi, ActionCritic(), vae, batch, v, mask=0.5))
    # sample 1: A_a = 2 > A_pi = -1 -> target a = 0.5; weight 0.5 * (1[2 >= 3] + 1[5 > 3]) = 0.5
    # sample 2: A_pi = 1 >= A_a = -5 -> target a~ = 0.1; weight 0.5 * (1[1 >= 0] + 1[-5 > 0]) = 0.5
    expected_bc = (0.5 * (0.05 - 0.5) ** 2 + 0.5 * (0.05 - 0.1) ** 2) / 2
    assert extra["bc_loss"].item() == pytest.approx(expected_bc)
    assert extra["augmented_share"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(expected_bc)  # alpha 0: no Q term (lambda = 0 / mean|Q1|)


def test_no_constraint_where_neither_action_beats_v() -> None:
    batch = hand_batch()
    actor = lambda s: torch.full((s.shape[0], 1), 0.05)  # noqa: E731
    _, extra = bc_term(actor(batch.observations), ActionCritic(), ShiftVAE(torch.zeros(2, 1)), batch,
                       torch.tensor([100.0, 100.0]), mask=1.0)
    assert extra["bc_weight"].item() == 0.0 and extra["bc_loss"].item() == 0.0


def test_update_trains_every_part_and_delays_the_actor() -> None:
    algo = A2PR(A2PRConfig(batch_size=8), tiny_context())
    before = {n: params(getattr(algo, n)) for n in ("actor", "critic", "value", "vae")}
    assert set(algo.update()) == {"critic_loss", "value_loss", "vae_loss"}
    assert same(before["actor"], params(algo.actor))
    for n in ("critic", "value", "vae"):
        assert not same(before[n], params(getattr(algo, n))), n
    assert {"actor_loss", "bc_loss", "bc_weight"} <= set(algo.update())
    assert not same(before["actor"], params(algo.actor))
    assert len([m for m in algo.actor.net if isinstance(m, torch.nn.Linear)]) == 4  # 3 hidden + output
    assert algo.act(np.zeros((2, 3), np.float32)).shape == (2, 2)


def test_per_task_settings() -> None:
    path = overrides_file(get_algorithm("a2pr"))
    hopper = build_config(A2PRConfig, task_overrides(path, "hopper-medium-v0"))
    assert (hopper.alpha, hopper.mask, hopper.discount) == (2.5, 0.4, 0.995)
    cheetah = build_config(A2PRConfig, task_overrides(path, "halfcheetah-medium-v0"))
    assert (cheetah.alpha, cheetah.mask) == (40.0, 1.0)
