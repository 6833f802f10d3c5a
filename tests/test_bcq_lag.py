"""BCQ-Lagrangian: the perturbation actor, the soft clipped double-Q targets (reward: masked; cost: not), the critic
loss over all networks, the actor loss with the PID multiplier, on hand values; OSRL's network sizes; a tiny run on a
cost-labelled dataset (the multiplier rises only when the budget is exceeded); deterministic acting; checkpoints."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from algorithms.bcq_lag import (
    BCQLag,
    BCQLagConfig,
    PerturbationActor,
    actor_loss,
    critic_loss,
    group_mins,
    soft_clipped_double_q,
    td_target,
)
from algorithms.core.errors import CtrlbenchError
from algorithms.core.graphs import EagerUpdates, GraphedUpdates
from algorithms.core.lagrangian import discounted_budget
from algorithms.core.nets import frozen
from algorithms.core.pid_lagrangian import PIDLagrangian
from algorithms.core.registry import get_algorithm
from tests.algo_helpers import io_round_trip, params, safe_context, same
from tests.test_graphs import StandIn
from tests.test_sac_lag import constant_ensemble

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: one thread is fastest (tests/conftest.py)


class LinearCritic(nn.Module):
    """Member i: Q_i(s, a) = w_i * sum(a) + b_i, for (w_i, b_i) given; w and b are parameters."""

    def __init__(self, w: list[float], b: list[float]) -> None:
        super().__init__()
        self.n = len(w)
        self.w = nn.Parameter(torch.tensor(w).unsqueeze(1))
        self.b = nn.Parameter(torch.tensor(b).unsqueeze(1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.w * act.sum(-1).unsqueeze(0) + self.b  # (n, B)


class CyclingVAE(nn.Module):
    """decode(s) gives row r the action (r mod k) - 1: with k = 3 each state's samples are -1, 0, 1."""

    latent_dim = 2

    def __init__(self, k: int = 3, fixed: float | None = None) -> None:
        super().__init__()
        self.k, self.fixed = k, fixed

    def decode(self, obs: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if self.fixed is not None:
            return torch.full((obs.shape[0], 1), self.fixed)
        return (torch.arange(obs.shape[0]) % self.k - 1.0).unsqueeze(1)


class Identity(nn.Module):
    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return act


SMALL = dict(batch_size=16)


# --- networks and targets ---------------------------------------------------------------------------------------------

def test_osrl_defaults() -> None:
    c = BCQLagConfig()
    assert (c.batch_size, c.actor_lr, c.critic_lr, c.vae_lr) == (512, 1e-3, 1e-3, 1e-3)
    assert (c.discount, c.tau, c.phi, c.lmbda, c.beta_kl, c.sample_action_num) == (0.99, 0.005, 0.05, 0.75, 0.5, 10)
    assert (c.num_q, c.num_qc, c.actor_hidden, c.critic_hidden, c.vae_hidden) == (2, 2, (256, 256), (256, 256),
                                                                                   (400, 400))
    assert c.pid == (0.1, 0.003, 0.001) and (c.reward_scale, c.cost_scale, c.episode_len) == (0.1, 1.0, 1000)
    assert get_algorithm("bcq_lag") is BCQLag and BCQLag.kinds == ("offline-safe",)


def test_network_shapes_follow_osrl() -> None:
    algo = BCQLag(BCQLagConfig(**SMALL), safe_context())
    assert algo.critic.n == 4 and algo.cost_critic.n == 4, "EnsembleDoubleQCritic(num_q=2): two groups of two"
    assert algo.vae.latent_dim == 4  # 2 |A|
    widths = [m.out_features for m in algo.vae.encoder if isinstance(m, nn.Linear)]
    assert widths == [400, 400, 8]
    acts = [type(m) for m in algo.actor.net if not isinstance(m, nn.Linear)]
    assert acts == [nn.Tanh, nn.Tanh, nn.Tanh], "OSRL's perturbation actor: tanh hidden layers and output"


def test_perturbation_is_bounded_and_clipped() -> None:
    torch.manual_seed(0)
    actor = PerturbationActor(3, 2, max_action=2.0, phi=0.05, hidden=(8,))
    with torch.no_grad():
        actor.net[-2].bias.fill_(100.0)  # saturate the tanh: perturbation = +phi * max_action = +0.1
    obs = torch.randn(4, 3)
    a = torch.tensor([[0.0, 1.0], [1.95, -2.0], [-1.0, 0.5], [2.0, 2.0]])
    out = actor(obs, a)
    expected = (a + 0.1).clamp(-2.0, 2.0)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_group_mins_and_soft_clipped_double_q() -> None:
    q = torch.tensor([[1.0, 5.0], [2.0, 4.0], [0.0, 9.0], [3.0, 8.0]])  # groups {0, 1} and {2, 3}
    q1, q2 = group_mins(q, 2)
    torch.testing.assert_close(q1, torch.tensor([1.0, 4.0]))
    torch.testing.assert_close(q2, torch.tensor([0.0, 8.0]))
    soft = soft_clipped_double_q(q, 2, 0.75)
    torch.testing.assert_close(soft, torch.tensor([0.75 * 0 + 0.25 * 1, 0.75 * 4 + 0.25 * 8]))


def test_reward_target_by_hand() -> None:
    # Q1 = 2a, Q2 = 1 - a at the samples a in {-1, 0, 1}: soft = 0.75 min + 0.25 max = -1.0, 0.25, 0.5; max 0.5
    critic, vae = LinearCritic([2.0, -1.0], [0.0, 1.0]), CyclingVAE(3)
    next_obs = torch.zeros(2, 3)
    y = td_target(critic, Identity(), vae, next_obs, torch.tensor([1.0, -2.0]), torch.tensor([1.0, 0.0]),
                  discount=0.9, lmbda=0.75, n_samples=3)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 0.5, -2.0]))


