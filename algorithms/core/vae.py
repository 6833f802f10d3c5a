"""The conditional VAE of BCQ/SPOT/A2PR: a generative model of the behavior policy pi_beta(a|s).

encoder [s, a] -> 750 -> 750 -> (mu, log sigma clamped to [-4, 15]), latent size 2|A|
decoder [s, z] -> 750 -> 750 -> tanh * max_action; without z, z ~ N(0, 1) clipped to [-0.5, 0.5]
ELBO loss per sample: mean_|A| (a^ - a)^2 + beta_kl * mean_latent KL(q(z|s,a) || N(0, I))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from algorithms.core.nets import mlp


class ConditionalVAE(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, max_action: float, hidden: Sequence[int] = (750, 750),
                 latent_dim: int | None = None) -> None:
        super().__init__()
        self.latent_dim = latent_dim or 2 * act_dim
        self.encoder = mlp(obs_dim + act_dim, 2 * self.latent_dim, hidden)
        self.decoder = mlp(obs_dim + self.latent_dim, act_dim, hidden, output_activation=nn.Tanh)
        self.max_action = max_action

    def encode(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.encoder(torch.cat([obs, act], dim=-1)).chunk(2, dim=-1)
        return mean, log_std.clamp(-4.0, 15.0).exp()

    def decode(self, obs: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = torch.randn(obs.shape[0], self.latent_dim, device=obs.device).clamp(-0.5, 0.5)
        return self.max_action * self.decoder(torch.cat([obs, z], dim=-1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction from one reparameterized latent sample, mean, std)."""
        mean, std = self.encode(obs, act)
        z = mean + std * torch.randn_like(std)
        return self.decode(obs, z), mean, std

    def elbo_loss(self, obs: torch.Tensor, act: torch.Tensor, beta_kl: float = 0.5) -> torch.Tensor:
        """Per-sample negative ELBO (up to constants), shape (B,): an estimate of -log pi_beta(a|s)."""
        recon, mean, std = self(obs, act)
        kl = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2))
        return ((recon - act) ** 2).mean(dim=-1) + beta_kl * kl.mean(dim=-1)
