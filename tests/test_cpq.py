"""CPQ: every loss on hand-made values, the OOD score and mask, the multiplier, OSRL's detached OOD term (and the
switch that attaches it), an end-to-end run on a tiny cost-labelled dataset, a checkpoint round trip."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from algorithms.core.errors import CtrlbenchError
from algorithms.core.nets import EnsembleQ, TanhGaussianActor
from algorithms.core.registry import available
from algorithms.core.vae import ConditionalVAE
from algorithms.cpq import (
    CPQ,
    CPQConfig,
    OODMultiplier,
    actor_loss,
    cost_critic_loss,
    cost_target,
    latent_kl,
    ood_cost,
    policy_gaussian,
    reward_target,
    vae_loss,
)
from tests.algo_helpers import hand_batch, io_round_trip, params, same, tiny_context, tiny_dataset

TINY = dict(batch_size=16, actor_hidden=(16, 16), critic_hidden=(16, 16), vae_hidden=(16, 16), sample_action_num=4)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: one thread is fastest (tests/conftest.py)


def safe_context(cost_limit: float | None = 20.0, max_action: float = 2.0, costs: bool = True, seed: int = 0):
    data = tiny_dataset(n=128, obs_dim=3, act_dim=1, seed=seed)
    data = dataclasses.replace(data, actions=data.actions * max_action)
    if costs:
        data.costs = (np.abs(data.observations[:, 0]) > 3.0).astype(np.float32)  # a velocity-style 0/1 cost
    ctx = tiny_context(data, max_action=max_action, seed=seed)
    ctx.cost_limit = cost_limit
    return ctx


class TableCritic(torch.nn.Module):
    """Member i outputs values[i][b] for state b, whatever the action."""

    def __init__(self, values) -> None:
        super().__init__()
        self.values = torch.tensor(values, dtype=torch.float32)

    def forward(self, obs, act):
        return self.values


class ZeroActor(torch.nn.Module):
    def forward(self, obs, deterministic=False):
        return torch.zeros(obs.shape[0], 1), torch.zeros(obs.shape[0])


class ActionKL(torch.nn.Module):
    """A stand-in VAE whose encoder puts q(z|s,a) = N(a, 1) in both latent dims: KL = a^2 / 2."""

    def encode(self, obs, act):
        return act.repeat(1, 2), torch.ones(act.shape[0], 2)


class StateActionCritic(torch.nn.Module):
    """Q_c,0(s, a) = w (s_0 + a^2), Q_c,1 = Q_c,0 + 1: the min is member 0; w is a trainable scalar."""

    def __init__(self, w: float = 1.0) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))

    def forward(self, obs, act):
        q = self.w * (obs[:, 0] + act.pow(2).sum(-1))
        return torch.stack([q, q + 1.0])


def mean_actor(scale: float, max_action: float = 1.0) -> TanhGaussianActor:
    """Pre-tanh mean = scale * s_0, log std clamped to -20 (std 2e-9): samples are the mean."""
    actor = TanhGaussianActor(2, 1, max_action, hidden=(), log_std_offset=0.0)
    with torch.no_grad():
        actor.net[0].weight.copy_(torch.tensor([[scale, 0.0], [0.0, 0.0]]))
        actor.net[0].bias.copy_(torch.tensor([0.0, -30.0]))
    return actor


# --- budget, scaling, registration ------------------------------------------------------------------------------------

def test_registered_for_offline_safe_only() -> None:
    assert available()["cpq"].kinds == ("offline-safe",)


def test_thresholds_follow_osrl() -> None:
    algo = CPQ(CPQConfig(**TINY), safe_context(cost_limit=20.0))
    q_thres = 20.0 * (1 - 0.99**1000) / (1 - 0.99) / 1000  # cpq.py:103-104
    assert algo.budget == pytest.approx(q_thres, rel=1e-9)
    assert algo.ood_budget == pytest.approx(1.5 * q_thres, rel=1e-9)  # cpq.py:105
    short = CPQ(CPQConfig(**TINY, episode_len=200, cost_scale=2.0), safe_context(cost_limit=20.0))
    assert short.budget == pytest.approx(40.0 * (1 - 0.99**200) / 2.0, rel=1e-6)


def test_rewards_and_costs_are_scaled_once() -> None:
    ctx = safe_context()
    algo = CPQ(CPQConfig(**TINY, cost_scale=3.0), ctx)
    batch = algo.sampler.gather(torch.arange(len(ctx.dataset)))
    torch.testing.assert_close(batch.rewards, torch.as_tensor(ctx.dataset.rewards) * 0.1)
    torch.testing.assert_close(batch.costs, torch.as_tensor(ctx.dataset.costs) * 3.0)
    torch.testing.assert_close(batch.observations, torch.as_tensor(ctx.dataset.observations))  # not normalized


def test_needs_costs_and_a_budget() -> None:
    with pytest.raises(CtrlbenchError, match="costs"):
        CPQ(CPQConfig(**TINY), safe_context(costs=False))
    with pytest.raises(CtrlbenchError, match="budget"):
        CPQ(CPQConfig(**TINY), safe_context(cost_limit=None))
    with pytest.raises(ValueError, match="ood_quantile"):
        CPQConfig(ood_quantile=1.5)


# --- VAE and OOD score ------------------------------------------------------------------------------------------------

def test_vae_loss_and_latent_kl_by_hand() -> None:
    vae = ConditionalVAE(2, 1, max_action=1.0, hidden=(4,))
    with torch.no_grad():  # encoder: mean 0.3, log std log 0.5 everywhere; decoder: 0
        for p in vae.parameters():
            p.zero_()
        vae.encoder[-1].bias.copy_(torch.tensor([0.3, 0.3, math.log(0.5), math.log(0.5)]))
    batch = hand_batch()  # actions 0.5 and -0.5
    kl = -0.5 * (1 + math.log(0.25) - 0.09 - 0.25)
    torch.testing.assert_close(latent_kl(vae, batch.observations, batch.actions), torch.full((2,), kl))
    assert vae_loss(vae, batch, beta=0.5).item() == pytest.approx(0.25 + 0.5 * kl, rel=1e-6)


def test_policy_gaussian_is_the_actors_gaussian() -> None:
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, 2.0, hidden=(8,), log_std_offset=0.0)
    with torch.no_grad():
        actor.log_std_multiplier.fill_(1.3)
        actor.log_std_offset.fill_(-0.4)
    obs = torch.randn(5, 3)
    mean, std = policy_gaussian(actor, obs)
    action, logp = actor(obs, deterministic=True)
    torch.testing.assert_close(action, 2.0 * torch.tanh(mean))
    log_det = 2.0 * (math.log(2.0) - mean - torch.nn.functional.softplus(-2.0 * mean))
    expected = (-torch.log(std) - 0.5 * math.log(2 * math.pi) - log_det).sum(-1)
    torch.testing.assert_close(logp, expected)


@pytest.mark.parametrize("squash", [False, True])
def test_ood_cost_by_hand(squash: bool) -> None:
    # states s_0 = 0 and 1; the actor's pre-tanh mean is 3 s_0 (u = 0 and 3), max_action 2: the samples at state 1
    # have the larger KL (u^2 / 2) and are exactly the top half, so the 0.75 quantile flags them all and nothing else
    obs = hand_batch().observations  # s_0 = 0 and 1
    actor, n = mean_actor(3.0, max_action=2.0), 4
    q_ood, fraction = ood_cost(StateActionCritic(), ActionKL(), actor, obs, n, 0.75, squash)
    u = 2.0 * math.tanh(3.0) if squash else 3.0  # OSRL scores the pre-tanh sample (cpq.py:164-169)
    assert fraction.item() == pytest.approx(0.5)
    assert q_ood.item() == pytest.approx(0.5 * (1.0 + u**2), rel=1e-5)  # mean over 2n samples, member 0 (the min)


def test_ood_cost_passes_gradient_only_into_the_critic() -> None:
    critic, actor = StateActionCritic(), mean_actor(3.0)
    q_ood, _ = ood_cost(critic, ActionKL(), actor, hand_batch().observations, 4, 0.75, False)
    q_ood.backward()
    assert critic.w.grad.item() == pytest.approx(0.5 * (1.0 + 9.0), rel=1e-5)
    assert all(p.grad is None for p in actor.parameters())


# --- critics ----------------------------------------------------------------------------------------------------------

def test_reward_target_masks_states_the_cost_critic_calls_unsafe() -> None:
    batch = dataclasses.replace(hand_batch(), dones=torch.tensor([0.0, 0.0]))  # r = [1, -2]
    q_target = TableCritic([[3.0, 3.0], [5.0, 4.0]])  # min [3, 3]
    qc_target = TableCritic([[0.5, 2.0], [0.9, 1.5]])  # min [0.5, 1.5]: state 1 is over the budget 1
    y = reward_target(q_target, qc_target, ZeroActor(), batch, discount=0.5, budget=1.0)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.5 * 3.0, -2.0]))
    # a true termination stops the bootstrap whatever the cost critic says
    y = reward_target(q_target, TableCritic([[0.0, 0.0], [0.0, 0.0]]), ZeroActor(), hand_batch(), 0.5, 1.0)
    torch.testing.assert_close(y, torch.tensor([2.5, -2.0]))


def test_cost_target_takes_the_min_and_has_no_termination_mask() -> None:
    batch = dataclasses.replace(hand_batch(), costs=torch.tensor([1.0, 0.0]))  # dones [0, 1]
    y_c = cost_target(TableCritic([[2.0, 4.0], [3.0, 5.0]]), ZeroActor(), batch, discount=0.5)
    torch.testing.assert_close(y_c, torch.tensor([1.0 + 0.5 * 2.0, 0.5 * 4.0]))  # cpq.py:161
    with pytest.raises(ValueError):
        cost_target(TableCritic([[0.0, 0.0]]), ZeroActor(), hand_batch(), 0.5)


def test_cost_critic_loss_by_hand() -> None:
    batch = hand_batch()
    critic = EnsembleQ(2, 1, (4,), n=2)
    with torch.no_grad():
        for p in critic.parameters():
            p.zero_()
        critic.net[-1].bias[:, 0, 0] = torch.tensor([1.0, 3.0])
    target = torch.tensor([2.0, 0.0])
    loss, td = cost_critic_loss(critic, batch, target, torch.tensor(2.0), torch.tensor(0.7), ood_budget=0.2)
    expected_td = ((1 - 2) ** 2 + 1**2) / 2 + ((3 - 2) ** 2 + 3**2) / 2  # summed over members (net.py:240-242)
    assert td.item() == pytest.approx(expected_td)
    assert loss.item() == pytest.approx(expected_td - 2.0 * (0.7 - 0.2))


def test_ood_term_pushes_the_cost_critic_up_only_with_a_gradient() -> None:
    batch, obs = hand_batch(), hand_batch().observations

    def step(ood_gradient: bool) -> float:
        """One SGD step on L_Qc from w = 1, TD error 0 at the start, alpha 1: the new w."""
        critic = StateActionCritic(1.0)
        target = critic(batch.observations, batch.actions).detach()  # per member
        scorer = critic if ood_gradient else StateActionCritic(1.0).requires_grad_(False)  # OSRL: the target critic
        q_ood, _ = ood_cost(scorer, ActionKL(), mean_actor(3.0), obs, 4, 0.75, False)
        td = (critic(batch.observations, batch.actions) - target).pow(2).mean(1).sum()
        loss, _ = cost_critic_loss_from(td, q_ood)
        loss.backward()
        with torch.no_grad():
            critic.w -= 0.1 * critic.w.grad
        return critic.w.item()

    assert step(ood_gradient=False) == pytest.approx(1.0)  # OSRL: the OOD term is a constant, nothing moves
    assert step(ood_gradient=True) == pytest.approx(1.0 + 0.1 * 0.5 * (1.0 + 9.0))  # Q_c rises on the OOD actions


def cost_critic_loss_from(td: torch.Tensor, q_ood: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cost_critic_loss with its TD part given: alpha 1, OOD budget 0."""

    class FixedTD:
        def mse(self, obs, act, target, members):
            return td

    return cost_critic_loss(FixedTD(), hand_batch(), torch.zeros(2), torch.tensor(1.0), q_ood, 0.0)


