"""OGSRL (GCQL + cost critic + Lagrangian): the guarded reward and cost, the TD targets, the CQL candidates and gap by
hand, the actor term, the guard scoring the policy's action (not the data's), the dual step, a tiny run, save/load."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from algorithms.core.contract import AlgoContext
from algorithms.core.errors import CtrlbenchError
from algorithms.core.graphs import EagerUpdates, GraphedUpdates
from algorithms.core.lagrangian import discounted_budget
from algorithms.core.nets import frozen
from algorithms.core.registry import get_algorithm
from algorithms.ogsrl import (
    OGSRL,
    OGSRLConfig,
    actor_objective,
    conservative_gap,
    cql_candidates,
    guarded_signal,
    td_target,
)
from tests.algo_helpers import io_round_trip, params, safe_context, same
from tests.test_graphs import StandIn
from tests.test_sac_lag import constant_ensemble

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: one thread is fastest (tests/conftest.py)


SMALL = dict(batch_size=16, episode_len=16)


class SumCritic(torch.nn.Module):
    """One member: Q(s, a) = w * sum(a) + b, w and b parameters."""

    def __init__(self, w: float, b: float = 0.0) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))
        self.b = torch.nn.Parameter(torch.tensor(b))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return (self.w * act.sum(-1) + self.b).unsqueeze(0)


# --- defaults and registration ----------------------------------------------------------------------------------------

def test_official_defaults_and_registration() -> None:
    c = OGSRLConfig()
    assert (c.batch_size, c.actor_lr, c.critic_lr, c.discount, c.tau, c.hidden) == (32, 1e-4, 1e-4, 0.99, 1e-3,
                                                                                    (128, 128))
    assert (c.cql_alpha, c.cql_n_actions, c.cql_noise_std, c.kde_penalty) == (1.0, 12, 0.1, -25.0)
    assert (c.kde_sigma, c.kde_percentile, c.kde_cost, c.episode_len) == (0.535, 5.0, 0.0, 1000)
    assert get_algorithm("ogsrl") is OGSRL and OGSRL.kinds == ("offline-safe",)


def test_needs_costs_and_budget() -> None:
    with pytest.raises(CtrlbenchError, match="no cost budget"):
        OGSRL(OGSRLConfig(**SMALL), safe_context(cost_limit=None))
    ctx = safe_context()
    ctx.dataset = dataclasses.replace(ctx.dataset, costs=None)
    with pytest.raises(CtrlbenchError, match="per-step costs"):
        OGSRL(OGSRLConfig(**SMALL), ctx)
    with pytest.raises(ValueError, match="kde_sigma"):
        OGSRLConfig(kde_sigma=0.0)


def test_budget_in_the_cost_critics_units() -> None:
    algo = OGSRL(OGSRLConfig(**SMALL), safe_context(cost_limit=20.0))
    assert algo.budget == pytest.approx(discounted_budget(20.0, 0.99, 16))
    assert algo.budget == pytest.approx(20.0 * (1 - 0.99 ** 16) / (0.01 * 16))


# --- losses on hand-made values ---------------------------------------------------------------------------------------

def test_guarded_reward_and_cost_by_hand() -> None:
    r, c, ood = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0]), torch.tensor([1.0, 0.0, 1.0])
    assert guarded_signal(r, ood, -25.0).tolist() == [-24.0, -2.0, -24.5]
    assert guarded_signal(c, ood, 1.0).tolist() == [1.0, 1.0, 2.0]
    assert guarded_signal(c, ood, 0.0).tolist() == c.tolist()


def test_td_targets_by_hand() -> None:
    q_target = constant_ensemble([3.0], obs_dim=2)
    next_obs, next_a = torch.zeros(2, 2), torch.zeros(2, 1)
    signal, dones = torch.tensor([1.0, -2.0]), torch.tensor([0.0, 1.0])
    y = td_target(signal, q_target, next_obs, next_a, 1.0 - dones, 0.5)
    assert y.tolist() == [1.0 + 0.5 * 3.0, -2.0]
    y_c = td_target(signal, q_target, next_obs, next_a, None, 0.5)  # the unmasked cost target
    assert y_c.tolist() == [2.5, -0.5]


def test_cql_candidates_uniform_in_the_box_then_noisy_policy_actions() -> None:
    torch.manual_seed(0)
    pi = torch.tensor([[0.5, -1.0], [1.5, 0.0]])
    cand = cql_candidates(pi, n=200, max_action=2.0, noise_std=0.1)
    assert cand.shape == (2, 400, 2)
    uniform, noisy = cand[:, :200], cand[:, 200:]
    assert uniform.min() >= -2.0 and uniform.max() <= 2.0 and uniform.abs().max() > 1.8
    assert abs(uniform.mean().item()) < 0.2
    spread = (noisy - pi.unsqueeze(1)).std().item()
    assert spread == pytest.approx(0.1 * 2.0, rel=0.15)  # noise in units of max_action
    exact = cql_candidates(pi, n=3, max_action=2.0, noise_std=0.0)[:, 3:]
    assert torch.equal(exact, pi.unsqueeze(1).expand(-1, 3, -1))


def test_conservative_gap_by_hand() -> None:
    # Q(s, a) = sum(a); candidates per state {0, 1, 2} and data actions 1 and 2
    critic = SumCritic(1.0)
    obs = torch.zeros(2, 3)
    cand = torch.tensor([[0.0], [1.0], [2.0]]).expand(2, -1, -1)
    q_data = torch.tensor([1.0, 2.0])
    lse = math.log(1 + math.e + math.e ** 2)
    expected = ((lse - 1.0) + (lse - 2.0)) / 2
    assert conservative_gap(critic, obs, cand, q_data).item() == pytest.approx(expected, rel=1e-6)
    # the data action is not among the candidates (gcql.py:276): a constant critic gives log(2N) exactly
    flat = constant_ensemble([4.0], obs_dim=3)
    gap = conservative_gap(flat, obs, torch.zeros(2, 24, 1), torch.tensor([4.0, 4.0]))
    assert gap.item() == pytest.approx(math.log(24.0), rel=1e-6)


def test_conservative_gap_pushes_candidates_down_and_data_up() -> None:
    critic = SumCritic(1.0, 0.0)
    gap = conservative_gap(critic, torch.zeros(1, 3), torch.tensor([[[2.0], [3.0]]]), torch.tensor([0.5]) * critic.w)
    gap.backward()
    # d gap / d w = softmax-weighted candidate action - data action = (2 e^2 + 3 e^3) / (e^2 + e^3) - 0.5 > 0
    expected = (2 * math.e ** 2 + 3 * math.e ** 3) / (math.e ** 2 + math.e ** 3) - 0.5
    assert critic.w.grad.item() == pytest.approx(expected, rel=1e-5)


def test_actor_objective_by_hand_and_only_the_actor_gets_gradients() -> None:
    critic, cost_critic = SumCritic(2.0), SumCritic(3.0)
    actor = torch.nn.Linear(3, 1)
    obs = torch.randn(4, 3)
    with frozen(critic), frozen(cost_critic):
        pi = actor(obs)
        loss, qc_pi = actor_objective(critic, cost_critic, obs, pi, torch.tensor(0.5))
    pi = pi.detach().squeeze(1)
    assert loss.item() == pytest.approx((-2.0 * pi + 0.5 * 3.0 * pi).mean().item(), rel=1e-5)
    torch.testing.assert_close(qc_pi, 3.0 * pi)
    loss.backward()
    assert actor.bias.grad.item() == pytest.approx(-2.0 + 1.5)  # lambda Q_c pulls against Q
    assert all(p.grad is None for p in (*critic.parameters(), *cost_critic.parameters()))


def test_a_large_lambda_turns_the_actor_toward_lower_cost() -> None:
    critic, cost_critic = SumCritic(1.0), SumCritic(1.0)  # reward and cost both grow with the action
    actor = torch.nn.Linear(3, 1)
    for lam, sign in ((0.0, -1.0), (2.0, 1.0)):
        actor.zero_grad()
        with frozen(critic), frozen(cost_critic):
            loss, _ = actor_objective(critic, cost_critic, torch.ones(2, 3), actor(torch.ones(2, 3)),
                                      torch.tensor(lam))
        loss.backward()
        assert math.copysign(1.0, actor.bias.grad.item()) == sign  # descent raises a (lambda 0), lowers it (2)


# --- the guard inside the update --------------------------------------------------------------------------------------

def saturate_actor(algo: OGSRL, value: float) -> None:
    """Make the actor output max_action * tanh(value) everywhere."""
    with torch.no_grad():
        last = algo.actor.net[-2]
        last.weight.zero_()
        last.bias.fill_(value)


def narrow_action_context(seed: int = 0) -> AlgoContext:
    """Dataset actions all in [-0.1, 0.1]: a policy at the box's edge is far outside the support."""
    ctx = safe_context(seed=seed)
    ctx.dataset = dataclasses.replace(ctx.dataset, actions=(ctx.dataset.actions * 0.1).astype(np.float32))
    return ctx


