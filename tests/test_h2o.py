"""H2O: the dynamics ratio, the gap estimate and the penalty on hand-made values; the discriminators learn to
tell a shifted simulator apart; the critic weighting is H2O's sum of two MSEs; a tiny update runs both ways."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from algorithms.core.data import Batch
from algorithms.core.sac import critic_loss
from algorithms.core.threads import torch_threads
from algorithms.h2o import (
    H2O,
    Discriminator,
    H2OConfig,
    critic_weights,
    discriminator_losses,
    dynamics_ratio,
    gap_estimate,
    gap_noise_std,
    gap_penalty,
)
from tests.algo_helpers import tiny_context, tiny_dataset


class FixedLogits(nn.Module):
    """A stand-in discriminator that answers the same two logits for every input."""

    def __init__(self, logits: tuple[float, float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(inputs[0]), 2)


def batch(n: int = 4, obs_dim: int = 3, act_dim: int = 2, shift: float = 0.0, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, obs_dim, generator=g)
    a = torch.rand(n, act_dim, generator=g) * 2 - 1
    s2 = s + a.sum(dim=1, keepdim=True) * 0.1 + shift
    return Batch(s, a, torch.zeros(n), s2, torch.zeros(n))


def test_ratio_divides_the_sas_odds_by_the_sa_odds() -> None:
    d_sa = FixedLogits((0.0, math.log(2.0)))  # P_sa = (1/3, 2/3): (s, a) looks like sim
    d_sas = FixedLogits((math.log(6.0), 0.0))  # added to D_sa: logits (log 6, log 2), P_sas = (3/4, 1/4)
    w = dynamics_ratio(d_sa, d_sas, batch(), low=1e-5, high=100.0)
    # w = P_sas[0] P_sa[1] / (P_sas[1] P_sa[0]) = (3/4 * 2/3) / (1/4 * 1/3) = 6
    torch.testing.assert_close(w, torch.full((4,), 6.0))
    assert dynamics_ratio(d_sa, d_sas, batch(), low=1e-5, high=1.0).max() == 1.0  # H2O clips at 1
    low = dynamics_ratio(d_sa, FixedLogits((-30.0, 0.0)), batch(), low=1e-5, high=1.0)
    torch.testing.assert_close(low, torch.full((4,), 1e-5))


def test_gap_estimate_is_the_mean_log_sim_over_real_ratio_clipped() -> None:
    d_sa = FixedLogits((0.0, 0.0))
    sim = batch()
    u = gap_estimate(d_sa, FixedLogits((0.0, math.log(3.0))), sim, torch.ones(3), n=10, low=1e-45, high=10.0)
    torch.testing.assert_close(u, torch.full((4,), math.log(3.0)))  # w = 1/3 at every perturbed s'
    real_looking = gap_estimate(d_sa, FixedLogits((2.0, 0.0)), sim, torch.ones(3), n=10, low=1e-45, high=10.0)
    assert (real_looking == torch.tensor(1e-45)).all()  # a negative KL estimate is clipped to ~0 from below
    capped = gap_estimate(d_sa, FixedLogits((0.0, 50.0)), sim, torch.ones(3), n=10, low=1e-45, high=10.0)
    assert (capped == 10.0).all()


def test_gap_estimate_perturbs_the_next_state_by_the_given_std() -> None:
    seen: list[torch.Tensor] = []

    class Recording(FixedLogits):
        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            seen.append(inputs[2])
            return super().forward(*inputs)

    sim = batch(n=2)
    gap_estimate(FixedLogits((0.0, 0.0)), Recording((0.0, 0.0)), sim, torch.tensor([0.0, 1.0, 5.0]), n=4000,
                 low=1e-45, high=10.0)
    noise = seen[0].reshape(2, 4000, 3) - sim.next_observations.unsqueeze(1)
    assert noise[..., 0].abs().max() == 0.0
    assert noise[..., 1].std().item() == pytest.approx(1.0, rel=0.05)
    assert noise[..., 2].std().item() == pytest.approx(5.0, rel=0.05)


def test_gap_noise_std_is_the_official_buffers_std_over_real_states_and_reserved_zero_rows() -> None:
    x = np.random.default_rng(0).normal(3.0, 2.0, (500, 4)).astype(np.float32)
    padded = np.vstack([x, np.zeros((5000, 4))]).std(axis=0) + 1e-3
    np.testing.assert_allclose(gap_noise_std(x, padding=10.0), padded, rtol=1e-5)
    np.testing.assert_allclose(gap_noise_std(x, padding=0.0), x.std(axis=0) + 1e-3, rtol=1e-5)


def test_penalty_is_a_weighted_soft_maximum_over_sim_minus_the_real_mean() -> None:
    q_sim = torch.tensor([[0.0, math.log(3.0)]])  # one critic member, two sim samples
    q_real = torch.tensor([[1.0, 3.0]])
    u = torch.tensor([1.0, 3.0])  # omega = (1/4, 3/4)
    penalty = gap_penalty(q_sim, q_real, u, temperature=1.0, clip=1000.0)
    torch.testing.assert_close(penalty, torch.tensor([math.log(0.25 + 0.75 * 3.0) - 2.0]))
    uniform = gap_penalty(q_sim, q_real, torch.ones(2), temperature=1.0, clip=1000.0)
    torch.testing.assert_close(uniform, torch.tensor([math.log((1.0 + 3.0) / 2) - 2.0]))  # log mean exp
    assert gap_penalty(q_sim * 1e4, q_real, u, temperature=1.0, clip=1000.0).item() == 1000.0


def test_critic_weights_make_the_batch_mean_h2os_sum_of_two_mses() -> None:
    g = torch.Generator().manual_seed(0)
    q, y, w = torch.randn(2, 6, generator=g), torch.randn(6, generator=g), torch.rand(2, generator=g)
    n_real = 4
    expected = sum(((q[i, :n_real] - y[:n_real]) ** 2).mean()
                   + ((w.sqrt() * q[i, n_real:] - w.sqrt() * y[n_real:]) ** 2).mean() for i in range(2))
    torch.testing.assert_close(critic_loss(q, y, critic_weights(n_real, w)), expected)


def test_discriminator_losses_on_fixed_probabilities() -> None:
    d_sa = FixedLogits((math.log(3.0), 0.0))  # P_sa = (3/4, 1/4) for every input
    d_sas = FixedLogits((0.0, 0.0))
    dsa, dsas = discriminator_losses(d_sa, d_sas, batch(), batch(seed=1))
    torch.testing.assert_close(dsa, torch.tensor(-math.log(0.75) - math.log(0.25)))
    torch.testing.assert_close(dsas, dsa)  # D_sas adds nothing: P_sas = P_sa


def test_discriminators_learn_a_shifted_simulator() -> None:
    """Sim next states are shifted by +1: trained, the ratio on sim transitions falls and u rises over real ones."""
    torch.manual_seed(0)
    d_sa, d_sas = Discriminator(5, (64, 64)), Discriminator(8, (64, 64))
    opt = torch.optim.Adam([*d_sa.parameters(), *d_sas.parameters()], lr=3e-3)
    with torch_threads(1):  # small matmuls: one thread is fastest, and spares cores other tests may be using
        for step in range(300):
            dsa, dsas = discriminator_losses(d_sa, d_sas, batch(128, seed=2 * step),
                                             batch(128, shift=1.0, seed=2 * step + 1))
            opt.zero_grad()
            (dsa + dsas).backward()
            opt.step()
    real, sim = batch(256, seed=10_001), batch(256, shift=1.0, seed=10_002)
    assert dynamics_ratio(d_sa, d_sas, sim, 1e-5, 1.0).mean() < 0.2
    assert dynamics_ratio(d_sa, d_sas, real, 1e-5, 1.0).mean() > 0.8
    u_sim = gap_estimate(d_sa, d_sas, sim, torch.full((3,), 0.1), 10, 1e-45, 10.0)
    u_real = gap_estimate(d_sa, d_sas, real, torch.full((3,), 0.1), 10, 1e-45, 10.0)
    assert u_sim.mean() > 1.0 > u_real.mean()


def pendulum_context(g: float = 20.0):
    ctx = tiny_context(tiny_dataset(n=256, obs_dim=3, act_dim=1))
    ctx.action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)  # Pendulum's torque bound
    ctx.total_updates = 20
    ctx.make_envs = lambda n: gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1", g=g)] * n,
                                                       autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return ctx


@pytest.mark.parametrize("naive", [False, True])
def test_update_steps_the_simulator_and_trains_both_ways(naive: bool) -> None:
    cfg = H2OConfig(batch_size=32, hidden=(32, 32), discriminator_hidden=(32, 32), discriminator_batch=32,
                    initial_sim_steps=50, use_ratio=not naive, use_penalty=not naive)
    algo = H2O(cfg, pendulum_context())
    before = [p.detach().clone() for p in algo.sac.critic.parameters()]
    for _ in range(5):
        metrics = algo.update()
    assert len(algo.sim) == 54 and algo.stepper.env_steps == 54  # 50 in the first update, then one each
    assert all(math.isfinite(float(v)) for v in metrics.values())
    assert ("gap_penalty" in metrics) != naive
    ratio = float(metrics["sim_ratio_mean"])
    assert ratio == 1.0 if naive else 1e-5 <= ratio <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, algo.sac.critic.parameters()))
    actions = algo.act(np.zeros((3, 3), np.float32))
    assert actions.shape == (3, 1) and np.all(np.abs(actions) <= 2.0)


def test_sim_buffer_holds_at_most_what_the_budget_can_fill() -> None:
    algo = H2O(H2OConfig(batch_size=32, hidden=(32, 32), discriminator_hidden=(32, 32), initial_sim_steps=10),
               pendulum_context())
    assert algo.sim.capacity == 32  # min(10 x 256 rows, 20 updates + 10 initial steps), at least one batch
