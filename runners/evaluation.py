"""Seeded, deterministic evaluation on a batch of environments.

Episode i of run seed k is reset with `derive_seed(k, stream, i)`, so every algorithm faces the
same episodes. Episodes are independent of how they are spread over environments; policy
inference is batched across the environments that are still running. Policies that emit action
chunks (B, H, act_dim) have each chunk executed in full before they are queried again.
Vector rewards are summed per component; a per-step cost is read from `info["cost"]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from algorithms.core.seeding import derive_seed
from algorithms.core.threads import torch_threads

FINAL_STREAM = 0  # seeds of the final evaluation episodes
CURVE_STREAM = 1  # seeds of the evaluations during training
N_PARALLEL = 10  # environments stepped together (fixed: part of the protocol)


@dataclass
class EvalResult:
    returns: np.ndarray  # (n,) or (n, reward_dim)
    lengths: np.ndarray  # (n,)
    costs: np.ndarray  # (n,) summed info["cost"], zeros when the env has none
    seeds: list[int]


Policy = Callable[[np.ndarray], np.ndarray]


def episode_seeds(run_seed: int, stream: int, n: int) -> list[int]:
    return [derive_seed(run_seed, stream, i) for i in range(n)]


def evaluate(policy: Policy, make_env: Callable[[], gym.Env], seeds: list[int],
             n_parallel: int = N_PARALLEL) -> EvalResult:
    with torch_threads(1):  # batches of at most n_parallel observations: one thread is fastest
        return _evaluate(policy, make_env, seeds, n_parallel)


def _evaluate(policy: Policy, make_env: Callable[[], gym.Env], seeds: list[int], n_parallel: int) -> EvalResult:
    envs = [make_env() for _ in range(min(n_parallel, len(seeds)))]
    n = len(seeds)
    returns: list = [0.0] * n
    lengths = np.zeros(n, dtype=np.int64)
    costs = np.zeros(n, dtype=np.float64)
    queue = list(range(n))
    slot_episode: list[int | None] = [None] * len(envs)
    obs: list[np.ndarray | None] = [None] * len(envs)
    pending: list[list[np.ndarray]] = [[] for _ in envs]  # remaining actions of a chunk

    def start(slot: int) -> None:
        if queue:
            ep = queue.pop(0)
            slot_episode[slot] = ep
            obs[slot], _ = envs[slot].reset(seed=seeds[ep])
            pending[slot] = []
        else:
            slot_episode[slot] = None

    for slot in range(len(envs)):
        start(slot)
    while any(e is not None for e in slot_episode):
        need = [s for s, e in enumerate(slot_episode) if e is not None and not pending[s]]
        if need:
            actions = np.asarray(policy(np.stack([obs[s] for s in need])))
            for s, a in zip(need, actions):
                pending[s] = list(a) if a.ndim == 2 else [a]
        for slot, ep in enumerate(slot_episode):
            if ep is None:
                continue
            action = pending[slot].pop(0)
            obs[slot], reward, terminated, truncated, info = envs[slot].step(action)
            returns[ep] = returns[ep] + np.asarray(reward, dtype=np.float64)
            lengths[ep] += 1
            costs[ep] += float(info.get("cost", 0.0))
            if terminated or truncated:
                start(slot)
    for env in envs:
        env.close()
    return EvalResult(np.asarray(returns, dtype=np.float64), lengths, costs, list(seeds))