def test_cost_target_is_not_masked_at_terminations() -> None:
    critic, vae = LinearCritic([2.0, -1.0], [0.0, 1.0]), CyclingVAE(3)
    y_c = td_target(critic, Identity(), vae, torch.zeros(2, 3), torch.tensor([1.0, 1.0]), None, 0.9, 0.75, 3)
    torch.testing.assert_close(y_c, torch.tensor([1.45, 1.45]))  # OSRL bcql.py:172: c + gamma max_j Qc'_soft


def test_target_takes_max_over_samples_of_each_state() -> None:
    # one sample per state would see only a = -1 (row 0) and a = 0 (row 1): the max needs the state's own samples
    critic, vae = LinearCritic([1.0, 1.0], [0.0, 0.0]), CyclingVAE(3)
    y = td_target(critic, Identity(), vae, torch.zeros(2, 3), torch.zeros(2), torch.ones(2), 1.0, 0.75, 3)
    torch.testing.assert_close(y, torch.tensor([1.0, 1.0]))
    y1 = td_target(critic, Identity(), vae, torch.zeros(2, 3), torch.zeros(2), torch.ones(2), 1.0, 0.75, 1)
    torch.testing.assert_close(y1, torch.tensor([-1.0, 0.0]))


def test_critic_loss_sums_every_network() -> None:
    q = constant_ensemble([1.0, 2.0, 3.0, 4.0], obs_dim=2, act_dim=1)
    target = torch.tensor([0.0, 2.0])
    loss = critic_loss(q, torch.zeros(2, 2), torch.zeros(2, 1), target)
    by_hand = sum(((v - 0.0) ** 2 + (v - 2.0) ** 2) / 2 for v in (1.0, 2.0, 3.0, 4.0))
    assert loss.item() == pytest.approx(by_hand)


# --- the actor and its multiplier -------------------------------------------------------------------------------------

def test_actor_loss_by_hand() -> None:
    torch.manual_seed(0)
    actor = PerturbationActor(3, 1, max_action=1.0, phi=0.5, hidden=(8,))
    critic = LinearCritic([2.0, 3.0], [0.0, 0.0])  # Q = min(2a, 3a)
    cost = LinearCritic([1.0, 2.0], [1.0, 1.0])  # Qc = min(a + 1, 2a + 1)
    vae = CyclingVAE(fixed=0.2)
    obs = torch.randn(5, 3)
    pid = PIDLagrangian(kp=1.0, ki=0.0, kd=0.0, threshold=0.5)
    with frozen(critic), frozen(cost):
        loss, info = actor_loss(actor, critic, cost, vae, obs, pid, budget=0.5)
        loss.backward()
    a = actor(obs, torch.full((5, 1), 0.2)).detach().squeeze(1)
    q, qc = torch.minimum(2 * a, 3 * a), torch.minimum(a + 1, 2 * a + 1)
    lam = max(0.0, qc.mean().item() - 0.5)
    assert lam > 0 and info["lagrangian"].item() == pytest.approx(lam, rel=1e-5)
    assert pid.value.item() == pytest.approx(lam, rel=1e-5), "the controller stepped on this batch's Qc"
    assert loss.item() == pytest.approx((-q.mean() + ((qc - 0.5) * lam).mean()).item(), rel=1e-5)
    assert info["qc_penalty"].item() == pytest.approx(((qc - 0.5) * lam).mean().item(), rel=1e-5)
    assert all(p.grad is not None for p in actor.parameters())
    assert critic.w.grad is None and cost.w.grad is None


