"""CAL: Off-Policy Primal-Dual Safe Reinforcement Learning (Wu et al., ICLR 2024).

Off-policy primal-dual methods underestimate the cost, because the cost critic's errors are exploited by the actor
that minimises it, and so violate the constraint. CAL adds two things to SAC-Lagrangian (algorithms/sac_lag.py):
conservative policy optimisation (an upper confidence bound of the cost from an ensemble of cost critics) and local
policy convexification (an augmented-Lagrangian actor term that damps the multiplier's oscillation). Follows the
official code, ZifanWu/CAL e4087cc (`agent/cal.py`, `agent/model.py`, `arguments.py`, `main.py`, README), with the
SAC part from the suite's SAC core (algorithms/core/sac.py) and the shared pieces from algorithms/core/lagrangian.py:

  budget:      d = kappa (1 - gamma_c^T) / ((1 - gamma_c) T), kappa the task's episode budget, T its time limit
               (cal.py:64-66, CAL's Safety-Gym branch; reference A8/C6)
  cost critics: an ensemble of E Q_c,i(s, a), 2x256 SiLU, weights N(0, (1 / (2 sqrt(fan_in)))^2), biases 0
               (model.py:94-110, 18-31), their Polyak target, Adam (qc_lr);  each member on its own target
               y_i = c + gamma_c (1 - d) Q'_c,i(s', a'), a' ~ pi(.|s') (cal.py:118-126);  L = mean_{i,B}(Q_c,i - y_i)^2
               (cal.py:127). Option: y from the max over a random subset of M members (--intrgt_max, cal.py:120,124)
  UCB:         Q_c^UCB(s, a) = mean_i Q_c,i(s, a) + k std_i Q_c,i(s, a), std with Bessel's correction (torch.std_mean),
               0 for E = 1 (cal.py:142-152)
  ALM term:    rect = min(c mean_B[d - Q_c^UCB(s, a_buffer)], lambda)   (no gradient; cal.py:155-156)
               L_pi = mean[alpha log pi(a~|s) - min_i Q_i(s, a~) + (lambda - rect) Q_c^UCB(s, a~)]   (cal.py:159-164)
               so the multiplier on the cost is max(0, lambda + c (J_c - d)), J_c = mean_B Q_c^UCB(s, a_buffer): the
               derivative in J_c of the augmented Lagrangian's term for J_c - d <= 0,
               psi = (c/2) max(0, lambda/c + J_c - d)^2 - lambda^2/(2c)
  dual:        on log lambda, Adam, L = mean_B[lambda sg(d - Q_c^UCB(s, a_buffer))], lambda_0 = 0.6931
               (cal.py:42,57,177; 0.6931 = softplus(0), safety-starter-agents' initial multiplier)
  loop:        each update() is one vectorized environment step and `utd_ratio` gradient steps per environment step
               (num_train_repeat, main.py:80-84; utd_ratio x n_envs per update), each on its own uniform batch;
               after repeats i = 0, 2, 4, ... of an update (`critic_target_update_frequency`, cal.py:196 with
               main.py:84's repeat index) both targets take a Polyak step of rate tau.

Defaults (the official code's `arguments.py` unless said): k = 0.5 (:30), c = 10 (:32), E = 8 (README: "8 for all
MuJoCo tasks"; arguments.py:31 has 4), subset max off (--intrgt_max off; M = 4 at :36 when on), utd_ratio = 10
(:33), batch 12 (:55, `policy_train_batch_size`: main.py:81 really samples every gradient step's batch with it and
replay_memory.py:30-35 honours it), lr 3e-4 for actor, critics,
alpha and log lambda (:49, cal.py:50-57), qc_lr 3e-4 (:50), gamma = gamma_c = 0.99 (:42-43), tau 0.005 (:44), target
period 2 (:51), hidden 256 (:48), 5000 warm-up steps (:40), replay 1e6 (:52), log alpha = 0 at the start (cal.py:39:
alpha = 1; `--alpha 0.2` is never read), target entropy -|A| (cal.py:47). The README's per-task overrides (c = 100
Ant, c = 1000 HalfCheetah and Humanoid, utd 20 HalfCheetah, k = 0 and --intrgt_max Humanoid) are for its continuous
speed cost; set them per task where wanted.

Deviations from the official code, and why:
- The budget: CAL's MuJoCo tasks bound a discounted sum of the speed |v_x| by a discounted budget given as is
  (env/constraints.py); the suite's velocity tasks bound the undiscounted episode count of Safety-Gymnasium's 0/1
  cost by kappa, so kappa is converted as CAL does for its Safety-Gym tasks (reference A8).
- A time-limit truncation is not terminal for either critic (CAL's MuJoCo sampler returns gym's done, which its
  TimeLimit sets at the limit, sampler/mujoco_env_sampler.py:30,53, and main.py:83 masks with it); a true
  termination ends the cost sum (CAL's MuJoCo branch masks y_c; only its Safety-Gym branch forces the mask to 1,
  cal.py:122-123, because a Safety-Gym "done" is a goal, not an end).
- The SAC part is the suite's SAC core: its order (alpha -> actor -> critics, every loss from the parameters as the
  step found them) where CAL steps the critics first and computes the actor's rect and the dual loss with the
  freshly stepped cost critics; its temperature loss on log alpha (CAL: alpha * ..., cal.py:172); its actor network
  (learnable log-std scale/offset) and critic init (CAL: xavier gain 1, model.py:12-15). a' for the cost target is
  drawn apart from the reward target's (CAL shares one sample, cal.py:99): the same distribution.
- Warm-up with uniform random actions as algorithms/sac.py (CAL acts with its untrained stochastic policy,
  main.py:67-70), so that SAC, SAC-Lag and CAL differ only where the methods differ.
- No `max_train_repeat_per_step` (main.py:77): it only halves the replay ratio during CAL's first 1000 steps.
- The cost ensemble's init is the one CAL's code actually applies: its truncated-normal loop (model.py:19-26)
  rebinds a local tensor and never writes back, so the weights keep the plain normal draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext
from algorithms.core.data import Batch
from algorithms.core.lagrangian import CostCritic, LagrangeMultiplier, cost_td_target, task_budget
from algorithms.core.nets import EnsembleQ, VectorizedLinear
from algorithms.core.registry import register
from algorithms.core.sac import ActorTerm, Critic, OnlineSAC, OnlineSACConfig


@dataclass
class CALConfig(OnlineSACConfig):  # lrs 3e-4, gamma 0.99, tau 5e-3, 2x256, log alpha 0, H -|A|: CAL's values
    batch_size: int = 12  # transitions per gradient step (CAL arguments.py:55 policy_train_batch_size)
    utd_ratio: int = 10  # gradient steps per environment step (CAL num_train_repeat; README: 20 for HalfCheetah)
    target_update_period: int = 2  # Polyak steps after repeats i = 0, p, 2p, ... of each update (CAL: 2)
    ensemble_size: int = 8  # E, cost critics in the ensemble (CAL README: 8 on MuJoCo; arguments.py: 4)
    k: float = 0.5  # conservatism: Q_c^UCB = mean + k std over the ensemble (CAL README: 0 for Humanoid)
    c: float = 10.0  # convexity of the augmented Lagrangian (CAL README: 100 Ant, 1000 HalfCheetah and Humanoid)
    target_max_subset: int = 0  # M > 0: cost targets from the max over M random members (CAL --intrgt_max, M=4)
    cost_discount: float = 0.99  # gamma_c of the cost critics and of the budget conversion (CAL safety_gamma)
    cost_critic_lr: float = 3e-4  # Adam learning rate of the cost critics (CAL qc_lr)
    lambda_init: float = 0.6931  # initial Lagrange multiplier lambda (> 0, learned as log lambda)
    lambda_lr: float = 3e-4  # Adam learning rate of log lambda (CAL: lr)
    episode_length: int | None = None  # T of the budget conversion d = kappa (1-g^T)/((1-g)T); None: the env's limit

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.utd_ratio >= 1, "utd_ratio must be >= 1")
        require(self.target_update_period >= 1, "target_update_period must be >= 1")
        require(self.ensemble_size >= 1, "ensemble_size must be >= 1")
        require(math.isfinite(self.k) and self.k >= 0, "k must be >= 0")
        require(math.isfinite(self.c) and self.c >= 0, "c must be >= 0")
        require(self.target_max_subset >= 0, "target_max_subset must be >= 0")
        require(0.0 <= self.cost_discount <= 1.0, "cost_discount must be in [0, 1]")
        require(self.cost_critic_lr > 0 and self.lambda_lr > 0, "learning rates must be positive")
        require(self.lambda_init > 0, "lambda_init must be > 0 (lambda is learned as log lambda)")
        require(self.episode_length is None or self.episode_length > 0, "episode_length must be positive")


# --- the cost critics: an ensemble and its upper confidence bound -----------------------------------------------------


def cost_ensemble(obs_dim: int, act_dim: int, hidden: tuple[int, ...], n: int) -> EnsembleQ:
    """CAL's QcEnsemble (model.py:94-110): n members of SiLU MLPs; every layer's weights N(0, (1/(2 sqrt(in)))^2) and
    biases 0 (model.py:18-31, as applied: see the module docstring)."""
    q = EnsembleQ(obs_dim, act_dim, hidden, n=n, activation=nn.SiLU)
    with torch.no_grad():
        for layer in q.net:
            if isinstance(layer, VectorizedLinear):
                nn.init.normal_(layer.weight, 0.0, 1.0 / (2.0 * math.sqrt(layer.weight.shape[1])))
                layer.bias.zero_()
    return q


def ucb(qc: torch.Tensor, k: float) -> torch.Tensor:
    """Q_c^UCB = mean_i Q_c,i + k std_i Q_c,i over the ensemble axis of qc (E, B) -> (B,); std unbiased, 0 for E = 1
    (cal.py:145-152)."""
    if qc.shape[0] == 1:
        return qc[0]
    std, mean = torch.std_mean(qc, dim=0)
    return mean + k * std


# --- local policy convexification: the augmented-Lagrangian actor term -----------------------------------------------


def rectification(ucb_data: torch.Tensor, budget: float, c: float, lam: torch.Tensor) -> torch.Tensor:
    """rect = min(c mean_B[d - Q_c^UCB(s, a_buffer)], lambda), no gradient (cal.py:155-156)."""
    return torch.clamp(c * (budget - ucb_data.detach()).mean(), max=lam)


def augmented_lagrangian_term(ucb_pi: torch.Tensor, lam: torch.Tensor, rect: torch.Tensor) -> torch.Tensor:
    """mean_B[(lambda - rect) Q_c^UCB(s, a~)], the cost part of CAL's actor loss (cal.py:160-164); lambda - rect =
    max(0, lambda + c (J_c - d)) >= 0 is a constant."""
    return ((lam - rect).detach() * ucb_pi).mean()


def constraint_term(cost_critic: Critic, k: float, lam: torch.Tensor, rect: torch.Tensor) -> ActorTerm:
    """The ActorTerm of CAL's actor step: the ALM term on the UCB of the ensemble at a~ ~ pi(.|s)."""

    def term(obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ucb_pi = ucb(cost_critic(obs, action), k)
        return augmented_lagrangian_term(ucb_pi, lam, rect), {"qc_ucb_pi": ucb_pi.detach().mean(),
                                                              "cost_multiplier": (lam - rect).detach()}

    return term


@register("cal", kinds=("safe",))
class CAL(OnlineSAC):
    Config = CALConfig

    def __init__(self, config: CALConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx, costs=True)
        self.budget, self.horizon = task_budget(ctx, self.stepper.envs, config.cost_discount, config.episode_length,
                                                "cal")
        cost_q = cost_ensemble(ctx.obs_dim, ctx.act_dim, config.hidden, config.ensemble_size).to(self.device)
        self.cost = CostCritic(cost_q, config.cost_critic_lr, config.tau)
        self.lagrange = LagrangeMultiplier(config.lambda_init, config.lambda_lr, log_space=True, device=self.device)

    def train(self) -> dict[str, torch.Tensor]:
        """`utd_ratio` gradient steps per environment step, each on its own batch; the last one's metrics."""
        cfg = self.config
        for i in range(cfg.utd_ratio * cfg.n_envs):
            metrics = self.gradient_step(self.buffer.sample(cfg.batch_size),
                                         update_targets=i % cfg.target_update_period == 0)
        return metrics

    def gradient_step(self, batch: Batch, update_targets: bool) -> dict[str, torch.Tensor]:
        """The SAC core's pieces in its order (as `SACCore.step`), the cost critics and the dual step beside them."""
        cfg, sac = self.config, self.sac
        alpha, lam = sac.alpha, self.lagrange.value
        target = sac.td_target(batch, alpha)
        cost_target = cost_td_target(self.cost.target, sac.actor, batch, cfg.cost_discount, cfg.target_max_subset)
        with torch.no_grad():
            ucb_data = ucb(self.cost(batch.observations, batch.actions), cfg.k)  # Q_c^UCB(s, a_buffer)
        rect = rectification(ucb_data, self.budget, cfg.c, lam)
        action, logp = sac.actor(batch.observations)
        metrics = {"alpha": alpha}
        metrics |= sac.temperature_step(logp)
        metrics |= sac.actor_step(batch.observations, action, logp, alpha,
                                  constraint_term(self.cost, cfg.k, lam, rect), also_frozen=(self.cost.q,))
        metrics |= sac.critic_step(batch, target)
        metrics |= self.cost.step(batch, cost_target)
        metrics |= self.lagrange.step(ucb_data, self.budget)
        if update_targets:
            sac.update_target()
            self.cost.update_target()
        metrics |= {"cost_estimate": ucb_data.mean(), "cost_budget": self.budget, "rect": rect}
        return metrics
