"""SPOT: Supported Policy OpTimization (Wu et al., NeurIPS 2022; thuml/SPOT).

A support constraint pi_beta(pi(s)|s) > eps, enforced by penalizing the actor with an estimate of
-log pi_beta(pi(s)|s): the negative ELBO of a conditional VAE pre-trained on the dataset and then frozen.
  phase 1 (the first `vae_steps` updates): fit the VAE, L = MSE(a^, a) + 0.5 mean KL, Adam lr 1e-3.
  phase 2: TD3 with TD3+BC's Q normalization:
    critic:  the TD3 core (algorithms/core/td3.py).
    actor (every `policy_freq` critic steps):
      neg_log_beta(s) = mean_|A| (dec(s, z) - pi(s))^2 + 0.5 mean_latent KL(q(z|s, pi(s)) || N(0, I)),
                        one latent sample; the VAE is frozen but gradients flow through it into pi
      L_pi = -mean Q1(s, pi(s)) / sg(mean |Q1(s, pi(s))|) + lambda mean_B neg_log_beta(s)
The actor has dropout 0.1 after each hidden layer, off when acting. Per-task lambda in
algorithms/configs/spot.yaml. The run's update budget counts both phases (the paper: 1e5 VAE + 1e6 TD3 steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext
from algorithms.core.data import Batch
from algorithms.core.nets import adam
from algorithms.core.registry import register
from algorithms.core.td3 import TD3Config, TD3Family
from algorithms.core.vae import ConditionalVAE

BETA_KL = 0.5


@dataclass
class SPOTConfig(TD3Config):  # its batch_size serves the VAE phase too
    lambd: float = 0.1  # weight of the support penalty -log pi_beta(pi(s)|s) (per task, see configs/spot.yaml)
    vae_steps: int = 100_000  # VAE pre-training updates, counted in the run's budget
    vae_lr: float = 1e-3  # Adam learning rate of the VAE
    vae_hidden: tuple[int, ...] = (750, 750)  # hidden widths of the VAE encoder and decoder
    actor_dropout: float = 0.1  # dropout after each hidden layer of the actor (off when acting)
    hidden: tuple[int, ...] = (256, 256)  # hidden layer widths of actor and critics (ReLU)
    normalize: bool = True  # normalize states with the dataset mean/std (VAE, actor and evaluation alike)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.lambd >= 0, "lambd must be >= 0")
        require(self.vae_steps >= 0, "vae_steps must be >= 0")
        require(0.0 <= self.actor_dropout < 1.0, "actor_dropout must be in [0, 1)")


def vae_loss(vae: ConditionalVAE, batch: Batch) -> torch.Tensor:
    return vae.elbo_loss(batch.observations, batch.actions, BETA_KL).mean()


Q_WEIGHT = 1.0  # the Q term is -mean Q1 / sg(mean |Q1|): the TD3 core's actor_loss with alpha = 1


def support_term(pi: torch.Tensor, vae: ConditionalVAE, batch: Batch, lambd: float
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """lambda mean_B neg_log_beta(s): the support penalty, with gradients through the frozen VAE into pi."""
    neg_log_beta = vae.elbo_loss(batch.observations, pi, BETA_KL).mean()
    return lambd * neg_log_beta, {"neg_log_beta": neg_log_beta.detach()}


@register("spot", kinds=("offline",))
class SPOT(TD3Family):
    Config = SPOTConfig

    def __init__(self, config: SPOTConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        self.setup_offline_td3(actor_hidden=config.hidden, critic_hidden=config.hidden,
                               actor_dropout=config.actor_dropout)
        self.vae = ConditionalVAE(ctx.obs_dim, ctx.act_dim, ctx.max_action, config.vae_hidden).to(self.device)
        self.vae_optimizer = adam(self.vae.parameters(), lr=config.vae_lr)

    def update(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.step += 1
        batch = self.sampler.sample(cfg.batch_size)
        if self.step <= cfg.vae_steps:  # phase 1: behavior model
            loss = vae_loss(self.vae, batch)
            self.vae_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.vae_optimizer.step()
            return {"vae_loss": loss.detach()}

        self.vae.eval()  # frozen from here on
        q_loss, *_ = self.td3.critic_step(batch)
        metrics = {"critic_loss": q_loss}
        if (self.step - cfg.vae_steps) % cfg.policy_freq == 0:  # the frozen VAE passes gradients into pi
            metrics |= self.td3.actor_step(batch.observations, Q_WEIGHT,
                                           lambda pi: support_term(pi, self.vae, batch, cfg.lambd), self.vae)
        return metrics
