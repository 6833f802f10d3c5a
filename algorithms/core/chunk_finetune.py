"""Two-phase fine-tuning of a chunk policy, the recipe DPPO and its Gaussian baseline share (DPPO, Ren et al.,
ICLR'25; irom-princeton/dppo@cc7234a): the first `pretrain_steps` updates fit a policy over action chunks to the
dataset with a supervised loss and keep an EMA of it; every later update is one PPO iteration in the environment,
starting from the EMA weights. Both methods see the same data and scaling, the same chunks, rollouts, reward scaling,
advantages and minibatch step; a subclass brings only its policy: the pretraining loss, the chunks it explores with,
and the likelihood ratios of its PPO loop (algorithms/dppo.py, algorithms/ppo_finetune.py).

What lives here:
- data: states and actions min-max scaled to [-1, 1] with the whole dataset's constants, chunks of `horizon`
  consecutive actions (episodes with return <= 0 dropped when `drop_nonpositive_episodes`);
- pretraining: the warmup + cosine learning rate, one optimizer step on the subclass's loss, the EMA step;
- fine-tuning: the rollout of `n_envs` x `n_steps` chunk decisions, running reward scaling, GAE on a state-only
  critic, and the PPO minibatch step L = L_pg + vf_coef L_V with the target-KL stop;
- the runner's milestone at the end of pretraining (the score before fine-tuning).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.errors import CtrlbenchError
from algorithms.core.ppo import (
    ActionChunks,
    ChunkEnvs,
    MinibatchMeans,
    MinMaxScaler,
    RandomStream,
    Rollout,
    RunningRewardScaler,
    approx_kl,
    clip_fraction,
    clipped_surrogate,
    collect_rollout,
    estimate_advantages,
    optimizer_step,
    set_lr,
    value_loss,
    warmup_cosine_lr,
)
from algorithms.core.seeding import derive_seed


@dataclass
class ChunkFinetuneConfig:
    """The fields of the shared two phases, with the reference's defaults for Gym hopper; a method adds its policy's
    fields and overrides what its own config sets apart (DPPO: pretrain_lr, batch_size, update_epochs)."""

    # pretraining (PRE)
    pretrain_steps: int = 1_550_000  # supervised gradient steps before fine-tuning (200 epochs of hopper-medium)
    pretrain_batch_size: int = 128  # chunks per pretraining gradient step
    pretrain_lr: float = 1e-4  # AdamW learning rate of pretraining, cosine-annealed to pretrain_min_lr
    pretrain_min_lr: float = 1e-4  # the pretraining learning rate at the end of pretraining
    pretrain_weight_decay: float = 1e-6  # AdamW weight decay of pretraining
    lr_warmup_fraction: float = 0.005  # fraction of pretraining with a linear warmup from pretrain_min_lr (1 epoch)
    ema_decay: float = 0.995  # decay of the EMA of the pretrained network: the pretrained policy
    ema_every: int = 10  # gradient steps between EMA steps
    ema_start_fraction: float = 0.1  # the EMA copies the network for this fraction of pretraining (epoch 20 of 200)
    drop_nonpositive_episodes: bool = True  # pretrain only on episodes whose return is > 0
    horizon: int = 4  # actions per chunk, all executed (the reference's horizon_steps = act_steps)
    # fine-tuning (FT)
    n_envs: int = 40  # training environments
    n_steps: int = 500  # decisions (chunks) per environment per fine-tuning iteration
    gamma: float = 0.99  # discount per decision (per chunk)
    gae_lambda: float = 0.95  # GAE lambda
    actor_lr: float = 1e-4  # AdamW learning rate of the fine-tuned policy (constant)
    critic_lr: float = 1e-3  # AdamW learning rate of the critic (constant)
    critic_hidden: tuple[int, ...] = (256, 256, 256)  # widths of the critic's residual MLP (Mish)
    batch_size: int = 10_000  # samples per PPO minibatch
    update_epochs: int = 10  # passes over the rollout per iteration
    vf_coef: float = 0.5  # weight of the value loss
    target_kl: float = 1.0  # stop the iteration's epochs once approx-KL exceeds this (<= 0: never)
    reward_scale_running: bool = True  # divide rewards by a running std of the discounted return
    critic_warmup_iterations: int = 0  # first fine-tuning iterations that train the critic only

    def __post_init__(self) -> None:
        require(self.pretrain_steps >= 0, "pretrain_steps must be >= 0")
        require(min(self.pretrain_batch_size, self.batch_size) > 0, "batch sizes must be positive")
        require(min(self.pretrain_lr, self.actor_lr, self.critic_lr) > 0 and self.pretrain_min_lr >= 0,
                "learning rates must be positive")
        require(0.0 <= self.lr_warmup_fraction < 1.0 and 0.0 <= self.ema_start_fraction <= 1.0,
                "lr_warmup_fraction must be in [0, 1) and ema_start_fraction in [0, 1]")
        require(0.0 < self.ema_decay < 1.0 and self.ema_every > 0, "ema_decay must be in (0, 1), ema_every > 0")
        require(self.horizon > 0 and self.n_envs > 0 and self.n_steps > 0 and self.update_epochs > 0,
                "horizon, n_envs, n_steps and update_epochs must be positive")
        require(len(self.critic_hidden) % 2 == 1 and len(set(self.critic_hidden)) == 1,
                f"critic_hidden must be an odd number of equal widths (a residual MLP), got {self.critic_hidden}")
        require(0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0, "gamma and gae_lambda must be in [0, 1]")


class FinetuneRollout(NamedTuple):
    """One iteration's rollout, flattened over (step, env) to M decisions."""

    rollout: Rollout
    states: torch.Tensor  # (M, obs_dim), scaled
    records: torch.Tensor  # (M, ...): what `explore` kept per decision (the chunk, or the denoising chain)
    advantages: torch.Tensor  # (M,)
    returns: torch.Tensor  # (M,)
    values: torch.Tensor  # (M,)


