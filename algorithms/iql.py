"""IQL: Implicit Q-Learning (Kostrikov, Nair & Levine, 2022).

IQL never queries Q at actions outside the dataset. Follows CORL `algorithms/offline/iql.py`:
  value:   L_V  = mean L2^tau(u),  u = sg(min_i Q'_i(s, a)) - V(s),  L2^tau(u) = |tau - 1(u < 0)| u^2
  critic:  L_Q  = 1/2 [MSE(Q1(s,a), y) + MSE(Q2(s,a), y)],  y = r + gamma (1 - d) sg(V(s'))
           (V(s') is computed before this step's V update); Q' is a Polyak copy of Q, updated every step.
  actor:   L_pi = mean[min(exp(beta sg(u)), 100) * (-log pi(a|s))]  (log pi summed over action dims),
           or with a deterministic actor mean[w * ||pi(s) - a||^2] (summed over action dims);
           the actor's learning rate is cosine-annealed to 0 over the run's update budget (on the device, so a
           CUDA graph can replay the update: algorithms/core/schedules.py).
States are normalized with dataset statistics (CORL), at evaluation too. Per-task settings (hopper overrides)
are in `algorithms/configs/iql.yaml`.
Deviation: the Gaussian log-likelihood is of a / max_action (CORL uses a directly); identical when max_action = 1
as in every MuJoCo locomotion task.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.data import Batch, offline_sampler, scale_rewards_by_return_range
from algorithms.core.nets import EnsembleQ, Polyak, adam, mlp
from algorithms.core.registry import register
from algorithms.core.schedules import CosineLR

EXP_ADV_MAX = 100.0
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclass
class IQLConfig:
    batch_size: int = 256  # transitions per gradient step
    actor_lr: float = 3e-4  # Adam learning rate of the actor (cosine-annealed to 0 over the run)
    critic_lr: float = 3e-4  # Adam learning rate of the twin Q networks
    value_lr: float = 3e-4  # Adam learning rate of V
    discount: float = 0.99  # discount factor gamma
    tau: float = 0.005  # Polyak rate of the target Q networks (every step)
    expectile: float = 0.7  # expectile tau of the V regression (0.7 locomotion, 0.9 antmaze)
    beta: float = 3.0  # inverse temperature of the advantage weights exp(beta * A) (3.0 locomotion, 10 antmaze)
    deterministic: bool = False  # deterministic actor with a squared-error loss instead of a Gaussian
    hidden: tuple[int, ...] = (256, 256)  # hidden layer widths of actor, Q and V (ReLU)
    normalize: bool = True  # normalize states with the dataset mean/std (also at evaluation)
    normalize_reward: bool = False  # scale rewards by 1000 / (max - min episode return) (CORL modify_reward)

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size must be positive")
        require(min(self.actor_lr, self.critic_lr, self.value_lr) > 0, "learning rates must be positive")
        require(0.0 < self.expectile < 1.0, "expectile must be in (0, 1)")
        require(0.0 < self.tau <= 1.0, "tau must be in (0, 1]")
        require(0.0 <= self.discount <= 1.0, "discount must be in [0, 1]")


class GaussianActor(nn.Module):
    """mean = tanh(MLP(s)); a state-independent learnable log std, clamped to [-20, 2]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden, output_activation=nn.Tanh)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: torch.Tensor) -> torch.distributions.Normal:
        std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        return torch.distributions.Normal(self.net(obs), std, validate_args=False)  # validation syncs the host


def expectile_loss(u: torch.Tensor, expectile: float) -> torch.Tensor:
    """mean |tau - 1(u < 0)| u^2."""
    return (torch.abs(expectile - (u < 0).float()) * u**2).mean()