def test_penalty_gradient_pushes_toward_lower_cost() -> None:
    """With Q flat and Qc = a + 1 above the budget, the actor's step lowers its action."""
    torch.manual_seed(0)
    actor = PerturbationActor(3, 1, max_action=1.0, phi=0.5, hidden=(8,))
    critic, cost = LinearCritic([0.0, 0.0], [0.0, 0.0]), LinearCritic([1.0, 1.0], [1.0, 1.0])
    obs, vae = torch.randn(16, 3), CyclingVAE(fixed=0.0)
    pid = PIDLagrangian(kp=1.0, ki=0.0, kd=0.0, threshold=0.0)
    opt = torch.optim.SGD(actor.parameters(), lr=0.1)
    before = actor(obs, torch.zeros(16, 1)).mean().item()
    for _ in range(5):
        loss, _ = actor_loss(actor, critic, cost, vae, obs, pid, budget=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert actor(obs, torch.zeros(16, 1)).mean().item() < before - 1e-3


# --- the algorithm ----------------------------------------------------------------------------------------------------

def test_needs_costs_and_budget() -> None:
    ctx = safe_context()
    ctx.dataset = dataclasses.replace(ctx.dataset, costs=None)
    with pytest.raises(CtrlbenchError, match="costs"):
        BCQLag(BCQLagConfig(**SMALL), ctx)
    with pytest.raises(CtrlbenchError, match="budget"):
        BCQLag(BCQLagConfig(**SMALL), safe_context(cost_limit=None))
    with pytest.raises(ValueError, match="lmbda"):
        BCQLagConfig(lmbda=1.5)


def test_budget_and_scales() -> None:
    algo = BCQLag(BCQLagConfig(**SMALL, episode_len=200), safe_context(cost_limit=20.0))
    assert algo.budget == pytest.approx(discounted_budget(20.0, 0.99, 200))
    assert algo.pid.threshold == algo.budget
    ctx = safe_context()
    b = algo.sampler.gather(torch.arange(64))
    np.testing.assert_allclose(b.rewards.numpy(), 0.1 * ctx.dataset.rewards, rtol=1e-6)
    np.testing.assert_allclose(b.costs.numpy(), ctx.dataset.costs)
    np.testing.assert_allclose(b.observations.numpy(), ctx.dataset.observations)  # raw states, as OSRL


def test_tiny_run_trains_every_part_and_the_multiplier_reacts_to_the_budget() -> None:
    torch.manual_seed(0)
    algo = BCQLag(BCQLagConfig(**SMALL), safe_context(costs=np.ones(64), cost_limit=0.0))
    before = {k: params(getattr(algo, k)) for k in ("vae", "actor", "critic", "cost_critic", "critic_target")}
    lams = []
    for _ in range(30):
        m = algo.update()
        assert all(math.isfinite(float(v)) for v in m.values())
        lams.append(float(m["lagrangian"]))
    assert set(m) >= {"vae_loss", "critic_loss", "cost_critic_loss", "actor_loss", "qc_penalty", "lagrangian"}
    for k, p in before.items():
        assert not same(p, params(getattr(algo, k))), f"{k} did not change"
    assert algo.step == 30
    assert float(m["qc_pi"]) > 0.0 and lams[-1] > 0.0, "every step costs 1 and the budget is 0: lambda must rise"

    torch.manual_seed(0)
    slack = BCQLag(BCQLagConfig(**SMALL), safe_context(costs=np.zeros(64), cost_limit=20.0))
    slack_lams = [float(slack.update()["lagrangian"]) for _ in range(30)]
    # below the budget P and I are 0; only OSRL's derivative term, KD max(0, e_t - e_(t-1)), can blip above 0
    assert slack.pid.error_integral.item() == 0.0 and max(slack_lams) < 1e-3 < 0.05 < lams[-1]


def test_act_is_deterministic_bounded_and_batched() -> None:
    algo = BCQLag(BCQLagConfig(**SMALL), safe_context(max_action=2.0))
    for _ in range(3):
        algo.update()
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    a = algo.act(obs)
    assert a.shape == (5, 2) and a.dtype == np.float32 and np.all(np.abs(a) <= 2.0)
    np.testing.assert_array_equal(a, algo.act(obs))
    s = torch.as_tensor(obs)
    with torch.no_grad():
        by_hand = algo.actor(s, algo.vae.decode(s, torch.zeros(5, 4))).numpy()
    np.testing.assert_allclose(a, by_hand, rtol=1e-6)


def test_sampled_latent_acting_is_seeded() -> None:
    ctx = safe_context()
    a = BCQLag(BCQLagConfig(**SMALL, eval_sample_latent=True), ctx)
    b = BCQLag(BCQLagConfig(**SMALL, eval_sample_latent=True), ctx)
    b.load_state_dict(a.state_dict())
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    first = a.act(obs)
    np.testing.assert_array_equal(first, b.act(obs))
    assert not np.array_equal(first, a.act(obs)), "a fresh latent per call, as OSRL"


def test_save_load_round_trip_resumes_identically() -> None:
    torch.manual_seed(0)
    cfg = BCQLagConfig(**SMALL, eval_sample_latent=True)
    algo = BCQLag(cfg, safe_context(cost_limit=0.5))
    for _ in range(5):
        algo.update()
    torch.manual_seed(123)  # other initial weights: only the checkpoint makes them equal
    fresh = BCQLag(cfg, safe_context(cost_limit=0.5))
    fresh.load_state_dict(io_round_trip(algo.state_dict()))
    assert fresh.step == 5 and fresh.pid.value.item() == algo.pid.value.item()
    assert fresh.pid.error_integral.item() == algo.pid.error_integral.item()
    torch.manual_seed(1)
    m1 = algo.update()
    torch.manual_seed(1)
    m2 = fresh.update()
    for k in m1:
        assert float(m1[k]) == float(m2[k]), k
    assert same(params(algo.actor), params(fresh.actor)) and same(params(algo.cost_critic), params(fresh.cost_critic))
    obs = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(algo.act(obs), fresh.act(obs))


def test_replayed_updates_equal_eager_ones() -> None:
    """graph_period 1: the stand-in CUDA-graph replayer (tests/test_graphs.py) gives the eager result, PID included."""
    def build() -> BCQLag:
        torch.manual_seed(0)
        return BCQLag(BCQLagConfig(**SMALL), safe_context(cost_limit=0.5))

    eager, graphed = build(), build()
    backend = StandIn(graphed)
    torch.manual_seed(1)
    EagerUpdates(eager).run(8)
    torch.manual_seed(1)
    GraphedUpdates(graphed, warmup=2, backend=backend).run(8)
    assert backend.replays == 6 and graphed.step == 8
    for name in ("actor", "critic", "cost_critic", "vae", "actor_target"):
        assert same(params(getattr(graphed, name)), params(getattr(eager, name))), name
    for key, value in eager.pid.state_dict().items():
        assert torch.equal(graphed.pid.state_dict()[key], value), key


@pytest.mark.parametrize("mask", [False, True])
def test_update_masks_the_cost_target_only_when_asked(monkeypatch: pytest.MonkeyPatch, mask: bool) -> None:
    import algorithms.bcq_lag as module

    seen: list[torch.Tensor | None] = []
    real = module.td_target

    def spy(*args, **kwargs):
        seen.append(args[5])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "td_target", spy)
    algo = BCQLag(BCQLagConfig(**SMALL, mask_cost_terminal=mask), safe_context())
    algo.update()
    reward_mask, cost_mask = seen
    assert reward_mask is not None, "the reward target is masked at true terminations"
    assert (cost_mask is not None) == mask, "OSRL bcql.py:172: no mask on the cost target by default"
