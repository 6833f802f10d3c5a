"""DDPM pieces (algorithms/core/diffusion.py) and DPPO (algorithms/dppo.py): the cosine schedule, the posterior, the
denoising loss and sampler on a bimodal action set, the chain and its per-step likelihood, the PPO clip schedule, and
DPPO end to end on Pendulum through pretraining and fine-tuning, with a resume mid fine-tuning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algorithms.core.diffusion import (
    DDPM,
    DiffusionMLP,
    cosine_beta_schedule,
    epsilon_loss,
    sample,
    step_log_prob,
)
from algorithms.core.errors import CtrlbenchError
from algorithms.core.nets import ResidualMLP
from algorithms.core.registry import get_algorithm
from algorithms.core.threads import torch_threads
from algorithms.dppo import DPPO, DPPOConfig, clip_coefficients
from tests.algo_helpers import io_round_trip, params, same
from tests.test_ppo_core import pendulum_context

# --- DDPM -------------------------------------------------------------------------------------------------------------


def test_cosine_schedule_endpoints() -> None:
    betas = cosine_beta_schedule(20)
    assert betas.shape == (20,) and betas.dtype == torch.float32
    f = [math.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2 for x in np.linspace(0, 21, 21) / 21]  # the ref's grid
    assert betas[0].item() == pytest.approx(1 - f[1] / f[0], rel=1e-5)
    assert betas[-1].item() == pytest.approx(0.999)  # abar reaches 0 at the grid's end: beta 1, clipped
    assert bool((betas[1:] > betas[:-1]).all())  # noise grows with t
    ddpm = DDPM(20)
    assert ddpm.alpha_bar[0].item() == pytest.approx(1 - betas[0].item())
    assert ddpm.alpha_bar[-1].item() < 1e-3  # x_K is (almost) pure noise
    assert ddpm.posterior_logvar[0].item() == pytest.approx(math.log(1e-20))  # no noise on the last step
    assert ddpm.state_dict() == {}  # fixed by K: nothing to checkpoint


def test_posterior_at_the_last_step_is_the_clipped_prediction() -> None:
    ddpm = DDPM(20)
    x, eps = torch.randn(5, 4, 2), torch.randn(5, 4, 2)
    t0 = torch.zeros(5, dtype=torch.long)
    mean, _ = ddpm.posterior(eps, x, t0)
    x0 = (x - (1 - ddpm.alpha_bar[0]).sqrt() * eps) / ddpm.alpha_bar[0].sqrt()
    torch.testing.assert_close(mean, x0.clamp(-1, 1))
    t = torch.full((5,), 7, dtype=torch.long)  # q_sample then a perfect eps gives x_0 back
    clean = torch.rand(5, 4, 2) * 2 - 1
    noisy = ddpm.q_sample(clean, t, eps)
    recovered = (noisy - ddpm.sqrt_one_minus_alpha_bar[7] * eps) / ddpm.sqrt_alpha_bar[7]
    torch.testing.assert_close(recovered, clean, atol=1e-5, rtol=1e-5)


def test_denoiser_shapes_and_residual_layout() -> None:
    net = DiffusionMLP(obs_dim=3, act_dim=2, horizon=4, hidden=(32, 32, 32))
    out = net(torch.randn(6, 4, 2), torch.arange(6), torch.randn(6, 3))
    assert out.shape == (6, 4, 2)
    linears = [m for m in net.net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4 * 2 + 16 + 3, 32), (32, 32), (32, 32), (32, 8)]
    with pytest.raises(ValueError):
        ResidualMLP(3, (32, 32), 1)


def test_diffusion_fits_a_bimodal_action_set() -> None:
    """1-D actions at -0.6 or +0.6 whatever the state: the loss falls and samples land near both modes."""
    with torch_threads(1):
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        ddpm, net = DDPM(20), DiffusionMLP(1, 1, 1, hidden=(64, 64, 64))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        modes, losses = torch.tensor([-0.6, 0.6]), []
        for _ in range(600):
            x0 = modes[torch.randint(2, (256,), generator=g)].view(-1, 1, 1)
            loss = epsilon_loss(ddpm, net, x0, torch.zeros(256, 1), g)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:50])
        x, _ = sample(ddpm, lambda t: net, torch.zeros(1000, 1), (1, 1), deterministic=True, generator=g)
    x = x.flatten()
    assert ((x.abs() - 0.6).abs() < 0.15).float().mean() > 0.85
    assert 0.2 < (x > 0).float().mean() < 0.8  # both modes


def test_sampler_chain_matches_the_step_likelihood() -> None:
    """The kept chain is the last K' + 1 iterates: each pair is one denoising step whose noise, recovered through
    step_log_prob's mean and floored std, is a clipped standard normal; each step uses the denoiser asked for."""
    with torch_threads(1):
        torch.manual_seed(0)
        ddpm, net = DDPM(20), DiffusionMLP(2, 1, 3, hidden=(16, 16, 16))
        used = []

        def denoiser_at(t: int):
            used.append(t)
            return net

        states = torch.randn(400, 2)
        x, chain = sample(ddpm, denoiser_at, states, (3, 1), deterministic=False, min_std=0.1, randn_clip=3.0,
                          keep_last=10)
        assert used == list(range(19, -1, -1)) and chain.shape == (400, 11, 3, 1)
        torch.testing.assert_close(chain[:, -1], x)
        noises = []
        for i in range(10):
            t = torch.full((400,), 9 - i, dtype=torch.long)
            log_p = step_log_prob(ddpm, net, states, chain[:, i], chain[:, i + 1], t, min_std=0.1)
            std = (0.5 * ddpm.posterior_logvar[9 - i]).exp().clamp(min=0.1)
            noise_sq = -2 * (log_p + std.log() + 0.5 * math.log(2 * math.pi))  # log N = -z^2/2 - log std - log(2 pi)/2
            noises.append(noise_sq)
        z2 = torch.stack(noises)
        assert z2.max() <= 9.0 + 1e-3  # |z| <= randn_clip
        assert z2.mean().item() == pytest.approx(1.0, abs=0.1)  # E[z^2] = 1 (slightly less: clipped)


