"""The SAC core (Haarnoja et al., 2018, automatic temperature) shared by online SAC, H2O, SAC-Lagrangian and CAL.

Written as H2O's `SimpleSAC/sim2real_sac.py` (t6-thu/H2O, from young-geng/SimpleSAC) trains its SAC part:
  policy:      a~ ~ pi(.|s) reparameterized, tanh-squashed Gaussian; log pi(a~|s) with the tanh Jacobian
  temperature: alpha = exp(log_alpha);  L_alpha = -mean[log_alpha * sg(log pi(a~|s) + H_target)],  H_target = -|A|
  actor:       L_pi = mean[alpha log pi(a~|s) - min_i Q_i(s, a~)]  (+ a method's own term, e.g. lambda Q_c(s, a~))
  TD target:   y = r + gamma (1 - d) (min_i Q'_i(s', a') - [backup_entropy] alpha log pi(a'|s')),  a' ~ pi(.|s'),
               no gradient
  critic:      L_Q = sum_i mean_B[w (Q_i(s, a) - y)^2]  (w = 1 but for H2O's importance weights; + a method's term)
  order:       every loss comes from the parameters as the step found them (alpha, pi and the critics before any
               update, so y uses the pre-update policy and temperature), then alpha step -> actor step -> critic
               step -> Polyak update of the target critics (rate tau, every step); there is no target actor.
Networks (H2O's): actor and twin critics 2x256 ReLU; the last layer of each xavier_uniform (gain 1e-2), bias 0.
"""

from __future__ import annotations

import contextlib
import copy
import math
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.data import Batch
from algorithms.core.nets import EnsembleQ, Polyak, TanhGaussianActor, VectorizedLinear, adam, frozen
from algorithms.core.online import EnvStepper, Policy
from algorithms.core.replay import ReplayBuffer


@dataclass
class SACConfig:
    """The SAC core's fields; SAC-family configs subclass this and add their own after them."""

    batch_size: int = 256  # transitions per gradient step
    actor_lr: float = 3e-4  # Adam learning rate of the actor
    critic_lr: float = 3e-4  # Adam learning rate of the twin critics
    alpha_lr: float = 3e-4  # Adam learning rate of log_alpha (H2O: the policy's rate)
    discount: float = 0.99  # discount factor gamma
    tau: float = 5e-3  # Polyak rate of the target critics (every step)
    hidden: tuple[int, ...] = (256, 256)  # hidden layer widths of actor and critics (ReLU)
    target_entropy: float | None = None  # entropy target of the temperature tuning; None means -|A|
    init_log_alpha: float = 0.0  # initial log_alpha (alpha = 1 at the start)
    backup_entropy: bool = True  # subtract alpha log pi(a'|s') in the TD target (soft backup); H2O: False

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size must be positive")
        require(self.actor_lr > 0 and self.critic_lr > 0 and self.alpha_lr > 0, "learning rates must be positive")
        require(0.0 <= self.discount <= 1.0, "discount must be in [0, 1]")
        require(0.0 < self.tau <= 1.0, "tau must be in (0, 1]")
        require(len(self.hidden) > 0 and all(h > 0 for h in self.hidden), "hidden widths must be positive")
        require(self.target_entropy is None or math.isfinite(self.target_entropy), "target_entropy must be finite")
        require(math.isfinite(self.init_log_alpha), "init_log_alpha must be finite")


# (obs, a~) -> (term added to the actor loss, metrics): SAC-Lagrangian/CAL's lambda * Q_c(s, a~)
ActorTerm = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
# Q_i(s, a) of shape (n, B) -> (term added to the critic loss, metrics): H2O's dynamics-gap penalty
CriticTerm = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
Critic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (obs, act) -> (n, B)
Actor = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # obs -> (action, log pi(action|obs))


def soft_td_target(critic_target: Critic, actor: Actor, batch: Batch, discount: float, alpha: torch.Tensor | float,
                   backup_entropy: bool) -> torch.Tensor:
    """y = r + gamma (1 - d) (min_i Q'_i(s', a') - [backup_entropy] alpha log pi(a'|s')), a' ~ pi(.|s'); (B,), no
    gradient. Scalar rewards (B,)."""
    with torch.no_grad():
        next_action, next_logp = actor(batch.next_observations)
        next_v = critic_target(batch.next_observations, next_action).amin(dim=0)
        if backup_entropy:
            next_v = next_v - alpha * next_logp
        return batch.rewards + discount * (1.0 - batch.dones) * next_v


