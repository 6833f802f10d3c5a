"""SPOT: the VAE's ELBO by hand, the support-penalized actor loss, the two phases, dropout off when acting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algorithms.core.nets import frozen
from algorithms.core.td3 import actor_loss
from algorithms.core.vae import ConditionalVAE
from algorithms.spot import Q_WEIGHT, SPOT, SPOTConfig, support_term
from tests.algo_helpers import hand_batch, params, same, tiny_context


def zero_vae(mean: float, log_std: float) -> ConditionalVAE:
    """Encoder outputs (mean, log_std) everywhere; decoder outputs 0."""
    vae = ConditionalVAE(2, 1, max_action=1.0, hidden=(4,))
    with torch.no_grad():
        for p in vae.parameters():
            p.zero_()
        vae.encoder[-1].bias.copy_(torch.tensor([mean, mean, log_std, log_std]))
    return vae


def test_elbo_by_hand() -> None:
    batch = hand_batch()  # actions 0.5 and -0.5
    loss = zero_vae(0.3, math.log(0.5)).elbo_loss(batch.observations, batch.actions, beta_kl=0.5)
    kl = -0.5 * (1 + math.log(0.25) - 0.09 - 0.25)  # per latent dim, identical for both dims
    np.testing.assert_allclose(loss.detach().numpy(), [0.25 + 0.5 * kl] * 2, rtol=1e-6)


def test_actor_loss_by_hand_and_gradient_through_frozen_vae() -> None:
    batch = hand_batch()

    class Critic(torch.nn.Module):
        def member(self, i, obs, act):
            return 3.0 * act.sum(-1)

    actor = torch.nn.Linear(2, 1)
    vae = zero_vae(0.0, 0.0)  # KL 0, reconstruction 0: neg_log_beta = mean(pi^2)
    with frozen(vae):
        loss, info = actor_loss(actor, Critic(), batch.observations, Q_WEIGHT,
                                lambda pi: support_term(pi, vae, batch, lambd=0.1))
        nlb = info["neg_log_beta"]
        loss.backward()
    pi = actor(batch.observations).detach().squeeze(1)
    q1 = 3.0 * pi
    assert nlb.item() == pytest.approx((pi**2).mean().item(), rel=1e-5)
    assert loss.item() == pytest.approx((-q1.mean() / q1.abs().mean() + 0.1 * (pi**2).mean()).item(), rel=1e-5)
    assert actor.weight.grad is not None and all(p.grad is None for p in vae.parameters())


def test_vae_phase_then_td3_phase() -> None:
    algo = SPOT(SPOTConfig(batch_size=8, vae_steps=3), tiny_context())
    vae0, actor0 = params(algo.vae), params(algo.actor)
    for _ in range(3):
        assert set(algo.update()) == {"vae_loss"}
    assert not same(vae0, params(algo.vae)) and same(actor0, params(algo.actor))
    vae_trained = params(algo.vae)
    assert set(algo.update()) == {"critic_loss"}
    assert {"actor_loss", "neg_log_beta"} <= set(algo.update())
    assert same(vae_trained, params(algo.vae)), "the VAE is frozen after pre-training"
    assert not same(actor0, params(algo.actor))


def test_act_turns_dropout_off() -> None:
    algo = SPOT(SPOTConfig(actor_dropout=0.5), tiny_context())
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(algo.act(obs), algo.act(obs))
    assert algo.actor.training
