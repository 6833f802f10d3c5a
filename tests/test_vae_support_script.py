"""scripts/vae_support.py: the probe it prints ranks dataset actions as more likely than off-data ones."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from algorithms.core.vae import ConditionalVAE
from algorithms.spot import BETA_KL

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import vae_support


def test_support_table_ranks_data_actions_below_noisy_and_uniform_ones() -> None:
    torch.manual_seed(0)
    obs = torch.randn(2048, 3)
    act = torch.tanh(obs[:, :2] * 0.8)  # a deterministic behavior policy: one action per state
    vae = ConditionalVAE(3, 2, 1.0, hidden=(32, 32))
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(300):
        idx = torch.randint(len(obs), (256,))
        loss = vae.elbo_loss(obs[idx], act[idx], BETA_KL).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    table = vae_support.support_table(vae, obs[:512], act[:512], latents=4, seed=0)
    assert list(table) == ["data", *(f"+N(0,{s}^2)" for s in vae_support.NOISE_STDS), "uniform"]
    assert table["data"] < table["+N(0,0.2^2)"] < table["+N(0,0.5^2)"]
    assert table["data"] < table["uniform"]
    assert vae.training  # the probe restores the module's mode