def test_the_guard_scores_the_policys_action_not_the_dataset_pair() -> None:
    algo = OGSRL(OGSRLConfig(**SMALL), narrow_action_context())
    data = algo.ctx.dataset
    obs = torch.as_tensor(algo.normalizer(data.observations))
    assert algo.guard.out_of_support(obs, torch.as_tensor(data.actions)).mean().item() <= 0.1  # dataset pairs
    saturate_actor(algo, 10.0)  # pi(s) = 1.0, ten action-ranges away from the data
    metrics = algo.update()
    assert metrics["ood_fraction"].item() == 1.0  # every batch pair is a training pair: only pi(s) can be flagged


def test_the_penalty_enters_the_reward_target(monkeypatch: pytest.MonkeyPatch) -> None:
    import algorithms.ogsrl as ogsrl

    seen: list[torch.Tensor] = []
    real = ogsrl.td_target
    monkeypatch.setattr(ogsrl, "td_target", lambda signal, *a: seen.append(signal) or real(signal, *a))
    ys = {}
    for penalty in (0.0, -25.0):
        torch.manual_seed(0)
        algo = OGSRL(OGSRLConfig(kde_penalty=penalty, kde_cost=2.0, **SMALL), narrow_action_context())
        saturate_actor(algo, 10.0)
        seen.clear()
        torch.manual_seed(1)
        algo.update()
        ys[penalty] = [s.clone() for s in seen]
    reward_0, cost_0 = ys[0.0]
    reward_25, cost_25 = ys[-25.0]
    torch.testing.assert_close(reward_25, reward_0 - 25.0)  # every pair flagged: r~ = r - 25
    torch.testing.assert_close(cost_25, cost_0)  # kde_cost 2 in both runs
    assert set(cost_0.tolist()) <= {2.0, 3.0}  # c~ = c + 2 with c in {0, 1}, every pair flagged


