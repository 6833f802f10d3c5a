"""OGSRL, offline guarded safe RL: GCQL, a DDPG + CQL learner whose rewards are penalized where the policy leaves the
data's support, as a kernel-density guard judges it, extended here with a cost critic and a Lagrange multiplier for
the offline-safe tasks' cost budget. Official code: Runz96/SafeRL-OGSRL 01a3168; "gcql.py:N" below is line N of
its GCQL file `models/ddpg_cql_guard.py`; its guard, `guardian.py`, is algorithms/core/kde_guard.py.

Per update, on a batch (s, a, r, c, s', d) of dataset transitions:
  guard:   o = 1[p(s, pi(s)) < thr]: the *current* actor's action at each batch state (no gradient) is scored by the
           guard, a Gaussian KDE over min-max normalized (s, a), sigma 0.535, thr the 5th percentile of the training
           pairs' densities (gcql.py:254-261; guardian.py:127,135,140). The dataset pair (s, a) itself is not scored.
  reward:  r~ = r + KDE_PENALTY o, KDE_PENALTY = -25: the penalty of the policy's action at s is added to the reward
           of the dataset transition at s, so it enters the TD target of Q(s, a) (gcql.py:24,262-263)
  TD:      y = r~ + gamma (1 - d) Q'(s', pi'(s')), target actor and target critic, no smoothing noise (gcql.py:265-268)
           L_TD = mean_B (Q(s, a) - y)^2 (gcql.py:270-271)
  CQL:     N = 12 actions uniform over the action box and N = 12 noisy policy actions pi(s) + N(0, 0.1^2) (unclipped),
           all scored at s; no importance weights and the data action is not among them (gcql.py:273-281)
           gap = mean_B [logsumexp_{2N} Q(s, a_k) - Q(s, a)] (gcql.py:281-283)
  critic:  L_Q = L_TD + alpha gap, alpha = 1 (gcql.py:30,285); one Adam step (gcql.py:286)
  cost:    (ours; GCQL has no cost) r~'s counterpart c~ = c + kde_cost o (0 by default: GCQL guards the reward only;
           the guarded CPO, cpo_guard.py:279-280, books an out-of-support step as one constraint violation),
           y_c = c~ + gamma Q_c'(s', pi'(s')), no termination mask (OSRL bcql.py:172; `mask_cost_terminal` adds
           (1 - d)),  L_Qc = mean_B (Q_c(s, a) - y_c)^2: the critic above without the CQL term, as OSRL's BCQ-Lag cost
           critic (osrl/algorithms/bcql.py:157-179; liuzuxin/OSRL 03a4586)
  actor:   on the critics just updated (gcql.py:288 evaluates the stepped critic):
           L_pi = mean_B [-Q(s, pi(s)) + lambda Q_c(s, pi(s))], lambda a constant (gcql.py:288 plus OSRL
           bcql.py:189-198, whose (Q_c - d) lambda has the same gradient)
  dual:    J_c = mean_B Q_c(s, pi(s)) on the policy's actions (bcql.py:189-196), then one Adam step on
           L(lambda) = lambda sg(d - J_c) and lambda <- max(lambda, 0) (algorithms/core/lagrangian.py
           `LagrangeMultiplier`, log_space=False), with d = kappa (1 - gamma^T) / ((1 - gamma) T) (bcql.py:109-110)
  targets: Polyak tau = 0.001 for the actor, the critic (gcql.py:20,291-292) and the cost critic, every update.
Defaults: GAMMA 0.99, TAU 0.001, BATCH_SIZE 32, KDE_PENALTY -25, HIDDEN_SIZE 128 (two hidden layers, :72-76),
NUM_CANDIDATES 12 (+ 12), NOISE_STD 0.1, CQL_ALPHA 1 (gcql.py:19-30), Adam lr 1e-4 for actor and critic
(gcql.py:248-249); guard sigma 0.535 and the 5th percentile (guardian.py:126-127,140). Ours: the cost critic's lr is
the critic's, lambda starts at 0 with Adam lr 1e-4, T = 1000 (OSRL's episode_len for the velocity tasks).

Deviations from the official code, and why:
- The official code learns no cost and holds no budget. Its README's "CCQL" (`models/ddpg_cql_ts.py`,
  `ddpg_cql_guard_ts.py`) is *not* a constrained CQL: "_ts" is trajectory-level re-sampling of the sepsis data by
  the modal bin of its two actions (5 bins per action, `sample_trajectory_level`, ddpg_cql_guard_ts.py:69-94,
  :268-270), a class-balancing step that has no meaning for 3-8-dimensional MuJoCo actions, and is left out. The
  cost critic, the Lagrange multiplier and their schedule here are ours, written as OSRL's Q-learning methods do
  (budget conversion, cost critic on dataset actions, penalty on the policy's actions), so that the method can meet a
  cost budget at all. The cost critic's lr is the critic's; lambda starts at 0 and its Adam lr is the shared 1e-4.
- The cost target is not masked at terminations by default, as OSRL's (bcql.py:172, against its reward target's
  (1 - d) at :148) and as the suite's other offline-safe methods (algorithms/bcq_lag.py); `mask_cost_terminal=True`
  masks it. d marks true terminations only (time-limit ends are bootstrapped), where gcql.py:150-157 ends every
  sepsis trajectory with d = 1.
- Networks are the suite's ReLU MLPs (DeterministicActor, EnsembleQ with one member) without the official
  BatchNorm1d and leaky ReLU (gcql.py:69-110): BatchNorm's batch statistics at batch 32 make act() depend on the mode
  the official code never switches during training, and the plain stack runs on the core's fused MLP path. The
  networks see states standardized by the dataset mean/std (the suite's StateNormalizer), not min-max scaled to
  [-1, 1] (gcql.py:130-135); the guard keeps its own min-max scaling, fitted on the standardized states (min-max
  scaling is invariant to a per-feature affine map, so this equals scaling the raw states).
- The actor acts in the environment's action box, max_action tanh(.), and the uniform CQL candidates and the policy
  noise (0.1 max_action) are in that box; the official actor is tanh in the [-1, 1] of the dataset's min-max action
  scaling (gcql.py:87, :273-275), which the guard applies here to the policy's actions before scoring them.
- The sepsis reward clip to [-12.5, -2.5] (gcql.py:23,147-148) is specific to its SOFA reward and is not applied.
- The guard scores against a fixed random subset of `kde_reference_size` training pairs and fits its percentile on
  `kde_fit_queries` of them (0 = all, the official guard): see algorithms/core/kde_guard.py for the cost and the
  argument. On a GPU, kde_reference_size = 0 (every pair) is affordable per update; kde_fit_queries = 0 costs
  O(N^2) kernels once, at the fit (1e12 at N = 1e6).
- KDE_PENALTY = -25 is kept in reward units. On the sepsis data it is 2-10 clipped steps of reward; on MuJoCo
  velocity tasks (about 1-10 per step) its weight against the reward differs, so it is a per-task knob.
- The official step order (critic, then actor on the updated critic, then targets) is kept; the cost critic steps
  with the critic, lambda after the actor on the J_c the actor loss saw.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.data import Batch, offline_sampler
from algorithms.core.errors import CtrlbenchError
from algorithms.core.kde_guard import KDEGuard
from algorithms.core.lagrangian import LagrangeMultiplier, discounted_budget
from algorithms.core.nets import DeterministicActor, EnsembleQ, Polyak, adam, frozen
from algorithms.core.registry import register


@dataclass
class OGSRLConfig:
    batch_size: int = 32  # transitions per gradient step (GCQL's BATCH_SIZE)
    actor_lr: float = 1e-4  # Adam learning rate of the actor (GCQL's)
    critic_lr: float = 1e-4  # Adam learning rate of the reward critic (GCQL's) and of the cost critic
    discount: float = 0.99  # discount factor gamma of both critics (GCQL's GAMMA)
    tau: float = 1e-3  # Polyak rate of the target actor and critics, every update (GCQL's TAU)
    hidden: tuple[int, ...] = (128, 128)  # hidden widths of actor and critics, ReLU (GCQL's HIDDEN_SIZE, 2 layers)
    cql_alpha: float = 1.0  # weight of the conservative gap logsumexp_k Q(s, a_k) - Q(s, a) (GCQL's CQL_ALPHA)
    cql_n_actions: int = 12  # N uniform + N noisy policy candidate actions per state (GCQL's NUM_CANDIDATES)
    cql_noise_std: float = 0.1  # std of the noise on the policy candidates, in units of max_action (GCQL's NOISE_STD)
    kde_penalty: float = -25.0  # added to r where the guard flags (s, pi(s)) out of support (GCQL's KDE_PENALTY)
    kde_cost: float = 0.0  # added to c where the guard flags (s, pi(s)) (0 = GCQL; the guarded CPO books 1 violation)
    kde_sigma: float = 0.535  # Gaussian kernel width over min-max normalized (s, a) (OGSRL guardian.py)
    kde_percentile: float = 5.0  # out of support below this percentile of the training pairs' densities (guardian.py)
    kde_reference_size: int = 100_000  # pairs the guard scores against, a fixed random subset; 0 = all (official)
    kde_fit_queries: int = 10_000  # reference pairs whose densities give the percentile; 0 = all (official)
    mask_cost_terminal: bool = False  # mask the cost target at true terminations (OSRL does not)
    lambda_init: float = 0.0  # initial Lagrange multiplier on the cost critic (>= 0)
    lambda_lr: float = 1e-4  # Adam learning rate of lambda, projected onto lambda >= 0 after each step
    episode_len: int = 1000  # T of the budget conversion d = kappa (1-g^T)/((1-g)T) (OSRL velocity tasks: 1000)
    normalize: bool = True  # standardize states with the dataset mean/std (networks and evaluation)

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size must be positive")
        require(self.actor_lr > 0 and self.critic_lr > 0 and self.lambda_lr > 0, "learning rates must be positive")
        require(0.0 <= self.discount <= 1.0, "discount must be in [0, 1]")
        require(0.0 < self.tau <= 1.0, "tau must be in (0, 1]")
        require(self.cql_alpha >= 0, "cql_alpha must be >= 0")
        require(self.cql_n_actions >= 1, "cql_n_actions must be >= 1")
        require(self.cql_noise_std >= 0, "cql_noise_std must be >= 0")
        require(self.kde_sigma > 0, "kde_sigma must be positive")
        require(0.0 <= self.kde_percentile <= 100.0, "kde_percentile must be in [0, 100]")
        require(self.kde_reference_size >= 0 and self.kde_fit_queries >= 0,
                "kde_reference_size and kde_fit_queries must be >= 0 (0 = all pairs)")
        require(self.lambda_init >= 0, "lambda_init must be >= 0")
        require(self.episode_len > 0, "episode_len must be positive")


def guarded_signal(signal: torch.Tensor, out_of_support: torch.Tensor, penalty: float) -> torch.Tensor:
    """r~ = r + KDE_PENALTY 1[p(s, pi(s)) < thr] (gcql.py:262-263); the same form for the cost with `kde_cost`."""
    return signal + penalty * out_of_support


def td_target(signal: torch.Tensor, critic_target: EnsembleQ, next_obs: torch.Tensor, next_action: torch.Tensor,
              mask: torch.Tensor | None, discount: float) -> torch.Tensor:
    """y = signal + gamma mask Q'(s', pi'(s')), mask = 1 - d or none: (B,), no gradient (gcql.py:265-268)."""
    with torch.no_grad():
        next_q = critic_target(next_obs, next_action)[0]
        return signal + discount * (next_q if mask is None else mask * next_q)


def cql_candidates(pi: torch.Tensor, n: int, max_action: float, noise_std: float) -> torch.Tensor:
    """(B, 2N, A): N actions uniform over the box, then N of pi(s) + N(0, (noise_std max_a)^2), not clipped
    (gcql.py:273-276); no gradient into the actor."""
    batch_size, act_dim = pi.shape
    with torch.no_grad():
        uniform = torch.rand(batch_size, n, act_dim, device=pi.device).mul_(2.0 * max_action).sub_(max_action)
        noisy = pi.detach().unsqueeze(1) + noise_std * max_action * torch.randn(batch_size, n, act_dim,
                                                                                device=pi.device)
    return torch.cat([uniform, noisy], dim=1)


def conservative_gap(critic: EnsembleQ, obs: torch.Tensor, candidates: torch.Tensor,
                     q_data: torch.Tensor) -> torch.Tensor:
    """mean_B [logsumexp_k Q(s, a_k) - Q(s, a)] over the candidates a_k, all at s (gcql.py:277-283)."""
    batch_size, k, act_dim = candidates.shape
    flat_obs = obs.unsqueeze(1).expand(-1, k, -1).reshape(-1, obs.shape[-1])
    q_cand = critic(flat_obs, candidates.reshape(-1, act_dim))[0].view(batch_size, k)
    return (torch.logsumexp(q_cand, dim=1) - q_data).mean()


def actor_objective(critic: EnsembleQ, cost_critic: EnsembleQ, obs: torch.Tensor, pi: torch.Tensor,
                    lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_pi = mean_B [-Q(s, pi) + lambda Q_c(s, pi)], Q_c(s, pi) of shape (B,)); call with both critics frozen."""
    q_pi = critic(obs, pi)[0]
    qc_pi = cost_critic(obs, pi)[0]
    return (-q_pi + lam * qc_pi).mean(), qc_pi


