"""CPQ: Constraints Penalized Q-learning (Xu, Zhan, Zhu, AAAI 2022), a cost critic that treats OOD actions as unsafe.

Written as OSRL `osrl/algorithms/cpq.py` (liuzuxin/OSRL 03a4586), with the defaults of `examples/configs/cpq_configs.py`
and the networks of `osrl/common/net.py`.

The method: the cost critic is taught that actions unlike the data's are costly; the reward critic stops
bootstrapping, and the actor stops seeking reward, wherever the cost critic says the budget is exceeded. (In OSRL's
code the first part has no effect on the cost critic: see "as written" below.)

  budget:      d = kappa (1 - gamma^T) / ((1 - gamma) T), kappa the task's episode budget, T = `episode_len`
               (cpq.py:103-104, `q_thres`; algorithms/core/lagrangian.py `discounted_budget`); the OOD target is
               d_ood = qc_scalar * d = 1.5 d (cpq.py:105, `qc_thres`).
  VAE:         the behaviour model of OOD detection, a conditional VAE (net.py:290-339: encoder [s,a] -> 400 -> 400 ->
               (mu, log sigma clamped to [-4, 15]), latent 2|A|, decoder [s,z] -> 400 -> 400 -> max_action tanh),
               L_vae = MSE(a^, a) + beta mean KL(q(z|s,a) || N(0, I)), beta 0.5 (cpq.py:125-135).
  OOD actions: per state N = 10 samples u ~ N(mu_pi(s), sigma_pi(s)), the actor's Gaussian *before* tanh and without
               the max_action scale (cpq.py:164-169: `pi_dist.sample`); their score is the VAE encoder's KL, mean over
               latent dims (cpq.py:178-182, no decoder term); the OOD ones are those with KL >= the 0.75 quantile of
               all N*B scores (cpq.py:183);  Q_ood = mean_{N,B} 1[OOD] min_j Q'_c,j(s, u), from the *target* cost
               critic, no gradient (cpq.py:175-176,184; all inside the torch.no_grad() of cpq.py:158).
  cost critic: y_c = c + gamma min_j Q'_c,j(s', a'), a' ~ pi(.|s') (tanh, scaled), no (1 - done) mask (cpq.py:159-161);
               L_Qc = sum_j mean_B (Q_c,j(s,a) - y_c)^2 - alpha (Q_ood - d_ood) (cpq.py:186-187, net.py:240-242).
  multiplier:  alpha = exp(log alpha), log alpha = 0 at the start (cpq.py:93); after the cost critic's step a plain
               ascent step  log alpha += alpha_lr alpha (d_ood - Q_ood), then log alpha clamped to [-5, 5]
               (cpq.py:193-195): alpha grows while the OOD actions look cheaper than d_ood.
  reward crit: y = r + gamma (1 - done) 1[min_j Q'_c,j(s', a') <= d] min_i Q'_i(s', a'), a' ~ pi(.|s') (cpq.py:138-146),
               L_Q = sum_i mean_B (Q_i(s,a) - y)^2 (net.py:240-242). Note the mask compares with d, not d_ood.
  actor:       a~ = max_action tanh(u), u ~ N(mu_pi, sigma_pi) reparameterized, no entropy term (the `log_alpha` of
               OSRL's CPQ is the multiplier above, not a temperature):
               L_pi = -mean_B 1[min_j Q_c,j(s, a~) <= d] min_i Q_i(s, a~), critics frozen (cpq.py:203-222).
  order:       VAE step -> reward critic step -> cost critic step -> multiplier -> actor step (from the critics
               just updated) -> Polyak of both target critics, tau 0.005 (cpq.py:294-308, 224-230).
  acting:      max_action tanh(mu_pi(s)) (cpq.py:240-252 with deterministic=True, as its rollout, cpq.py:338).
Min over an ensemble is OSRL's `EnsembleQCritic.predict` (net.py:235-238), for the cost critic too.

Defaults (cpq_configs.py:29-50): reward_scale 0.1, cost_scale 1, actor lr 1e-4, critic lr 1e-3 (reward and cost
critics, cpq.py:233-236), alpha_lr 1e-4, vae lr 1e-3, batch 512, actor and critics 2x256 ReLU, VAE 2x400, N = 10,
gamma 0.99, tau 0.005, beta 0.5 (the CPQ class default 1.5 is overridden by the config), num_q 2, num_qc 2,
qc_scalar 1.5; episode_len 1000 as OSRL's velocity-task configs (cpq_configs.py:222-254; the base config's 300 is
CarCircle's). No state normalization (OSRL has none).

What follows from OSRL's code as written, kept on purpose (`ood_gradient`, `ood_squash` switch the first two off):
- Q_ood carries no gradient (target critic, under no_grad), so the OOD term of L_Qc is a constant: the cost critic
  learns from the TD error alone, and the VAE and alpha change only the logged loss. With `ood_gradient` the term is
  evaluated with the online cost critic, min over members, and pushes Q_c up on OOD actions (the paper's intent).
- The OOD samples are the pre-tanh Gaussian u (possibly outside the action box), not the actions the policy takes;
  `ood_squash` feeds max_action tanh(u) to the VAE and the cost critic instead.
- The cost target has no (1 - done) mask; the cost and reward targets draw their next actions independently.

Deviations, and why:
- `done` (the reward critic's episode ends): true terminations only (the suite's TransitionData), where OSRL's dataset
  uses terminals | timeouts (osrl/common/dataset.py:815-816): a time-limit truncation is bootstrapped.
- The budget is kappa * cost_scale (the critic learns scaled costs); OSRL converts kappa unscaled. Identical at the
  default cost_scale 1.
- The actor is the suite's TanhGaussianActor with log_std = m * raw + o (m = 1, o = 0 at the start, both learnable)
  and a small last-layer init; OSRL's SquashedGaussianMLPActor (net.py:152-205) has separate mean / log-std heads,
  default init and no m, o. Both clamp log_std to [-20, 2].
- OSRL also Polyak-averages an `actor_old` that nothing reads (cpq.py:95,230); it is left out.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.data import Batch, TransitionData, offline_sampler
from algorithms.core.errors import CtrlbenchError
from algorithms.core.lagrangian import discounted_budget
from algorithms.core.nets import EnsembleQ, Polyak, TanhGaussianActor, adam, frozen
from algorithms.core.registry import register
from algorithms.core.vae import ConditionalVAE

LOG_ALPHA_BOUNDS = (-5.0, 5.0)  # the clamp of log alpha after each step (cpq.py:195)


@dataclass
class CPQConfig:
    batch_size: int = 512  # transitions per gradient step
    actor_lr: float = 1e-4  # Adam learning rate of the actor
    critic_lr: float = 1e-3  # Adam learning rate of the reward critics and of the cost critics
    vae_lr: float = 1e-3  # Adam learning rate of the VAE
    alpha_lr: float = 1e-4  # step size of the plain ascent step on log alpha, the OOD multiplier
    discount: float = 0.99  # discount factor gamma of both critics
    tau: float = 0.005  # Polyak rate of the target critics (every step)
    actor_hidden: tuple[int, ...] = (256, 256)  # hidden widths of the tanh-Gaussian actor (ReLU)
    critic_hidden: tuple[int, ...] = (256, 256)  # hidden widths of the reward and cost critics (ReLU)
    vae_hidden: tuple[int, ...] = (400, 400)  # hidden widths of the VAE encoder and decoder
    vae_beta: float = 0.5  # weight of the KL term of the VAE loss
    num_q: int = 2  # reward critics in the ensemble (min over them)
    num_qc: int = 2  # cost critics in the ensemble (min over them)
    sample_action_num: int = 10  # policy samples per state scored for OOD
    ood_quantile: float = 0.75  # samples whose VAE KL is at or above this quantile of the batch's count as OOD
    qc_scalar: float = 1.5  # the OOD cost target is qc_scalar times the budget in the critic's units
    reward_scale: float = 0.1  # rewards are multiplied by this before learning
    cost_scale: float = 1.0  # costs (and the budget) are multiplied by this before learning
    episode_len: int = 1000  # T of the budget conversion kappa (1-g^T)/((1-g)T) (OSRL velocity tasks: 1000)
    normalize: bool = False  # normalize states with the dataset mean/std (OSRL: off)
    ood_gradient: bool = False  # score OOD actions with the online cost critic, so the term trains it (OSRL: off)
    ood_squash: bool = False  # score max_action tanh(u) instead of OSRL's pre-tanh Gaussian sample u

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size must be positive")
        require(min(self.actor_lr, self.critic_lr, self.vae_lr) > 0, "learning rates must be positive")
        require(self.alpha_lr >= 0, "alpha_lr must be >= 0")
        require(0.0 <= self.discount <= 1.0, "discount must be in [0, 1]")
        require(0.0 < self.tau <= 1.0, "tau must be in (0, 1]")
        require(self.num_q >= 1 and self.num_qc >= 1, "num_q and num_qc must be >= 1")
        require(self.sample_action_num >= 1, "sample_action_num must be >= 1")
        require(0.0 <= self.ood_quantile <= 1.0, "ood_quantile must be in [0, 1]")
        require(self.qc_scalar > 0, "qc_scalar must be positive")
        require(self.reward_scale > 0 and self.cost_scale > 0, "reward_scale and cost_scale must be positive")
        require(self.episode_len > 0, "episode_len must be positive")


# --- the VAE and the OOD cost -----------------------------------------------------------------------------------------


def vae_loss(vae: ConditionalVAE, batch: Batch, beta: float) -> torch.Tensor:
    """MSE(a^, a) + beta mean KL, averaged over the batch (cpq.py:125-129)."""
    return vae.elbo_loss(batch.observations, batch.actions, beta).mean()


def latent_kl(vae: ConditionalVAE, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """KL(q(z|s,a) || N(0, I)) of the encoder, mean over latent dims: the OOD score (cpq.py:178-182), shape (B,)."""
    mean, std = vae.encode(obs, act)
    return (-0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2))).mean(dim=-1)


def policy_gaussian(actor: TanhGaussianActor, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the actor's Gaussian before tanh, as TanhGaussianActor.forward computes them."""
    mean, raw_log_std = actor.net(obs).split(actor.act_dim, dim=-1)
    log_std = (actor.log_std_multiplier * raw_log_std + actor.log_std_offset).clamp(-20.0, 2.0)
    return mean, log_std.exp()


