"""What the online safe SAC family (SAC-Lagrangian, algorithms/sac_lag.py; CAL, algorithms/cal.py) shares.

  budget:      a safe task's budget kappa bounds the undiscounted cost of an episode of T steps, but a cost critic
               estimates a discounted sum from one state onwards. Spread evenly, kappa is kappa / T per step, and
               its discounted sum is the budget in the critic's units:
                   d = kappa (1 - gamma^T) / ((1 - gamma) T)      (d = kappa when gamma = 1)
               (safety-starter-agents `safe_rl/sac/sac.py:374`; CAL `agent/cal.py:64-66` on Safety-Gym; reference
               C6). T is the training environment's time limit (1000 on the velocity tasks, 200 on smoke-safe-v0),
               read from the env unless a config sets it.
  cost critic: n members Q_c,i(s, a) (an `EnsembleQ`) with a Polyak target, each regressed on its own target
                   y_i = c + gamma_c (1 - d) Q'_c,i(s', a'),  a' ~ pi(.|s'),  no entropy term, no gradient
               (safety-starter `sac.py:350`; CAL `agent/cal.py:124-126`), loss mean over members and batch of
               (Q_c,i - y_i)^2 (CAL `agent/cal.py:127`, F.mse_loss over (E, B, 1)). CAL's option `--intrgt_max`
               replaces Q'_c,i by the max over a random subset of M members (drawn with replacement,
               `agent/cal.py:116,120,124`).
  multiplier:  lambda >= 0, one Adam step per gradient step on  L(lambda) = lambda * sg(d - J_c)  with J_c the
               critic's estimate of the current cost: lambda grows while J_c > d and shrinks while J_c < d. On
               log lambda (CAL `agent/cal.py:42,57,177`: lambda = exp(log lambda) > 0) or on lambda itself, projected
               back to lambda >= 0 after each step (OmniSafe `omnisafe/common/lagrange.py`: loss -lambda (J_c - d),
               Adam, `clamp_(0, upper)`).
  explorer:    the behaviour policy of the online SAC family (as algorithms/sac.py): uniform over the action box
               for the first `learning_starts` environment steps, then a sample of the current policy.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from algorithms.core.contract import AlgoContext
from algorithms.core.data import Batch
from algorithms.core.errors import CtrlbenchError
from algorithms.core.nets import EnsembleQ, Polyak, adam
from algorithms.core.sac import Actor

# --- the budget in the cost critic's units ------------------------------------------------------------------------


def discounted_budget(kappa: float, discount: float, horizon: int) -> float:
    """d = kappa (1 - gamma^T) / ((1 - gamma) T): the discounted sum of kappa / T per step over T steps; kappa when
    gamma = 1 (the limit)."""
    if horizon <= 0:
        raise ValueError("the episode horizon T must be positive")
    if discount >= 1.0:
        return float(kappa)
    return float(kappa) * (1.0 - discount ** horizon) / ((1.0 - discount) * horizon)


def episode_horizon(envs: gym.vector.VectorEnv, override: int | None, algo: str) -> int:
    """T of the budget conversion: `override` when set, else the time limit (`max_episode_steps`) of the training
    environments, wherever it sits in their wrapper chain."""
    if override is not None:
        return int(override)
    try:
        limits = envs.unwrapped.get_attr("_max_episode_steps")
    except AttributeError:
        limits = (None,)
    if not limits or any(t is None for t in limits) or len(set(limits)) != 1:
        raise CtrlbenchError(f"{algo}: the training environments have no single time limit to convert the episode "
                             "cost budget with; set --episode-length")
    return int(limits[0])


def task_budget(ctx: AlgoContext, envs: gym.vector.VectorEnv, discount: float, episode_length: int | None,
                algo: str) -> tuple[float, int]:
    """(d, T) for the task of `ctx`: its episode budget kappa (ctx.cost_limit) in the cost critic's units."""
    if ctx.cost_limit is None:
        raise CtrlbenchError(f"{algo} is a safe-RL algorithm and the task has no cost budget (ctx.cost_limit)")
    horizon = episode_horizon(envs, episode_length, algo)
    return discounted_budget(ctx.cost_limit, discount, horizon), horizon


# --- the cost critic --------------------------------------------------------------------------------------------------


