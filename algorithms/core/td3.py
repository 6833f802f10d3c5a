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
import torch.nn.functional as F

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.data import Batch, offline_sampler
from algorithms.core.mlp_backward import MLPTape
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
    """a' = clip(pi'(s') + clip(N(0, (policy_noise max_a)^2), +-noise_clip max_a), +-max_a), without gradient.
    In place on fresh tensors: at batch 256 on CPU each pass and allocation saved is a measurable share."""
    with torch.no_grad():
        action = actor_target(next_obs)
        noise = torch.randn_like(action).mul_(policy_noise)
        if max_action != 1.0:  # x * 1.0 == x: skip the pass
            noise.mul_(max_action)
        return action.add_(noise.clamp_(-noise_clip * max_action, noise_clip * max_action)).clamp_(-max_action,
                                                                                                   max_action)


def td_target(critic_target: EnsembleQ, batch: Batch, next_action: torch.Tensor, discount: float) -> torch.Tensor:
    """y = r + gamma (1 - d) min_i Q'_i(s', a'), without gradient (in place, as above)."""
    with torch.no_grad():
        next_q = critic_target(batch.next_observations, next_action).amin(dim=0)
        return next_q.mul_(torch.rsub(batch.dones, 1.0).mul_(discount)).add_(batch.rewards)  # (1 - d): no Python rsub


def critic_loss(critic: EnsembleQ, batch: Batch, target: torch.Tensor) -> torch.Tensor:
    """Sum over the critics of each one's MSE to the shared target (what `critic_step` minimizes)."""
    return critic.mse(batch.observations, batch.actions, target)


def q_weight(q1: torch.Tensor, alpha: float) -> torch.Tensor:
    """TD3+BC's lambda = alpha / sg(mean |Q1|): makes one alpha work across reward scales."""
    return alpha / q1.abs().mean().detach()


Regularizer = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]  # pi(s) -> (R, metrics)


class MSETerm:
    """R(pi) = MSE(pi, target(pi)) with the target a constant of the step (no gradient through it): TD3+BC's pull
    towards the dataset action, PRDC's towards the nearest dataset action. A Regularizer whose gradient in pi has a
    closed form, 2 (pi - target) / numel, the arithmetic of torch's mse_loss_backward: the hand-run actor step takes
    it (`value_and_grad`) instead of a pass of autograd, and gets the same bits."""

    def __init__(self, target: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.target = target

    def __call__(self, pi: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return F.mse_loss(pi, self.target(pi)), {}

    def value_and_grad(self, pi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(R, dR/dpi, metrics), without autograd."""
        with torch.no_grad():
            diff = pi - self.target(pi)
            value = diff.square().mean()
            return value, diff.mul_(2.0 / diff.numel()), {}


def actor_loss(actor: torch.nn.Module, critic: EnsembleQ, obs: torch.Tensor, alpha: float,
               regularizer: Regularizer) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_pi = -lambda mean Q1(s, pi(s)) + R(pi(s)), lambda = alpha / sg(mean |Q1(s, pi(s))|).

    The Q term is the one every TD3-family method here shares (TD3+BC's, whose weight SPOT uses with alpha = 1);
    R is the method's own pull towards the data. This is the definition; `TD3Core.actor_step` minimizes it."""
    pi = actor(obs)
    q1 = critic.member(0, obs, pi)
    lmbda = q_weight(q1, alpha)
    reg, metrics = regularizer(pi)
    return -lmbda * q1.mean() + reg, {"lambda_": lmbda, **metrics}


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
        next_action = smoothed_target_action(self.actor_target, batch.next_observations, self.max_action,
                                             self.cfg.policy_noise, self.cfg.noise_clip)
        target = td_target(self.critic_target, batch, next_action, self.cfg.discount)
        loss = self.critic.mse_backward(batch.observations, batch.actions, target)  # = critic_loss, its grads set
        self.critic_optimizer.step()
        return loss, next_action, target

    def actor_step(self, obs: torch.Tensor, alpha: float, regularizer: Regularizer,
                   *also_frozen: torch.nn.Module) -> dict[str, torch.Tensor]:
        """One delayed actor update on `actor_loss` and the Polyak step of every target. The critic (and
        `also_frozen`, e.g. a behavior VAE) get no parameter gradients: the loss only needs gradients through
        them into the actor."""
        with contextlib.ExitStack() as stack:
            for module in (self.critic_params, *also_frozen):
                stack.enter_context(frozen(module))
            tapes = self._tapes(obs)
            if tapes is None:
                loss, metrics = actor_loss(self.actor, self.critic, obs, alpha, regularizer)
                self.actor_optimizer.zero_grad(set_to_none=True)
                loss.backward()
            else:
                loss, metrics = self._actor_grad_by_hand(obs, alpha, regularizer, *tapes)
        self.actor_optimizer.step()
        self.update_targets()
        return {"actor_loss": loss.detach(), **metrics}

    def _tapes(self, obs: torch.Tensor) -> tuple[MLPTape, torch.Tensor, MLPTape] | None:
        """pi(s) as a tape, pi(s) itself, and Q1(s, pi(s)) as a tape, for a backward by hand; None where either
        network is not a plain ReLU stack (an actor with dropout, as SPOT's) and autograd takes the step."""
        pi_tape = self.actor.tape(obs) if self.critic.relu else None
        if pi_tape is None:
            return None
        with torch.no_grad():
            pi = pi_tape.out if self.max_action == 1.0 else self.max_action * pi_tape.out
        return pi_tape, pi, self.critic.member_tape(0, obs, pi)

    def _actor_grad_by_hand(self, obs: torch.Tensor, alpha: float, regularizer: Regularizer, pi_tape: MLPTape,
                            pi: torch.Tensor, q_tape: MLPTape) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`actor_loss` and its gradient in the actor's parameters, written into their `.grad`. Autograd only
        sees R (a few ops on pi, or the path through the frozen VAE), and not even that when R's gradient has a
        closed form (`MSETerm`); the two MLPs' backward passes run by hand
        (docs/performance.md has what it saves). The gradients are the ones autograd gives on `actor_loss`, bit
        for bit (tests/test_td3_core.py)."""
        q1 = q_tape.out.squeeze(-1)
        lmbda = q_weight(q1, alpha)
        closed_form = getattr(regularizer, "value_and_grad", None)
        if closed_form is not None:
            reg, d_reg, metrics = closed_form(pi)
        else:
            pi.requires_grad_()  # a leaf: autograd takes R's gradient in it
            reg, metrics = regularizer(pi)
            d_reg = torch.autograd.grad(reg, pi)[0] if reg.requires_grad else None
        with torch.no_grad():
            d_q = (-lmbda / q1.numel()).expand_as(q_tape.out).contiguous()  # d(-lambda mean Q1)/dQ1
            d_pi = q_tape.backward(d_q, params=False, input=slice(obs.shape[-1], None))  # dQ1/da alone
            if d_reg is not None:
                d_pi = d_pi + d_reg
            pi_tape.backward(d_pi if self.max_action == 1.0 else self.max_action * d_pi)
            loss = -lmbda * q1.mean() + reg.detach()
        return loss, {"lambda_": lmbda, **metrics}

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