def ood_cost(cost_critic: EnsembleQ, vae: ConditionalVAE, actor: TanhGaussianActor, obs: torch.Tensor, n: int,
             quantile: float, squash: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q_ood, OOD fraction): Q_ood = mean over the n x B samples of 1[KL >= its `quantile`] min_j Q_c,j(s, u)
    (cpq.py:164-184). The samples, the KL and the mask carry no gradient; Q_c does when `cost_critic` has any."""
    with torch.no_grad():
        mean, std = policy_gaussian(actor, obs)
        u = mean + std * torch.randn((n, *mean.shape), device=obs.device, dtype=mean.dtype)  # (n, B, A)
        if squash:
            u = actor.max_action * torch.tanh(u)
        stacked_obs = obs.unsqueeze(0).expand(n, -1, -1).reshape(-1, obs.shape[-1])
        u = u.reshape(-1, u.shape[-1])
        kl = latent_kl(vae, stacked_obs, u)  # (n * B,)
        ood = (kl >= torch.quantile(kl, quantile)).float()
    qc = cost_critic(stacked_obs, u).min(dim=0).values
    return (ood * qc).mean(), ood.mean()


class OODMultiplier(nn.Module):
    """alpha = exp(log alpha) on the OOD term, log alpha = 0 at the start (cpq.py:93), moved by plain ascent steps."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.register_buffer("log_alpha", torch.zeros(()))

    @property
    def value(self) -> torch.Tensor:
        return self.log_alpha.exp()

    @torch.no_grad()
    def step(self, q_ood: torch.Tensor, target: float) -> None:
        """log alpha += lr alpha (target - Q_ood), then clamped to [-5, 5] (cpq.py:193-195)."""
        self.log_alpha.add_(self.lr * self.log_alpha.exp() * (target - q_ood.detach()))
        self.log_alpha.clamp_(*LOG_ALPHA_BOUNDS)