def test_multiplier_step_by_hand() -> None:
    m = OODMultiplier(lr=0.1)
    assert m.value.item() == 1.0  # log alpha = 0 (cpq.py:93)
    m.step(torch.tensor(1.0), target=3.0)  # OOD cost below its target: alpha grows
    assert m.log_alpha.item() == pytest.approx(0.1 * 1.0 * 2.0)
    m.step(torch.tensor(10.0), target=3.0)
    assert m.log_alpha.item() == pytest.approx(0.2 + 0.1 * math.exp(0.2) * (3.0 - 10.0))
    m.step(torch.tensor(1e4), target=3.0)
    assert m.log_alpha.item() == -5.0  # clamped (cpq.py:195)
    m.lr = 10.0
    for _ in range(10):
        m.step(torch.tensor(-1e3), target=3.0)
    assert m.log_alpha.item() == 5.0


# --- actor ------------------------------------------------------------------------------------------------------------

def test_actor_loss_counts_only_safe_states_and_has_no_entropy() -> None:
    obs = hand_batch().observations
    actor = TanhGaussianActor(2, 1, 1.0, hidden=(8,), log_std_offset=0.0)

    class LinearQ(torch.nn.Module):  # Q_0 = 3 a, Q_1 = 5 a: min is 3a for a > 0 and 5a for a < 0
        def __init__(self) -> None:
            super().__init__()
            self.k = torch.nn.Parameter(torch.tensor([3.0, 5.0]))

        def forward(self, obs, act):
            return self.k[:, None] * act.sum(-1)[None, :]

    critic = LinearQ()
    torch.manual_seed(3)
    loss, safe = actor_loss(actor, critic, TableCritic([[0.5, 2.0], [0.6, 2.5]]), obs, budget=1.0)
    torch.manual_seed(3)
    a, _ = actor(obs)
    q = torch.minimum(3.0 * a[:, 0], 5.0 * a[:, 0])
    assert loss.item() == pytest.approx(-(q[0] / 2).item(), rel=1e-5)  # state 1 is unsafe: left out
    assert safe.item() == 0.5
    loss.backward()
    assert critic.k.grad is None and actor.net[0].weight.grad is not None
    actor.zero_grad()
    loss, safe = actor_loss(actor, critic, TableCritic([[5.0, 5.0]]), obs, budget=1.0)
    loss.backward()
    assert loss.item() == 0.0 and safe.item() == 0.0
    assert all(p.grad is None or not p.grad.any() for p in actor.parameters())


