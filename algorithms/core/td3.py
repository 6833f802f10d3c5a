"""The TD3 core shared by the TD3-family offline methods (TD3+BC, PRDC, SPOT, A2PR).

  target action: a' = clip(pi'(s') + clip(N(0, (policy_noise max_a)^2), +-noise_clip max_a), +-max_a)
  TD target:     y = r + gamma (1 - d) min_i Q'_i(s', a'), no gradient
  critic loss:   sum over the twin critics of MSE(Q_i(s, a), y)
  the actor and all targets update every `policy_freq` critic steps, Polyak rate tau.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.data import Batch, offline_sampler
from algorithms.core.nets import DeterministicActor, EnsembleQ, Polyak, adam, frozen


@dataclass
class TD3Config:
    """The TD3 core's fields; each TD3-family config subclasses this and adds its own after them."""

    batch_size: int = 256  # transitions per gradient step
    actor_lr: float = 3e-4  # Adam learning rate of the actor
    critic_lr: float = 3e-4  # Adam learning rate of the twin critics
    discount: float = 0.99  # discount factor gamma
    tau: float = 0.005  # Polyak rate of the target networks
    policy_noise: float = 0.2  # std of the target-policy smoothing noise, in units of max_action
    noise_clip: float = 0.5  # the smoothing noise is clipped to +-noise_clip * max_action
    policy_freq: int = 2  # the actor and all targets update once every policy_freq critic steps

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size must be positive")
        require(self.actor_lr > 0 and self.critic_lr > 0, "learning rates must be positive")
        require(0.0 <= self.discount <= 1.0, "discount must be in [0, 1]")
        require(0.0 < self.tau <= 1.0, "tau must be in (0, 1]")
        require(self.policy_freq >= 1, "policy_freq must be >= 1")


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


def q_weight(q1: torch.Tensor, alpha: float) -> torch.Tensor:
    """TD3+BC's lambda = alpha / sg(mean |Q1|): makes one alpha work across reward scales."""
    return alpha / q1.abs().mean().detach()


class TD3Core:
    """Actor, twin critics, their targets and optimizers, the critic step and the Polyak step."""

    def __init__(self, ctx: AlgoContext, cfg, actor_hidden: tuple[int, ...], critic_hidden: tuple[int, ...],
                 actor_dropout: float = 0.0) -> None:
        self.cfg = cfg
        self.max_action = ctx.max_action
        self.actor = DeterministicActor(ctx.obs_dim, ctx.act_dim, self.max_action, actor_hidden,
                                        dropout=actor_dropout).to(ctx.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.actor_optimizer = adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic = EnsembleQ(ctx.obs_dim, ctx.act_dim, critic_hidden, n=2).to(ctx.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_optimizer = adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.critic_params = list(self.critic.parameters())  # built once: walking modules costs per update
        self.update_targets = Polyak([(self.critic_target, self.critic), (self.actor_target, self.actor)], cfg.tau)

    def critic_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One TD3 critic update; returns (loss, the target action a' used, the TD target y)."""
        with torch.no_grad():
            next_action = smoothed_target_action(self.actor_target, batch.next_observations, self.max_action,
                                                 self.cfg.policy_noise, self.cfg.noise_clip)
        target = td_target(self.critic_target, batch, next_action, self.cfg.discount)
        loss = self.critic.mse_backward(batch.observations, batch.actions, target)  # = critic_loss, its grads set
        self.critic_optimizer.step()
        return loss, next_action, target

    def actor_step(self, loss_fn: Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor]]],
                   *also_frozen: torch.nn.Module) -> dict[str, torch.Tensor]:
        """One delayed actor update and the Polyak step of every target. The critic (and `also_frozen`, e.g. a
        behavior VAE) get no parameter gradients: the loss only needs gradients through them into the actor."""
        with contextlib.ExitStack() as stack:
            for module in (self.critic_params, *also_frozen):
                stack.enter_context(frozen(module))
            loss, metrics = loss_fn()
            self.actor_optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.actor_optimizer.step()
        self.update_targets()
        return {"actor_loss": loss.detach(), **metrics}

    def _parts(self) -> dict[str, Any]:
        return {"actor": self.actor, "actor_target": self.actor_target, "actor_optimizer": self.actor_optimizer,
                "critic": self.critic, "critic_target": self.critic_target,
                "critic_optimizer": self.critic_optimizer}

    def state_dict(self) -> dict[str, Any]:
        return {k: v.state_dict() for k, v in self._parts().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in self._parts().items():
            v.load_state_dict(state[k])


class TD3Family(Algorithm):
    """Shared plumbing of TD3-family algorithms: `self.td3` (a TD3Core), `self.normalizer`, and a deterministic
    `act` on normalized states. Subclasses write their own actor loss and `update`."""

    td3: TD3Core

    def setup_offline_td3(self, actor_hidden: tuple[int, ...], critic_hidden: tuple[int, ...],
                          actor_dropout: float = 0.0) -> None:
        """The dataset on the training device (states normalized when `config.normalize`) and the TD3 networks."""
        data = self.ctx.require_dataset(self.name)
        self.normalizer, self.sampler = offline_sampler(data, self.device, self.ctx.seed, self.config.normalize)
        self.td3 = TD3Core(self.ctx, self.config, actor_hidden, critic_hidden, actor_dropout)

    @property
    def actor(self) -> DeterministicActor:
        return self.td3.actor

    @property
    def critic(self) -> EnsembleQ:
        return self.td3.critic

    @property
    def actor_target(self) -> DeterministicActor:
        return self.td3.actor_target

    @property
    def critic_target(self) -> EnsembleQ:
        return self.td3.critic_target

    @torch.no_grad()
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        self.actor.eval()  # dropout off when acting
        action = self.actor(self.obs_tensor(self.normalizer(obs))).cpu().numpy()
        self.actor.train()
        return action
