"""Multi-objective PPO ("MOPPO", as PGMORL and C-MORL train their policies) and the pieces of C-MORL's Pareto archive:
the core `c_morl` and its linear-scalarization baseline `ls_ppo` share. After C-MORL's official code
(RuohLiuq/C-MORL@67473b5), cited as file:line with
  PPO = externals/pytorch-a2c-ppo-acktr-gail/a2c_ppo_acktr/algo/ppo.py, STORAGE = .../a2c_ppo_acktr/storage.py,
  MODEL = .../a2c_ppo_acktr/model.py, ENVS = .../a2c_ppo_acktr/envs.py,
  VECNORM = externals/baselines/baselines/common/vec_env/vec_normalize.py, RMS = .../common/running_mean_std.py,
  and morl/{mopg,morl,ep,utils,run,arguments}.py.

The learner (`MOPPO`): one policy with its optimizer and normalizers (C-MORL's `Sample`: actor_critic, agent and
env_params, morl/sample.py), trained for a preference weight w.
- Nets (MODEL:89-176): actor s -> tanh 64 -> tanh 64 -> mean, a state-independent log-std (zeros at start); critic
  s -> tanh 64 -> tanh 64 -> one value per objective. Orthogonal init, gains 1 (hidden, critic output) and 0.01
  (actor output), zero biases (MOMLPBase forces layernorm=True, which means exactly this init, MODEL:181-182).
- Normalization (VECNORM:29-61, RMS): observations (s - mean) / sqrt(var + 1e-8) clipped to +-10, the running
  statistics updated with every batch of observations the training envs return (`--ob-rms`); each objective's reward
  divided by sqrt(var + 1e-8) of that objective's running discounted return (gamma of the learner), clipped to +-10
  (`--obj-rms`). Statistics with baselines' parallel update (count starts at 1e-4, population variance).
- Advantages: per-objective GAE on the normalized rewards and the vector critic (STORAGE:84-94), then de-normalized
  by sqrt(obj var + 1e-8) per objective and scalarized: A = w . (A_vec * sqrt(var)) (PPO:51-59); the scalar
  advantage is normalized over the whole rollout with eps 1e-5 (PPO:61-62).
- Loss per minibatch (PPO:86-110): PPO-clip on A, clipped value loss on the normalized vector returns (clip 0.2,
  mean over samples and objectives), L = L_pg + 0.5 L_V - 0 * entropy, one Adam (eps 1e-5) over actor and critic,
  gradient norm clipped to 0.5.
- C-MORL's constrained update (`ipo_update`, PPO:401-486): the same loss with A the advantage of objective j alone
  (one-hot w), plus the log barrier of `barrier_term`.

Rollouts (`MOEnvs`): n training environments of one `ctx.make_envs(n)` vector env (SAME_STEP autoreset, vector
rewards), driven by an `EnvStepper`; episodes continue across iterations (STORAGE:71-75). Evaluation
(`evaluate_objectives`, morl/mopg.py:30-65): deterministic mean actions, the mean discounted vector return of a few
seeded episodes on a `ctx.make_envs(1)` env, so its steps are counted too.

The archive (`ParetoArchive`, morl/ep.py): non-dominated points at or above the reference point (utils.py:32-40),
pruned to a capacity by crowding distance (ep.py:47-56, boundary points infinite), and `select`: the points of
largest crowding distance not selected before (ep.py:84-99).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext
from algorithms.core.errors import CtrlbenchError
from algorithms.core.nets import mlp
from algorithms.core.normalization import RunningMeanStd
from algorithms.core.online import EnvStepper
from algorithms.core.ppo import (
    MinibatchMeans,
    approx_kl,
    clip_fraction,
    clipped_surrogate,
    explained_variance,
    gae,
    minibatches,
    normalize_advantages,
    value_loss,
)
from algorithms.core.seeding import derive_seed
from algorithms.core.threads import torch_threads

OBS_CLIP = REWARD_CLIP = 10.0  # VecNormalize's clipob, cliprew (VECNORM:10)
RMS_EPS = 1e-8  # VecNormalize's epsilon (VECNORM:10)
ADV_EPS = 1e-5  # the advantage normalization's eps (PPO:61-62)
BARRIER_CAP = -0.001  # epsilon - cost is clamped to at most this before the log (PPO:448)


@dataclass
class MOPPOConfig:
    """The MOPPO fields c_morl and ls_ppo share (C-MORL's values: morl/run.py:56-69 over morl/arguments.py)."""

    n_envs: int = 8  # training environments per policy (run.py:63 --num-processes 8)
    n_steps: int = 512  # steps per environment per PPO iteration (run.py:62 --num-steps 512)
    lr: float = 3e-4  # Adam learning rate (eps 1e-5), decayed linearly to 0 over each policy's scalarized training
    lr_decay: bool = True  # linear learning-rate decay (run.py:57 --use-linear-lr-decay)
    gamma: float = 0.995  # discount of training and of the objective-return normalizer (arguments.py:164)
    gae_lambda: float = 0.95  # GAE lambda (run.py:58-59 --use-gae --gae-lambda 0.95)
    update_epochs: int = 10  # passes over the rollout per iteration (--ppo-epoch 10)
    num_minibatches: int = 32  # minibatches per pass (--num-mini-batch 32)
    clip: float = 0.2  # PPO ratio clip, also the value-loss clip (--clip-param 0.2)
    vf_coef: float = 0.5  # weight of the value loss (--value-loss-coef 0.5)
    entropy_coef: float = 0.0  # weight of the entropy bonus (--entropy-coef 0)
    max_grad_norm: float = 0.5  # gradient-norm clip over actor and critic (--max-grad-norm 0.5)
    hidden: tuple[int, ...] = (64, 64)  # widths of the tanh actor and critic MLPs (MODEL:89-176)
    ob_rms: bool = True  # running mean/std normalization of observations (--ob-rms)
    obj_rms: bool = True  # divide each objective's reward by the running std of its discounted return (--obj-rms)
    # the simplex grid of training weights, morl/utils.py:68-79 (3 objectives: 0.2, 0.8, 0.3 in scripts/hopper-3d.py)
    min_weight: float = 0.0  # smallest weight of a grid component (--min-weight)
    max_weight: float = 1.0  # largest weight of a grid component (--max-weight)
    delta_weight: float = 0.2  # grid step (--delta-weight 0.2: 6 weights for 2 objectives)

    def __post_init__(self) -> None:
        require(self.n_envs > 0 and self.n_steps > 0, "n_envs and n_steps must be positive")
        require(self.update_epochs > 0 and self.num_minibatches > 0, "update_epochs and num_minibatches must be > 0")
        require(self.num_minibatches <= self.n_envs * self.n_steps, "num_minibatches must be <= n_envs * n_steps")
        require(self.lr > 0, "lr must be positive")
        require(0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0, "gamma and gae_lambda must be in [0, 1]")
        require(self.clip > 0 and self.max_grad_norm > 0, "clip and max_grad_norm must be positive")
        require(len(self.hidden) > 0 and min(self.hidden) > 0, "hidden needs at least one positive width")
        require(0.0 <= self.min_weight <= self.max_weight <= 1.0 and self.delta_weight > 0,
                "need 0 <= min_weight <= max_weight <= 1 and delta_weight > 0")


# --- weights ----------------------------------------------------------------------------------------------------------


def simplex_grid(dim: int, min_weight: float, max_weight: float, delta: float) -> np.ndarray:
    """The training weights (n, dim) of morl/utils.py:68-79 (`generate_weights_batch_dfs`): the first dim - 1
    components step from min_weight by delta while <= max_weight (+ delta / 2) and their sum stays < 1 + delta / 2;
    the last is 1 minus their sum (it may fall outside [min, max], as the reference's; rounded to 1e-9 here)."""
    out: list[list[float]] = []

    def walk(prefix: list[float]) -> None:
        if len(prefix) == dim - 1:
            out.append([*prefix, 1.0 - sum(prefix)])
            return
        w = min_weight
        while w < max_weight + 0.5 * delta and sum(prefix) + w < 1.0 + 0.5 * delta:
            walk([*prefix, w])
            w += delta

    walk([])
    grid = np.round(np.asarray(out, dtype=np.float64), 9)
    if len(grid) == 0:
        raise CtrlbenchError(f"the weight grid ({min_weight}, {max_weight}, step {delta}) is empty for {dim} "
                             "objectives; widen it")
    return grid


# --- normalization ----------------------------------------------------------------------------------------------------


# --- the learner ------------------------------------------------------------------------------------------------------


class MOActorCritic(nn.Module):
    """Gaussian policy with a state-independent log-std, and a vector critic (MODEL:89-176)."""

    def __init__(self, obs_dim: int, act_dim: int, reward_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.actor = mlp(obs_dim, act_dim, hidden, activation=nn.Tanh)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.critic = mlp(obs_dim, reward_dim, hidden, activation=nn.Tanh)
        with torch_threads(1):  # orthogonal_'s QR of 64-wide matrices: tens of ms with threads on busy cores
            for net, last_gain in ((self.actor, 0.01), (self.critic, 1.0)):
                linears = [m for m in net if isinstance(m, nn.Linear)]
                for i, layer in enumerate(linears):
                    nn.init.orthogonal_(layer.weight, last_gain if i == len(linears) - 1 else 1.0)
                    nn.init.zeros_(layer.bias)

    def log_prob(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log pi(a|s) summed over action dimensions (B,), entropy (B,))."""
        dist = torch.distributions.Normal(self.actor(states), self.log_std.exp())
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)


class MOPPO:
    """One policy of the population: nets, optimizer, normalizers, its training weight and its own iteration count
    (C-MORL's `Sample`). `clone()` is a deep copy: a child continues from the parent's optimizer state too."""

    def __init__(self, cfg: MOPPOConfig, obs_dim: int, act_dim: int, reward_dim: int, weight: np.ndarray,
                 device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.net = MOActorCritic(obs_dim, act_dim, reward_dim, cfg.hidden).to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, eps=1e-5)
        self.ob_rms = RunningMeanStd((obs_dim,), eps=RMS_EPS)
        self.obj_rms = RunningMeanStd((reward_dim,), eps=RMS_EPS)
        self.weight = np.asarray(weight, np.float64)
        self.iterations = 0  # PPO iterations trained

    def clone(self) -> MOPPO:
        return copy.deepcopy(self)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def normalize(self, obs: np.ndarray) -> torch.Tensor:
        """Raw observations -> the network's input (clipped, normalized), float32 on the device."""
        obs = np.asarray(obs, np.float64)
        if self.cfg.ob_rms:
            obs = np.clip((obs - self.ob_rms.mean) / self.ob_rms.std, -OBS_CLIP, OBS_CLIP)
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def mean_action(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic (mean) action of raw observations (B, act_dim), unclipped."""
        return self.net.actor(self.normalize(obs)).cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ob_rms": self.ob_rms.state_dict(), "obj_rms": self.obj_rms.state_dict(),
                "weight": self.weight.copy(), "iterations": self.iterations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))  # torch would share its tensors
        self.ob_rms.load_state_dict(state["ob_rms"])
        self.obj_rms.load_state_dict(state["obj_rms"])
        self.weight = np.asarray(state["weight"], np.float64).copy()
        self.iterations = int(state["iterations"])


def training_weights(cfg: MOPPOConfig, ctx: AlgoContext, name: str) -> np.ndarray:
    """The task's simplex grid of training weights (cfg's min_weight, max_weight, delta_weight), one policy each; a
    task with a scalar reward is refused in one line."""
    if ctx.reward_dim < 2:
        raise CtrlbenchError(f"{name} needs a multi-objective task (a vector reward)")
    return simplex_grid(ctx.reward_dim, cfg.min_weight, cfg.max_weight, cfg.delta_weight)


def new_learner(cfg: MOPPOConfig, ctx: AlgoContext, weight: np.ndarray) -> MOPPO:
    return MOPPO(cfg, ctx.obs_dim, ctx.act_dim, ctx.reward_dim, weight, ctx.device)


def linear_lr(lr: float, iteration: int, total: int) -> float:
    """The learning rate of a policy's iteration `iteration` (0-based) of `total`: lr (1 - iteration / total)
    (a2c_ppo_acktr/utils.py:46-50, called at the start of each iteration, morl/mopg.py:117-121)."""
    return lr * (1.0 - iteration / max(1, total))


# --- rollouts ---------------------------------------------------------------------------------------------------------


@dataclass
class MORollout:
    """T steps in each of N environments; observations normalized as the policy saw them."""

    obs: torch.Tensor  # (T, N, obs_dim)
    actions: torch.Tensor  # (T, N, act_dim) the sampled (unclipped) actions
    log_probs: torch.Tensor  # (T, N)
    rewards: torch.Tensor  # (T, N, d) normalized by the objective-return std (when obj_rms)
    next_obs: torch.Tensor  # (T, N, obs_dim) the true next states, normalized
    terminated: torch.Tensor  # (T, N)
    dones: torch.Tensor  # (T, N)
    raw_rewards: np.ndarray  # (T, N, d)
    env_steps: int


class MOEnvs:
    """n training environments (`ctx.make_envs(n)`, vector rewards) for one learner at a time, with the running
    discounted return of each objective per environment that the objective normalizer tracks (VECNORM:32-51)."""

    def __init__(self, ctx: AlgoContext, n: int, seed: int, algo: str) -> None:
        if ctx.make_envs is None:
            raise CtrlbenchError(f"{algo} trains online and the task provides no training environments")
        self.stepper = EnvStepper(ctx.make_envs(n), seed)
        if not self.stepper.same_step:
            raise CtrlbenchError(f"{algo} needs training environments built with autoreset_mode=SAME_STEP")
        self.n, self.reward_dim = n, ctx.reward_dim
        self.low, self.high = ctx.action_space.low, ctx.action_space.high
        self.discounted = np.zeros((n, ctx.reward_dim))  # per env and objective, since its episode began

    def restart(self) -> None:
        """Start fresh episodes at the next step (a new learner takes over these environments)."""
        self.stepper.obs = None
        self.discounted[:] = 0.0

    @torch.no_grad()
    def collect(self, learner: MOPPO, n_steps: int, generator: torch.Generator) -> MORollout:
        with torch_threads(1):  # batches of n_envs states: one thread is fastest and never spins on busy cores
            return self._collect(learner, n_steps, generator)

    def _collect(self, learner: MOPPO, n_steps: int, generator: torch.Generator) -> MORollout:
        cfg, net = learner.cfg, learner.net
        obs, acts, logps, rews, raws, nexts, terms, dones = [], [], [], [], [], [], [], []
        start = self.stepper.env_steps
        for _ in range(n_steps):
            fresh = self.stepper.obs is None
            current = self.stepper.current_obs()
            if fresh and cfg.ob_rms:  # a reset's observations update the statistics (VECNORM:63-66)
                learner.ob_rms.update(current)
            state = learner.normalize(current)
            mean = net.actor(state)
            noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            action = mean + net.log_std.exp() * noise
            log_p = torch.distributions.Normal(mean, net.log_std.exp()).log_prob(action).sum(-1)
            env_action = np.clip(action.cpu().numpy(), self.low, self.high)
            tr = self.stepper.step(lambda _obs, a=env_action: a)
            done = self.stepper.last_done
            assert len(tr.rew) == self.n  # SAME_STEP autoreset: every env steps every call
            raw = np.asarray(tr.rew, np.float64).reshape(self.n, self.reward_dim)
            if cfg.ob_rms:  # what the vector env returned: the next states, a reset's where an episode ended
                learner.ob_rms.update(self.stepper.obs)
            scaled = raw
            self.discounted = self.discounted * cfg.gamma + raw
            if cfg.obj_rms:
                learner.obj_rms.update(self.discounted)
                scaled = np.clip(raw / learner.obj_rms.std, -REWARD_CLIP, REWARD_CLIP)
            self.discounted[done] = 0.0
            obs.append(state)
            acts.append(action)
            logps.append(log_p)
            rews.append(scaled)
            raws.append(raw)
            nexts.append(learner.normalize(tr.next_obs))
            terms.append(tr.terminated)
            dones.append(done.astype(np.float32))
        device = learner.device

        def t(rows: list[np.ndarray]) -> torch.Tensor:
            return torch.as_tensor(np.stack(rows), dtype=torch.float32, device=device)

        return MORollout(torch.stack(obs), torch.stack(acts), torch.stack(logps), t(rews), torch.stack(nexts),
                         t(terms), t(dones), np.stack(raws), self.stepper.env_steps - start)

    def metrics(self) -> dict[str, float]:
        return self.stepper.metrics()

    def state_dict(self) -> dict[str, Any]:
        return {"stepper": self.stepper.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The statistics; episodes restart (EnvStepper's docstring)."""
        self.stepper.load_state_dict(state["stepper"])
        self.restart()

    def close(self) -> None:
        self.stepper.close()


# --- advantages and losses --------------------------------------------------------------------------------------------


class EnvPool:
    """The MOEnvs of each key (a policy, a stage) of one algorithm, built on first use and seeded by key; a checkpoint
    keeps their statistics, also those of keys restored but not built again yet."""

    def __init__(self, ctx: AlgoContext, n_envs: int, algo: str) -> None:
        self.ctx, self.n_envs, self.algo = ctx, n_envs, algo
        self.built: dict[int, MOEnvs] = {}
        self.restored: dict[int, dict[str, Any]] = {}

    def __call__(self, key: int) -> MOEnvs:
        if key not in self.built:
            envs = MOEnvs(self.ctx, self.n_envs, derive_seed(self.ctx.seed, 2, key + 1), self.algo)
            if key in self.restored:
                envs.load_state_dict(self.restored.pop(key))
            self.built[key] = envs
        return self.built[key]

    def close(self, keep: tuple[int, ...] = ()) -> None:
        """Close (and forget) the environments of every key but `keep`."""
        for key in [k for k in self.built if k not in keep]:
            self.built.pop(key).close()
        self.restored = {k: v for k, v in self.restored.items() if k in keep}

    def state_dict(self) -> dict[int, dict[str, Any]]:
        return {**self.restored, **{k: e.state_dict() for k, e in self.built.items()}}

    def load_state_dict(self, state: dict[int, dict[str, Any]]) -> None:
        self.close()
        self.restored = dict(state)


def mo_gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
           dones: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE per objective: rewards, values, next_values (T, N, d); terminated, dones (T, N). Core `gae` on each
    objective (the episode flags shared), so a truncated episode is bootstrapped from its true last state's values.
    Returns (advantages, returns), (T, N, d)."""
    return gae(rewards, values, next_values, terminated[..., None], dones[..., None], gamma, lam)


def scalarized_advantages(advantages: torch.Tensor, obj_std: np.ndarray, weight: np.ndarray) -> torch.Tensor:
    """w . (A_vec * sqrt(obj var + 1e-8)): the vector advantages back on the raw reward scale, scalarized
    (PPO:51-59, PPO:406-411), then normalized over the whole rollout with eps 1e-5 (PPO:61-62, PPO:413-414).
    advantages (..., d) -> (...)."""
    scale = torch.as_tensor(np.asarray(obj_std, np.float64) * np.asarray(weight, np.float64),
                            dtype=advantages.dtype, device=advantages.device)
    scalar = (advantages * scale).sum(-1)
    return normalize_advantages(scalar, eps=ADV_EPS)


def barrier_term(ratio: torch.Tensor, returns: torch.Tensor, objective: int, beta: float, t: float,
                 clip: float) -> torch.Tensor:
    """C-MORL's log barrier (PPO:445-452), on a minibatch: with R the minibatch's mean (normalized) return per
    objective (d,) and r the ratios (B,),

        cost_bi = clip(r_b, 1 - eps, 1 + eps) R_i,   hat_bi = min(beta R_i - cost_bi, -0.001),
        term    = -(1/t) mean_{b, i != objective} log(-hat_bi).

    While clip(r) R_i > beta R_i + 0.001 it is -(1/t) log(clip(r) R_i - beta R_i); where the constraint is violated
    (or R_i <= 0) the clamp makes it the constant -(1/t) log(0.001), without gradient."""
    mean_return = returns.mean(0)  # (d,)
    cost = torch.clamp(ratio, 1.0 - clip, 1.0 + clip)[:, None] * mean_return
    hat = torch.clamp(beta * mean_return - cost, max=BARRIER_CAP)
    keep = [i for i in range(returns.shape[-1]) if i != objective]
    return -torch.log(-hat[:, keep]).mean() / t


@dataclass
class Constraint:
    """C-MORL's constrained update of one objective: maximize `objective`, keep the others >= beta x current."""

    objective: int
    beta: float = 0.9  # constraint relaxation (arguments.py:125-128)
    t: float = 20.0  # log-barrier coefficient (arguments.py:129-132)


def ppo_iteration(learner: MOPPO, rollout: MORollout, generator: torch.Generator,
                  constraint: Constraint | None = None) -> dict[str, float]:
    """One PPO iteration of `learner` on `rollout`: per-objective GAE, the scalarized advantages (the learner's weight,
    or the one-hot of the constrained objective), `update_epochs` passes of `num_minibatches` minibatches. With a
    constraint, the policy loss adds `barrier_term` (PPO:401-486); without, it is PPO:46-122. On the CPU in one
    thread: minibatches of ~128 through 64-wide MLPs gain nothing from more, and spin on busy cores."""
    if learner.device.type == "cpu":
        with torch_threads(1):
            return _ppo_iteration(learner, rollout, generator, constraint)
    return _ppo_iteration(learner, rollout, generator, constraint)


def _ppo_iteration(learner: MOPPO, rollout: MORollout, generator: torch.Generator,
                   constraint: Constraint | None) -> dict[str, float]:
    cfg, net = learner.cfg, learner.net
    with torch.no_grad():
        values = net.critic(rollout.obs)
        next_values = net.critic(rollout.next_obs)
    advantages, returns = mo_gae(rollout.rewards, values, next_values, rollout.terminated, rollout.dones,
                                 cfg.gamma, cfg.gae_lambda)
    obj_std = learner.obj_rms.std if cfg.obj_rms else np.ones(values.shape[-1])
    weight = learner.weight
    if constraint is not None:
        weight = np.eye(values.shape[-1])[constraint.objective]
    flat = rollout.obs.shape[0] * rollout.obs.shape[1]
    states = rollout.obs.reshape(flat, -1)
    actions = rollout.actions.reshape(flat, -1)
    old_log_p = rollout.log_probs.reshape(flat)
    old_values = values.reshape(flat, -1)
    targets = returns.reshape(flat, -1)
    adv = scalarized_advantages(advantages.reshape(flat, -1), obj_std, weight)

    stats = MinibatchMeans()
    params = list(net.parameters())
    for b in minibatches(flat, flat // cfg.num_minibatches, cfg.update_epochs, generator):
        log_p, entropy = net.log_prob(states[b], actions[b])
        log_ratio = log_p - old_log_p[b]
        ratio = log_ratio.exp()
        pg_loss = clipped_surrogate(ratio, adv[b], cfg.clip)
        v_loss = value_loss(net.critic(states[b]), targets[b], old_values[b], cfg.clip)
        ent = entropy.mean()
        loss = pg_loss + cfg.vf_coef * v_loss - cfg.entropy_coef * ent
        extra: dict[str, torch.Tensor] = {}
        if constraint is not None:
            barrier = barrier_term(ratio, targets[b], constraint.objective, constraint.beta, constraint.t, cfg.clip)
            loss = loss + barrier
            extra["barrier"] = barrier.detach()
        learner.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        learner.optimizer.step()
        stats.add(pg_loss=pg_loss, value_loss=v_loss, entropy=ent, approx_kl=approx_kl(log_ratio),
                  clip_fraction=clip_fraction(ratio, cfg.clip), **extra)
    learner.iterations += 1
    out = stats.means()
    ev = explained_variance(old_values, targets)
    if math.isfinite(ev):
        out["explained_variance"] = ev
    out["std"] = float(net.log_std.detach().exp().mean())
    out["lr"] = learner.lr
    out["rollout_env_steps"] = float(rollout.env_steps)
    for j, r in enumerate(rollout.raw_rewards.mean(axis=(0, 1))):
        out[f"rollout_reward_{j}"] = float(r)
    return out


# --- evaluation -------------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_objectives(learner: MOPPO, envs: gym.vector.VectorEnv, seeds: list[int], gamma: float,
                        max_steps: int = 0) -> tuple[np.ndarray, int]:
    """The mean discounted vector return of deterministic (mean, clipped) actions over one episode per seed, on a
    one-environment SAME_STEP vector env (morl/mopg.py:30-65: the policy's own frozen observation statistics). An
    episode ends at its end, or after `max_steps` steps when > 0 (the reference's 500). Returns (objectives, env steps
    taken). `envs`: a `ctx.make_envs(1)`, reset with each seed."""
    low, high = envs.single_action_space.low, envs.single_action_space.high
    total = np.zeros(0)
    steps = 0
    with torch_threads(1):
        for seed in seeds:
            obs, _ = envs.reset(seed=seed)
            ret, discount, length = None, 1.0, 0
            while True:
                action = np.clip(learner.mean_action(obs), low, high).astype(envs.single_action_space.dtype)
                obs, rew, terminated, truncated, _ = envs.step(action)
                steps += 1
                length += 1
                r = np.asarray(rew, np.float64).reshape(-1)
                ret = discount * r if ret is None else ret + discount * r
                discount *= gamma
                if bool(terminated[0]) or bool(truncated[0]) or 0 < max_steps <= length:
                    break
            total = ret if total.size == 0 else total + ret
    return total / len(seeds), steps


# --- the Pareto archive -----------------------------------------------------------------------------------------------


def pareto_indices(points: np.ndarray, reference: np.ndarray) -> list[int]:
    """Indices of the points that no other point dominates (>= everywhere, > somewhere) and that are >= the
    reference point everywhere, sorted by the first objective (morl/utils.py:25-40). Duplicates are all kept."""
    points = np.asarray(points, np.float64)
    keep = []
    for i in np.argsort(points[:, 0], kind="stable"):
        p = points[i]
        dominated = np.any(np.all(points >= p, axis=1) & np.any(points > p, axis=1))
        if np.all(p >= reference) and not dominated:
            keep.append(int(i))
    return keep


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """Per point, the sum over objectives of the gap between its two neighbours along that objective divided by the
    objective's range; the smallest and largest point of each objective get infinity (morl/ep.py:62-82). An objective
    with a zero range adds 0 (the reference divides by zero there)."""
    points = np.asarray(points, np.float64)
    n, d = points.shape
    out = np.zeros(n)
    if n == 0:
        return out
    for j in range(d):
        order = np.argsort(points[:, j], kind="stable")
        v = points[order, j]
        span = v[-1] - v[0]
        dist = np.zeros(n)
        if n > 2 and span > 0:
            dist[1:-1] = (v[2:] - v[:-2]) / span
        dist[0] = dist[-1] = np.inf
        out[order] += dist
    return out


@dataclass
class Member:
    learner: MOPPO
    objs: np.ndarray  # the estimated vector return


class ParetoArchive:
    """C-MORL's external Pareto archive (morl/ep.py): policies with their estimated objectives."""

    def __init__(self, reference: np.ndarray, capacity: int = 200) -> None:
        self.reference = np.asarray(reference, np.float64)
        self.capacity = capacity
        self.members: list[Member] = []
        self.history: list[tuple[float, ...]] = []  # objective vectors selected before (ep.py:17-18)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def points(self) -> np.ndarray:
        return np.asarray([m.objs for m in self.members], np.float64).reshape(len(self.members), -1)

    def update(self, new: list[Member]) -> None:
        """Add `new`, keep the non-dominated points at or above the reference, and prune to the capacity by largest
        crowding distance (ep.py:39-57)."""
        members = self.members + list(new)
        if not members:
            return
        points = np.asarray([m.objs for m in members], np.float64)
        members = [members[i] for i in pareto_indices(points, self.reference)]
        if len(members) > self.capacity:
            crowd = crowding_distance(np.asarray([m.objs for m in members]))
            order = np.argsort(-crowd, kind="stable")[:self.capacity]
            members = [members[i] for i in order]
        self.members = members

    def select(self, k: int) -> list[Member]:
        """The k members of largest crowding distance whose objective vectors were not selected before; they join the
        history (ep.py:84-99)."""
        crowd = crowding_distance(self.points)
        chosen: list[Member] = []
        for i in np.argsort(-crowd, kind="stable"):
            key = tuple(float(x) for x in self.members[i].objs)
            if len(chosen) < k and key not in self.history:
                chosen.append(self.members[i])
                self.history.append(key)
        return chosen

    def best(self, weight: np.ndarray) -> Member:
        """The member whose estimated return maximizes w . R."""
        return self.members[int(np.argmax(self.points @ np.asarray(weight, np.float64)))]

    def state_dict(self) -> dict[str, Any]:
        return {"members": [{"learner": m.learner.state_dict(), "objs": m.objs.copy()} for m in self.members],
                "history": list(self.history), "reference": self.reference.copy(), "capacity": self.capacity}

    def load_state_dict(self, state: dict[str, Any], make: Any) -> None:
        """`make()` -> a fresh MOPPO to load each member's state into."""
        self.members = []
        for m in state["members"]:
            learner = make()
            learner.load_state_dict(m["learner"])
            self.members.append(Member(learner, np.asarray(m["objs"], np.float64).copy()))
        self.history = [tuple(h) for h in state["history"]]
        self.reference = np.asarray(state["reference"], np.float64).copy()
        self.capacity = int(state["capacity"])