@register("ogsrl", kinds=("offline-safe",))
class OGSRL(Algorithm):
    Config = OGSRLConfig

    def __init__(self, config: OGSRLConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        data = ctx.require_dataset("ogsrl")
        if data.costs is None:
            raise CtrlbenchError("ogsrl needs a dataset with per-step costs (an offline-safe task)")
        if ctx.cost_limit is None:
            raise CtrlbenchError("ogsrl is a safe-RL algorithm and the task has no cost budget (ctx.cost_limit)")
        self.budget = discounted_budget(ctx.cost_limit, config.discount, config.episode_len)
        self.max_action = ctx.max_action
        self.normalizer, self.sampler = offline_sampler(data, self.device, ctx.seed, config.normalize)
        self.guard = KDEGuard.fit(self.normalizer(data.observations), data.actions, sigma=config.kde_sigma,
                                  percentile=config.kde_percentile, penalty_value=config.kde_penalty,
                                  reference_size=config.kde_reference_size, fit_queries=config.kde_fit_queries,
                                  seed=ctx.seed, device=self.device)

        self.actor = DeterministicActor(ctx.obs_dim, ctx.act_dim, self.max_action, config.hidden).to(self.device)
        self.critic = EnsembleQ(ctx.obs_dim, ctx.act_dim, config.hidden, n=1).to(self.device)
        self.cost_critic = EnsembleQ(ctx.obs_dim, ctx.act_dim, config.hidden, n=1).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
        self.update_targets = Polyak([(self.actor_target, self.actor), (self.critic_target, self.critic),
                                      (self.cost_critic_target, self.cost_critic)], config.tau)
        self.actor_optimizer = adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optimizer = adam(self.critic.parameters(), lr=config.critic_lr)
        self.cost_critic_optimizer = adam(self.cost_critic.parameters(), lr=config.critic_lr)
        self.lagrange = LagrangeMultiplier(config.lambda_init, config.lambda_lr, log_space=False, device=self.device)

    def update(self) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        self.step += 1
        batch: Batch = self.sampler.sample(cfg.batch_size)
        obs = batch.observations
        assert batch.costs is not None

        # The guard scores the current policy's action at each batch state (gcql.py:254-263).
        with torch.no_grad():
            pi = self.actor(obs)
            ood = self.guard.out_of_support(obs, pi)
            next_action = self.actor_target(batch.next_observations)
        reward = guarded_signal(batch.rewards, ood, cfg.kde_penalty)
        cost = guarded_signal(batch.costs, ood, cfg.kde_cost)
        not_done = 1.0 - batch.dones
        y = td_target(reward, self.critic_target, batch.next_observations, next_action, not_done, cfg.discount)
        y_c = td_target(cost, self.cost_critic_target, batch.next_observations, next_action,
                        not_done if cfg.mask_cost_terminal else None, cfg.discount)

        # Reward critic: TD + conservative gap (gcql.py:270-286).
        q_data = self.critic(obs, batch.actions)[0]
        loss_td = ((q_data - y) ** 2).mean()
        gap = conservative_gap(self.critic, obs, cql_candidates(pi, cfg.cql_n_actions, self.max_action,
                                                                cfg.cql_noise_std), q_data)
        critic_loss = loss_td + cfg.cql_alpha * gap
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # Cost critic: plain TD.
        qc_data = self.cost_critic(obs, batch.actions)[0]
        cost_loss = ((qc_data - y_c) ** 2).mean()
        self.cost_critic_optimizer.zero_grad(set_to_none=True)
        cost_loss.backward()
        self.cost_critic_optimizer.step()

        # Actor on the updated critics, lambda a constant; then the dual step on J_c = mean Q_c(s, pi(s)).
        lam = self.lagrange.value
        with frozen(self.critic), frozen(self.cost_critic):
            actor_loss, qc_pi = actor_objective(self.critic, self.cost_critic, obs, self.actor(obs), lam)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        metrics: dict[str, torch.Tensor | float] = dict(self.lagrange.step(qc_pi.detach(), self.budget))

        self.update_targets()
        metrics.update(critic_loss=critic_loss.detach(), td_loss=loss_td.detach(), cql_gap=gap.detach(),
                       cost_critic_loss=cost_loss.detach(), actor_loss=actor_loss.detach(),
                       qc_pi=qc_pi.detach().mean(), ood_fraction=ood.mean(), cost_budget=self.budget)
        return metrics

    def graph_period(self) -> int:
        # no host syncs, static shapes (the guard's chunk loop is fixed by the batch size); noise from the default
        # generator, batches from the sampler's
        return 1

    @torch.no_grad()
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        return self.actor(self.obs_tensor(self.normalizer(obs))).cpu().numpy()
