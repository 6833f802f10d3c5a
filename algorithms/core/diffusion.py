"""DDPM pieces for diffusion policies: what DPPO (Ren et al., ICLR'25) needs, after the official code
(irom-princeton/dppo@cc7234a, cited below as file:line).

A diffusion policy draws an action chunk x (B, H, A), in [-1, 1] after min-max scaling, by denoising Gaussian noise
in K steps conditioned on the state s. Steps are indexed t = K-1, ..., 0 as in the reference: step t takes the
sample at noise level t to level t - 1 (level -1 being the clean chunk).

- `cosine_beta_schedule`: the betas (Nichol & Dhariwal's cosine schedule, s = 0.008, clipped at 0.999), with the
  reference's grid `linspace(0, K + 1, K + 1)` (model/diffusion/sampling.py:10-20), kept as is.
- `DDPM`: the schedule's coefficients; the forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I); the
  reverse step's mean and log variance from a predicted epsilon, with the predicted x_0 clipped to [-1, 1]
  (model/diffusion/diffusion.py:200-259).
- `DiffusionMLP`: the denoiser eps(x_t, t, s): a sinusoidal time embedding (16) -> Linear 32 -> Mish -> Linear 16,
  concatenated as [x, t_emb, s] into a residual MLP (model/diffusion/mlp_diffusion.py:174-250,
  model/common/mlp.py:84-154).
- `epsilon_loss`: t ~ U{0..K-1}, MSE(eps(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, s), eps) (diffusion.py:318-350).
- `sample`: the reverse chain; the noise std is floored at `min_std` at every step when exploring, or (evaluation)
  floored at 1e-3 and 0 at the last step; the standard normal draws are clipped to +-`randn_clip`
  (model/diffusion/diffusion_vpg.py:228-315). It can keep the last iterates, the "chain" DPPO optimizes.
- `step_log_prob`: log N(x_next; mu(x, t, s), max(sigma_t, min_std)^2) of one denoising step, elementwise
  (diffusion_vpg.py:398-461).

The denoiser is built on the reference's pre-activation residual MLP, `ResidualMLP` in algorithms/core/nets.py
(the PPO critics of the fine-tuning methods use it too).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algorithms.core.nets import ResidualMLP

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t, state) -> predicted eps


def cosine_beta_schedule(steps: int, s: float = 0.008) -> torch.Tensor:
    """beta_t, t = 0..steps-1, from abar(u) = cos^2((u + s) / (1 + s) * pi / 2) on the reference's grid (float64
    numpy as the reference computes it, returned as float32)."""
    n = steps + 1
    u = np.linspace(0, n, n) / n  # the reference's grid: linspace(0, K + 1, K + 1) / (K + 1)
    alpha_bar = np.cos((u + s) / (1 + s) * np.pi * 0.5) ** 2
    alpha_bar = alpha_bar / alpha_bar[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return torch.tensor(np.clip(betas, 0.0, 0.999), dtype=torch.float32)


def _at(coef: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """coef[t] shaped to broadcast over x's trailing dimensions: (B,) -> (B, 1, ..., 1)."""
    return coef[t].reshape(-1, *([1] * (x.dim() - 1)))


