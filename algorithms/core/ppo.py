"""PPO fine-tuning of a pretrained policy in vectorized environments: the pieces DPPO, its Gaussian-PPO baseline and
(later) C-MORL compose. After DPPO's official code (irom-princeton/dppo@cc7234a, cited as file:line).

Pretraining data (a fine-tuned policy is first cloned from the task's dataset):
- `MinMaxScaler`: x -> 2 (x - min) / (max - min + 1e-6) - 1 per dimension, fitted on the whole dataset; the same
  constants scale the environment's states and unscale the policy's actions at fine-tuning
  (script/dataset/get_d4rl_dataset.py:38-41,94-102, env/gym_utils/wrapper/mujoco_locomotion_lowdim.py:57-62).
- `ActionChunks`: samples (s_t, a_{t:t+H}) whose chunk lies inside one episode (agent/dataset/sequence.py:118-131);
  episodes with a return <= 0 can be dropped (get_d4rl_dataset.py:92).
- `EMA`, `warmup_cosine_lr`: the pretraining EMA and learning-rate schedule (agent/pretrain/train_agent.py).

Rollouts:
- `ChunkEnvs`: n training environments that each execute a whole chunk of H actions per decision, summing its rewards,
  and stop the chunk early where the episode ends (env/gym_utils/wrapper/multi_step.py:135-192).
- `collect_rollout` -> `Rollout`: n_steps decisions in every environment, stored on the device.

Advantages and losses (agent/finetune/train_ppo_diffusion_agent.py:242-383, model/rl/gaussian_ppo.py:39-128):
- `RunningRewardScaler`: rewards divided by the running std of a discounted return (util/reward_scaling.py).
- `gae`: GAE(gamma, lambda) per environment over decision steps, a truncated episode bootstrapped from the value of
  its true last state, a terminated one not at all, and the recursion cut at every episode end;
  `estimate_advantages` runs the critic, the reward scaler and `gae` on a rollout.
- `normalize_advantages`, `clipped_surrogate`, `value_loss` (clipped or not), `approx_kl` (the k3 estimator),
  `clip_fraction`, `explained_variance`, and `minibatches`: the epochs of shuffled minibatches the caller leaves
  early (target KL) by breaking out of the loop; `MinibatchMeans` averages their metrics.

Why `ChunkEnvs` steps n one-environment vector envs and not one n-environment vector env: every environment of a
vector env steps together, so an environment whose episode ends inside a chunk would go on to execute the chunk's
remaining actions in its next episode. One `EnvStepper` (algorithms/core/online.py) per environment keeps what it
handles (SAME_STEP final observations, terminated vs truncated, episode statistics, reseeding on resume), and each
of its steps is still counted by the runner.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from algorithms.core.contract import AlgoContext
from algorithms.core.data import TransitionData
from algorithms.core.errors import CtrlbenchError
from algorithms.core.nets import Polyak
from algorithms.core.normalization import RunningMeanStd
from algorithms.core.online import EnvStepper
from algorithms.core.seeding import derive_seed
from algorithms.core.threads import torch_threads

# --- pretraining data -------------------------------------------------------------------------------------------------


class MinMaxScaler:
    """Per-dimension min-max scaling to [-1, 1] and back; `unscale` inverts `scale` exactly (same denominator)."""

    EPS = 1e-6  # in the denominator, as the reference's

    def __init__(self, low: np.ndarray, high: np.ndarray, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._set(low, high)

    @classmethod
    def fit(cls, x: np.ndarray, device: torch.device | str = "cpu") -> MinMaxScaler:
        x = np.asarray(x, dtype=np.float64)
        return cls(x.min(axis=0), x.max(axis=0), device)

    def _set(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low_np = np.asarray(low, dtype=np.float32)
        self.high_np = np.asarray(high, dtype=np.float32)
        self.low = torch.as_tensor(self.low_np, device=self.device)
        self.span = torch.as_tensor(self.high_np - self.low_np + self.EPS, device=self.device)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * (x - self.low) / self.span - 1.0

    def unscale(self, y: torch.Tensor) -> torch.Tensor:
        return (y + 1.0) / 2.0 * self.span + self.low

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"low": self.low_np.copy(), "high": self.high_np.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._set(state["low"], state["high"])


def episode_bounds(episode_ids: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of equal episode ids (the transitions of one episode, in time order)."""
    cuts = np.flatnonzero(np.diff(episode_ids) != 0) + 1
    starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(episode_ids)]])
    return list(zip(starts.tolist(), ends.tolist()))