# --- the critics and the actor ----------------------------------------------------------------------------------------


def reward_target(critic_target: EnsembleQ, cost_target: EnsembleQ, actor: TanhGaussianActor, batch: Batch,
                  discount: float, budget: float) -> torch.Tensor:
    """y = r + gamma (1 - done) 1[min_j Q'_c,j(s', a') <= budget] min_i Q'_i(s', a'), a' ~ pi(.|s') (cpq.py:140-146)."""
    with torch.no_grad():
        next_a, _ = actor(batch.next_observations)
        next_q = critic_target(batch.next_observations, next_a).min(dim=0).values
        next_qc = cost_target(batch.next_observations, next_a).min(dim=0).values
        return batch.rewards + discount * (1.0 - batch.dones) * (next_qc <= budget).float() * next_q


def cost_target(cost_critic_target: EnsembleQ, actor: TanhGaussianActor, batch: Batch,
                discount: float) -> torch.Tensor:
    """y_c = c + gamma min_j Q'_c,j(s', a'), a' ~ pi(.|s'), no termination mask (cpq.py:158-161)."""
    if batch.costs is None:
        raise ValueError("cpq needs a batch with costs")
    with torch.no_grad():
        next_a, _ = actor(batch.next_observations)
        return batch.costs + discount * cost_critic_target(batch.next_observations, next_a).min(dim=0).values