def critic_loss(q: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum_i mean_B[w (Q_i(s, a) - y)^2] for Q of shape (n, B): each member regressed on the shared target.

    With per-sample weights w (B,) this is H2O's MSE(sqrt(w) Q_i, sqrt(w) y): the mean runs over the whole batch,
    so a zero-weight sample still counts in the denominator (a weighted sum / B, not a weighted average)."""
    err = (q - target.unsqueeze(0)) ** 2
    if weights is not None:
        err = err * weights.unsqueeze(0)
    return err.mean(dim=1).sum()


def actor_loss(alpha: torch.Tensor | float, logp: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """L_pi = mean[alpha log pi(a~|s) - min_i Q_i(s, a~)], given log pi(a~|s) (B,) and Q_i(s, a~) (n, B); alpha is a
    constant here (the temperature has its own loss)."""
    return (alpha * logp - q.amin(dim=0)).mean()


def temperature_loss(log_alpha: torch.Tensor, logp: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """L_alpha = -mean[log_alpha * sg(log pi(a~|s) + H_target)]: alpha grows while the policy's entropy
    (-log pi) is below the target, shrinks while above. log_alpha, not alpha, multiplies the bracket (H2O, CQL)."""
    return -(log_alpha * (logp.detach() + target_entropy)).mean()


def h2o_critic_init_(q: EnsembleQ, last_gain: float = 1e-2) -> EnsembleQ:
    """H2O's critic init (SimpleSAC `FullyConnectedNetwork`, orthogonal_init off): hidden layers keep torch's
    nn.Linear default, which EnsembleQ's layers already draw (uniform +-1/sqrt(in) for weights and biases); the
    last layer of each member is xavier_uniform with gain `last_gain` and bias 0."""
    last = [m for m in q.net if isinstance(m, VectorizedLinear)][-1]
    with torch.no_grad():
        for member in range(last.weight.shape[0]):
            nn.init.xavier_uniform_(last.weight[member], gain=last_gain)  # xavier's bound is symmetric in in/out
        last.bias.zero_()
    return q


class SACCore:
    """Tanh-Gaussian actor, twin critics and their target, the temperature, three Adams; the losses above as steps.

    `step(batch)` is the whole SAC update in H2O's order. A method that changes a loss composes the same pieces:
    `td_target`, `temperature_step`, `actor_step` (with an `ActorTerm`), `critic_step` (with weights and a
    `CriticTerm`), `update_target`, in that order, as `step` does."""

    def __init__(self, ctx: AlgoContext, cfg: SACConfig) -> None:
        self.cfg = cfg
        self.device = ctx.device
        self.target_entropy = cfg.target_entropy if cfg.target_entropy is not None else -float(ctx.act_dim)
        # The actor's own init is H2O's policy init: default hidden layers, last layer xavier 1e-2, bias 0; learnable
        # log-std multiplier 1 and offset -1, log std clamped to [-20, 2].
        self.actor = TanhGaussianActor(ctx.obs_dim, ctx.act_dim, ctx.max_action, cfg.hidden).to(self.device)
        self.critic = h2o_critic_init_(EnsembleQ(ctx.obs_dim, ctx.act_dim, cfg.hidden, n=2)).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(float(cfg.init_log_alpha), device=self.device))
        self.actor_optimizer = adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_optimizer = adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_optimizer = adam([self.log_alpha], lr=cfg.alpha_lr)
        self.update_target = Polyak([(self.critic_target, self.critic)], cfg.tau)

    @property
    def alpha(self) -> torch.Tensor:
        """exp(log_alpha) now, as a constant (a new tensor: later steps of log_alpha do not change it)."""
        return self.log_alpha.detach().exp()

    def td_target(self, batch: Batch, alpha: torch.Tensor) -> torch.Tensor:
        """`soft_td_target` with this core's actor and target critics."""
        return soft_td_target(self.critic_target, self.actor, batch, self.cfg.discount, alpha, self.cfg.backup_entropy)

    def temperature_step(self, logp: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = temperature_loss(self.log_alpha, logp, self.target_entropy)
        self.alpha_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.alpha_optimizer.step()
        return {"alpha_loss": loss.detach()}

    def actor_step(self, obs: torch.Tensor, action: torch.Tensor, logp: torch.Tensor, alpha: torch.Tensor,
                   extra: ActorTerm | None = None, also_frozen: Sequence[nn.Module] = ()) -> dict[str, torch.Tensor]:
        """One step on `actor_loss` (+ `extra(obs, a~)`) for a~, log pi(a~|s) drawn from the actor on `obs`. The
        critics (and `also_frozen`, e.g. a cost critic inside `extra`) get no parameter gradients."""
        metrics: dict[str, torch.Tensor] = {}
        with contextlib.ExitStack() as stack:
            for module in (self.critic, *also_frozen):
                stack.enter_context(frozen(module))
            loss = actor_loss(alpha, logp, self.critic(obs, action))
            if extra is not None:
                term, metrics = extra(obs, action)
                loss = loss + term
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimizer.step()
        return {"actor_loss": loss.detach(), "entropy": -logp.detach().mean(), **metrics}

    def critic_step(self, batch: Batch, target: torch.Tensor, weights: torch.Tensor | None = None,
                    extra: CriticTerm | None = None) -> dict[str, torch.Tensor]:
        """One step on `critic_loss` of Q_i(s, a) against the target y (+ `extra(Q)`)."""
        q = self.critic(batch.observations, batch.actions)
        loss = critic_loss(q, target, weights)
        metrics: dict[str, torch.Tensor] = {}
        if extra is not None:
            term, metrics = extra(q)
            loss = loss + term
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        return {"critic_loss": loss.detach(), "q_mean": q.detach().mean(), **metrics}

    def step(self, batch: Batch, actor_term: ActorTerm | None = None, also_frozen: Sequence[nn.Module] = (),
             critic_weights: torch.Tensor | None = None, critic_term: CriticTerm | None = None
             ) -> dict[str, torch.Tensor]:
        """One SAC update on `batch`, in H2O's order (module docstring). alpha and y are taken before any step, so
        the actor loss and the backup use the pre-update temperature and y the pre-update policy; the critic step
        comes after the actor step but the actor step leaves the critics unchanged, so every loss is the one the
        step began with, as in H2O where all losses are built before the three optimizer steps."""
        alpha = self.alpha
        target = self.td_target(batch, alpha)
        action, logp = self.actor(batch.observations)
        metrics = {"alpha": alpha}
        metrics |= self.temperature_step(logp)
        metrics |= self.actor_step(batch.observations, action, logp, alpha, actor_term, also_frozen)
        metrics |= self.critic_step(batch, target, critic_weights, critic_term)
        self.update_target()
        return metrics

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """max_action tanh(mean) when deterministic (evaluation), else a sample of the policy."""
        action, _ = self.actor(obs, deterministic=deterministic)
        return action

    def _parts(self) -> dict[str, Any]:
        return {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target,
                "actor_optimizer": self.actor_optimizer, "critic_optimizer": self.critic_optimizer,
                "alpha_optimizer": self.alpha_optimizer}

    def state_dict(self) -> dict[str, Any]:
        state = {k: v.state_dict() for k, v in self._parts().items()}
        state["log_alpha"] = self.log_alpha.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in self._parts().items():
            v.load_state_dict(state[k])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])


