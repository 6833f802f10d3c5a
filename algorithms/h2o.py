"""H2O: Dynamics-Aware Hybrid Offline-and-Online RL (Niu et al., NeurIPS 2022).

H2O learns from a small real dataset and an imperfect simulator at once. Follows t6-thu/H2O
`SimpleSAC/sim2real_sac.py` and `sim2real_sac_main.py` (../shared/reference/algorithms.md section 6):

  simulator:  each update takes one step in the simulator with a sample of the current policy; the transitions
              go to a FIFO buffer of `sim_buffer_ratio` x the real dataset's size. The first update collects
              `initial_sim_steps` first (H2O's first epoch rolls out 1000 steps before training).
  discriminators (on their own batches of `discriminator_batch` real and sim transitions, N(0, 0.1^2) noise added
              to s, a and s'): D_sa(s, a) and D_sas(s, a, s'), 2x256 ReLU MLPs with output 2 tanh(.) (2 logits,
              class 0 real, class 1 sim); P_sa = softmax(D_sa), P_sas = softmax(D_sas + D_sa): D_sas models the
              residual.  L_D = mean[-log P_real[0] - log P_sim[1]] for each.
  dynamics ratio (no gradient, per sim sample):
              w(s, a, s') = P_sas[0] P_sa[1] / (P_sas[1] P_sa[0]) ~ p_real(s'|s,a) / p_sim(s'|s,a), clipped to [1e-5, 1]
  gap estimate (no gradient, per sim sample): with s'_j = s'_sim + N(0, diag(std)^2), j = 1..10,
              u(s, a) = clip(mean_j log(1 / w(s, a, s'_j)), 1e-45, 10) ~ KL(p_sim || p_real),  omega = u / sum_batch u;
              std is the official code's: taken over its whole buffer when it is made, the N real states and the
              10 N zero rows reserved for the sim part, + 1e-3 (`gap_noise_std`; 0.3-0.4x the real states' own std
              on halfcheetah medium-replay). The paper's text suggests the data's std; the code is what H2O ran.
  SAC (algorithms/core/sac.py; no entropy term in the backup, learnable log-std scale/offset, auto temperature)
  on a batch of 128 real + 128 sim transitions:
              actor and temperature over the states of both halves;
              critic:  L_Q = sum_i [ MSE_real(Q_i, y) + MSE_sim(sqrt(w) Q_i, sqrt(w) y)
                                     + beta (clip(logsumexp_sim(Q_i(s, a) + log omega) - mean_real Q_i(s, a),
                                                  +-1000)) ]
              beta = 0.01 (cql_min_q_weight), temperature 1; the logsumexp runs over the sim *samples*: Q is pushed
              down on sim pairs with a large dynamics gap and up on the real data.
  order:      discriminators, then (with their new weights) w and u, then temperature -> actor -> critic -> target.

`use_ratio = use_penalty = False` turns H2O into the naive real + sim mix (a baseline, by config only).
Evaluation (the runner's) is on the real environment, deterministic (max_action tanh(mean)).

Deviations, each measured or required by the harness:
- One update = one sim step + one gradient step (H2O: 1000 sim steps, then 1000 gradient steps, per epoch). The
  ratio and the policy's lag behind the data are the same on average; the runner's budget counts gradient steps.
- D_sa's gradient is that of L_Dsa + L_Dsas (H2O calls `dsa_loss.backward(retain_graph=True)` and then
  `dsas_loss.backward()` before either optimizer steps, so D_sa's gradients add up the same way).
- The FIFO's capacity is `sim_buffer_ratio` x the dataset's size as in H2O, but allocated lazily only up to what
  the run's budget can fill (a 100k-step check never holds more than 100k sim transitions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.data import Batch, DeviceSampler
from algorithms.core.nets import adam, mlp
from algorithms.core.online import EnvStepper
from algorithms.core.registry import register
from algorithms.core.replay import ReplayBuffer
from algorithms.core.sac import CriticTerm, Explorer, SACConfig, SACCore


@dataclass
class H2OConfig(SACConfig):  # batch 256, lrs 3e-4, gamma 0.99, tau 5e-3, 2x256, target entropy -|A|: H2O's values
    backup_entropy: bool = False  # H2O: no entropy term in the TD target
    real_fraction: float = 0.5  # share of real transitions in each SAC batch (H2O: 128 real + 128 sim)
    discriminator_lr: float = 3e-4  # Adam learning rate of D_sa and D_sas
    discriminator_hidden: tuple[int, ...] = (256, 256)  # hidden widths of both discriminators
    discriminator_batch: int = 256  # real and sim transitions (each) of a discriminator step
    discriminator_noise: float = 0.1  # std of the Gaussian noise on s, a, s' of the discriminators' inputs
    ratio_min: float = 1e-5  # lower clip of the dynamics ratio w
    ratio_max: float = 1.0  # upper clip of the dynamics ratio w
    gap_samples: int = 10  # perturbed next states per sim sample in the gap estimate u
    gap_noise_ratio: float = 1.0  # their noise std, in units of `gap_noise_std` (H2O's s_prime_std_ratio)
    gap_noise_padding: float = 10.0  # that std is over the real states and this many x N zero rows (H2O's buffer)
    gap_min: float = 1e-45  # lower clip of the gap estimate u
    gap_max: float = 10.0  # upper clip of the gap estimate u
    penalty_weight: float = 0.01  # beta, the weight of the dynamics-gap penalty (H2O's cql_min_q_weight)
    penalty_temperature: float = 1.0  # temperature of the penalty's logsumexp
    penalty_clip: float = 1000.0  # the penalty's difference is clipped to +-penalty_clip
    use_ratio: bool = True  # weight the sim TD errors by w (False: weight 1, the naive mix)
    use_penalty: bool = True  # add the dynamics-gap penalty (False: none, the naive mix)
    sim_buffer_ratio: float = 10.0  # the sim FIFO holds this many times the real dataset's size
    initial_sim_steps: int = 1000  # sim steps collected before the first gradient step

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 < self.real_fraction < 1.0, "real_fraction must be in (0, 1)")
        require(self.discriminator_lr > 0 and self.discriminator_batch > 0, "discriminator lr and batch must be > 0")
        require(self.discriminator_noise >= 0 and self.gap_noise_ratio >= 0, "noise stds must be >= 0")
        require(self.gap_noise_padding >= 0, "gap_noise_padding must be >= 0")
        require(0.0 < self.ratio_min <= self.ratio_max, "need 0 < ratio_min <= ratio_max")
        require(0.0 < self.gap_min <= self.gap_max, "need 0 < gap_min <= gap_max")
        require(self.gap_samples >= 1, "gap_samples must be >= 1")
        require(self.penalty_weight >= 0 and self.penalty_temperature > 0, "penalty weight >= 0, temperature > 0")
        require(self.sim_buffer_ratio > 0 and self.initial_sim_steps >= 1, "sim buffer and initial steps must be > 0")


class Discriminator(nn.Module):
    """MLP -> 2 tanh(.): two bounded logits, class 0 = real, class 1 = sim (H2O `Network/Weight_net.py`)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp(in_dim, 2, hidden)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.tanh(self.net(torch.cat(inputs, dim=-1)))