def cost_critic_loss(cost_critic: EnsembleQ, batch: Batch, target: torch.Tensor, alpha: torch.Tensor,
                     q_ood: torch.Tensor, ood_budget: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_Qc, its TD part): sum_j mean_B (Q_c,j(s,a) - y_c)^2 - alpha (Q_ood - ood_budget) (cpq.py:186-187)."""
    td = cost_critic.mse(batch.observations, batch.actions, target, members="sum")
    return td - alpha * (q_ood - ood_budget), td


def actor_loss(actor: TanhGaussianActor, critic: EnsembleQ, cost_critic: EnsembleQ, obs: torch.Tensor,
               budget: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_pi, fraction of states judged safe): -mean_B 1[min_j Q_c,j(s, a~) <= budget] min_i Q_i(s, a~), a~ ~ pi
    reparameterized, no entropy (cpq.py:209-212). Gradients reach the actor only."""
    action, _ = actor(obs)
    with frozen(critic):
        q = critic(obs, action).min(dim=0).values
    with torch.no_grad():
        safe = (cost_critic(obs, action).min(dim=0).values <= budget).float()
    return -(safe * q).mean(), safe.mean()


def scaled(data: TransitionData, reward_scale: float, cost_scale: float) -> TransitionData:
    """Rewards and costs as the critics learn them (OSRL's TransitionDataset, osrl/common/dataset.py:836-837)."""
    if data.costs is None:
        raise CtrlbenchError("cpq needs a dataset with per-step costs (an offline-safe task)")
    return dataclasses.replace(data, rewards=(data.rewards * reward_scale).astype(np.float32),
                               costs=(data.costs * cost_scale).astype(np.float32))


