"""DPPO: Diffusion Policy Policy Optimization (Ren et al., ICLR'25; official code irom-princeton/dppo@cc7234a).

A DDPM policy over action chunks is pretrained by behavior cloning on the dataset, then fine-tuned online with PPO,
treating the denoising chain as part of the decision: each denoising step is a Gaussian whose likelihood PPO can
ratio. Files cited: cfg/gym/pretrain/hopper-medium-v2/pre_diffusion_mlp.yaml (PRE), cfg/gym/finetune/hopper-v2/
ft_ppo_diffusion_mlp.yaml (FT; identical for walker2d and halfcheetah), model/diffusion/diffusion_ppo.py (LOSS),
agent/finetune/train_ppo_diffusion_agent.py (AGENT); and ../shared/reference/algorithms.md section 7.

Data. States and actions are min-max scaled to [-1, 1] with the dataset's constants, which also scale the
environment's states and unscale the policy's actions at fine-tuning. A pretraining sample is (s_t, a_{t:t+4}) inside
one episode; episodes with a return <= 0 are dropped (get_d4rl_dataset.py:92).

Pretraining: the first `pretrain_steps` updates, one gradient step each. A DiffusionMLP eps(x_k, k, s) (residual MLP
512x3, ReLU; time embedding 16) learns L = MSE(eps(sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps, k, s), eps) on K = 20
cosine-scheduled noise levels; AdamW 1e-3 (cosine to 1e-4, weight decay 1e-6), batch 128. An EMA of the weights
(decay 0.995, stepped every 10 gradient steps, a plain copy during the first 10% of pretraining: the reference
copies through epoch 19 of 200, 9.5%) is the pretrained policy.

Fine-tuning: each later update is one PPO iteration.
- Rollout: 40 environments x 500 decisions. A decision samples the chunk by the reverse chain from x_K ~ N(0, I):
  steps k >= K' = 10 with the frozen pretrained (EMA) network, steps k < K' with the fine-tuned copy, the noise std
  floored at 0.1 at every step and the normal draws clipped to +-3; the last K' + 1 iterates (the chain) are kept.
  The chunk's 4 actions are executed, the rewards summed, the chunk cut short where the episode ends.
- Advantages: rewards divided by a running std of the discounted return (clip +-10); GAE (gamma 0.99 per decision,
  lambda 0.95) on a state-only critic V(s) (residual MLP 256x3, Mish).
- Loss, per minibatch of (decision, denoising step i) pairs drawn uniformly from the rollout, i = 0..K'-1 going
  from step k = K'-1 to the final step k = 0:
    log p_i   = mean over the chunk's entries of clamp(log N(x_{k-1}; mu_theta(x_k, k, s), max(sigma_k, 0.1)^2), -5, 2)
    r         = exp(log p_i - log p_i^old)
    A_i       = normalize(A) * gamma_denoise^(K' - i - 1)        (gamma_denoise 0.99; normalized per minibatch)
    L_pg      = mean max(-A_i r, -A_i clip(r, 1 - eps_i, 1 + eps_i)),  eps_i from 0.01 to 0.01 (rate 3)
    L_V       = 1/2 mean (V(s) - (A + V_old(s)))^2                  (no value clipping)
    L         = L_pg + 0.5 L_V,  one step of each optimizer (AdamW actor 1e-4, critic 1e-3, no weight decay)
  5 epochs of minibatches of 50,000 out of 500 x 40 x 10 pairs; the iteration stops once approx-KL > 1.
- Evaluation (`act`): the same chain with the std floored at 1e-3 and 0 at the last step; the chunk of 4 actions.

Deviations (each with its reason) and omissions:
- A time-limit truncation is bootstrapped from the value of the episode's true last state (the reference's gym
  wrapper marks it terminal, and otherwise bootstraps from the reset state): ctrlbench's protocol separates the two.
- Pretraining is counted in gradient steps with batches drawn with replacement, not in epochs over a shuffled
  dataset: the runner's budget counts updates. The default, 1.55M steps, is the reference's 200 epochs (v0.7) of
  hopper-medium's ~0.99M chunks at batch 128; the EMA start (epoch 20) is the same fraction of it, and the EMA is
  stepped every 10 gradient steps, as v0.7. The learning rate ramps linearly from 1e-4 to 1e-3 over the first 0.5%
  (1 epoch) of pretraining, then follows the cosine; the reference's one-epoch warmup (util/scheduler.py,
  warmup_steps=1) holds 1e-4 for the first epoch and then jumps to 1e-3.
- No evaluation-only iterations (the runner evaluates): every fine-tuning update is a training iteration (the
  reference's 900 training iterations of 1000). Episodes run on across iterations, as the reference's
  (reset_at_iteration False).
- Left out as no-ops at the reference's settings: the entropy, BC-loss and eta terms (coefficients 0, DDPM), the
  advantage quantile clip (quantiles 0 and 1), the slice of the chunk to its first act_steps rows (all 4 are
  executed), and the learning-rate schedules of fine-tuning (min_lr = lr).
- Raw actions are clipped to the action space before stepping. The reference sends them unclipped (up to about
  +-1.3: x_0 in [-1, 1] plus the last step's noise): MuJoCo clamps the control for the dynamics either way, but
  the v5 envs' control cost is computed from the action passed in, so saturated actions cost slightly less here.
- `act` draws its noise from its own checkpointed generator, so a resumed run evaluates as an uninterrupted one.
Resume: checkpoints hold the networks, optimizers, EMA, scalers, reward statistics and generators. An update is a
whole iteration, so no rollout is ever half collected at a checkpoint; the training episodes in progress cannot be
saved (simulator state), and restart on resume.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from algorithms.core.chunk_finetune import ChunkFinetuneConfig, ChunkFinetuner
from algorithms.core.config import require
from algorithms.core.contract import AlgoContext
from algorithms.core.diffusion import DDPM, DiffusionMLP, epsilon_loss, sample, step_log_prob
from algorithms.core.nets import ResidualMLP, adam
from algorithms.core.ppo import (
    EMA,
    MinibatchMeans,
    RandomStream,
    iteration_metrics,
    minibatches,
    normalize_advantages,
)
from algorithms.core.registry import register
from algorithms.core.seeding import derive_seed

LOG_PROB_MIN, LOG_PROB_MAX = -5.0, 2.0  # the clamp of each entry's log-likelihood (LOSS:93-94)


@dataclass
class DPPOConfig(ChunkFinetuneConfig):  # the pretraining and PPO fields DPPO shares: algorithms/core/chunk_finetune.py
    pretrain_lr: float = 1e-3  # AdamW learning rate of the denoiser's pretraining (PRE; the Gaussian policy's: 1e-4)
    # the diffusion policy
    denoising_steps: int = 20  # K, denoising steps of the DDPM (cosine schedule)
    hidden: tuple[int, ...] = (512, 512, 512)  # widths of the denoiser's residual MLP (ReLU); an odd count, equal
    time_dim: int = 16  # size of the denoiser's sinusoidal time embedding
    denoised_clip: float = 1.0  # the predicted clean chunk x_0 is clipped to +-this at every denoising step
    randn_clip: float = 3.0  # standard normal draws of the reverse chain are clipped to +-this
    # fine-tuning (FT)
    ft_denoising_steps: int = 10  # K', the last denoising steps fine-tuned (the first K - K' use the frozen copy)
    gamma_denoising: float = 0.99  # advantage discount per denoising step away from the final one
    min_sampling_std: float = 0.1  # floor of the denoising noise std while exploring
    min_logprob_std: float = 0.1  # floor of the denoising std in the log-likelihood
    clip_ploss_coef: float = 0.01  # PPO ratio clip eps at the final denoising step
    clip_ploss_coef_base: float = 0.01  # PPO ratio clip eps at the earliest fine-tuned step
    clip_ploss_coef_rate: float = 3.0  # rate of the exponential interpolation of eps over denoising steps
    batch_size: int = 50_000  # (decision, denoising step) pairs per PPO minibatch
    update_epochs: int = 5  # passes over the rollout per iteration
    logprob_batch_size: int = 10_000  # decisions per batch when computing the rollout's log-probabilities

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.logprob_batch_size > 0, "batch sizes must be positive")
        require(self.denoising_steps > 0 and 0 < self.ft_denoising_steps <= self.denoising_steps,
                "denoising steps: need 0 < ft_denoising_steps <= denoising_steps")
        require(len(self.hidden) % 2 == 1 and len(set(self.hidden)) == 1,
                f"hidden must be an odd number of equal widths (a residual MLP), got {self.hidden}")
        require(0.0 < self.gamma_denoising <= 1.0, "gamma_denoising must be in (0, 1]")
        require(self.min_sampling_std > 0 and self.min_logprob_std > 0, "the std floors must be positive")
        require(self.clip_ploss_coef > 0 and self.clip_ploss_coef_base > 0, "the PPO clip coefficients must be > 0")


def clip_coefficients(k_ft: int, base: float, final: float, rate: float) -> torch.Tensor:
    """eps_i for the fine-tuned steps i = 0..K'-1: exponentially from `base` (i = 0, the earliest) to `final`
    (i = K'-1, the last denoising step) (LOSS:150-159)."""
    if k_ft == 1:
        return torch.tensor([final])
    u = torch.arange(k_ft, dtype=torch.float64) / (k_ft - 1)
    return (base + (final - base) * (torch.exp(rate * u) - 1) / (math.exp(rate) - 1)).float()


@register("dppo", kinds=("offline-to-online",))
class DPPO(ChunkFinetuner):
    Config = DPPOConfig

    def __init__(self, config: DPPOConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)  # data, scalers, chunks, training envs (algorithms/core/chunk_finetune.py)
        cfg = config
        self.chunk_shape = (cfg.horizon, ctx.act_dim)

        # pretraining: the denoiser, its optimizer and its EMA
        self.ddpm = DDPM(cfg.denoising_steps, cfg.denoised_clip).to(self.device)
        self.denoiser = DiffusionMLP(ctx.obs_dim, ctx.act_dim, cfg.horizon, cfg.time_dim, cfg.hidden).to(self.device)
        self.pretrain_optimizer = torch.optim.AdamW(self.denoiser.parameters(), lr=cfg.pretrain_lr,
                                                    weight_decay=cfg.pretrain_weight_decay)
        self.ema = EMA(self.denoiser, cfg.ema_decay, cfg.ema_every, start=round(cfg.ema_start_fraction
                                                                                * cfg.pretrain_steps))

        # fine-tuning: the frozen pretrained denoiser for steps k >= K', a trainable copy below, a state-only critic;
        # both denoisers are loaded with the EMA weights when fine-tuning starts
        self.actor_frozen = copy.deepcopy(self.denoiser).requires_grad_(False)
        self.actor_ft = copy.deepcopy(self.denoiser)
        self.critic = ResidualMLP(ctx.obs_dim, cfg.critic_hidden, 1, nn.Mish).to(self.device)
        self.actor_optimizer = adam(self.actor_ft.parameters(), lr=cfg.actor_lr)  # AdamW without weight decay
        self.critic_optimizer = adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.clip_eps = clip_coefficients(cfg.ft_denoising_steps, cfg.clip_ploss_coef_base, cfg.clip_ploss_coef,
                                          cfg.clip_ploss_coef_rate).to(self.device)
        self.eval_noise = RandomStream(self.device, derive_seed(ctx.seed, 2))  # act()

    # --- pretraining ------------------------------------------------------------------------------------------------

    def pretrain_loss(self, states: torch.Tensor, chunks: torch.Tensor) -> tuple[str, torch.Tensor]:
        return "diffusion_loss", epsilon_loss(self.ddpm, self.denoiser, chunks, states, self.noise.generator)

    def start_finetuning(self) -> None:
        """Both denoisers start from the EMA weights (the reference loads checkpoint["ema"])."""
        self.actor_frozen.load_state_dict(self.ema.average.state_dict())
        self.actor_ft.load_state_dict(self.ema.average.state_dict())

    # --- fine-tuning ------------------------------------------------------------------------------------------------

    def denoiser_at(self, k: int) -> nn.Module:
        return self.actor_ft if k < self.config.ft_denoising_steps else self.actor_frozen

    def explore(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A chunk for each (scaled) state, and the chain of its last K' + 1 iterates."""
        cfg = self.config
        return sample(self.ddpm, self.denoiser_at, states, self.chunk_shape, deterministic=False,
                      min_std=cfg.min_sampling_std, randn_clip=cfg.randn_clip, keep_last=cfg.ft_denoising_steps,
                      generator=self.noise.generator)

    def chain_log_prob(self, states: torch.Tensor, x: torch.Tensor, x_next: torch.Tensor, i: torch.Tensor
                       ) -> torch.Tensor:
        """log p_i: the fine-tuned denoiser's log-likelihood of the chain's transition i, x -> x_next at step
        k = K'-1-i, clamped entrywise to [-5, 2] and averaged over the chunk's entries (B,)."""
        k = self.config.ft_denoising_steps - 1 - i
        log_p = step_log_prob(self.ddpm, self.actor_ft, states, x, x_next, k, self.config.min_logprob_std)
        return log_p.clamp(LOG_PROB_MIN, LOG_PROB_MAX).mean(dim=(1, 2))

    @torch.no_grad()
    def rollout_log_probs(self, states: torch.Tensor, chains: torch.Tensor) -> torch.Tensor:
        """log p_i^old of every decision's K' transitions (M, K'), in batches of decisions."""
        k_ft, size, out = self.config.ft_denoising_steps, self.config.logprob_batch_size, []
        for s, c in zip(states.split(size), chains.split(size)):
            i = torch.arange(k_ft, device=self.device).repeat(len(s))
            out.append(self.chain_log_prob(s.repeat_interleave(k_ft, 0), c[:, :-1].flatten(0, 1),
                                           c[:, 1:].flatten(0, 1), i))
        return torch.cat(out).view(-1, k_ft)

    def finetune_iteration(self) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        data = self.collect()
        states, chains = data.states, data.records  # chains (M, K' + 1, H, A)
        old_log_p = self.rollout_log_probs(states, chains)

        k_ft = cfg.ft_denoising_steps
        stats = MinibatchMeans()
        for idx in minibatches(len(states) * k_ft, cfg.batch_size, cfg.update_epochs, self.noise.generator):
            b, i = idx // k_ft, idx % k_ft  # the decision and its fine-tuned denoising step
            log_ratio = self.chain_log_prob(states[b], chains[b, i], chains[b, i + 1], i) - old_log_p[b, i]
            adv = normalize_advantages(data.advantages[b]) * cfg.gamma_denoising ** (k_ft - 1 - i).float()
            if self.ppo_step(stats, log_ratio, adv, self.clip_eps[i], states[b], data.returns[b]):
                break

        return iteration_metrics(self.step - cfg.pretrain_steps, stats, data.rollout, self.envs.metrics(),
                                 data.values, data.returns)

    # --- evaluation -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        """A chunk of `horizon` raw actions per state (B, H, act_dim): the reverse chain in evaluation mode, with the
        EMA denoiser while pretraining and the frozen + fine-tuned pair after."""
        states = self.obs_scaler.scale(self.obs_tensor(obs))
        denoiser_at = self.denoiser_at if self.finetuning else (lambda k: self.ema.average)
        x, _ = sample(self.ddpm, denoiser_at, states, self.chunk_shape, deterministic=True,
                      randn_clip=self.config.randn_clip, generator=self.eval_noise.generator)
        return self.to_env(x)
