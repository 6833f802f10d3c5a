"""A2PR: Adaptive Advantage-guided Policy Regularization (Liu et al., ICML 2024; ltlhuuu/A2PR).

TD3+BC whose behavior-cloning target is chosen per sample with a state-value baseline, and a VAE trained
alongside on advantage-filtered data (an "augmented" behavior policy). Each update, in the reference's order:
  1 critic: the TD3 core, y_tgt = r + gamma (1 - d) min_i Q'_i(s', a') with the smoothed target action a'.
  2 value:  y_cur = r + gamma (1 - d) min_i Q_i(s', a') with the just-updated critics at the same a';
            L_V = MSE(V(s), sg(min(y_cur, y_tgt))) (plain MSE: the reference's expectile loss is unused).
  3 VAE:    w = vae_weight * 1[Q1(s, a) > V(s)] with V(s) from before step 2;
            L_VAE = mean(w (a^ - a)^2) + 0.5 mean KL(q(z|s,a) || N(0, I)).
  4 actor (every `policy_freq` updates):
            a~ = VAE(s, pi(s)) (not detached: gradients reach pi through the VAE)
            A_a = Q1(s, a) - V(s),  A_pi = Q1(s, a~) - V(s)
            target = a~ if A_pi >= A_a else a
            weight = mask (1[Q1(s, a~) >= V(s)] + 1[Q1(s, a) > V(s)])   (no constraint where neither beats V)
            L_pi = -lambda mean Q1(s, pi(s)) + mean(weight (pi(s) - target)^2),  lambda = alpha / sg(mean |Q1|)
            then Polyak updates of critic and actor targets.
Networks as the reference: actor 3x256, twin critics 4x256, V 4x256, VAE 750-750 with Adam's default lr 1e-3.
Per-task alpha / mask / vae_weight / discount in algorithms/configs/a2pr.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext
from algorithms.core.data import Batch
from algorithms.core.nets import EnsembleQ, adam, mlp
from algorithms.core.registry import register
from algorithms.core.td3 import TD3Config, TD3Family
from algorithms.core.vae import ConditionalVAE


@dataclass
class A2PRConfig(TD3Config):  # its discount is 0.995 on some tasks (configs/a2pr.yaml)
    value_lr: float = 3e-4  # Adam learning rate of V
    vae_lr: float = 1e-3  # Adam learning rate of the VAE (the reference uses Adam's default)
    alpha: float = 2.5  # weight of the Q term, lambda = alpha / mean|Q1(s, pi(s))|
    mask: float = 0.5  # BC coefficient, multiplied by how many of the two candidate actions beat V(s)
    vae_weight: float = 1.0  # weight of the advantage-filtered VAE reconstruction
    actor_hidden: tuple[int, ...] = (256, 256, 256)  # hidden widths of the actor
    critic_hidden: tuple[int, ...] = (256, 256, 256, 256)  # hidden widths of each critic and of V
    vae_hidden: tuple[int, ...] = (750, 750)  # hidden widths of the VAE encoder and decoder
    normalize: bool = True  # normalize states with the dataset mean/std (also at evaluation)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.value_lr > 0 and self.vae_lr > 0, "learning rates must be positive")
        require(self.mask >= 0 and self.vae_weight >= 0, "mask and vae_weight must be >= 0")


def value_target(batch: Batch, critic: EnsembleQ, next_action: torch.Tensor, y_target: torch.Tensor,
                 discount: float) -> torch.Tensor:
    """min(y_cur, y_tgt): y_cur bootstraps from the just-updated online critics at the same next action."""
    with torch.no_grad():
        next_q = critic(batch.next_observations, next_action).min(dim=0).values
        y_current = batch.rewards + discount * (1.0 - batch.dones) * next_q
        return torch.minimum(y_current, y_target)


def vae_loss(vae: ConditionalVAE, batch: Batch, q1_data: torch.Tensor, v_data: torch.Tensor,
             vae_weight: float) -> torch.Tensor:
    """Reconstruction only on dataset actions with positive advantage, plus 0.5 x KL on every sample."""
    recon, mean, std = vae(batch.observations, batch.actions)
    w = vae_weight * (q1_data > v_data).float().unsqueeze(-1)
    kl = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2))
    return (w * (recon - batch.actions) ** 2).mean() + 0.5 * kl.mean()


def bc_term(pi: torch.Tensor, critic: EnsembleQ, vae: ConditionalVAE, batch: Batch, v: torch.Tensor, mask: float,
            q1_data: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """mean(weight (pi(s) - target)^2), the advantage-guided pull towards a~ or a (the Q term is the TD3 core's
    `actor_loss`). `q1_data` = Q1(s, a) when the caller already has it from the same critic."""
    augmented, _, _ = vae(batch.observations, pi)  # a~, with gradients through the VAE into pi
    with torch.no_grad():
        q1_aug = critic.member(0, batch.observations, augmented)
        if q1_data is None:
            q1_data = critic.member(0, batch.observations, batch.actions)
        adv_aug, adv_data = q1_aug - v, q1_data - v
        use_aug = (adv_aug >= adv_data).float().unsqueeze(-1)
        weight = mask * ((q1_aug >= v).float() + (q1_data > v).float()).unsqueeze(-1)
    target = use_aug * augmented + (1.0 - use_aug) * batch.actions
    bc = (weight * (pi - target) ** 2).mean()
    return bc, {"bc_loss": bc.detach(), "bc_weight": weight.mean(), "augmented_share": use_aug.mean()}


@register("a2pr", kinds=("offline",))
class A2PR(TD3Family):
    Config = A2PRConfig

    def __init__(self, config: A2PRConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        self.setup_offline_td3(actor_hidden=config.actor_hidden, critic_hidden=config.critic_hidden)
        self.value = mlp(ctx.obs_dim, 1, config.critic_hidden).to(self.device)
        self.value_optimizer = adam(self.value.parameters(), lr=config.value_lr)
        self.vae = ConditionalVAE(ctx.obs_dim, ctx.act_dim, ctx.max_action, config.vae_hidden).to(self.device)
        self.vae_optimizer = adam(self.vae.parameters(), lr=config.vae_lr)

    def v(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value(obs).squeeze(-1)

    def update(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.step += 1
        batch = self.sampler.sample(cfg.batch_size)
        with torch.no_grad():
            v_before = self.v(batch.observations)

        # 1 critic (TD3 core), keeping its target for the value step
        q_loss, next_action, y_target = self.td3.critic_step(batch)
        # 2 value
        v_loss = F.mse_loss(self.v(batch.observations),
                            value_target(batch, self.critic, next_action, y_target, cfg.discount))
        self.value_optimizer.zero_grad(set_to_none=True)
        v_loss.backward()
        self.value_optimizer.step()
        # 3 VAE on advantage-filtered dataset actions
        with torch.no_grad():
            q1_data = self.critic.member(0, batch.observations, batch.actions)
        loss_vae = vae_loss(self.vae, batch, q1_data, v_before, cfg.vae_weight)
        self.vae_optimizer.zero_grad(set_to_none=True)
        loss_vae.backward()
        self.vae_optimizer.step()
        metrics = {"critic_loss": q_loss, "value_loss": v_loss.detach(), "vae_loss": loss_vae.detach()}
        # 4 actor
        if self.step % cfg.policy_freq == 0:
            with torch.no_grad():
                v_now = self.v(batch.observations)
            # Q1(s, a) from step 3 is still current: the critics do not change between steps 3 and 4
            metrics |= self.td3.actor_step(
                batch.observations, cfg.alpha,
                lambda pi: bc_term(pi, self.critic, self.vae, batch, v_now, cfg.mask, q1_data), self.vae)
        return metrics

    def graph_period(self) -> int:
        return self.config.policy_freq  # no host syncs; the VAE's noise comes from the default generator