class ChunkFinetuner(Algorithm):
    """The shared two phases. A subclass sets, after `super().__init__`: `pretrain_optimizer`, `ema` (core.ppo.EMA
    of the pretrained network), `critic`, `actor_optimizer`, `critic_optimizer`; and defines `pretrain_loss`,
    `start_finetuning`, `explore`, `finetune_iteration` and `act`."""

    def __init__(self, config: Any, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        cfg = config
        if ctx.total_updates <= cfg.pretrain_steps:
            raise CtrlbenchError(f"{self.name}: the budget of {ctx.total_updates} updates ends before fine-tuning "
                                 f"starts (pretrain_steps {cfg.pretrain_steps}); raise --steps or lower "
                                 f"--pretrain-steps")
        data = ctx.require_dataset(self.name)
        self.obs_scaler = MinMaxScaler.fit(data.observations, self.device)  # on the whole dataset, as the reference
        self.act_scaler = MinMaxScaler.fit(data.actions, self.device)
        self.chunks = ActionChunks(data, cfg.horizon, self.obs_scaler, self.act_scaler, self.device, ctx.seed,
                                   cfg.drop_nonpositive_episodes)
        self.action_low = torch.as_tensor(ctx.action_space.low, device=self.device)
        self.action_high = torch.as_tensor(ctx.action_space.high, device=self.device)
        self.lr_warmup = round(cfg.lr_warmup_fraction * cfg.pretrain_steps)
        self.envs = ChunkEnvs(ctx, cfg.n_envs, self.name)
        self.reward_scaler = RunningRewardScaler(cfg.n_envs, cfg.gamma)
        self.noise = RandomStream(self.device, derive_seed(ctx.seed, 1))  # training: exploration, minibatches

    @property
    def finetuning(self) -> bool:
        return self.step > self.config.pretrain_steps

    def update(self) -> dict[str, torch.Tensor | float]:
        self.step += 1
        if not self.finetuning:
            return self.pretrain_step()
        if self.step == self.config.pretrain_steps + 1:
            self.start_finetuning()
        return self.finetune_iteration()

    # --- pretraining ------------------------------------------------------------------------------------------------

    @abstractmethod
    def pretrain_loss(self, states: torch.Tensor, chunks: torch.Tensor) -> tuple[str, torch.Tensor]:
        """(metric name, loss) of one pretraining batch of scaled states (B, obs_dim) and chunks (B, H, A)."""

    def pretrain_step(self) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        lr = warmup_cosine_lr(self.step - 1, cfg.pretrain_steps, self.lr_warmup, cfg.pretrain_lr, cfg.pretrain_min_lr)
        set_lr(self.pretrain_optimizer, lr)
        states, chunks = self.chunks.sample(cfg.pretrain_batch_size)
        name, loss = self.pretrain_loss(states, chunks)
        self.pretrain_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.pretrain_optimizer.step()
        self.ema.update(self.step)
        return {"phase": 0.0, "finetune_iteration": 0.0, name: loss.detach(), "pretrain_lr": lr}

    @abstractmethod
    def start_finetuning(self) -> None:
        """Load the EMA weights into the networks fine-tuning trains."""

    # --- fine-tuning ------------------------------------------------------------------------------------------------

    @abstractmethod
    def explore(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(chunk, record) for each scaled state: the chunk to execute and what the PPO update needs of it."""

    @abstractmethod
    def finetune_iteration(self) -> dict[str, torch.Tensor | float]:
        """One PPO iteration: `collect`, then minibatches through `ppo_step`."""

    def to_env(self, chunks: torch.Tensor) -> np.ndarray:
        """Scaled chunks -> raw actions inside the action space."""
        return torch.clamp(self.act_scaler.unscale(chunks), self.action_low, self.action_high).cpu().numpy()

    def collect(self) -> FinetuneRollout:
        """Roll out `n_steps` decisions in every training env, then GAE on the (running-scaled) rewards."""
        cfg = self.config
        rollout = collect_rollout(self.envs, cfg.n_steps, self.explore, self.obs_scaler, self.to_env)
        values, advantages, returns = estimate_advantages(
            rollout, self.critic, cfg.gamma, cfg.gae_lambda, self.reward_scaler if cfg.reward_scale_running else None)
        return FinetuneRollout(rollout, rollout.obs.reshape(-1, rollout.obs.shape[-1]), rollout.records.flatten(0, 1),
                               advantages.reshape(-1), returns.reshape(-1), values.reshape(-1))

    def ppo_step(self, stats: MinibatchMeans, log_ratio: torch.Tensor, advantages: torch.Tensor,
                 clip: torch.Tensor | float, states: torch.Tensor, returns: torch.Tensor) -> bool:
        """One minibatch step on L = L_pg + vf_coef L_V, L_pg the clipped surrogate of r = exp(log_ratio) on the
        (normalized) advantages (the actor only after the critic warm-up iterations); records the minibatch's
        statistics and returns True once approx-KL exceeds `target_kl` (the iteration stops)."""
        cfg = self.config
        ratio = log_ratio.exp()
        pg_loss = clipped_surrogate(ratio, advantages, clip)
        v_loss = value_loss(self.critic(states).squeeze(-1), returns)
        optimizer_step(pg_loss + cfg.vf_coef * v_loss, self.actor_optimizer, self.critic_optimizer,
                       train_actor=self.step - cfg.pretrain_steps > cfg.critic_warmup_iterations)
        kl = float(approx_kl(log_ratio))
        stats.add(pg_loss=pg_loss, value_loss=v_loss, approx_kl=kl, ratio=ratio.mean(),
                  clip_fraction=clip_fraction(ratio, clip))
        return 0 < cfg.target_kl < kl

    # --- evaluation -------------------------------------------------------------------------------------------------

    def milestones(self) -> dict[str, int]:
        """The end of pretraining: the runner scores the pretrained policy there (the score before fine-tuning)."""
        return {"pretrained": self.config.pretrain_steps}
