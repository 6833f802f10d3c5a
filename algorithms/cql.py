"""CQL(H): Conservative Q-Learning (Kumar et al., 2020), SAC-based, as CORL `algorithms/offline/cql.py`
(a port of young-geng/CQL), with CORL's locomotion defaults (configs/offline/cql/*).

Per step, all losses are built from the current parameters, then applied in the order alpha -> actor -> critic:
  entropy: alpha = exp(log_alpha);  L_alpha = -mean[log_alpha * sg(log pi(a~|s) - |A|)]
  actor:   L_pi = mean[sg(alpha) log pi(a~|s) - min_i Q_i(s, a~)],  a~ ~ pi(.|s) reparameterized
  TD:      y = r + gamma (1 - d) min_i Q'_i(s', a'),  a' ~ pi(.|s')  (no entropy term in the backup)
           L_TD = MSE(Q1(s,a), y) + MSE(Q2(s,a), y)
  CQL:     per state N actions each from U[-1,1]^|A|, pi(.|s) and pi(.|s'), all scored at the current state s
           (CORL and the original both evaluate Q(s, a_next); kept on purpose), importance-corrected:
           X_i = [Q_i(s,a_rand) - log 0.5^|A|, Q_i(s,a_next) - log pi(a_next|s'), Q_i(s,a_cur) - log pi(a_cur|s)]
           diff_i = mean_B clamp(T logsumexp(X_i / T) - Q_i(s, a), clip_min, clip_max)
           fixed weight: L_cql,i = w diff_i;  Lagrange: L_cql,i = alpha' w (diff_i - gap), alpha' stepped first
  critic:  L_Q = L_TD + L_cql,1 + L_cql,2;  Polyak update of both target critics every step.
Networks: actor 3x256 tanh-Gaussian (learnable log-std scale/offset), twin critics 3x256 with orthogonal init.
Not implemented: CORL's `bc_steps` warm start (0 in every locomotion config).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.data import Batch, offline_sampler, scale_rewards_by_return_range
from algorithms.core.nets import EnsembleQ, Polyak, TanhGaussianActor, adam, frozen, orthogonal_init_
from algorithms.core.registry import register


@dataclass
class CQLConfig:
    batch_size: int = 256  # transitions per gradient step
    actor_lr: float = 3e-5  # Adam learning rate of the actor and of the entropy temperature (CORL gym: 3e-5)
    critic_lr: float = 3e-4  # Adam learning rate of the twin critics (and of alpha' with Lagrange)
    discount: float = 0.99  # discount factor gamma
    tau: float = 5e-3  # Polyak rate of the target critics (every step)
    hidden: tuple[int, ...] = (256, 256, 256)  # hidden widths of actor and critics (CORL PR #12: 3 layers)
    orthogonal_init: bool = True  # orthogonal critic init (gain sqrt 2 inside, 1e-2 last layer)
    target_entropy: float | None = None  # entropy target of the automatic tuning; None means -|A|
    alpha_multiplier: float = 1.0  # multiplies exp(log_alpha)
    cql_alpha: float = 10.0  # weight w of the conservative penalty (CORL gym: 10)
    cql_n_actions: int = 10  # sampled actions per state and per proposal in the logsumexp
    cql_temp: float = 1.0  # temperature T of the logsumexp
    cql_importance_sample: bool = True  # subtract proposal log-densities (else a raw logsumexp that includes Q(s,a))
    cql_lagrange: bool = False  # tune alpha' so that the gap stays near cql_target_action_gap (antmaze)
    cql_target_action_gap: float = -1.0  # tau of the Lagrange variant
    cql_max_target_backup: bool = False  # y uses max over N sampled next actions of min_i Q'_i
    cql_clip_diff_min: float = -math.inf  # lower clamp of logsumexp - Q(s,a)
    cql_clip_diff_max: float = math.inf  # upper clamp of logsumexp - Q(s,a)
    normalize: bool = True  # normalize states with the dataset mean/std (also at evaluation)
    normalize_reward: bool = False  # scale rewards by 1000 / (max - min episode return) (CORL hopper-medium)

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size must be positive")
        require(self.actor_lr > 0 and self.critic_lr > 0, "learning rates must be positive")
        require(self.cql_n_actions >= 1, "cql_n_actions must be >= 1")
        require(self.cql_temp > 0, "cql_temp must be positive")
        require(0.0 < self.tau <= 1.0, "tau must be in (0, 1]")


def td_loss(critic: EnsembleQ, critic_target: EnsembleQ, actor: TanhGaussianActor, batch: Batch,
            discount: float, n_actions: int, max_target_backup: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_TD summed over critics, Q_i(s, a) of shape (2, B))."""
    q_data = critic(batch.observations, batch.actions)
    with torch.no_grad():
        if max_target_backup:
            next_a, _ = actor(batch.next_observations, repeat=n_actions)  # (B, N, A)
            next_q = critic_target(_flat(batch.next_observations, n_actions), next_a.reshape(-1, next_a.shape[-1]))
            next_q = next_q.min(dim=0).values.reshape(-1, n_actions).max(dim=1).values
        else:
            next_a, _ = actor(batch.next_observations)
            next_q = critic_target(batch.next_observations, next_a).min(dim=0).values
        y = batch.rewards + discount * (1.0 - batch.dones) * next_q
    return ((q_data - y.unsqueeze(0)) ** 2).mean(dim=1).sum(), q_data


def _flat(obs: torch.Tensor, n: int) -> torch.Tensor:
    """(B, obs) -> (B * n, obs), each state repeated n times consecutively."""
    return obs.unsqueeze(1).expand(-1, n, -1).reshape(-1, obs.shape[-1])