@register("cpq", kinds=("offline-safe",))
class CPQ(Algorithm):
    Config = CPQConfig

    def __init__(self, config: CPQConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        if ctx.cost_limit is None:
            raise CtrlbenchError("cpq is a safe-RL algorithm and the task has no cost budget (ctx.cost_limit)")
        data = scaled(ctx.require_dataset("cpq"), config.reward_scale, config.cost_scale)
        self.normalizer, self.sampler = offline_sampler(data, self.device, ctx.seed, config.normalize)
        self.budget = discounted_budget(ctx.cost_limit * config.cost_scale, config.discount, config.episode_len)
        self.ood_budget = config.qc_scalar * self.budget
        obs_dim, act_dim, max_action = ctx.obs_dim, ctx.act_dim, ctx.max_action

        self.actor = TanhGaussianActor(obs_dim, act_dim, max_action, config.actor_hidden,
                                       log_std_offset=0.0).to(self.device)
        self.actor_optimizer = adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic = EnsembleQ(obs_dim, act_dim, config.critic_hidden, n=config.num_q).to(self.device)
        self.cost_critic = EnsembleQ(obs_dim, act_dim, config.critic_hidden, n=config.num_qc).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
        self.critic_optimizer = adam(self.critic.parameters(), lr=config.critic_lr)
        self.cost_critic_optimizer = adam(self.cost_critic.parameters(), lr=config.critic_lr)
        self.update_targets = Polyak([(self.critic_target, self.critic),
                                      (self.cost_critic_target, self.cost_critic)], config.tau)
        self.vae = ConditionalVAE(obs_dim, act_dim, max_action, config.vae_hidden).to(self.device)
        self.vae_optimizer = adam(self.vae.parameters(), lr=config.vae_lr)
        self.multiplier = OODMultiplier(config.alpha_lr).to(self.device)

    def update(self) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        self.step += 1
        batch = self.sampler.sample(cfg.batch_size)

        loss_vae = vae_loss(self.vae, batch, cfg.vae_beta)
        self.vae_optimizer.zero_grad(set_to_none=True)
        loss_vae.backward()
        self.vae_optimizer.step()

        y = reward_target(self.critic_target, self.cost_critic_target, self.actor, batch, cfg.discount, self.budget)
        loss_q = self.critic.mse(batch.observations, batch.actions, y, members="sum")
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss_q.backward()
        self.critic_optimizer.step()

        y_c = cost_target(self.cost_critic_target, self.actor, batch, cfg.discount)
        q_ood, ood_fraction = ood_cost(self.cost_critic if cfg.ood_gradient else self.cost_critic_target, self.vae,
                                       self.actor, batch.observations, cfg.sample_action_num, cfg.ood_quantile,
                                       cfg.ood_squash)
        alpha = self.multiplier.value
        loss_qc, td_qc = cost_critic_loss(self.cost_critic, batch, y_c, alpha, q_ood, self.ood_budget)
        self.cost_critic_optimizer.zero_grad(set_to_none=True)
        loss_qc.backward()
        self.cost_critic_optimizer.step()
        self.multiplier.step(q_ood, self.ood_budget)

        loss_pi, safe_fraction = actor_loss(self.actor, self.critic, self.cost_critic, batch.observations,
                                            self.budget)
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss_pi.backward()
        self.actor_optimizer.step()
        self.update_targets()
        return {"vae_loss": loss_vae.detach(), "critic_loss": loss_q.detach(), "cost_critic_loss": loss_qc.detach(),
                "cost_td_loss": td_qc.detach(), "actor_loss": loss_pi.detach(), "alpha": alpha,
                "q_ood": q_ood.detach(), "ood_fraction": ood_fraction, "safe_fraction": safe_fraction,
                "cost_budget": self.budget}

    @torch.no_grad()
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        action, _ = self.actor(self.obs_tensor(self.normalizer(obs)), deterministic=True)
        return action.cpu().numpy()