def class_log_probs(d_sa: nn.Module, d_sas: nn.Module, s: torch.Tensor, a: torch.Tensor, s2: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P_sa, log P_sas), each (B, 2): P_sa = softmax(D_sa(s,a)), P_sas = softmax(D_sas(s,a,s') + D_sa(s,a))."""
    sa_logits = d_sa(s, a)
    return F.log_softmax(sa_logits, dim=-1), F.log_softmax(d_sas(s, a, s2) + sa_logits, dim=-1)


def discriminator_losses(d_sa: nn.Module, d_sas: nn.Module, real: Batch, sim: Batch
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_Dsa, L_Dsas) = mean[-log P_real[0] - log P_sim[1]] of each classifier, on inputs as given."""
    log_sa_real, log_sas_real = class_log_probs(d_sa, d_sas, real.observations, real.actions, real.next_observations)
    log_sa_sim, log_sas_sim = class_log_probs(d_sa, d_sas, sim.observations, sim.actions, sim.next_observations)
    dsa = (-log_sa_real[:, 0] - log_sa_sim[:, 1]).mean()
    dsas = (-log_sas_real[:, 0] - log_sas_sim[:, 1]).mean()
    return dsa, dsas


def log_dynamics_ratio(log_sa: torch.Tensor, log_sas: torch.Tensor) -> torch.Tensor:
    """log w = log p_real(s'|s,a) / p_sim(s'|s,a) = log P_sas[0] - log P_sas[1] - log P_sa[0] + log P_sa[1]:
    the (s,a,s') classifier's odds of "real" with the (s,a) classifier's odds divided out (Bayes)."""
    return log_sas[:, 0] - log_sas[:, 1] - log_sa[:, 0] + log_sa[:, 1]


@torch.no_grad()
def dynamics_ratio(d_sa: nn.Module, d_sas: nn.Module, sim: Batch, low: float, high: float) -> torch.Tensor:
    """w(s, a, s') clipped to [low, high], per sim sample (B,): the importance weight of a sim TD error."""
    log_sa, log_sas = class_log_probs(d_sa, d_sas, sim.observations, sim.actions, sim.next_observations)
    return log_dynamics_ratio(log_sa, log_sas).exp().clamp(low, high)


@torch.no_grad()
def gap_estimate(d_sa: nn.Module, d_sas: nn.Module, sim: Batch, state_std: torch.Tensor, n: int, low: float,
                 high: float) -> torch.Tensor:
    """u(s, a) = clip(mean_j log(p_sim / p_real)(s'_j | s, a), low, high) with s'_j = s'_sim + N(0, diag(std)^2),
    j = 1..n (B,): a Monte-Carlo estimate of KL(p_sim || p_real) around the observed sim next state."""
    s = sim.observations.repeat_interleave(n, dim=0)
    a = sim.actions.repeat_interleave(n, dim=0)
    s2 = sim.next_observations.repeat_interleave(n, dim=0)
    s2 = s2 + torch.randn_like(s2) * state_std
    log_sa, log_sas = class_log_probs(d_sa, d_sas, s, a, s2)
    return (-log_dynamics_ratio(log_sa, log_sas)).reshape(-1, n).mean(dim=1).clamp(low, high)


def gap_noise_std(states: np.ndarray, padding: float, eps: float = 1e-3) -> np.ndarray:
    """Per-dimension std of the N states followed by padding x N zero rows, + eps: what t6-thu/H2O's perturbation
    std is (`MixedReplayBuffer.normalize_states` runs once, over the real data and the still-empty sim part).
    padding = 0 gives the states' own std (+ eps)."""
    x = states.astype(np.float64)
    total = len(x) * (1.0 + padding)
    mean = x.sum(axis=0) / total
    var = (((x - mean) ** 2).sum(axis=0) + padding * len(x) * mean**2) / total
    return (np.sqrt(var) + eps).astype(np.float32)


def gap_penalty(q_sim: torch.Tensor, q_real: torch.Tensor, u: torch.Tensor, temperature: float, clip: float
                ) -> torch.Tensor:
    """Per critic member (n,): clip(T logsumexp_sim((Q_i(s,a) + log omega) / T) - mean_real Q_i(s,a), +-clip),
    omega = u / sum(u). The logsumexp is over the sim samples (dim 1 of the (n, B_sim) Q): pairs with a large gap
    weigh most in the soft maximum that is pushed down."""
    log_omega = torch.log(u / u.sum())
    soft_max = torch.logsumexp((q_sim + log_omega) / temperature, dim=1) * temperature
    return (soft_max - q_real.mean(dim=1)).clamp(-clip, clip)


def critic_weights(n_real: int, w: torch.Tensor) -> torch.Tensor:
    """Per-sample weights of [real half, sim half] that make the core's batch-mean critic loss H2O's
    MSE_real(Q, y) + MSE_sim(sqrt(w) Q, sqrt(w) y): each half's mean, not the mean over the whole batch."""
    n = n_real + len(w)
    return torch.cat([torch.full((n_real,), n / n_real, device=w.device), w * (n / len(w))])


def noisy(batch: Batch, std: float) -> Batch:
    """s, a, s' + N(0, std^2) each: the discriminators' input noise (keeps them from overfitting)."""
    def jitter(x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x) * std

    return Batch(jitter(batch.observations), jitter(batch.actions), batch.rewards, jitter(batch.next_observations),
                 batch.dones)


def concat(a: Batch, b: Batch) -> Batch:
    return Batch(*(torch.cat([x, y]) for x, y in zip(
        (a.observations, a.actions, a.rewards, a.next_observations, a.dones),
        (b.observations, b.actions, b.rewards, b.next_observations, b.dones))))


@register("h2o", kinds=("sim-to-real",))
class H2O(Algorithm):
    Config = H2OConfig

    def __init__(self, config: H2OConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        data = ctx.require_dataset("h2o")
        self.real = DeviceSampler(data, self.device, ctx.seed)  # raw states: H2O normalizes nothing
        self.state_std = torch.as_tensor(gap_noise_std(data.observations, config.gap_noise_padding),
                                         device=self.device) * config.gap_noise_ratio
        self.stepper = EnvStepper.for_context(ctx, 1, "h2o")
        # FIFO of sim_buffer_ratio x the dataset, but never more rows than this run can collect
        capacity = min(int(config.sim_buffer_ratio * len(data)), ctx.total_updates + config.initial_sim_steps)
        self.sim = ReplayBuffer(max(capacity, config.batch_size), ctx.obs_dim, ctx.act_dim, self.device, ctx.seed + 1)
        self.sac = SACCore(ctx, config)
        self.explorer = Explorer(self.sac, ctx.action_space, self.device)
        hidden = config.discriminator_hidden
        self.d_sa = Discriminator(ctx.obs_dim + ctx.act_dim, hidden).to(self.device)
        self.d_sas = Discriminator(2 * ctx.obs_dim + ctx.act_dim, hidden).to(self.device)
        self.d_sa_optimizer = adam(self.d_sa.parameters(), lr=config.discriminator_lr)
        self.d_sas_optimizer = adam(self.d_sas.parameters(), lr=config.discriminator_lr)
        self.n_real = round(config.batch_size * config.real_fraction)
        self.n_sim = config.batch_size - self.n_real

    def simulate(self, steps: int) -> None:
        """Sim rollouts sample the current policy (H2O: `deterministic=False`), never uniform actions."""
        for _ in range(steps):
            t = self.stepper.step(self.explorer.sample)
            self.sim.add(t.obs, t.act, t.rew, t.next_obs, t.terminated)

    def discriminator_step(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        real = noisy(self.real.sample(cfg.discriminator_batch), cfg.discriminator_noise)
        sim = noisy(self.sim.sample(cfg.discriminator_batch), cfg.discriminator_noise)
        dsa, dsas = discriminator_losses(self.d_sa, self.d_sas, real, sim)
        self.d_sa_optimizer.zero_grad(set_to_none=True)
        self.d_sas_optimizer.zero_grad(set_to_none=True)
        (dsa + dsas).backward()  # D_sa gets both losses' gradients, as in H2O (module docstring)
        self.d_sa_optimizer.step()
        self.d_sas_optimizer.step()
        return {"d_sa_loss": dsa.detach(), "d_sas_loss": dsas.detach()}

    def update(self) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        self.step += 1
        self.simulate(cfg.initial_sim_steps if self.step == 1 else 1)
        metrics: dict[str, torch.Tensor | float] = dict(self.stepper.metrics())
        metrics |= self.discriminator_step()

        real, sim = self.real.sample(self.n_real), self.sim.sample(self.n_sim)
        w = (dynamics_ratio(self.d_sa, self.d_sas, sim, cfg.ratio_min, cfg.ratio_max) if cfg.use_ratio
             else torch.ones(self.n_sim, device=self.device))
        penalty = self.penalty_term(sim) if cfg.use_penalty else None
        metrics |= self.sac.step(concat(real, sim), critic_weights=critic_weights(self.n_real, w),
                                 critic_term=penalty)
        metrics["sim_ratio_mean"] = w.mean()
        return metrics

    def penalty_term(self, sim: Batch) -> CriticTerm:
        """beta * sum_i gap_penalty_i on the critics' Q over [real half, sim half], with u of this sim half."""
        cfg = self.config
        u = gap_estimate(self.d_sa, self.d_sas, sim, self.state_std, cfg.gap_samples, cfg.gap_min, cfg.gap_max)

        def term(q: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            diff = gap_penalty(q[:, self.n_real:], q[:, :self.n_real], u, cfg.penalty_temperature, cfg.penalty_clip)
            return cfg.penalty_weight * diff.sum(), {"gap_penalty": diff.detach().mean(), "u_mean": u.mean()}

        return term

    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        return self.sac.act(self.obs_tensor(obs), deterministic=True).cpu().numpy()


@dataclass
class NaiveMixConfig(H2OConfig):
    use_ratio: bool = False  # sim TD errors weigh as much as real ones
    use_penalty: bool = False  # no dynamics-gap penalty


@register("h2o_naive_mix", kinds=("sim-to-real",))
class NaiveMix(H2O):
    """The naive real + sim mix: H2O with the dynamics ratio fixed at 1 and no penalty (its defaults differ, nothing
    else), SAC on 128 real + 128 sim transitions. The baseline that shows what H2O's dynamics awareness adds."""

    Config = NaiveMixConfig