class DDPM(nn.Module):
    """The coefficients of a K-step DDPM with epsilon prediction (buffers: they follow `.to(device)` and are not
    saved, being fixed by K)."""

    def __init__(self, steps: int, denoised_clip: float | None = 1.0) -> None:
        super().__init__()
        self.steps = steps
        self.denoised_clip = denoised_clip
        betas = cosine_beta_schedule(steps)
        alphas = 1.0 - betas
        alpha_bar = torch.cumprod(alphas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1), alpha_bar[:-1]])
        posterior_var = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)  # beta~_t, 0 at t = 0
        buffers = {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "sqrt_alpha_bar": alpha_bar.sqrt(),
            "sqrt_one_minus_alpha_bar": (1.0 - alpha_bar).sqrt(),
            "sqrt_recip_alpha_bar": (1.0 / alpha_bar).sqrt(),
            "sqrt_recipm1_alpha_bar": (1.0 / alpha_bar - 1.0).sqrt(),
            "posterior_logvar": posterior_var.clamp(min=1e-20).log(),  # the reference's clipped log variance
            "mean_coef_x0": betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar),
            "mean_coef_xt": (1.0 - alpha_bar_prev) * alphas.sqrt() / (1.0 - alpha_bar),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        return _at(self.sqrt_alpha_bar, t, x0) * x0 + _at(self.sqrt_one_minus_alpha_bar, t, x0) * noise

    def posterior(self, eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log variance of the reverse step from x at level t, given the predicted eps: x_0 =
        sqrt(1/abar_t) x - sqrt(1/abar_t - 1) eps, clipped to +-denoised_clip, then mu = c1_t x_0 + c2_t x."""
        x0 = _at(self.sqrt_recip_alpha_bar, t, x) * x - _at(self.sqrt_recipm1_alpha_bar, t, x) * eps
        if self.denoised_clip is not None:
            x0 = x0.clamp(-self.denoised_clip, self.denoised_clip)
        mean = _at(self.mean_coef_x0, t, x) * x0 + _at(self.mean_coef_xt, t, x) * x
        return mean, _at(self.posterior_logvar, t, x)


class SinusoidalEmbedding(nn.Module):
    """t -> [sin(t f_i), cos(t f_i)], f_i = 10000^(-i / (dim/2 - 1)), i < dim/2 (Diffuser's, modules.py:14-27)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1))),
                             persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class DiffusionMLP(nn.Module):
    """eps(x_t, t, s) for a chunk x_t (B, H, A): a residual MLP on [x_t flattened, time embedding, s]."""

    def __init__(self, obs_dim: int, act_dim: int, horizon: int, time_dim: int = 16,
                 hidden: Sequence[int] = (512, 512, 512), activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.time_embedding = nn.Sequential(SinusoidalEmbedding(time_dim), nn.Linear(time_dim, 2 * time_dim),
                                            nn.Mish(), nn.Linear(2 * time_dim, time_dim))
        self.net = ResidualMLP(horizon * act_dim + time_dim + obs_dim, hidden, horizon * act_dim, activation)

    def forward(self, x: torch.Tensor, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([x.flatten(1), self.time_embedding(t), state], dim=-1)
        return self.net(inputs).view_as(x)


def epsilon_loss(ddpm: DDPM, denoiser: Denoiser, x0: torch.Tensor, state: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The DDPM training loss: MSE between the noise added at a uniform level t and the denoiser's prediction."""
    t = torch.randint(0, ddpm.steps, (x0.shape[0],), device=x0.device, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator)
    return F.mse_loss(denoiser(ddpm.q_sample(x0, t, noise), t, state), noise)


@torch.no_grad()
def sample(ddpm: DDPM, denoiser_at: Callable[[int], Denoiser], state: torch.Tensor, shape: tuple[int, int], *,
           deterministic: bool, min_std: float = 0.1, randn_clip: float = 3.0, keep_last: int = 0,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the reverse chain from x ~ N(0, I) of shape (B, *shape) for t = K-1, ..., 0.

    `denoiser_at(t)` is the network used at step t (DPPO: the frozen pretrained one for t >= K', the fine-tuned one
    below). Noise std: exploring, max(sigma_t, min_std) at every step (t = 0 too); `deterministic` (evaluation),
    max(sigma_t, 1e-3), and 0 at t = 0. Returns the sample x_0 and, when `keep_last` = K' > 0, the chain of the
    last K' + 1 iterates (B, K' + 1, *shape): the input of step K'-1 and the output of each step K'-1, ..., 0."""
    b = state.shape[0]
    x = torch.randn((b, *shape), device=state.device, generator=generator)
    chain = []
    for t in reversed(range(ddpm.steps)):
        if t == keep_last - 1:
            chain.append(x)
        tt = torch.full((b,), t, dtype=torch.long, device=state.device)
        mean, logvar = ddpm.posterior(denoiser_at(t)(x, tt, state), x, tt)
        std = (0.5 * logvar).exp().clamp(min=1e-3 if deterministic else min_std)
        if deterministic and t == 0:
            std = torch.zeros_like(std)
        noise = torch.randn(x.shape, device=x.device, generator=generator).clamp(-randn_clip, randn_clip)
        x = mean + std * noise
        if t < keep_last:
            chain.append(x)
    return x, (torch.stack(chain, dim=1) if keep_last else None)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, std^2)."""
    return -0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)


def step_log_prob(ddpm: DDPM, denoiser: Denoiser, state: torch.Tensor, x: torch.Tensor, x_next: torch.Tensor,
                  t: torch.Tensor, min_std: float) -> torch.Tensor:
    """Elementwise log-likelihood of the denoising step x -> x_next at step t (B,) under the Gaussian
    N(mu(x, t, s), max(sigma_t, min_std)^2); differentiable in the denoiser's parameters."""
    mean, logvar = ddpm.posterior(denoiser(x, t, state), x, t)
    std = (0.5 * logvar).exp().clamp(min=min_std).expand_as(mean)
    return gaussian_log_prob(x_next, mean, std)