class Explorer:
    """Uniform actions over the box while warming up (from torch's global generator, which the runner checkpoints),
    then samples of the SAC core's current policy (rollouts are stochastic, as algorithms/sac.py's)."""

    def __init__(self, core: SACCore, action_space: gym.spaces.Box, device: torch.device) -> None:
        self.core = core
        self.device = device
        self.low = torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1)
        self.high = torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1)

    def uniform(self, obs: np.ndarray) -> np.ndarray:
        u = torch.rand(len(obs), self.low.numel())
        return (self.low + (self.high - self.low) * u).numpy()

    def sample(self, obs: np.ndarray) -> np.ndarray:
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        return self.core.act(obs_t, deterministic=False).cpu().numpy()

    def policy(self, warming_up: bool) -> Policy:
        return self.uniform if warming_up else self.sample


@dataclass
class OnlineSACConfig(SACConfig):
    """The fields of a SAC-family method that collects its own experience; its config subclasses this."""

    learning_starts: int = 5000  # environment steps of uniform random actions before the first gradient step
    buffer_size: int = 1_000_000  # replay capacity in transitions (FIFO)
    n_envs: int = 1  # training environments stepped together; each update adds n_envs transitions

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.learning_starts >= 0, "learning_starts must be >= 0")
        require(self.buffer_size >= self.batch_size, "buffer_size must be at least batch_size")
        require(self.n_envs >= 1, "n_envs must be >= 1")


class OnlineSAC(Algorithm):
    """The loop every online SAC-family method shares (SAC, SAC-Lagrangian, CAL): each `update()` takes one
    vectorized step of the training envs (uniform actions for the first `learning_starts` env steps, then samples of
    the policy) into a FIFO replay buffer, then, once `learning_starts` steps and a batch are stored, the method's
    own `train()`. Evaluation acts with max_action tanh(mean)."""

    def __init__(self, config: OnlineSACConfig, ctx: AlgoContext, costs: bool = False) -> None:
        super().__init__(config, ctx)
        self.stepper = EnvStepper.for_context(ctx, config.n_envs, self.name)
        self.sac = SACCore(ctx, config)
        self.buffer = ReplayBuffer(config.buffer_size, ctx.obs_dim, ctx.act_dim, self.device, ctx.seed, costs=costs)
        self.explorer = Explorer(self.sac, ctx.action_space, self.device)

    def update(self) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        self.step += 1
        t = self.stepper.step(self.explorer.policy(self.stepper.env_steps < cfg.learning_starts))
        self.buffer.add(t.obs, t.act, t.rew, t.next_obs, t.terminated, t.cost if self.buffer.costs is not None
                        else None)
        metrics: dict[str, torch.Tensor | float] = dict(self.stepper.metrics())
        if self.stepper.env_steps >= cfg.learning_starts and len(self.buffer) >= cfg.batch_size:
            metrics |= self.train()
        return metrics

    @abstractmethod
    def train(self) -> dict[str, torch.Tensor]:
        """The method's gradient step(s) on batches from `self.buffer`."""

    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        return self.sac.act(self.obs_tensor(obs), deterministic=True).cpu().numpy()