def conservative_gap(critic: EnsembleQ, actor: TanhGaussianActor, batch: Batch, q_data: torch.Tensor,
                     cfg: CQLConfig) -> torch.Tensor:
    """diff_i = mean_B clamp(T logsumexp(X_i / T) - Q_i(s, a)) for each critic: shape (2,)."""
    obs, n = batch.observations, cfg.cql_n_actions
    batch_size, act_dim = batch.actions.shape
    rand_a = torch.empty(batch_size, n, act_dim, device=obs.device).uniform_(-1.0, 1.0)
    with torch.no_grad():
        cur_a, cur_logp = actor(obs, repeat=n)
        next_a, next_logp = actor(batch.next_observations, repeat=n)
    all_a = torch.cat([rand_a, next_a, cur_a], dim=1)  # (B, 3N, A), all scored at the current state
    q = critic(_flat(obs, 3 * n), all_a.reshape(-1, act_dim)).reshape(2, batch_size, 3 * n)
    if cfg.cql_importance_sample:
        random_log_density = act_dim * math.log(0.5)
        log_density = torch.cat([torch.full_like(cur_logp, random_log_density), next_logp, cur_logp], dim=1)
        x = q - log_density.unsqueeze(0)
    else:
        x = torch.cat([q[:, :, :n], q_data.unsqueeze(-1), q[:, :, n:]], dim=2)
    ood = cfg.cql_temp * torch.logsumexp(x / cfg.cql_temp, dim=2)  # (2, B)
    return (ood - q_data).clamp(cfg.cql_clip_diff_min, cfg.cql_clip_diff_max).mean(dim=1)


# On a sim-to-real task: the real data alone, never the simulator (H2O's real-only baseline).
@register("cql", kinds=("offline", "sim-to-real"))
class CQL(Algorithm):
    Config = CQLConfig

    def __init__(self, config: CQLConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        data = ctx.require_dataset("cql")
        if config.normalize_reward:
            data = scale_rewards_by_return_range(data)
        self.normalizer, self.sampler = offline_sampler(data, self.device, ctx.seed, config.normalize)
        self.target_entropy = config.target_entropy if config.target_entropy is not None else -float(ctx.act_dim)

        self.actor = TanhGaussianActor(ctx.obs_dim, ctx.act_dim, ctx.max_action, config.hidden).to(self.device)
        self.actor_optimizer = adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic = EnsembleQ(ctx.obs_dim, ctx.act_dim, config.hidden, n=2)
        if config.orthogonal_init:
            orthogonal_init_(self.critic)
        self.critic.to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.update_target = Polyak([(self.critic_target, self.critic)], config.tau)
        self.critic_optimizer = adam(self.critic.parameters(), lr=config.critic_lr)
        self.log_alpha = nn.Parameter(torch.zeros((), device=self.device))
        self.alpha_optimizer = adam([self.log_alpha], lr=config.actor_lr)
        self.log_alpha_prime = nn.Parameter(torch.ones((), device=self.device))  # CORL Scalar(1.0)
        self.alpha_prime_optimizer = adam([self.log_alpha_prime], lr=config.critic_lr)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["log_alpha"] = self.log_alpha.detach().clone()
        state["log_alpha_prime"] = self.log_alpha_prime.detach().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
            self.log_alpha_prime.copy_(state["log_alpha_prime"])

    def update(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.step += 1
        batch = self.sampler.sample(cfg.batch_size)

        # Entropy temperature and actor, from the current critics.
        new_a, logp = self.actor(batch.observations)
        alpha_loss = -(self.log_alpha * (logp + self.target_entropy).detach()).mean()
        alpha = self.log_alpha.exp().detach() * cfg.alpha_multiplier
        with frozen(self.critic):  # the actor loss needs dQ/da only
            q_new = self.critic(batch.observations, new_a).min(dim=0).values
        pi_loss = (alpha * logp - q_new).mean()

        # Critic: TD + conservative penalty.
        loss_td, q_data = td_loss(self.critic, self.critic_target, self.actor, batch, cfg.discount,
                                  cfg.cql_n_actions, cfg.cql_max_target_backup)
        gap = conservative_gap(self.critic, self.actor, batch, q_data, cfg)
        metrics = {}
        if cfg.cql_lagrange:
            # alpha' grows while the gap exceeds its target; stepped first, on -1/2 (L_cql,1 + L_cql,2)
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
            alpha_prime_loss = -0.5 * (alpha_prime * cfg.cql_alpha * (gap.detach() - cfg.cql_target_action_gap)).sum()
            self.alpha_prime_optimizer.zero_grad(set_to_none=True)
            alpha_prime_loss.backward()
            self.alpha_prime_optimizer.step()
            cql_terms = alpha_prime.detach() * cfg.cql_alpha * (gap - cfg.cql_target_action_gap)
            metrics["alpha_prime"] = alpha_prime.detach()
        else:
            cql_terms = cfg.cql_alpha * gap
        critic_loss = loss_td + cql_terms.sum()

        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()
        self.actor_optimizer.zero_grad(set_to_none=True)
        pi_loss.backward()
        self.actor_optimizer.step()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        self.update_target()
        metrics.update(actor_loss=pi_loss.detach(), td_loss=loss_td.detach(), cql_gap=gap.mean().detach(),
                       alpha=alpha, critic_loss=critic_loss.detach())
        return metrics

    def graph_period(self) -> int:
        return 1  # no host syncs; its noise comes from the default generator, which a CUDA graph advances itself

    @torch.no_grad()
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        action, _ = self.actor(self.obs_tensor(self.normalizer(obs)), deterministic=True)
        return action.cpu().numpy()