def test_guard_subset_config_reaches_the_guard() -> None:
    algo = OGSRL(OGSRLConfig(kde_reference_size=20, kde_fit_queries=10, kde_sigma=0.3, **SMALL), safe_context())
    assert algo.guard.reference.shape == (20, 5) and algo.guard.sigma == 0.3
    assert OGSRL(OGSRLConfig(kde_reference_size=0, **SMALL), safe_context()).guard.reference.shape == (64, 5)


# --- the Lagrange multiplier ------------------------------------------------------------------------------------------

def set_constant(q, value: float) -> None:
    with torch.no_grad():
        for p in q.parameters():
            p.zero_()
        q.net[-1].bias.fill_(value)


def test_lambda_grows_over_budget_and_shrinks_under_it() -> None:
    over = OGSRL(OGSRLConfig(lambda_lr=0.1, **SMALL), safe_context(cost_limit=1.0))
    set_constant(over.cost_critic, 50.0)  # J_c = 50 >> d ~ 0.93
    for _ in range(3):
        metrics = over.update()
    assert metrics["lambda"].item() > 0.2
    assert metrics["qc_pi"].item() == pytest.approx(50.0, rel=1e-2)
    under = OGSRL(OGSRLConfig(lambda_init=1.0, lambda_lr=0.1, **SMALL), safe_context(cost_limit=40.0))
    set_constant(under.cost_critic, 0.0)  # J_c = 0 < d ~ 37
    for _ in range(3):
        metrics = under.update()
    assert metrics["lambda"].item() < 0.8
    for _ in range(20):
        metrics = under.update()
    assert metrics["lambda"].item() == 0.0  # projected onto lambda >= 0


