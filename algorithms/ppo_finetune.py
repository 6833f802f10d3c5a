"""Gaussian PPO fine-tuning: the baseline DPPO is compared with (DPPO paper, Ren et al., ICLR'25: "Gaussian"; official
code irom-princeton/dppo@cc7234a). Registered as `gaussian_ppo`.

The same recipe as `dppo` with a Gaussian MLP policy in place of the diffusion policy: the same data and scaling,
the same chunks, rollouts, advantages and fine-tuning budget; only the policy, its likelihood and its PPO clip differ.
Files cited: cfg/gym/pretrain/hopper-medium-v2/pre_gaussian_mlp.yaml (PRE), cfg/robomimic/finetune/can/
ft_ppo_gaussian_mlp.yaml (FT-G: the repo's fine-tuning of a pretrained Gaussian policy; the gym configs fine-tune
only the diffusion policy), cfg/gym/finetune/hopper-v2/ft_ppo_diffusion_mlp.yaml (FT), model/rl/gaussian_ppo.py
(LOSS), model/common/mlp_gaussian.py:181-282 (NET).

Policy: mean = tanh(MLP(s)) for the whole chunk (H x A; MLP 256x3, Mish: PRE:40-41), a std per action dimension.

Pretraining: the first `pretrain_steps` updates maximize the likelihood of the dataset's chunks under the fixed std
0.1 (PRE:42; the loss is the entrywise mean of -log N(a; mean, 0.1^2)), AdamW 1e-4 (constant: min_lr = lr) with
weight decay 1e-6, batch 128 (PRE:27-34), with the same EMA (0.995) as DPPO; the EMA is the pretrained policy.

Fine-tuning: each later update is one PPO iteration on the same rollout as DPPO's (40 environments x 500 chunks,
rewards scaled, GAE 0.99 / 0.95 on a state-only residual critic 256x3 Mish: FT).
- Exploration: a = mean + std * clip(N(0, I), +-3); the std is learnable from 0.1, clamped to [0.01, 0.2] (FT-G:87-90).
- log pi = clamp(mean over the chunk's entries of log N(a; mean, std^2), -5, 2) (LOSS:61-63: mean, then clamp).
- L = mean max(-A r, -A clip(r, 1 +- 0.01)) + 0.5 * 1/2 mean (V - R)^2, A normalized per minibatch (FT-G:80).
- 10 epochs (FT-G:74) of minibatches of 10,000 of the 20,000 decisions (FT-G's 2 minibatches per epoch), stopping
  once approx-KL > 1; AdamW actor 1e-4, critic 1e-3, no weight decay.
- Evaluation (`act`): the mean chunk (the reference samples with std 1e-4).

Deviations (and why):
- Chunks of 4 actions (the gym Gaussian pretraining uses 1; the robomimic Gaussian fine-tuning uses 4): the same
  decisions, discounting and env-step budget as DPPO, so the two differ in the policy only.
- Time limits, pretraining counted in gradient steps, no evaluation-only iterations, action clipping, the omitted
  no-op terms: as `dppo`.
- No critic warm-up iterations by default (FT-G uses 2; DPPO's gym configs use 0), the same as `dppo`.
- No frozen copy of the pretrained policy: the reference keeps one only for its optional BC loss (off).
- Fine-tuning starts from the EMA of the pretrained weights, as `dppo` does (the reference's GaussianModel loads
  the raw weights, model/common/gaussian.py:27-36): the two methods then differ in the policy alone.
- Walker2d's Gaussian pretraining config differs (256x2 ReLU, learned std head); hopper's and halfcheetah's are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from algorithms.core.chunk_finetune import ChunkFinetuneConfig, ChunkFinetuner
from algorithms.core.config import require
from algorithms.core.contract import AlgoContext
from algorithms.core.diffusion import gaussian_log_prob
from algorithms.core.nets import ResidualMLP, adam, mlp
from algorithms.core.ppo import (
    EMA,
    MinibatchMeans,
    iteration_metrics,
    minibatches,
    normalize_advantages,
)
from algorithms.core.registry import register

LOG_PROB_MIN, LOG_PROB_MAX = -5.0, 2.0  # the clamp of the chunk's mean log-likelihood (LOSS:62-63)


@dataclass
class GaussianPPOConfig(ChunkFinetuneConfig):  # pretraining and PPO fields as DPPO's: algorithms/core/chunk_finetune.py
    # the Gaussian policy
    hidden: tuple[int, ...] = (256, 256, 256)  # hidden widths of the mean MLP (Mish)
    std_init: float = 0.1  # the std of pretraining, and the learnable std's start at fine-tuning
    std_min: float = 0.01  # the learnable std's lower clamp
    std_max: float = 0.2  # the learnable std's upper clamp
    randn_clip: float = 3.0  # exploration draws are clipped to mean +- this many stds
    # fine-tuning (FT, FT-G)
    clip_ploss_coef: float = 0.01  # PPO ratio clip eps

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 < self.std_min <= self.std_init <= self.std_max, "need 0 < std_min <= std_init <= std_max")
        require(self.clip_ploss_coef > 0, "clip_ploss_coef must be > 0")


class GaussianChunkPolicy(nn.Module):
    """s -> N(tanh(MLP(s)), diag(std^2)) over a chunk (H, A); one std per action dimension, exp(log_var / 2) with
    log_var clamped to [log std_min^2, log std_max^2] (NET:234-270)."""

    def __init__(self, obs_dim: int, act_dim: int, horizon: int, hidden: tuple[int, ...], std_init: float,
                 std_min: float, std_max: float) -> None:
        super().__init__()
        self.chunk_shape = (horizon, act_dim)
        self.mean_net = mlp(obs_dim, horizon * act_dim, hidden, activation=nn.Mish)
        self.log_var = nn.Parameter(torch.full((act_dim,), 2 * math.log(std_init)))
        self.log_var_min, self.log_var_max = 2 * math.log(std_min), 2 * math.log(std_max)

    def mean(self, states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mean_net(states)).view(-1, *self.chunk_shape)

    def std(self) -> torch.Tensor:
        return (0.5 * self.log_var.clamp(self.log_var_min, self.log_var_max)).exp()


def bc_loss(policy: GaussianChunkPolicy, states: torch.Tensor, chunks: torch.Tensor, std: float) -> torch.Tensor:
    """Pretraining: mean over the batch and the chunk's entries of -log N(a; mean(s), std^2), std fixed."""
    mean = policy.mean(states)
    return -gaussian_log_prob(chunks, mean, torch.full_like(mean, std)).mean()


