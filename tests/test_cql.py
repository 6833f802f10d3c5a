"""CQL: TD and conservative terms on hand-made batches, the tanh-Gaussian log-prob, entropy and Lagrange steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algorithms.core.nets import TanhGaussianActor
from algorithms.cql import CQL, CQLConfig, conservative_gap, td_loss
from tests.algo_helpers import hand_batch, tiny_context
from tests.test_td3_bc import constant_critic


class StubActor(torch.nn.Module):
    """Zero actions with a fixed log-prob: current-state samples `lp_cur`, next-state samples `lp_next`."""

    def __init__(self, lp_cur: float, lp_next: float) -> None:
        super().__init__()
        self.lp_cur, self.lp_next = lp_cur, lp_next

    def forward(self, obs, deterministic=False, repeat=None):
        lp = self.lp_next if obs[0, 0].item() == 0.5 else self.lp_cur  # hand_batch: s'[0,0] = 0.5
        shape = (obs.shape[0], repeat) if repeat else (obs.shape[0],)
        return torch.zeros(*shape, 1), torch.full(shape, lp)


def test_td_loss_by_hand() -> None:
    batch = hand_batch()  # r = [1, -2], d = [0, 1]
    loss, q_data = td_loss(constant_critic((1.0, 4.0)), constant_critic((3.0, 6.0)), StubActor(0.0, 0.0), batch,
                           discount=0.5, n_actions=10, max_target_backup=False)
    y = torch.tensor([1 + 0.5 * 3.0, -2.0])
    expected = ((1 - y) ** 2).mean() + ((4 - y) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item())
    assert q_data.shape == (2, 2)


def test_conservative_gap_with_importance_sampling_by_hand() -> None:
    batch, n = hand_batch(), 10
    cfg = CQLConfig(cql_n_actions=n)
    q_data = torch.tensor([[1.0, 1.0], [4.0, 4.0]])
    gap = conservative_gap(constant_critic((1.0, 4.0)), StubActor(-1.0, 2.0), batch, q_data, cfg)
    # X = [c + |A| log 2] * N, [c - lp_next] * N, [c - lp_cur] * N; logsumexp(X) - c, |A| = 1
    expected = math.log(n * 2.0 + n * math.exp(-2.0) + n * math.exp(1.0))
    torch.testing.assert_close(gap, torch.tensor([expected, expected]))


def test_conservative_gap_without_importance_sampling_counts_the_data_action() -> None:
    cfg = CQLConfig(cql_n_actions=10, cql_importance_sample=False)
    q_data = torch.tensor([[1.0, 1.0], [4.0, 4.0]])
    gap = conservative_gap(constant_critic((1.0, 4.0)), StubActor(0.0, 0.0), hand_batch(), q_data, cfg)
    torch.testing.assert_close(gap, torch.full((2,), math.log(31.0)))


def test_gap_is_clamped_and_tempered() -> None:
    cfg = CQLConfig(cql_n_actions=10, cql_clip_diff_max=1.0)
    q_data = torch.tensor([[1.0, 1.0], [4.0, 4.0]])
    gap = conservative_gap(constant_critic((1.0, 4.0)), StubActor(0.0, 0.0), hand_batch(), q_data, cfg)
    torch.testing.assert_close(gap, torch.ones(2))


def test_tanh_gaussian_log_prob_matches_torch_transformed_distribution() -> None:
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, max_action=1.0, hidden=(8,))
    with torch.no_grad():
        actor.net[-1].weight.normal_()
    obs = torch.randn(5, 3)
    torch.manual_seed(1)
    action, logp = actor(obs)
    mean, raw = actor.net(obs).split(2, dim=-1)
    std = (actor.log_std_multiplier * raw + actor.log_std_offset).clamp(-20, 2).exp()
    dist = torch.distributions.TransformedDistribution(torch.distributions.Normal(mean, std),
                                                       torch.distributions.transforms.TanhTransform())
    torch.testing.assert_close(logp, dist.log_prob(action).sum(-1), rtol=1e-4, atol=1e-4)
    det, _ = actor(obs, deterministic=True)
    torch.testing.assert_close(det, torch.tanh(mean))
    torch.manual_seed(2)
    repeated, lp = actor(obs, repeat=4)
    assert repeated.shape == (5, 4, 2) and lp.shape == (5, 4)
    torch.manual_seed(2)  # repeat=n draws exactly what n stacked copies of each state would
    copies, lp_copies = actor(obs.unsqueeze(1).expand(-1, 4, -1))
    torch.testing.assert_close(repeated, copies)
    torch.testing.assert_close(lp, lp_copies)
    assert not torch.equal(repeated[:, 0], repeated[:, 1])  # independent draws per copy


def test_entropy_temperature_moves_toward_target() -> None:
    algo = CQL(CQLConfig(batch_size=16, actor_lr=1e-2), tiny_context())
    # The initial policy (std ~ e^-1) has entropy above the target -|A|, so log alpha must fall.
    algo.update()
    assert algo.log_alpha.item() < 0


def test_lagrange_alpha_prime_grows_while_gap_exceeds_target() -> None:
    algo = CQL(CQLConfig(batch_size=16, cql_lagrange=True, cql_target_action_gap=-100.0), tiny_context())
    before = algo.log_alpha_prime.item()
    metrics = algo.update()
    assert "alpha_prime" in metrics and algo.log_alpha_prime.item() > before


def test_targets_polyak_every_step_and_state_round_trip() -> None:
    algo = CQL(CQLConfig(batch_size=8, cql_max_target_backup=True), tiny_context())
    before = [p.clone() for p in algo.critic_target.parameters()]
    algo.update()
    assert any(not torch.equal(a, b) for a, b in zip(before, algo.critic_target.parameters()))
    clone = CQL(CQLConfig(batch_size=8, cql_max_target_backup=True), tiny_context(seed=5))
    clone.load_state_dict(algo.state_dict())
    assert clone.log_alpha.item() == algo.log_alpha.item() and clone.step == 1
    obs = np.zeros((3, 3), np.float32)
    np.testing.assert_array_equal(clone.act(obs), algo.act(obs))
