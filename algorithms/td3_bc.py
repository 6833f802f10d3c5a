"""TD3+BC (Fujimoto & Gu, 2021): TD3 with a behavior-cloning term in the actor loss.

Follows CORL `algorithms/offline/td3_bc.py` (itself sfujim/TD3_BC):
  critic:  y = r + gamma (1 - d) min_i Q'_i(s', a'),  a' = clip(pi'(s') + clip(eps, -c, c), -max_a, max_a)
           L_Q = MSE(Q1(s,a), y) + MSE(Q2(s,a), y)
  actor (every `policy_freq` critic steps):
           lambda = alpha / sg(mean |Q1(s, pi(s))|)
           L_pi = -lambda mean Q1(s, pi(s)) + mean (pi(s) - a)^2
  targets: Polyak averaging of critic and actor targets, on actor steps only.
States are normalized with dataset statistics, at evaluation too.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.data import Batch, offline_sampler
from algorithms.core.nets import DeterministicActor, EnsembleQ, adam, frozen, soft_update
from algorithms.core.registry import register


@dataclass
class TD3BCConfig:
    batch_size: int = 256  # transitions per gradient step
    actor_lr: float = 3e-4  # Adam learning rate of the actor
    critic_lr: float = 3e-4  # Adam learning rate of the twin critics
    discount: float = 0.99  # discount factor gamma
    tau: float = 0.005  # Polyak rate of the target networks
    policy_noise: float = 0.2  # std of the target-policy smoothing noise, in units of max_action
    noise_clip: float = 0.5  # the smoothing noise is clipped to +-noise_clip * max_action
    policy_freq: int = 2  # the actor and all targets update once every policy_freq critic steps
    alpha: float = 2.5  # weight of the Q term, lambda = alpha / mean|Q1(s, pi(s))|; larger means less BC
    hidden: tuple[int, ...] = (256, 256)  # hidden layer widths of actor and critics (ReLU)
    normalize: bool = True  # normalize states with the dataset mean/std (also at evaluation)

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size must be positive")
        require(self.actor_lr > 0 and self.critic_lr > 0, "learning rates must be positive")
        require(0.0 <= self.discount <= 1.0, "discount must be in [0, 1]")
        require(0.0 < self.tau <= 1.0, "tau must be in (0, 1]")
        require(self.policy_freq >= 1, "policy_freq must be >= 1")
        require(self.alpha >= 0, "alpha must be >= 0")


def smoothed_target_action(actor_target: torch.nn.Module, next_obs: torch.Tensor, max_action: float,
                           policy_noise: float, noise_clip: float) -> torch.Tensor:
    """a' = clip(pi'(s') + clip(N(0, (policy_noise max_a)^2), +-noise_clip max_a), +-max_a)."""
    action = actor_target(next_obs)
    noise = (torch.randn_like(action) * policy_noise * max_action).clamp(-noise_clip * max_action,
                                                                         noise_clip * max_action)
    return (action + noise).clamp(-max_action, max_action)


def td_target(critic_target: EnsembleQ, batch: Batch, next_action: torch.Tensor, discount: float) -> torch.Tensor:
    """y = r + gamma (1 - d) min_i Q'_i(s', a'), without gradient."""
    with torch.no_grad():
        next_q = critic_target(batch.next_observations, next_action).min(dim=0).values
        return batch.rewards + discount * (1.0 - batch.dones) * next_q


def critic_loss(critic: EnsembleQ, batch: Batch, target: torch.Tensor) -> torch.Tensor:
    """Sum over the critics of each one's MSE to the shared target."""
    q = critic(batch.observations, batch.actions)
    return ((q - target.unsqueeze(0)) ** 2).mean(dim=1).sum()


def actor_loss(actor: torch.nn.Module, critic: EnsembleQ, batch: Batch, alpha: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """-lambda mean Q1(s, pi(s)) + MSE(pi(s), a), with lambda = alpha / sg(mean |Q1|)."""
    pi = actor(batch.observations)
    q1 = critic.member(0, batch.observations, pi)
    lmbda = alpha / q1.abs().mean().detach()
    return -lmbda * q1.mean() + F.mse_loss(pi, batch.actions), lmbda


@register("td3_bc", kinds=("offline",))
class TD3BC(Algorithm):
    Config = TD3BCConfig

    def __init__(self, config: TD3BCConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        self.max_action = ctx.max_action
        data = ctx.require_dataset("td3_bc")
        self.normalizer, self.sampler = offline_sampler(data, self.device, ctx.seed, config.normalize)

        self.actor = DeterministicActor(ctx.obs_dim, ctx.act_dim, self.max_action, config.hidden).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.actor_optimizer = adam(self.actor.parameters(), lr=config.actor_lr)

        self.critic = EnsembleQ(ctx.obs_dim, ctx.act_dim, config.hidden, n=2).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_optimizer = adam(self.critic.parameters(), lr=config.critic_lr)

    def update(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.step += 1
        batch = self.sampler.sample(cfg.batch_size)

        with torch.no_grad():
            next_action = smoothed_target_action(self.actor_target, batch.next_observations, self.max_action,
                                                 cfg.policy_noise, cfg.noise_clip)
        target = td_target(self.critic_target, batch, next_action, cfg.discount)
        q_loss = critic_loss(self.critic, batch, target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        self.critic_optimizer.step()
        metrics = {"critic_loss": q_loss.detach()}

        if self.step % cfg.policy_freq == 0:
            with frozen(self.critic):  # only dQ/da is needed, not the critic's own gradients
                pi_loss, lmbda = actor_loss(self.actor, self.critic, batch, cfg.alpha)
                self.actor_optimizer.zero_grad(set_to_none=True)
                pi_loss.backward()
            self.actor_optimizer.step()
            soft_update(self.critic_target, self.critic, cfg.tau)
            soft_update(self.actor_target, self.actor, cfg.tau)
            metrics.update(actor_loss=pi_loss.detach(), lambda_=lmbda)
        return metrics

    @torch.no_grad()
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        return self.actor(self.obs_tensor(self.normalizer(obs))).cpu().numpy()