def chunk_log_prob(policy: GaussianChunkPolicy, states: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
    """log pi(chunk | s): the chunk's entrywise Gaussian log-likelihood averaged, then clamped to [-5, 2] (B,)."""
    mean = policy.mean(states)
    log_p = gaussian_log_prob(chunks, mean, policy.std().expand_as(mean)).mean(dim=(1, 2))
    return log_p.clamp(LOG_PROB_MIN, LOG_PROB_MAX)


@register("gaussian_ppo", kinds=("offline-to-online",))
class GaussianPPO(ChunkFinetuner):
    Config = GaussianPPOConfig

    def __init__(self, config: GaussianPPOConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)  # data, scalers, chunks, training envs (algorithms/core/chunk_finetune.py)
        cfg = config

        # pretraining: the policy's mean (the std is fixed at std_init) and its EMA
        self.policy = GaussianChunkPolicy(ctx.obs_dim, ctx.act_dim, cfg.horizon, cfg.hidden, cfg.std_init,
                                          cfg.std_min, cfg.std_max).to(self.device)
        self.pretrain_optimizer = torch.optim.AdamW(self.policy.mean_net.parameters(), lr=cfg.pretrain_lr,
                                                    weight_decay=cfg.pretrain_weight_decay)
        self.ema = EMA(self.policy, cfg.ema_decay, cfg.ema_every, start=round(cfg.ema_start_fraction
                                                                              * cfg.pretrain_steps))

        # fine-tuning: the whole policy (mean and std) from the EMA weights, and a state-only critic
        self.critic = ResidualMLP(ctx.obs_dim, cfg.critic_hidden, 1, nn.Mish).to(self.device)
        self.actor_optimizer = adam(self.policy.parameters(), lr=cfg.actor_lr)  # AdamW without weight decay
        self.critic_optimizer = adam(self.critic.parameters(), lr=cfg.critic_lr)

    def pretrain_loss(self, states: torch.Tensor, chunks: torch.Tensor) -> tuple[str, torch.Tensor]:
        return "bc_loss", bc_loss(self.policy, states, chunks, self.config.std_init)

    def start_finetuning(self) -> None:
        self.policy.load_state_dict(self.ema.average.state_dict())  # fine-tune the EMA weights

    @torch.no_grad()
    def explore(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A sampled chunk for each (scaled) state; the chunk is also what the rollout keeps."""
        mean = self.policy.mean(states)
        draws = torch.randn(mean.shape, device=mean.device, generator=self.noise.generator)
        chunk = mean + self.policy.std() * draws.clamp(-self.config.randn_clip, self.config.randn_clip)
        return chunk, chunk

    def finetune_iteration(self) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        data = self.collect()
        states, chunks = data.states, data.records  # chunks (M, H, A)
        with torch.no_grad():
            old_log_p = chunk_log_prob(self.policy, states, chunks)

        stats = MinibatchMeans()
        for b in minibatches(len(states), cfg.batch_size, cfg.update_epochs, self.noise.generator):
            log_ratio = chunk_log_prob(self.policy, states[b], chunks[b]) - old_log_p[b]
            adv = normalize_advantages(data.advantages[b])
            if self.ppo_step(stats, log_ratio, adv, cfg.clip_ploss_coef, states[b], data.returns[b]):
                break

        return iteration_metrics(self.step - cfg.pretrain_steps, stats, data.rollout, self.envs.metrics(),
                                 data.values, data.returns, std=float(self.policy.std().detach().mean()))

    @torch.no_grad()
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        """The mean chunk of raw actions per state (B, H, act_dim): the EMA policy's while pretraining."""
        policy = self.policy if self.finetuning else self.ema.average
        return self.to_env(policy.mean(self.obs_scaler.scale(self.obs_tensor(obs))))
