"""BCQ-Lagrangian (BCQ-L): batch-constrained Q-learning (Fujimoto et al., 2019) with a reward critic, a cost critic and
a PID-Lagrangian penalty on the cost (Stooke et al., 2020), as OSRL implements it (liuzuxin/OSRL 03a4586,
`osrl/algorithms/bcql.py`, networks in `osrl/common/net.py`), with its defaults (`examples/configs/bcql_configs.py`).

The problem is  max_pi E[sum r]  s.t.  E[sum c] <= kappa  (kappa: the task's episode cost budget). In the cost critic's
discounted units the budget is  d = kappa (1 - gamma^T) / ((1 - gamma) T)  (bcql.py:109-110;
algorithms/core/lagrangian.py `discounted_budget`), T = `episode_len` (1000 on the velocity tasks).

Networks (bcql.py:86-100):
  VAE G(s, z):     the conditional VAE of algorithms/core/vae.py: encoder [s, a] -> 400 -> 400 -> (mu, log sigma
                   clamped to [-4, 15]), latent size 2|A|, decoder [s, z] -> 400 -> 400 -> max_action tanh; without z,
                   z ~ N(0, 1) clipped to [-0.5, 0.5] (net.py:290-339). Its two heads are one Linear of 2 x latent
                   outputs here, the same function and the same init as OSRL's two Linear heads (net.py:308-309).
  actor xi(s, a):  a perturbation of a VAE action: a + phi max_action MLP_tanh([s, a]), clipped to the action box
                   (net.py:33-62); hidden 2x256 with **tanh** activations (bcql.py:87 passes nn.Tanh), phi 0.05.
  critics:         `EnsembleDoubleQCritic(num_q=2)` (net.py:245-287) is two groups of num_q ReLU MLPs (2x256) each:
                   4 reward networks, and 4 cost networks for num_qc = 2. Here each critic is one EnsembleQ of
                   2 num_q members, members [0, num_q) the group "Q1", [num_q, 2 num_q) the group "Q2";
                   Q1(s, a) = min over group 1, Q2(s, a) = min over group 2 (net.py:278-283).
  targets:         Polyak copies (tau 0.005) of the actor and of both critics, every step (bcql.py:228-234);
                   the VAE has none.

Losses, in OSRL's order within one step (bcql.py:283-301), each optimizer stepping before the next loss is built:
  1. VAE (bcql.py:122-132):  L_G = MSE(G(s, z~q(.|s,a)), a) + beta mean KL(q(z|s,a) || N(0, I)),  beta 0.5
  2. reward critic (bcql.py:134-155): for each s', n = 10 actions a'_j = xi'(s', G(s')), scored by the target critic,
        Q'_soft = lmbda min(Q'1, Q'2) + (1 - lmbda) max(Q'1, Q'2),  lmbda 0.75   (clipped double Q, soft)
        y       = r + gamma (1 - done) max_j Q'_soft(s', a'_j)
        L_Q     = sum over all 2 num_q networks of mean_B (Q_i(s, a) - y)^2       (net.py:285-287)
  3. cost critic (bcql.py:157-179): the same with c, the cost critic's targets and fresh samples a'_j, and **no done
        mask**:  y_c = c + gamma max_j Q'c_soft(s', a'_j)   (bcql.py:172)
  4. actor (bcql.py:181-216): a~ = xi(s, G(s)) (one VAE sample per state; critics and VAE frozen)
        Q_pi = min(Q1, Q2)(s, a~),  Qc_pi = min(Qc1, Qc2)(s, a~)     (the min over all networks of each critic)
        lambda = PID(Qc_pi)   the controller steps on this batch's mean(Qc_pi) - d first, then lambda is a constant
                               (algorithms/core/pid_lagrangian.py, OSRL net.py:356-387; KP, KI, KD = 0.1, 0.003, 0.001)
        L_pi = -mean Q_pi + mean[(Qc_pi - d) lambda]
  5. Polyak step of the target actor, reward critic and cost critic (bcql.py:301, 228-234).
Rewards are multiplied by reward_scale 0.1 and costs by cost_scale 1 before learning (`osrl/common/dataset.py:836-837`);
the budget d is not scaled (bcql.py:109, as OSRL; cost_scale is 1 anyway).

Acting (bcql.py:236-243): OSRL decodes ONE action per state from the VAE with a random clipped latent, perturbs it
and returns it: no candidate set and no argmax over Q (the original BCQ's `select_action` samples 10 and takes the
argmax of Q1; OSRL does not).

Defaults (bcql_configs.py: line): reward_scale 0.1 (29), cost_scale 1 (30), actor/critic/vae lr 1e-3 (31-33),
phi 0.05 (34), lmbda 0.75 (35), beta 0.5 (36), batch 512 (39), 100k updates (40: the runner's budget), actor and
critic hidden [256, 256] (43-44), VAE hidden 400 (45), 10 sampled actions (46), gamma 0.99 (47), tau 0.005 (48),
num_q = num_qc = 2 (49-50), PID [0.1, 0.003, 0.001] (51); episode_len 1000 for the velocity tasks (227-255; the base
config's 300 is for the Bullet tasks).

Deviations from OSRL, and why:
- Acting is deterministic by default (the suite's protocol: the policy's mean action): the VAE latent is z = 0, the
  mode of the clipped prior, instead of one random clipped latent. `eval_sample_latent=True` draws it as OSRL does,
  from a generator seeded with the run's seed and checkpointed, so evaluations stay reproducible.
- `done` for the reward critic is the dataset's true terminations only: OSRL's TransitionDataset marks time-limit
  truncations done too (`osrl/common/dataset.py:815-816`), while the suite's data contract bootstraps through
  truncations (algorithms/core/data.py), as every other algorithm here does. With gamma 0.99 and T = 1000 the
  difference is the last ~100 steps of each truncated episode.
- The cost critic's missing done mask (bcql.py:172) is kept as the default; `mask_cost_terminal=True` masks it
  like the reward critic (the cost after a true termination is 0).
- States are not normalized (OSRL feeds raw observations); `normalize=True` switches the suite's normalizer on.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.data import Batch, offline_sampler
from algorithms.core.errors import CtrlbenchError
from algorithms.core.lagrangian import discounted_budget
from algorithms.core.nets import EnsembleQ, Polyak, adam, frozen, mlp
from algorithms.core.pid_lagrangian import OSRL_PID, PIDLagrangian
from algorithms.core.registry import register
from algorithms.core.vae import ConditionalVAE


@dataclass
class BCQLagConfig:
    batch_size: int = 512  # transitions per gradient step (OSRL bcql_configs.py:39)
    actor_lr: float = 1e-3  # Adam learning rate of the perturbation actor
    critic_lr: float = 1e-3  # Adam learning rate of the reward critic and of the cost critic
    vae_lr: float = 1e-3  # Adam learning rate of the conditional VAE
    discount: float = 0.99  # discount factor gamma of both critics (and of the budget conversion)
    tau: float = 0.005  # Polyak rate of the target actor and target critics (every step)
    phi: float = 0.05  # perturbation range: the actor moves a VAE action by at most phi * max_action per dimension
    lmbda: float = 0.75  # soft clipped double Q: lmbda min(Q1, Q2) + (1 - lmbda) max(Q1, Q2) in the targets
    beta_kl: float = 0.5  # weight of the KL term in the VAE loss
    sample_action_num: int = 10  # VAE actions sampled per next state; the target takes the max over them
    num_q: int = 2  # networks per group of the reward critic (two groups: 2 * num_q networks)
    num_qc: int = 2  # networks per group of the cost critic (two groups: 2 * num_qc networks)
    actor_hidden: tuple[int, ...] = (256, 256)  # hidden widths of the perturbation actor (tanh)
    critic_hidden: tuple[int, ...] = (256, 256)  # hidden widths of every reward and cost network (ReLU)
    vae_hidden: tuple[int, ...] = (400, 400)  # hidden widths of the VAE encoder and decoder (ReLU)
    pid: tuple[float, ...] = OSRL_PID  # (KP, KI, KD) of the PID-Lagrangian multiplier on the cost critic
    reward_scale: float = 0.1  # rewards are multiplied by this before learning
    cost_scale: float = 1.0  # costs are multiplied by this before learning
    episode_len: int = 1000  # T of the budget conversion d = kappa (1-g^T)/((1-g)T) (OSRL velocity tasks: 1000)
    mask_cost_terminal: bool = False  # mask the cost target at true terminations (OSRL does not)
    eval_sample_latent: bool = False  # act with a random clipped VAE latent as OSRL (seeded) instead of z = 0
    normalize: bool = False  # normalize states with the dataset mean/std (OSRL: raw states)

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size must be positive")
        require(self.actor_lr > 0 and self.critic_lr > 0 and self.vae_lr > 0, "learning rates must be positive")
        require(0.0 <= self.discount < 1.0, "discount must be in [0, 1)")
        require(0.0 < self.tau <= 1.0, "tau must be in (0, 1]")
        require(self.phi >= 0, "phi must be >= 0")
        require(0.0 <= self.lmbda <= 1.0, "lmbda must be in [0, 1]")
        require(self.beta_kl >= 0, "beta_kl must be >= 0")
        require(self.sample_action_num >= 1, "sample_action_num must be >= 1")
        require(self.num_q >= 1 and self.num_qc >= 1, "num_q and num_qc must be >= 1")
        require(len(self.pid) == 3 and min(self.pid) >= 0, "pid must be three gains KP,KI,KD >= 0")
        require(self.reward_scale > 0 and self.cost_scale > 0, "reward_scale and cost_scale must be positive")
        require(self.episode_len > 0, "episode_len must be positive")


# --- networks ---------------------------------------------------------------------------------------------------------


class PerturbationActor(nn.Module):
    """xi(s, a) = clip(a + phi max_action MLP_tanh([s, a]), -max_action, max_action) (OSRL net.py:33-62)."""

    def __init__(self, obs_dim: int, act_dim: int, max_action: float, phi: float,
                 hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.net = mlp(obs_dim + act_dim, act_dim, hidden, activation=nn.Tanh, output_activation=nn.Tanh)
        self.max_action = max_action
        self.phi = phi

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        perturbation = self.phi * self.max_action * self.net(torch.cat([obs, action], dim=-1))
        return (action + perturbation).clamp(-self.max_action, self.max_action)


def group_mins(q: torch.Tensor, per_group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q1, Q2) of an EnsembleDoubleQCritic from all its networks' values (2 per_group, B): the min within each group
    (OSRL net.py:278-283)."""
    return q[:per_group].min(dim=0).values, q[per_group:].min(dim=0).values


