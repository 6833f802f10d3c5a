"""SAC-Lagrangian: soft actor-critic with a learned cost critic and a Lagrange multiplier on the cost constraint.

The constrained problem  max_pi J_r(pi)  s.t.  J_c(pi) <= d  is solved on its Lagrangian
min_{lambda >= 0} max_pi J_r(pi) - lambda (J_c(pi) - d)  by alternating primal (actor) and dual (lambda) steps.
Written as safety-starter-agents' off-policy SAC-Lagrangian (openai/safety-starter-agents 4151a28,
`safe_rl/sac/sac.py`), with the dual rule of OmniSafe's `Lagrange` (PKU-Alignment/omnisafe 15603dd7,
`omnisafe/common/lagrange.py`); the SAC part is the suite's SAC core (algorithms/core/sac.py):

  budget:      d = kappa (1 - gamma^T) / ((1 - gamma) T), kappa the task's episode budget, T its time limit
               (sac.py:374; algorithms/core/lagrangian.py)
  cost critic: one Q_c(s, a) (sac.py:292; OmniSafe's cost critic has num_critics=1), 2x256 ReLU like the reward
               critics, its own Polyak target and Adam;  y_c = c + gamma (1 - d) Q'_c(s', a'), a' ~ pi(.|s'), no
               entropy term (sac.py:350);  L_Qc = mean_B (Q_c(s, a) - y_c)^2 (sac.py:356, without its 1/2)
  actor:       L_pi = mean[alpha log pi(a~|s) - min_i Q_i(s, a~) + lambda Q_c(s, a~)], lambda a constant here
               (sac.py:353), through the SAC core's ActorTerm hook with Q_c frozen
  dual:        J_c = mean_B Q_c(s, a) on the batch's own actions (sac.py:376: `qc` at a_ph), then one Adam step on
               L(lambda) = lambda sg(d - J_c) and the projection lambda <- max(lambda, 0) (lagrange.py
               `compute_lambda_loss`, `update_lagrange_multiplier`): for plain gradient steps this is
               lambda <- max(0, lambda + lr (J_c - d)); Adam makes the step about lr whatever the size of J_c - d.
  order:       every loss from the parameters as the step found them (y, y_c, lambda and J_c before any update), then
               the SAC core's step (temperature -> actor -> critics -> target critics), the cost critic's step, its
               Polyak target, the dual step.

Each `update()` is one vectorized environment step and at most one gradient step, as algorithms/sac.py: uniform
random actions for the first `learning_starts` environment steps, then samples of the policy; (s, a, r, c, s',
terminated) into a FIFO replay buffer; one gradient step on a uniform batch once `learning_starts` steps are stored.

Deviations from the sources, and why:
- The multiplier is lambda itself, projected onto lambda >= 0 (OmniSafe), not safety-starter's softplus(beta): the
  projection lets lambda return to exactly 0 while the constraint is slack, and is the textbook rule
  lambda <- max(0, lambda + lr (J_c - d)). lambda starts at 0 (OmniSafe's velocity configs: 0.001).
- lambda steps every gradient step on the cost critic's estimate of J_c (safety-starter), not on the mean cost of the
  last 10 training episodes (OmniSafe, also every gradient step, after `warmup_epochs` = 100 epochs of 2000 steps;
  that signal is `sac_lag_epcost` below): an estimate in the critic's discounted units, compared with the converted
  budget, reads the current policy's cost without waiting for episodes to end. Its lr 3e-4 is the SAC learning rate
  (safety-starter uses one lr for everything, sac.py:392); OmniSafe's 1e-5 is sized for its 1M steps.
- The actor loss is not divided by (1 + lambda) (OmniSafe's SACLag `_loss_pi` does; safety-starter does not).
- Automatic temperature with log alpha = 0 at the start, learning rates 3e-4, batch 256 and 5000 warm-up steps are
  the SAC core's and algorithms/sac.py's (safety-starter: softplus alpha, lr 1e-3, batch 1024, 1000 warm-up steps),
  so that SAC, SAC-Lag and CAL differ only where the methods differ.
- A time-limit truncation is not terminal for either critic (algorithms/core/online.py); a true termination ends the
  cost sum too (sac.py:350 masks y_c with (1 - d)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext
from algorithms.core.data import Batch
from algorithms.core.lagrangian import CostCritic, LagrangeMultiplier, cost_td_target, task_budget
from algorithms.core.nets import EnsembleQ
from algorithms.core.registry import register
from algorithms.core.sac import ActorTerm, Critic, OnlineSAC, OnlineSACConfig, h2o_critic_init_


@dataclass
class SACLagConfig(OnlineSACConfig):  # batch, lrs, gamma, tau, widths, temperature, replay: the SAC core's
    cost_critic_lr: float = 3e-4  # Adam learning rate of the cost critic Q_c
    lambda_init: float = 0.0  # initial Lagrange multiplier lambda (>= 0; OmniSafe velocity configs: 0.001)
    lambda_lr: float = 3e-4  # Adam learning rate of lambda (projected onto lambda >= 0 after each step)
    episode_length: int | None = None  # T of the budget conversion d = kappa (1-g^T)/((1-g)T); None: the env's limit

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.cost_critic_lr > 0 and self.lambda_lr > 0, "learning rates must be positive")
        require(self.lambda_init >= 0, "lambda_init must be >= 0")
        require(self.episode_length is None or self.episode_length > 0, "episode_length must be positive")


def lagrangian_term(cost_critic: Critic, lam: torch.Tensor) -> ActorTerm:
    """The actor's penalty lambda * mean_B Q_c(s, a~), with lambda a constant (sac.py:353)."""

    def term(obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        qc = cost_critic(obs, action).mean(dim=0)  # one member: Q_c itself
        return lam * qc.mean(), {"qc_pi": qc.detach().mean()}

    return term


@register("sac_lag", kinds=("safe",))
class SACLag(OnlineSAC):
    Config = SACLagConfig

    def __init__(self, config: SACLagConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx, costs=True)
        self.budget, self.horizon = task_budget(ctx, self.stepper.envs, config.discount, config.episode_length,
                                                "sac_lag")
        cost_q = h2o_critic_init_(EnsembleQ(ctx.obs_dim, ctx.act_dim, config.hidden, n=1)).to(self.device)
        self.cost = CostCritic(cost_q, config.cost_critic_lr, config.tau)
        self.lagrange = LagrangeMultiplier(config.lambda_init, config.lambda_lr, log_space=False, device=self.device)

    def train(self) -> dict[str, torch.Tensor]:
        return self.gradient_step(self.buffer.sample(self.config.batch_size))

    def dual_signal(self, batch: Batch) -> tuple[torch.Tensor, float] | None:
        """(J_c, its budget) for the dual step, or None to skip it: the cost critic on the batch's own actions
        against the discounted budget d (sac.py:376)."""
        with torch.no_grad():
            return self.cost(batch.observations, batch.actions).mean(), self.budget

    def gradient_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        lam = self.lagrange.value
        cost_target = cost_td_target(self.cost.target, self.sac.actor, batch, self.config.discount)
        signal = self.dual_signal(batch)  # from the parameters as the step found them
        metrics = self.sac.step(batch, actor_term=lagrangian_term(self.cost, lam), also_frozen=(self.cost.q,))
        metrics |= self.cost.step(batch, cost_target)
        self.cost.update_target()
        if signal is None:
            metrics["lambda"] = lam
            return metrics
        estimate, budget = signal
        metrics |= self.lagrange.step(estimate, budget)
        metrics["cost_estimate"] = estimate
        metrics["cost_budget"] = budget
        return metrics


@register("sac_lag_epcost", kinds=("safe",))
class SACLagEpCost(SACLag):
    """SAC-Lag whose dual step reads the cost the policy actually pays: OmniSafe's SACLag signal
    (omnisafe 15603dd7, `algorithms/off_policy/sac_lag.py:62-65`, `common/lagrange.py:112`), everything else
    `sac_lag`'s.

      dual:  J_c = the mean undiscounted cost of the last 10 finished training episodes (OmniSafe's
             `Metrics/EpCost`, window_lens 10, from the stochastic behaviour policy), against kappa itself; one Adam
             step of L(lambda) = lambda sg(kappa - J_c) per gradient step (OmniSafe steps lambda in every `_update`),
             none before the first episode has finished.

    Why a second dual: `sac_lag`'s J_c, the cost critic averaged over the replay buffer's states and actions, is
    not the cost of an episode from the start state; on halfcheetah-velocity-k40 (150k steps, seed 0) it sat at
    3.7-4.1 against d = 4.0 from 70k steps on while the training episodes cost 53-82 (kappa 40; docs/safe.md).
    The training episodes' cost is the episodic constraint itself, measured, at the price of a lag of about 10
    episodes.
    Deviations from OmniSafe, and why: lambda's lr is `sac_lag`'s 3e-4 (OmniSafe: 1e-5 after 100 warm-up epochs of
    2000 steps, sized for 1M steps; at 80k-150k steps lambda would stay under 1), its initial value 0 (0.001), and
    the actor loss is not divided by (1 + lambda) (OmniSafe `sac_lag.py:100`; under Adam a slowly varying scale of
    the whole loss barely changes the step), so that this and `sac_lag` differ in the dual's signal alone.
    """

    def dual_signal(self, batch: Batch) -> tuple[torch.Tensor, float] | None:
        cost = self.stepper.recent_episode_cost()
        if cost is None:
            return None
        return torch.tensor(cost, device=self.device), float(self.ctx.cost_limit)
