"""The Gaussian PPO baseline (algorithms/ppo_finetune.py): its BC and PPO likelihoods by hand, the std clamp, and the
method end to end on Pendulum through pretraining and fine-tuning, with a resume mid fine-tuning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algorithms.core.errors import CtrlbenchError
from algorithms.core.registry import get_algorithm
from algorithms.core.threads import torch_threads
from algorithms.ppo_finetune import GaussianChunkPolicy, GaussianPPO, GaussianPPOConfig, bc_loss, chunk_log_prob
from tests.algo_helpers import io_round_trip, params, same
from tests.test_ppo_core import pendulum_context

LOG_2PI = math.log(2 * math.pi)


def test_bc_loss_is_the_fixed_std_likelihood() -> None:
    torch.manual_seed(0)
    policy = GaussianChunkPolicy(3, 2, 4, (16, 16), std_init=0.1, std_min=0.01, std_max=0.2)
    states, chunks = torch.randn(5, 3), torch.rand(5, 4, 2) * 2 - 1
    mse = ((policy.mean(states) - chunks) ** 2).mean()
    expected = mse / (2 * 0.1**2) + math.log(0.1) + 0.5 * LOG_2PI
    torch.testing.assert_close(bc_loss(policy, states, chunks, 0.1), expected)
    assert policy.mean(states).abs().max() < 1.0  # tanh mean


def test_chunk_log_prob_averages_then_clamps() -> None:
    policy = GaussianChunkPolicy(1, 1, 2, (8,), std_init=0.1, std_min=0.01, std_max=0.2)
    with torch.no_grad():
        for p in policy.mean_net.parameters():
            p.zero_()  # mean 0
    state = torch.zeros(2, 1)
    chunks = torch.tensor([[[0.0], [0.0]], [[0.1], [0.3]]])
    log_p = chunk_log_prob(policy, state, chunks)
    # at the mean: -log 0.1 - log(2 pi)/2 = 1.38 (inside the clamp); z = 1 and 3: mean of -z^2/2 = -2.5, so
    # -2.5 + 1.38 = -1.12
    peak = -math.log(0.1) - 0.5 * LOG_2PI
    assert log_p.tolist() == pytest.approx([peak, -2.5 + peak])
    far = chunk_log_prob(policy, state, torch.full((2, 2, 1), 0.9))
    assert far.tolist() == [-5.0, -5.0]  # clamped below
    with torch.no_grad():
        policy.log_var.fill_(2 * math.log(0.001))
    assert policy.std().item() == pytest.approx(0.01)  # clamped to std_min
    sharp = chunk_log_prob(policy, state, torch.zeros(2, 2, 1))
    assert sharp.tolist() == [2.0, 2.0]  # -log 0.01 - 0.92 = 3.7, clamped above


def tiny_config(**kw) -> GaussianPPOConfig:
    base = {"pretrain_steps": 6, "hidden": (32, 32), "critic_hidden": (32, 32, 32), "n_envs": 2, "n_steps": 6,
            "batch_size": 4, "update_epochs": 2, "drop_nonpositive_episodes": False, "ema_every": 2}
    return GaussianPPOConfig(**{**base, **kw})


def test_config_and_registration() -> None:
    cfg = GaussianPPOConfig()
    assert (cfg.horizon, cfg.std_init, cfg.std_min, cfg.std_max, cfg.clip_ploss_coef) == (4, 0.1, 0.01, 0.2, 0.01)
    assert (cfg.n_envs, cfg.n_steps, cfg.update_epochs, cfg.batch_size, cfg.pretrain_lr) == (40, 500, 10, 10_000, 1e-4)
    assert get_algorithm("gaussian_ppo") is GaussianPPO and GaussianPPO.kinds == ("offline-to-online",)
    with pytest.raises(ValueError):
        GaussianPPOConfig(std_init=0.5)
    for shared in ({"critic_hidden": (256, 256)}, {"gamma": -0.1}, {"pretrain_steps": -1}):  # the base's checks
        with pytest.raises(ValueError):
            GaussianPPOConfig(**shared)
    with pytest.raises(CtrlbenchError, match="ends before fine-tuning"):
        GaussianPPO(tiny_config(pretrain_steps=100), pendulum_context(total_updates=50))


def test_gaussian_ppo_end_to_end_through_both_phases_and_resume() -> None:
    with torch_threads(1):
        torch.manual_seed(0)
        algo = GaussianPPO(tiny_config(), pendulum_context())
        obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
        for _ in range(6):
            m = algo.update()
        assert m["phase"] == 0.0 and math.isfinite(float(m["bc_loss"]))
        assert not same(params(algo.ema.average), params(algo.policy))  # the EMA lags the trained policy
        pretrained = algo.act(obs)
        m = algo.update()
        assert m["phase"] == 1.0 and m["finetune_iteration"] == 1.0
        assert m["gradient_steps"] == 2 * (12 // 4) or m["approx_kl"] > 1.0  # 12 decisions, batch 4, 2 epochs
        assert m["rollout_env_steps"] == 48.0
        for _ in range(2):
            m = algo.update()
        a = algo.act(obs)
        assert a.shape == (5, 4, 1) and np.abs(a).max() <= 2.0 and not np.allclose(a, pretrained)
        np.testing.assert_array_equal(a, algo.act(obs))  # the mean: deterministic
        fresh = GaussianPPO(tiny_config(), pendulum_context(seed=3))
        fresh.load_state_dict(io_round_trip(algo.state_dict()))
        np.testing.assert_array_equal(fresh.act(obs), a)
        assert fresh.step == 9 and fresh.policy.std().item() == pytest.approx(algo.policy.std().item())
        assert fresh.update()["finetune_iteration"] == 4.0
