"""The TD3 core's actor step by hand (MLP tapes, autograd only for the method's own term) takes the same step as
autograd on `actor_loss`, bit for bit, for every TD3-family method whose actor is a plain ReLU MLP."""

from __future__ import annotations

import copy

import pytest
import torch

from algorithms.a2pr import A2PR, A2PRConfig
from algorithms.a2pr import bc_term as a2pr_term
from algorithms.core.td3 import MSETerm, TD3Core, actor_loss
from algorithms.prdc import PRDC, PRDCConfig, constraint_term
from algorithms.spot import Q_WEIGHT, SPOT, SPOTConfig, support_term
from algorithms.td3_bc import TD3BC, TD3BCConfig, bc_term
from tests.algo_helpers import tiny_context


def step_inputs(name: str, max_action: float):
    """(algorithm, its TD3 core, a batch, alpha, the method's term as a function of pi, the frozen extras)."""
    ctx = tiny_context(max_action=max_action)
    if name == "td3_bc":
        algo = TD3BC(TD3BCConfig(batch_size=32), ctx)
        batch = algo.sampler.sample(32)
        return algo, batch, 2.5, bc_term(batch), ()
    if name == "prdc":
        algo = PRDC(PRDCConfig(batch_size=32, search="torch"), ctx)
        batch = algo.sampler.sample(32)
        return algo, batch, 2.5, constraint_term(batch, algo.neighbors, algo.dataset_actions, algo.config.beta), ()
    if name == "spot":  # without dropout its actor is a plain MLP, so the step runs by hand
        algo = SPOT(SPOTConfig(batch_size=32, actor_dropout=0.0, vae_steps=0), ctx)
        batch = algo.sampler.sample(32)
        return algo, batch, Q_WEIGHT, lambda pi: support_term(pi, algo.vae, batch, 0.1), (algo.vae,)
    algo = A2PR(A2PRConfig(batch_size=32), ctx)
    batch = algo.sampler.sample(32)
    v = algo.v(batch.observations).detach()
    return algo, batch, 2.5, lambda pi: a2pr_term(pi, algo.critic, algo.vae, batch, v, 0.5), (algo.vae,)


def by_autograd(core: TD3Core) -> TD3Core:
    core._tapes = lambda obs: None  # the path an actor with dropout takes
    return core


@pytest.mark.parametrize("max_action", [1.0, 2.5])
@pytest.mark.parametrize("name", ["td3_bc", "prdc", "spot", "a2pr"])
def test_actor_step_by_hand_is_the_autograd_step(name: str, max_action: float) -> None:
    algo, batch, alpha, term, extra = step_inputs(name, max_action)
    core = algo.td3
    assert core._tapes(batch.observations) is not None, "this case must take the step by hand"
    reference = by_autograd(copy.deepcopy(core))
    # the same random draws (the VAE's latent sample) on both paths
    torch.manual_seed(3)
    fast = core.actor_step(batch.observations, alpha, term, *extra)
    grads = [p.grad.clone() for p in core.actor.parameters()]
    torch.manual_seed(3)
    slow = reference.actor_step(batch.observations, alpha, term, *extra)
    # the same matmuls on the same operands: autograd's gradients bit for bit, so the same Adam step
    for g, p in zip(grads, reference.actor.parameters(), strict=True):
        assert torch.equal(g, p.grad)
    for a, b in zip(core.actor.parameters(), reference.actor.parameters(), strict=True):
        assert torch.equal(a, b)
    assert set(fast) == set(slow)
    for key in fast:
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-5, atol=1e-6)
    for p in (*core.critic.parameters(), *[q for m in extra for q in m.parameters()]):
        assert p.grad is None or not p.grad.any(), "the frozen networks get no gradient"


def test_actor_loss_is_the_shared_q_term_plus_the_method_term() -> None:
    algo, batch, alpha, term, _ = step_inputs("td3_bc", 1.0)
    loss, info = actor_loss(algo.actor, algo.critic, batch.observations, alpha, term)
    pi = algo.actor(batch.observations)
    q1 = algo.critic(batch.observations, pi)[0]
    lmbda = alpha / q1.abs().mean()
    torch.testing.assert_close(info["lambda_"], lmbda)
    torch.testing.assert_close(loss, -lmbda * q1.mean() + ((pi - batch.actions) ** 2).mean())
    assert not info["lambda_"].requires_grad  # lambda is a constant of the step (stop-gradient)


def test_an_actor_with_dropout_takes_the_autograd_path() -> None:
    algo = SPOT(SPOTConfig(batch_size=8, vae_steps=0), tiny_context())  # SPOT's default dropout 0.1
    assert algo.td3._tapes(algo.sampler.sample(8).observations) is None


def test_mse_term_closed_form_is_autograds_value_and_gradient() -> None:
    """MSETerm's closed form is what its autograd definition gives, bit for bit, target held constant."""
    torch.manual_seed(0)
    pi = torch.randn(37, 6, requires_grad=True)
    target = torch.randn(37, 6)
    term = MSETerm(lambda a: target + 0.0 * a.detach())  # a target computed from pi, as PRDC's, no gradient
    value, metrics = term(pi)
    (expected_grad,) = torch.autograd.grad(value, pi)
    closed_value, grad, closed_metrics = term.value_and_grad(pi.detach())
    assert torch.equal(closed_value, value.detach()) and torch.equal(grad, expected_grad)
    assert metrics == closed_metrics == {}