def test_clip_coefficients_interpolate_over_denoising_steps() -> None:
    eps = clip_coefficients(10, base=0.001, final=0.01, rate=3.0)
    assert eps[0].item() == pytest.approx(0.001) and eps[-1].item() == pytest.approx(0.01)
    assert bool((eps[1:] > eps[:-1]).all())
    torch.testing.assert_close(clip_coefficients(10, 0.01, 0.01, 3.0), torch.full((10,), 0.01))
    assert clip_coefficients(1, 0.001, 0.01, 3.0).tolist() == [pytest.approx(0.01)]


# --- DPPO -------------------------------------------------------------------------------------------------------------

def tiny_config(**kw) -> DPPOConfig:
    base = {"pretrain_steps": 6, "hidden": (32, 32, 32), "critic_hidden": (32, 32, 32), "n_envs": 2, "n_steps": 6,
            "batch_size": 40, "update_epochs": 2, "drop_nonpositive_episodes": False, "ema_every": 2}
    return DPPOConfig(**{**base, **kw})


def test_config_registration_and_budget() -> None:
    cfg = DPPOConfig()
    assert (cfg.denoising_steps, cfg.ft_denoising_steps, cfg.horizon, cfg.min_sampling_std) == (20, 10, 4, 0.1)
    assert (cfg.n_envs, cfg.n_steps, cfg.batch_size, cfg.update_epochs) == (40, 500, 50_000, 5)
    assert (cfg.gamma_denoising, cfg.clip_ploss_coef, cfg.target_kl, cfg.pretrain_batch_size) == (0.99, 0.01, 1.0, 128)
    assert get_algorithm("dppo") is DPPO and DPPO.kinds == ("offline-to-online",)
    with pytest.raises(ValueError):
        DPPOConfig(ft_denoising_steps=21)
    with pytest.raises(ValueError):
        DPPOConfig(hidden=(512, 512))
    assert cfg.pretrain_lr == 1e-3  # its own; the shared base's is the Gaussian policy's 1e-4
    for shared in ({"critic_hidden": (256, 128, 256)}, {"gae_lambda": 1.5}, {"ema_decay": 1.0}):  # the base's checks
        with pytest.raises(ValueError):
            DPPOConfig(**shared)
    with pytest.raises(CtrlbenchError, match="ends before fine-tuning"):
        DPPO(tiny_config(pretrain_steps=100), pendulum_context(total_updates=100))
    with pytest.raises(CtrlbenchError, match="drop_nonpositive_episodes"):  # Pendulum's returns are all negative
        DPPO(tiny_config(drop_nonpositive_episodes=True), pendulum_context())