def cost_td_target(critic_target: EnsembleQ, actor: Actor, batch: Batch, discount: float,
                   subset_max: int = 0) -> torch.Tensor:
    """Per-member targets y_i = c + gamma (1 - d) Q'_c,i(s', a'), a' ~ pi(.|s'): (n, B), no gradient. With
    `subset_max` M > 0 every member gets c + gamma (1 - d) max_{j in S} Q'_c,j(s', a'), S drawn as M member indices
    with replacement (CAL's --intrgt_max, `agent/cal.py:116-126`), from torch's global generator."""
    if batch.costs is None:
        raise ValueError("cost_td_target needs a batch with costs")
    with torch.no_grad():
        next_action, _ = actor(batch.next_observations)
        next_q = critic_target(batch.next_observations, next_action)  # (n, B)
        if subset_max > 0:
            idx = torch.randint(next_q.shape[0], (subset_max,), device=next_q.device)
            next_q = next_q.index_select(0, idx).amax(dim=0, keepdim=True).expand_as(next_q)
        return batch.costs.unsqueeze(0) + discount * (1.0 - batch.dones).unsqueeze(0) * next_q


def cost_critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean over members and batch of (Q_c,i(s, a) - y_i)^2, for Q and y of shape (n, B) (CAL's F.mse_loss)."""
    return ((q - target) ** 2).mean()


class CostCritic:
    """Q_c: an ensemble of n cost critics (the algorithm builds the network), its Polyak target, its Adam."""

    def __init__(self, q: EnsembleQ, lr: float, tau: float) -> None:
        self.q = q
        self.target = copy.deepcopy(q).requires_grad_(False)
        self.optimizer = adam(q.parameters(), lr=lr)
        self.update_target = Polyak([(self.target, self.q)], tau)

    def __call__(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Q_c,i(s, a) of every member: (n, B)."""
        return self.q(obs, act)

    def step(self, batch: Batch, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """One Adam step on `cost_critic_loss` against the per-member targets (n, B)."""
        q = self.q(batch.observations, batch.actions)
        loss = cost_critic_loss(q, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"cost_critic_loss": loss.detach(), "qc_mean": q.detach().mean()}

    def state_dict(self) -> dict[str, Any]:
        return {"q": self.q.state_dict(), "target": self.target.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])


# --- the Lagrange multiplier --------------------------------------------------------------------------------------


class LagrangeMultiplier:
    """lambda >= 0 and its dual step. `log_space=True` learns log lambda (CAL); False learns lambda itself and
    projects it onto lambda >= 0 after each step (OmniSafe's Lagrange)."""

    def __init__(self, init: float, lr: float, log_space: bool, device: torch.device | str) -> None:
        if log_space and not init > 0:
            raise ValueError("a multiplier learned in log space needs a positive initial value")
        if init < 0:
            raise ValueError("the initial Lagrange multiplier must be >= 0")
        self.log_space = log_space
        raw = math.log(init) if log_space else float(init)
        self.raw = nn.Parameter(torch.tensor(raw, device=device))
        self.optimizer = adam([self.raw], lr=lr)

    def _value(self) -> torch.Tensor:
        return self.raw.exp() if self.log_space else self.raw

    @property
    def value(self) -> torch.Tensor:
        """lambda now, as a constant (a new tensor: later dual steps do not change it)."""
        return self._value().detach().clone()

    def loss(self, estimate: torch.Tensor, budget: float) -> torch.Tensor:
        """L = lambda * sg(d - J_c): its gradient descent raises lambda while the estimated cost J_c is above the
        budget d and lowers it while below (CAL `agent/cal.py:177`; OmniSafe `compute_lambda_loss`)."""
        return self._value() * (budget - estimate.detach()).mean()

    def step(self, estimate: torch.Tensor, budget: float) -> dict[str, torch.Tensor]:
        """One Adam step on `loss`, then (not in log space) the projection lambda <- max(lambda, 0)."""
        loss = self.loss(estimate, budget)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if not self.log_space:
            with torch.no_grad():
                self.raw.clamp_(min=0.0)
        return {"lambda_loss": loss.detach(), "lambda": self.value}

    def state_dict(self) -> dict[str, Any]:
        return {"raw": self.raw.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.raw.copy_(state["raw"])
        self.optimizer.load_state_dict(state["optimizer"])


# --- the behaviour policy ---------------------------------------------------------------------------------------------