def soft_clipped_double_q(q: torch.Tensor, per_group: int, lmbda: float) -> torch.Tensor:
    """lmbda min(Q1, Q2) + (1 - lmbda) max(Q1, Q2) (bcql.py:144-145): (B,) from (2 per_group, B)."""
    q1, q2 = group_mins(q, per_group)
    return lmbda * torch.minimum(q1, q2) + (1.0 - lmbda) * torch.maximum(q1, q2)


# --- losses -----------------------------------------------------------------------------------------------------------


def vae_loss(vae: ConditionalVAE, batch: Batch, beta_kl: float) -> torch.Tensor:
    """MSE(G(s, z), a) + beta mean KL(q(z|s,a) || N(0, I)), one reparameterized latent (bcql.py:122-126)."""
    return vae.elbo_loss(batch.observations, batch.actions, beta_kl).mean()


@torch.no_grad()
def td_target(critic_target: EnsembleQ, actor_target: PerturbationActor, vae: ConditionalVAE,
              next_obs: torch.Tensor, signal: torch.Tensor, not_done: torch.Tensor | None, discount: float,
              lmbda: float, n_samples: int) -> torch.Tensor:
    """y = signal + gamma not_done max_j [lmbda min(Q'1, Q'2) + (1 - lmbda) max(Q'1, Q'2)](s', xi'(s', G(s'))_j), with
    n_samples VAE actions per next state (bcql.py:136-148 for rewards, 159-172 for costs with not_done = None)."""
    batch_size = next_obs.shape[0]
    next_rep = torch.repeat_interleave(next_obs, n_samples, dim=0)  # row b*n + j is s'_b
    next_act = actor_target(next_rep, vae.decode(next_rep))
    q_soft = soft_clipped_double_q(critic_target(next_rep, next_act), critic_target.n // 2, lmbda)
    q_next = q_soft.reshape(batch_size, n_samples).max(dim=1).values
    if not_done is not None:
        q_next = not_done * q_next
    return signal + discount * q_next


def critic_loss(critic: EnsembleQ, obs: torch.Tensor, act: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum over every network i of mean_B (Q_i(s, a) - y)^2 (net.py:285-287, summed for both groups, bcql.py:149)."""
    return critic.mse(obs, act, target, members="sum")


def actor_loss(actor: PerturbationActor, critic: EnsembleQ, cost_critic: EnsembleQ, vae: ConditionalVAE,
               obs: torch.Tensor, pid: PIDLagrangian, budget: float
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_pi = -mean min(Q1, Q2)(s, a~) + mean[(min(Qc1, Qc2)(s, a~) - d) lambda],  a~ = xi(s, G(s)),  lambda the PID
    controller's output after its step on this batch's Qc (bcql.py:181-198). Freeze the critics around the call."""
    with torch.no_grad():
        vae_action = vae.decode(obs)  # frozen VAE (bcql.py:186-189): the sample is an input of xi
    action = actor(obs, vae_action)
    q_pi = torch.minimum(*group_mins(critic(obs, action), critic.n // 2))
    qc_pi = torch.minimum(*group_mins(cost_critic(obs, action), cost_critic.n // 2))
    lam = pid.step(qc_pi)  # a constant
    qc_penalty = ((qc_pi - budget) * lam).mean()
    loss = -q_pi.mean() + qc_penalty
    return loss, {"qc_penalty": qc_penalty.detach(), "lagrangian": lam, "q_pi": q_pi.detach().mean(),
                  "qc_pi": qc_pi.detach().mean()}


# --- the algorithm ----------------------------------------------------------------------------------------------------


@register("bcq_lag", kinds=("offline-safe",))
class BCQLag(Algorithm):
    Config = BCQLagConfig

    def __init__(self, config: BCQLagConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        data = ctx.require_dataset("bcq_lag")
        if data.costs is None:
            raise CtrlbenchError("bcq_lag is a safe offline algorithm and the dataset has no costs")
        if ctx.cost_limit is None:
            raise CtrlbenchError("bcq_lag is a safe algorithm and the task has no cost budget (ctx.cost_limit)")
        data = dataclasses.replace(data, rewards=(data.rewards * config.reward_scale).astype(np.float32),
                                   costs=(data.costs * config.cost_scale).astype(np.float32))
        self.normalizer, self.sampler = offline_sampler(data, self.device, ctx.seed, config.normalize)
        self.budget = discounted_budget(ctx.cost_limit, config.discount, config.episode_len)

        obs_dim, act_dim, max_action = ctx.obs_dim, ctx.act_dim, ctx.max_action
        self.vae = ConditionalVAE(obs_dim, act_dim, max_action, config.vae_hidden).to(self.device)
        self.actor = PerturbationActor(obs_dim, act_dim, max_action, config.phi, config.actor_hidden).to(self.device)
        self.critic = EnsembleQ(obs_dim, act_dim, config.critic_hidden, n=2 * config.num_q).to(self.device)
        self.cost_critic = EnsembleQ(obs_dim, act_dim, config.critic_hidden, n=2 * config.num_qc).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
        self.vae_optimizer = adam(self.vae.parameters(), lr=config.vae_lr)
        self.actor_optimizer = adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optimizer = adam(self.critic.parameters(), lr=config.critic_lr)
        self.cost_critic_optimizer = adam(self.cost_critic.parameters(), lr=config.critic_lr)
        self.update_targets = Polyak([(self.critic_target, self.critic), (self.cost_critic_target, self.cost_critic),
                                      (self.actor_target, self.actor)], config.tau)
        self.pid = PIDLagrangian(*config.pid, threshold=self.budget, device=self.device)
        self.act_generator = torch.Generator().manual_seed(ctx.seed)  # eval_sample_latent only

    @staticmethod
    def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def update(self) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        self.step += 1
        b = self.sampler.sample(cfg.batch_size)

        loss_vae = vae_loss(self.vae, b, cfg.beta_kl)  # 1. VAE
        self._step(self.vae_optimizer, loss_vae)

        y = td_target(self.critic_target, self.actor_target, self.vae, b.next_observations, b.rewards,
                      1.0 - b.dones, cfg.discount, cfg.lmbda, cfg.sample_action_num)  # 2. reward critic
        loss_q = critic_loss(self.critic, b.observations, b.actions, y)
        self._step(self.critic_optimizer, loss_q)

        y_c = td_target(self.cost_critic_target, self.actor_target, self.vae, b.next_observations, b.costs,
                        1.0 - b.dones if cfg.mask_cost_terminal else None, cfg.discount, cfg.lmbda,
                        cfg.sample_action_num)  # 3. cost critic
        loss_qc = critic_loss(self.cost_critic, b.observations, b.actions, y_c)
        self._step(self.cost_critic_optimizer, loss_qc)

        with frozen(self.critic), frozen(self.cost_critic):  # 4. actor
            loss_pi, info = actor_loss(self.actor, self.critic, self.cost_critic, self.vae, b.observations, self.pid,
                                       self.budget)
            self._step(self.actor_optimizer, loss_pi)

        self.update_targets()  # 5. targets
        return {"vae_loss": loss_vae.detach(), "critic_loss": loss_q.detach(), "cost_critic_loss": loss_qc.detach(),
                "actor_loss": loss_pi.detach(), **info, "cost_budget": self.budget}

    def graph_period(self) -> int:
        # no host syncs (the PID state lives on the device), static shapes, noise from the default generator
        return 1

    @torch.no_grad()
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        """xi(s, G(s, z)) with z = 0, or with z ~ clip(N(0, 1), -0.5, 0.5) from a seeded generator when
        `eval_sample_latent` (OSRL's `act`, bcql.py:236-243): one VAE action per state, no argmax over Q."""
        s = self.obs_tensor(self.normalizer(obs))
        shape = (s.shape[0], self.vae.latent_dim)
        if self.config.eval_sample_latent:
            z = torch.randn(shape, generator=self.act_generator).clamp(-0.5, 0.5).to(self.device)
        else:
            z = torch.zeros(shape, device=self.device)
        return self.actor(s, self.vae.decode(s, z)).cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"act_generator": self.act_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.act_generator.set_state(state["act_generator"])