# --- end to end -------------------------------------------------------------------------------------------------------

def test_tiny_run_trains_every_part_on_a_pendulum_like_box() -> None:
    torch.manual_seed(0)
    algo = OGSRL(OGSRLConfig(), safe_context(max_action=2.0, n=128))  # default config, as the CLI smoke run
    before = {k: params(getattr(algo, k)) for k in ("actor", "critic", "cost_critic", "actor_target")}
    for _ in range(30):
        metrics = algo.update()
    assert algo.step == 30
    for k, p in before.items():
        assert not same(p, params(getattr(algo, k))), k
    keys = {"critic_loss", "td_loss", "cql_gap", "cost_critic_loss", "actor_loss", "qc_pi", "ood_fraction", "lambda",
            "lambda_loss", "cost_budget"}
    assert keys <= set(metrics) and all(math.isfinite(float(v)) for v in metrics.values())
    act = algo.act(np.zeros((5, 3), np.float32))
    assert act.shape == (5, 2) and np.abs(act).max() <= 2.0
    np.testing.assert_array_equal(act, algo.act(np.zeros((5, 3), np.float32)))


def test_save_load_round_trip_resumes_identically() -> None:
    torch.manual_seed(0)
    algo = OGSRL(OGSRLConfig(kde_reference_size=40, **SMALL), safe_context())
    for _ in range(5):
        algo.update()
    state = io_round_trip(algo.state_dict())
    torch.manual_seed(3)
    other_seed = safe_context()  # the same data (a resume rebuilds from it), another run seed and network init
    other_seed.seed = 7
    fresh = OGSRL(OGSRLConfig(kde_reference_size=40, **SMALL), other_seed)
    assert not torch.equal(fresh.guard.reference, algo.guard.reference)  # another random reference subset
    fresh.load_state_dict(state)
    assert fresh.step == 5 and torch.equal(fresh.guard.reference, algo.guard.reference)
    assert fresh.guard.log_threshold == algo.guard.log_threshold
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(fresh.act(obs), algo.act(obs))
    torch.manual_seed(11)
    a = algo.update()
    torch.manual_seed(11)
    b = fresh.update()
    for k in a:
        assert float(a[k]) == float(b[k]), k
    assert same(params(fresh.critic), params(algo.critic)) and same(params(fresh.actor), params(algo.actor))
    assert fresh.lagrange.value.item() == algo.lagrange.value.item()


def test_replayed_updates_equal_eager_ones() -> None:
    def build() -> OGSRL:
        torch.manual_seed(0)
        return OGSRL(OGSRLConfig(cql_n_actions=3, **SMALL), safe_context())

    eager, graphed = build(), build()
    backend = StandIn(graphed)
    torch.manual_seed(1)
    EagerUpdates(eager).run(8)
    torch.manual_seed(1)
    GraphedUpdates(graphed, warmup=2, backend=backend).run(8)
    assert backend.replays == 6 and graphed.step == 8
    for name in ("actor", "critic", "cost_critic"):
        assert same(params(getattr(graphed, name)), params(getattr(eager, name))), name
    assert graphed.lagrange.value.item() == eager.lagrange.value.item()