class ActionChunks:
    """The pretraining samples of a dataset on the device: a scaled state s_t and the scaled chunk a_{t:t+H} (H, A),
    for every t whose chunk ends inside s_t's episode. `drop_nonpositive` drops episodes whose return is <= 0.
    Batches are drawn uniformly with replacement from the device generator (checkpointed)."""

    def __init__(self, data: TransitionData, horizon: int, obs_scaler: MinMaxScaler, act_scaler: MinMaxScaler,
                 device: torch.device | str, seed: int, drop_nonpositive: bool = True) -> None:
        self.device = torch.device(device)
        self.horizon = horizon
        starts: list[np.ndarray] = []
        self.episodes = 0
        for begin, end in episode_bounds(data.episode_ids):
            if drop_nonpositive and float(data.rewards[begin:end].sum()) <= 0:
                continue
            if end - begin >= horizon:
                starts.append(np.arange(begin, end - horizon + 1))
                self.episodes += 1
        if not starts:
            why = " with a positive return" if drop_nonpositive else ""
            hint = " (or set drop_nonpositive_episodes false for tasks whose returns are negative)" \
                if drop_nonpositive else ""
            raise CtrlbenchError(f"the dataset has no episode of at least {horizon} steps{why} to pretrain on{hint}")
        self.starts = torch.as_tensor(np.concatenate(starts), device=self.device)
        self.states = obs_scaler.scale(torch.as_tensor(data.observations, device=self.device))
        self.actions = act_scaler.scale(torch.as_tensor(data.actions, device=self.device))
        self.offsets = torch.arange(horizon, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return len(self.starts)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (B, obs_dim), chunks (B, H, A)), scaled."""
        i = torch.randint(len(self.starts), (batch_size,), device=self.device, generator=self.generator)
        start = self.starts[i]
        return self.states[start], self.actions[start[:, None] + self.offsets]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class EMA:
    """The pretraining EMA of `model` (agent/pretrain/train_agent.py:36-57,140-144): every `every` gradient steps
    (on the 1st, the `every`+1-th, ...), `average` <- `model` up to step `start`, then
    `average` <- decay * `average` + (1 - decay) * `model`."""

    def __init__(self, model: nn.Module, decay: float, every: int, start: int) -> None:
        self.model = model
        self.average = copy.deepcopy(model).requires_grad_(False)
        self.lerp = Polyak([(self.average, model)], tau=1.0 - decay)
        self.every, self.start = every, start

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After gradient step `step` (1-based)."""
        if (step - 1) % self.every != 0:
            return
        if step <= self.start:
            for a, p in zip(self.average.parameters(), self.model.parameters()):
                a.copy_(p)
        else:
            self.lerp()

    def state_dict(self) -> dict[str, Any]:
        return self.average.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average.load_state_dict(state)