def test_states_and_actions_are_min_max_scaled_with_the_dataset_constants() -> None:
    ctx = pendulum_context()
    algo = DPPO(tiny_config(), ctx)
    data = ctx.dataset
    states, chunks = algo.chunks.sample(256)
    assert states.abs().max() <= 1.0 and chunks.abs().max() <= 1.0
    lo, hi = data.actions.min(), data.actions.max()
    np.testing.assert_allclose(algo.act_scaler.low_np, [lo])
    np.testing.assert_allclose(algo.act_scaler.high_np, [hi])
    raw = torch.as_tensor(data.actions[:50])
    np.testing.assert_allclose(algo.to_env(algo.act_scaler.scale(raw)[:, None]), raw[:, None].numpy(), atol=1e-5)
    assert algo.to_env(torch.full((1, 4, 1), 5.0)).max() == 2.0  # clipped to Pendulum's action space


def test_dppo_end_to_end_through_both_phases_and_resume() -> None:
    with torch_threads(1):
        torch.manual_seed(0)
        ctx = pendulum_context()
        algo = DPPO(tiny_config(), ctx)
        for _ in range(6):
            m = algo.update()
        assert m["phase"] == 0.0 and math.isfinite(float(m["diffusion_loss"]))
        assert not algo.finetuning
        m = algo.update()  # the first fine-tuning iteration
        assert m["phase"] == 1.0 and m["finetune_iteration"] == 1.0 and m["gradient_steps"] >= 1
        # both denoisers started from the EMA weights; only the fine-tuned copy moved
        assert same(params(algo.actor_frozen), params(algo.ema.average))
        assert not same(params(algo.actor_ft), params(algo.actor_frozen))
        # 2 envs x 6 chunks x 4 actions (Pendulum never ends inside 48 steps)
        assert m["rollout_env_steps"] == 48.0 and algo.envs.env_steps == 48
        for k in ("pg_loss", "value_loss", "approx_kl", "clip_fraction", "ratio"):
            assert math.isfinite(m[k]), k
        for _ in range(2):
            m = algo.update()
        assert m["finetune_iteration"] == 3.0 and algo.step == 9
        obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
        state = io_round_trip(algo.state_dict())
        a = algo.act(obs)
        assert a.shape == (5, 4, 1) and a.dtype == np.float32 and np.abs(a).max() <= 2.0
        fresh = DPPO(tiny_config(), pendulum_context(seed=5))
        fresh.load_state_dict(state)
        assert fresh.step == 9 and fresh.finetuning
        np.testing.assert_array_equal(fresh.act(obs), a)  # same weights, same evaluation noise
        assert fresh.envs.env_steps == algo.envs.env_steps
        assert fresh.reward_scaler.stats.var == algo.reward_scaler.stats.var
        m = fresh.update()
        assert m["finetune_iteration"] == 4.0 and math.isfinite(m["pg_loss"])


def test_pretraining_uses_the_ema_policy_for_evaluation() -> None:
    with torch_threads(1):
        torch.manual_seed(0)
        algo = DPPO(tiny_config(pretrain_steps=20, ema_start_fraction=0.0, ema_decay=0.5), pendulum_context())
        for _ in range(5):
            algo.update()
        assert not same(params(algo.ema.average), params(algo.denoiser))  # averaged, lagging the denoiser
        obs = np.zeros((2, 3), np.float32)
        g = algo.eval_noise.generator.get_state()
        a = algo.act(obs)
        algo.eval_noise.generator.set_state(g)
        states = algo.obs_scaler.scale(torch.as_tensor(obs))
        x, _ = sample(algo.ddpm, lambda t: algo.ema.average, states, (4, 1), deterministic=True,
                      generator=algo.eval_noise.generator)
        np.testing.assert_allclose(a, algo.to_env(x))


def test_rollout_log_probs_are_those_of_the_sampled_denoising_steps() -> None:
    """Each stored chain step was drawn within 3 stds of its mean, so its (clamped, averaged) log-likelihood under
    the policy that sampled it stays far above the clamp's floor -5; steps paired across decisions do not."""
    with torch_threads(1):
        torch.manual_seed(0)
        algo = DPPO(tiny_config(), pendulum_context())
        for _ in range(7):
            algo.update()
        states = algo.obs_scaler.scale(torch.as_tensor(pendulum_context().dataset.observations[:64]))
        _, chains = algo.explore(states)
        log_p = algo.rollout_log_probs(states, chains)
        assert log_p.shape == (64, 10)
        assert log_p.min() > -4.5 and log_p.mean() > 0.0
        other = chains.roll(1, dims=0)  # each step's result taken from another decision's chain
        for i in range(10):
            step = torch.full((64,), i)
            torch.testing.assert_close(algo.chain_log_prob(states, chains[:, i], chains[:, i + 1], step), log_p[:, i])
            assert algo.chain_log_prob(states, chains[:, i], other[:, i + 1], step).mean() < -3.0