def value_loss(value: nn.Module, critic_target: EnsembleQ, batch: Batch, expectile: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Expectile regression of V(s) on sg(min_i Q'_i(s, a)); returns (loss, advantage u)."""
    with torch.no_grad():
        target_q = critic_target(batch.observations, batch.actions).min(dim=0).values
    u = target_q - value(batch.observations).squeeze(-1)
    return expectile_loss(u, expectile), u


def q_target(batch: Batch, next_v: torch.Tensor, discount: float) -> torch.Tensor:
    """r + gamma (1 - d) V(s'), no gradient into V."""
    return batch.rewards + discount * (1.0 - batch.dones) * next_v.detach()


def q_loss(critic: EnsembleQ, batch: Batch, next_v: torch.Tensor, discount: float) -> torch.Tensor:
    """Mean over the critics of MSE(Q_i(s, a), r + gamma (1 - d) V(s')) (the update takes its gradient without
    autograd: `EnsembleQ.mse_backward`)."""
    return critic.mse(batch.observations, batch.actions, q_target(batch, next_v, discount), members="mean")


def advantage_weights(u: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.exp(beta * u.detach()).clamp(max=EXP_ADV_MAX)


def actor_loss(actor: nn.Module, batch: Batch, u: torch.Tensor, beta: float, max_action: float) -> torch.Tensor:
    """Advantage-weighted regression on dataset actions."""
    weights = advantage_weights(u, beta)
    out = actor(batch.observations)
    if isinstance(out, torch.distributions.Distribution):
        per_sample = -out.log_prob(batch.actions / max_action).sum(-1)
    else:
        per_sample = ((max_action * out - batch.actions) ** 2).sum(-1)
    return (weights * per_sample).mean()


# On a sim-to-real task: the real data alone, never the simulator (H2O's real-only baseline).
@register("iql", kinds=("offline", "sim-to-real"))
class IQL(Algorithm):
    Config = IQLConfig

    def __init__(self, config: IQLConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        self.max_action = ctx.max_action
        data = ctx.require_dataset("iql")
        if config.normalize_reward:
            data = scale_rewards_by_return_range(data)
        self.normalizer, self.sampler = offline_sampler(data, self.device, ctx.seed, config.normalize)

        if config.deterministic:
            self.actor: nn.Module = mlp(ctx.obs_dim, ctx.act_dim, config.hidden, output_activation=nn.Tanh)
        else:
            self.actor = GaussianActor(ctx.obs_dim, ctx.act_dim, config.hidden)
        self.actor.to(self.device)
        self.actor_optimizer = adam(self.actor.parameters(), lr=config.actor_lr)
        self.actor_schedule = CosineLR(self.actor_optimizer, ctx.total_updates)
        self.critic = EnsembleQ(ctx.obs_dim, ctx.act_dim, config.hidden, n=2).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.update_target = Polyak([(self.critic_target, self.critic)], config.tau)
        self.critic_optimizer = adam(self.critic.parameters(), lr=config.critic_lr)
        self.value = mlp(ctx.obs_dim, 1, config.hidden).to(self.device)
        self.value_optimizer = adam(self.value.parameters(), lr=config.value_lr)

    def update(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.step += 1
        batch = self.sampler.sample(cfg.batch_size)
        with torch.no_grad():
            next_v = self.value(batch.next_observations).squeeze(-1)

        v_loss, u = value_loss(self.value, self.critic_target, batch, cfg.expectile)
        self.value_optimizer.zero_grad(set_to_none=True)
        v_loss.backward()
        self.value_optimizer.step()

        loss_q = self.critic.mse_backward(batch.observations, batch.actions,  # = q_loss, its grads set
                                          q_target(batch, next_v, cfg.discount), members="mean")
        self.critic_optimizer.step()
        self.update_target()

        pi_loss = actor_loss(self.actor, batch, u, cfg.beta, self.max_action)
        self.actor_optimizer.zero_grad(set_to_none=True)
        pi_loss.backward()
        self.actor_optimizer.step()
        self.actor_schedule.step()
        return {"value_loss": v_loss.detach(), "q_loss": loss_q.detach(), "actor_loss": pi_loss.detach(),
                "advantage": u.mean().detach()}

    def graph_period(self) -> int:
        return 1  # no host syncs: the cosine schedule runs on the device (algorithms/core/schedules.py)

    @torch.no_grad()
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        out = self.actor(self.obs_tensor(self.normalizer(obs)))
        mean = out.mean if isinstance(out, torch.distributions.Distribution) else out
        return (self.max_action * mean).clamp(-self.max_action, self.max_action).cpu().numpy()