def warmup_cosine_lr(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """The learning rate of gradient step `step` (0-based) of `total`: linear from min_lr to lr over `warmup` steps,
    then cosine from lr down to min_lr at `total` (util/scheduler.py's CosineAnnealingWarmupRestarts, one cycle,
    here per gradient step)."""
    if step < warmup:
        return min_lr + (lr - min_lr) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (lr - min_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --- rollouts ---------------------------------------------------------------------------------------------------------


class ChunkStep(NamedTuple):
    """One decision in each of the n environments."""

    rewards: np.ndarray  # (n,) the rewards of the executed actions, summed
    next_obs: np.ndarray  # (n, obs_dim) the true state after the chunk (the last state where the episode ended)
    terminated: np.ndarray  # (n,) 1.0 where the episode terminated inside the chunk (not for a time-limit truncation)
    dones: np.ndarray  # (n,) 1.0 where the episode ended inside the chunk (terminated or truncated)
    env_steps: np.ndarray  # (n,) actions executed: H, fewer where the episode ended first
    episode_returns: list[float]  # the returns of the episodes that ended in this decision


class ChunkEnvs:
    """n training environments, each a `ctx.make_envs(1)` driven by its own `EnvStepper` (seeded with
    derive_seed(ctx.seed, i)), executing one action chunk per decision. Checkpoints keep the episode statistics;
    the episodes themselves restart on resume (see `EnvStepper`)."""

    def __init__(self, ctx: AlgoContext, n: int, algo: str) -> None:
        if ctx.make_envs is None:
            raise CtrlbenchError(f"{algo} fine-tunes online and the task provides no training environments")
        self.steppers = [EnvStepper(ctx.make_envs(1), derive_seed(ctx.seed, i)) for i in range(n)]
        if not all(s.same_step for s in self.steppers):
            raise CtrlbenchError(f"{algo} needs training environments built with autoreset_mode=SAME_STEP")
        self.n = n

    def observations(self) -> np.ndarray:
        """The current state of each environment (n, obs_dim), starting the first episodes when none runs."""
        return np.concatenate([s.current_obs() for s in self.steppers])

    def step(self, chunks: np.ndarray) -> ChunkStep:
        """Execute chunks (n, H, act_dim) of raw actions: environment i runs chunks[i] until its end or the end of
        its episode."""
        obs = self.observations()
        rewards, next_obs = [], obs.copy()
        terminated, dones = np.zeros(self.n, np.float32), np.zeros(self.n, np.float32)
        steps, returns = np.zeros(self.n, np.int64), []
        for i, stepper in enumerate(self.steppers):
            total = 0.0
            for action in chunks[i]:
                finished = stepper.episodes
                tr = stepper.step(lambda _obs, a=action: a[None])
                total = total + tr.rew[0]
                steps[i] += 1
                next_obs[i] = tr.next_obs[0]
                if stepper.episodes > finished:  # the episode ended (terminated or truncated) on this action
                    terminated[i], dones[i] = tr.terminated[0], 1.0
                    returns.append(stepper.recent[-1][0])
                    break
            rewards.append(total)
        return ChunkStep(np.asarray(rewards, np.float32), next_obs, terminated, dones, steps, returns)

    @property
    def env_steps(self) -> int:
        return sum(s.env_steps for s in self.steppers)

    def metrics(self) -> dict[str, float]:
        """Mean return and length of the last (up to 10) finished episodes of each environment, and their count."""
        recent = [e for s in self.steppers for e in s.recent]
        if not recent:
            return {}
        return {"train_episode_return": float(np.mean([r for r, _, _ in recent])),
                "train_episode_length": float(np.mean([n for _, _, n in recent])),
                "train_episodes": float(sum(s.episodes for s in self.steppers))}

    def state_dict(self) -> dict[str, Any]:
        return {"steppers": [s.state_dict() for s in self.steppers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for stepper, s in zip(self.steppers, state["steppers"]):
            stepper.load_state_dict(s)

    def close(self) -> None:
        for s in self.steppers:
            s.close()


@dataclass
class Rollout:
    """n_steps decisions (T) in each of n environments (N), on the device; states scaled."""

    obs: torch.Tensor  # (T, N, obs_dim)
    records: torch.Tensor  # (T, N, ...) what the policy kept of each decision (DPPO: the chain; Gaussian: the chunk)
    rewards: torch.Tensor  # (T, N) summed over each chunk, unscaled
    next_obs: torch.Tensor  # (T, N, obs_dim) the true next states
    terminated: torch.Tensor  # (T, N)
    dones: torch.Tensor  # (T, N)
    episode_returns: list[float]  # of the episodes that ended during the rollout
    env_steps: int  # actions executed
    policy_seconds: float = 0.0  # wall time in the policy (DPPO: the denoising chain)
    env_seconds: float = 0.0  # wall time in the simulator (stepping the chunks)

    @property
    def size(self) -> int:
        return self.rewards.numel()


def collect_rollout(envs: ChunkEnvs, n_steps: int, policy: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                    obs_scaler: MinMaxScaler, to_env: Callable[[torch.Tensor], np.ndarray]) -> Rollout:
    """`policy(scaled states (N, obs_dim))` -> (chunks (N, H, A) in the scaled action space, record to keep);
    `to_env(chunks)` -> the raw actions (N, H, A) the environments execute."""
    with torch_threads(1):  # batches of n_envs states: one thread is fastest, and never spins on busy cores
        return _collect_rollout(envs, n_steps, policy, obs_scaler, to_env)


def _collect_rollout(envs: ChunkEnvs, n_steps: int, policy: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                     obs_scaler: MinMaxScaler, to_env: Callable[[torch.Tensor], np.ndarray]) -> Rollout:
    device = obs_scaler.device
    obs, records, rewards, next_obs, terminated, dones = [], [], [], [], [], []
    returns, env_steps = [], 0
    policy_seconds = env_seconds = 0.0
    for _ in range(n_steps):
        t0 = time.perf_counter()
        state = obs_scaler.scale(torch.as_tensor(envs.observations(), device=device))
        chunk, record = policy(state)
        actions = to_env(chunk)
        t1 = time.perf_counter()
        step = envs.step(actions)
        t2 = time.perf_counter()
        policy_seconds += t1 - t0
        env_seconds += t2 - t1
        obs.append(state)
        records.append(record)
        rewards.append(step.rewards)
        next_obs.append(step.next_obs)
        terminated.append(step.terminated)
        dones.append(step.dones)
        returns += step.episode_returns
        env_steps += int(step.env_steps.sum())

    def tensor(rows: list[np.ndarray]) -> torch.Tensor:
        return torch.as_tensor(np.stack(rows), device=device)

    return Rollout(torch.stack(obs), torch.stack(records), tensor(rewards),
                   obs_scaler.scale(tensor(next_obs)), tensor(terminated), tensor(dones), returns, env_steps,
                   policy_seconds, env_seconds)


class RandomStream:
    """A torch.Generator on a device that checkpoints with the algorithm."""

    def __init__(self, device: torch.device | str, seed: int) -> None:
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


# --- advantages -------------------------------------------------------------------------------------------------------


class RunningRewardScaler:
    """r / sqrt(Var[R] + eps), clipped to +-clip, where R_t = r_t + gamma R_{t-1} is each environment's discounted
    return since its episode began, and Var[R] is tracked over every R seen (util/reward_scaling.py: the variance
    update and its M2 / (count - 1) are the reference's). Checkpoints keep the statistics, not the running returns:
    episodes restart on resume."""

    def __init__(self, n_envs: int, gamma: float = 0.99, clip: float = 10.0, eps: float = 1e-8) -> None:
        self.gamma, self.clip = gamma, clip
        self.ret = np.zeros(n_envs)
        self.stats = RunningMeanStd((), bessel=True, eps=eps)

    def __call__(self, rewards: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        """Scale rewards (T, N); dones[t] = 1 ends the episode after step t."""
        r, d = rewards.double().cpu().numpy(), dones.double().cpu().numpy()
        rets = np.zeros_like(r)
        for t in range(len(r)):
            rets[t] = self.ret = r[t] + self.gamma * self.ret
            self.ret = self.ret * (1.0 - d[t])
        self.stats.update(rets.reshape(-1))
        scaled = np.clip(r / self.stats.std, -self.clip, self.clip)
        return torch.as_tensor(scaled, dtype=rewards.dtype, device=rewards.device)

    def state_dict(self) -> dict[str, Any]:
        return self.stats.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state)
        self.ret[:] = 0.0


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        dones: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over (T, N) arrays; returns (advantages, returns = advantages + values).

        delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t)
        A_t     = delta_t + gamma lam (1 - done_t) A_{t+1},   A_T = 0

    V(s'_t) is the value of the true next state: of s_{t+1} inside an episode, of the episode's last state where it
    was truncated (so a time limit is bootstrapped), and dropped where it terminated. The reference treats a
    time-limit as a termination and bootstraps from the reset state's value otherwise."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * (1.0 - terminated[t]) * next_values[t] - values[t]
        advantages[t] = last = delta + gamma * lam * (1.0 - dones[t]) * last
    return advantages, advantages + values


@torch.no_grad()
def estimate_advantages(rollout: Rollout, critic: nn.Module, gamma: float, lam: float,
                        reward_scaler: RunningRewardScaler | None = None, batch: int = 10_000
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values, advantages, returns), each (T, N): the state-only critic V(s) on the rollout's states and true next
    states (in batches of `batch`), the rewards scaled when a scaler is given, then `gae`."""
    def v(states: torch.Tensor) -> torch.Tensor:
        flat = states.reshape(-1, states.shape[-1])
        return torch.cat([critic(part).reshape(-1) for part in flat.split(batch)]).view(states.shape[:-1])

    values, next_values = v(rollout.obs), v(rollout.next_obs)
    rewards = rollout.rewards if reward_scaler is None else reward_scaler(rollout.rewards, rollout.dones)
    advantages, returns = gae(rewards, values, next_values, rollout.terminated, rollout.dones, gamma, lam)
    return values, advantages, returns


# --- losses -----------------------------------------------------------------------------------------------------------


def normalize_advantages(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(A - mean A) / (std A + eps) over the minibatch (torch's unbiased std, as the reference)."""
    return (advantages - advantages.mean()) / (advantages.std() + eps)


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip: float | torch.Tensor) -> torch.Tensor:
    """PPO's policy loss mean(max(-A r, -A clip(r, 1 - eps, 1 + eps))); `clip` may be one eps per sample."""
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) if torch.is_tensor(clip) else ratio.clamp(1 - clip, 1 + clip)
    return torch.max(-advantages * ratio, -advantages * clipped).mean()


def value_loss(values: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor | None = None,
               clip: float | None = None) -> torch.Tensor:
    """1/2 mean (V - R)^2; with `clip`, 1/2 mean max((V - R)^2, (V_old + clip(V - V_old, +-clip) - R)^2)."""
    loss = (values - returns) ** 2
    if clip is not None:
        assert old_values is not None, "a clipped value loss needs the values of the rollout"
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.max(loss, (clipped - returns) ** 2)
    return 0.5 * loss.mean()


@torch.no_grad()
def approx_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """KL(old || new) estimated as mean((r - 1) - log r) (Schulman's k3)."""
    return (log_ratio.exp() - 1.0 - log_ratio).mean()


@torch.no_grad()
def clip_fraction(ratio: torch.Tensor, clip: float | torch.Tensor) -> torch.Tensor:
    return ((ratio - 1.0).abs() > clip).float().mean()


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - predicted] / Var[target]; NaN when the target is constant."""
    var = float(target.var(unbiased=False))
    return math.nan if var == 0 else 1.0 - float((target - predicted).var(unbiased=False)) / var


class MinibatchMeans:
    """The means of scalar metrics over an iteration's minibatches (one `add` per minibatch)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, **values: torch.Tensor | float) -> None:
        self.count += 1
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value.detach() if torch.is_tensor(value) else value)

    def means(self) -> dict[str, float]:
        return {key: total / self.count for key, total in self.sums.items()}


