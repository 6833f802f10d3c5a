"""Stepping training environments from inside `update()`: what every online or hybrid method shares.

`EnvStepper` owns the vector env of `ctx.make_envs(n)` and takes one vectorized step with a policy, returning
the `Transitions` to store: the action the policy chose (a wrapper may execute a noisy one, as H2O's joint noise
does: the clean action is what is stored), the true next state of an episode that just ended (not the reset state
the vector env already returns), `terminated` as the terminal flag (a time-limit truncation is not terminal), and
the step's cost from `info["cost"]` when the env reports one. It keeps running statistics of the finished training
episodes that an algorithm reports as metrics.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from algorithms.core.contract import AlgoContext
from algorithms.core.errors import CtrlbenchError
from algorithms.core.seeding import derive_seed
from algorithms.core.threads import torch_threads

Policy = Callable[[np.ndarray], np.ndarray]  # observations (n, obs_dim) -> actions (n, act_dim)


class Transitions(NamedTuple):
    """One vectorized step, one row per environment (fewer under NEXT_STEP autoreset: see `EnvStepper`)."""

    obs: np.ndarray  # (m, obs_dim) float32
    act: np.ndarray  # (m, act_dim) float32, the action the policy chose
    rew: np.ndarray  # (m,) or (m, k) float32
    next_obs: np.ndarray  # (m, obs_dim) float32, the true next state (final_obs where the episode ended)
    terminated: np.ndarray  # (m,) float32, 1.0 only for a true termination
    cost: np.ndarray  # (m,) float32, info["cost"] (zeros where the env reports none)


def _column(info: dict[str, Any], key: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A vector env's batched info entry and its mask (gymnasium puts `_key` beside `key`); zeros where absent."""
    if key not in info:
        return np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool)
    mask = np.asarray(info.get(f"_{key}", np.ones(n, dtype=bool)), dtype=bool)
    return np.where(mask, np.asarray(info[key], dtype=np.float32), 0.0).astype(np.float32), mask