# --- the algorithm ----------------------------------------------------------------------------------------------------

def test_end_to_end_updates_change_every_part() -> None:
    torch.manual_seed(0)
    algo = CPQ(CPQConfig(**TINY), safe_context())
    before = {k: params(getattr(algo, k)) for k in ("actor", "critic", "cost_critic", "vae", "critic_target",
                                                   "cost_critic_target")}
    for _ in range(30):
        metrics = algo.update()
    assert algo.step == 30
    assert set(metrics) == {"vae_loss", "critic_loss", "cost_critic_loss", "cost_td_loss", "actor_loss", "alpha",
                            "q_ood", "ood_fraction", "safe_fraction", "cost_budget"}
    assert all(math.isfinite(float(v)) for v in metrics.values())
    assert 0.25 <= float(metrics["ood_fraction"]) < 0.5
    assert float(metrics["alpha"]) != 1.0  # the multiplier moved
    for k, old in before.items():
        assert not same(old, params(getattr(algo, k))), k
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    action = algo.act(obs)
    assert action.shape == (5, 1) and np.all(np.abs(action) <= 2.0)
    np.testing.assert_array_equal(action, algo.act(obs))  # deterministic


def test_default_cost_critic_ignores_the_vae_but_ood_gradient_does_not() -> None:
    """OSRL's OOD term is computed without gradient (cpq.py:158-187): changing the VAE changes alpha, not Q_c."""
    for ood_gradient in (False, True):
        algos = []
        for vae_seed in (1, 2):
            torch.manual_seed(0)
            algo = CPQ(CPQConfig(**TINY, ood_gradient=ood_gradient), safe_context())
            torch.manual_seed(vae_seed)
            algo.vae.load_state_dict(ConditionalVAE(3, 1, 2.0, TINY["vae_hidden"]).state_dict())
            torch.manual_seed(0)
            algo.update()
            algos.append(algo)
        a, b = algos
        assert same(params(a.critic), params(b.critic))
        assert same(params(a.cost_critic), params(b.cost_critic)) != ood_gradient
        assert a.multiplier.log_alpha.item() != b.multiplier.log_alpha.item()


def test_checkpoint_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    algo = CPQ(CPQConfig(**TINY), safe_context())
    for _ in range(3):
        algo.update()
    torch.manual_seed(1)  # other initial weights: the checkpoint must replace them all
    fresh = CPQ(CPQConfig(**TINY), safe_context())
    fresh.load_state_dict(io_round_trip(algo.state_dict()))
    assert fresh.step == 3
    assert fresh.multiplier.log_alpha.item() == algo.multiplier.log_alpha.item()
    obs = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(fresh.act(obs), algo.act(obs))
    torch.manual_seed(7)
    m1 = algo.update()
    torch.manual_seed(7)
    m2 = fresh.update()
    for k in m1:
        assert float(m1[k]) == float(m2[k]), k
    for k in ("actor", "critic", "cost_critic", "vae", "cost_critic_target"):
        assert same(params(getattr(algo, k)), params(getattr(fresh, k))), k