def optimizer_step(loss: torch.Tensor, actor_optimizer: torch.optim.Optimizer,
                   critic_optimizer: torch.optim.Optimizer, train_actor: bool) -> None:
    """One step of L = L_pg + vf_coef L_V: the critic always, the actor once the critic's warm-up is over."""
    actor_optimizer.zero_grad(set_to_none=True)
    critic_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if train_actor:
        actor_optimizer.step()
    critic_optimizer.step()


def iteration_metrics(iteration: int, stats: MinibatchMeans, rollout: Rollout, env_metrics: dict[str, float],
                      values: torch.Tensor, returns: torch.Tensor, **extra: float) -> dict[str, torch.Tensor | float]:
    """What a fine-tuning iteration reports: its losses' means, the rollout's episodes and where its time went
    (policy vs simulator; benchmarks/finetune_throughput.py reads them), the critic's explained variance (when
    defined)."""
    metrics: dict[str, torch.Tensor | float] = {
        "phase": 1.0, "finetune_iteration": float(iteration), "gradient_steps": float(stats.count),
        **stats.means(), **extra, "rollout_episodes": float(len(rollout.episode_returns)),
        "rollout_env_steps": float(rollout.env_steps), "rollout_policy_s": rollout.policy_seconds,
        "rollout_env_s": rollout.env_seconds, **env_metrics}
    if rollout.episode_returns:
        metrics["rollout_return"] = float(np.mean(rollout.episode_returns))
    ev = explained_variance(values, returns)
    if math.isfinite(ev):
        metrics["explained_variance"] = ev
    return metrics


def minibatches(n: int, batch_size: int, epochs: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices of `epochs` passes over n samples, each a fresh permutation cut into n // batch_size minibatches
    (at least one; the remainder is skipped, as the reference). Break out of the loop to stop early."""
    device = generator.device
    for _ in range(epochs):
        perm = torch.randperm(n, device=device, generator=generator)
        for b in range(max(1, n // batch_size)):
            yield perm[b * batch_size:(b + 1) * batch_size]