class EnvStepper:
    """One vectorized training step at a time in the `n` environments of `envs`, with running episode statistics.

    Autoreset: the runner builds `SyncVectorEnv(..., autoreset_mode=SAME_STEP)`: on a step that ends an episode
    the returned observation is already the next episode's first one, and the true last observation is in
    `info["final_obs"]` (mask `info["_final_obs"]`), the step's info in `info["final_info"]`. gymnasium's default
    NEXT_STEP mode is handled too: there, the step after an episode's end only resets that env, and its row (a
    zero reward from the reset state to itself) is not returned. DISABLED is refused.

    Seeding: the first reset is seeded from `seed` (env i gets seed + i, gymnasium's rule); later episodes follow
    from the envs' own generators.

    Checkpoints: `state_dict()` keeps the statistics and step counts, not the environments: a simulator's physics
    state cannot be saved. A resumed run therefore starts fresh episodes (reset with a seed derived from `seed` and
    the steps taken so far, so a resume is itself reproducible), and its stream of transitions differs from that
    of an uninterrupted run from that point on.
    """

    def __init__(self, envs: gym.vector.VectorEnv, seed: int, window: int = 10) -> None:
        mode = envs.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode == gym.vector.AutoresetMode.DISABLED:
            raise CtrlbenchError("the training environments have autoreset disabled; build them with "
                                 "autoreset_mode=SAME_STEP")
        self.envs = envs
        self.same_step = mode == gym.vector.AutoresetMode.SAME_STEP
        self.n = envs.num_envs
        self.seed = seed
        self.action_dtype = envs.single_action_space.dtype
        self.obs: np.ndarray | None = None  # current observations; None until the first (lazy) reset
        self._resetting = np.zeros(self.n, dtype=bool)  # NEXT_STEP: envs whose next step is a reset
        self.last_done = np.zeros(self.n, dtype=bool)  # envs whose episode ended (terminated or truncated) last step
        # statistics (kept in checkpoints)
        self.env_steps = 0  # environment steps taken (n per call)
        self.episodes = 0  # finished training episodes
        self.total_cost = 0.0  # cost summed over every training step
        self.has_cost = False  # whether the environments have reported a cost
        self.recent: deque[tuple[Any, float, int]] = deque(maxlen=window)  # (return, cost, length) of the last ones
        # the episodes now running (lost on resume, with the episodes themselves)
        self._return: np.ndarray | None = None
        self._cost = np.zeros(self.n)
        self._length = np.zeros(self.n, dtype=np.int64)

    @classmethod
    def for_context(cls, ctx: AlgoContext, n: int, algo: str) -> EnvStepper:
        """A stepper over `ctx.make_envs(n)`, seeded from `ctx.seed`; a one-line error when the task has no envs."""
        if ctx.make_envs is None:
            raise CtrlbenchError(f"{algo} trains online and the task provides no training environments")
        return cls(ctx.make_envs(n), ctx.seed)

    def _start(self) -> None:
        seed = self.seed if self.env_steps == 0 else derive_seed(self.seed, self.env_steps)
        obs, _ = self.envs.reset(seed=seed)
        self.obs = np.asarray(obs, dtype=np.float32)
        self._resetting[:] = False
        self._return = None
        self._cost[:] = 0.0
        self._length[:] = 0

    def current_obs(self) -> np.ndarray:
        """The observations the next `step` acts on (the first call resets the envs)."""
        if self.obs is None:
            self._start()
        assert self.obs is not None
        return self.obs

    def step(self, policy: Policy) -> Transitions:
        """Act with `policy` on the current observations, step every env once, and return the transitions."""
        obs = self.current_obs()
        with torch_threads(1):  # a batch of n_envs states: one thread is fastest, and never spins on busy cores
            act = np.asarray(policy(obs), dtype=np.float32).reshape(self.n, -1)
        next_obs, rew, terminated, truncated, info = self.envs.step(act.astype(self.action_dtype, copy=False))
        self.env_steps += self.n
        next_obs = np.asarray(next_obs, dtype=np.float32)
        rew = np.asarray(rew, dtype=np.float32)
        terminated, truncated = np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool)
        cost, has_cost = _column(info, "cost", self.n)
        stored_next = next_obs.copy()
        if self.same_step and "_final_obs" in info:
            ended = np.asarray(info["_final_obs"], dtype=bool)
            for i in np.flatnonzero(ended):
                stored_next[i] = np.asarray(info["final_obs"][i], dtype=np.float32)
            # the ended envs' info is the reset's; the step's own info is in final_info
            final_cost, final_has = _column(info.get("final_info", {}), "cost", self.n)
            cost = np.where(ended, final_cost, cost)
            has_cost = np.where(ended, final_has, has_cost)
        self.has_cost = self.has_cost or bool(has_cost.any())
        valid = ~self._resetting  # NEXT_STEP: rows of envs that only reset this call are not transitions
        self.obs = next_obs
        self.last_done = (terminated | truncated) & valid
        self._record(rew, cost, terminated | truncated, valid)
        self._resetting = np.zeros(self.n, dtype=bool) if self.same_step else terminated | truncated
        return Transitions(obs[valid], act[valid], rew[valid], stored_next[valid],
                           terminated[valid].astype(np.float32), cost[valid])

    def _record(self, rew: np.ndarray, cost: np.ndarray, done: np.ndarray, valid: np.ndarray) -> None:
        if self._return is None:
            self._return = np.zeros(rew.shape, dtype=np.float64)
        self._return[valid] += rew[valid]
        self._cost[valid] += cost[valid]
        self._length[valid] += 1
        self.total_cost += float(cost[valid].sum())
        for i in np.flatnonzero(done & valid):
            ret = self._return[i].tolist()  # a float, or a list for vector rewards
            self.recent.append((ret, float(self._cost[i]), int(self._length[i])))
            self.episodes += 1
            self._return[i] = 0.0
            self._cost[i] = 0.0
            self._length[i] = 0

    def metrics(self) -> dict[str, float]:
        """Training-episode metrics, once an episode has finished: the mean return, cost and length of the last
        `window` finished episodes (a window, not the last episode alone, since the runner logs the metrics of one
        update in many), the number finished, and the cost of all training steps so far (the costs only when the
        envs report costs; a vector return gives one `train_episode_return_<j>` per component)."""
        out: dict[str, float] = {}
        if self.recent:
            returns = np.asarray([r for r, _, _ in self.recent], dtype=np.float64)
            if returns.ndim == 1:
                out["train_episode_return"] = float(returns.mean())
            else:
                out.update({f"train_episode_return_{j}": float(v) for j, v in enumerate(returns.mean(axis=0))})
            out["train_episode_length"] = float(np.mean([n for _, _, n in self.recent]))
            out["train_episodes"] = float(self.episodes)
            if self.has_cost:
                out["train_episode_cost"] = self.recent_episode_cost()
        if self.has_cost:
            out["train_cost_total"] = self.total_cost
        return out

    def recent_episode_cost(self) -> float | None:
        """The mean undiscounted cost of the last `window` finished training episodes; None before the first."""
        return float(np.mean([c for _, c, _ in self.recent])) if self.recent else None

    def state_dict(self) -> dict[str, Any]:
        return {"env_steps": self.env_steps, "episodes": self.episodes, "total_cost": self.total_cost,
                "has_cost": self.has_cost, "recent": list(self.recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the statistics; the next `step` starts fresh episodes (see the class docstring)."""
        self.env_steps, self.episodes = int(state["env_steps"]), int(state["episodes"])
        self.total_cost, self.has_cost = float(state["total_cost"]), bool(state["has_cost"])
        self.recent = deque((tuple(e) for e in state["recent"]), maxlen=self.recent.maxlen)
        self.obs = None

    def close(self) -> None:
        self.envs.close()
