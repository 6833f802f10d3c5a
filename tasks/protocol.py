"""The scoring protocol (DESIGN.md): seeded episodes, deterministic evaluation, normalized score, per task kind.

Episodes. Episode i of run seed k is reset with `derive_seed(k, stream, i)`, so every algorithm faces the same
episodes. Episodes are independent of how they are spread over environments; policy inference is batched across
the environments that are still running. Policies that emit action chunks (B, H, act_dim) have each chunk executed
in full before they are queried again. Vector rewards are summed per component (discounted by the task's
`eval_discount`, 1 by default); a per-step cost is read from `info["cost"]`.

Score. Normalized score = 100 (R - ref_min) / (ref_max - ref_min) of the mean return R over the episodes.

Kinds. `ScoringProtocol` scores one scalar return per episode on the evaluation environment; each task kind
extends it (`protocol_for`):
- `offline`, `offline-to-online`: the scalar return, as is;
- `sim-to-real`: the same, always on the real environment (the simulator is only trained in);
- `safe`: plus the episode cost C and the normalized cost (C + eps) / (kappa + eps), eps = 1 iff kappa = 0
  (DSRL); a policy is safe iff it is <= 1;
- `multi-objective`: the policy is evaluated once per weight w of the task's grid on the same episodes, `act`
  receiving w; the vector returns are kept per weight, and the scalar return is the linear utility w.R averaged
  over the grid (expected utility of the evaluated policies). The front is the non-dominated set of the
  per-weight mean vector returns; its hypervolume (against the task's reference point; points that do not
  dominate it add nothing and are counted), expected utility max_v w.v over the grid, and cardinality are
  recorded (tasks/pareto.py).
A protocol gives the fields every record shares (`summary`) and its kind's own block (`metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from algorithms.core.errors import CtrlbenchError
from algorithms.core.seeding import derive_seed
from algorithms.core.threads import torch_threads
from tasks import pareto
from tasks.spec import TaskSpec

FINAL_STREAM = 0  # seeds of the final evaluation episodes
CURVE_STREAM = 1  # seeds of the evaluations during training
N_PARALLEL = 10  # environments stepped together (fixed: part of the protocol)


@dataclass
class EvalResult:
    returns: np.ndarray  # (n,) or (n, reward_dim); multi-objective: (n_weights, n, reward_dim)
    lengths: np.ndarray  # (n,); multi-objective: (n_weights, n)
    costs: np.ndarray  # like lengths: summed info["cost"], zeros when the env has none
    seeds: list[int]


Policy = Callable[[np.ndarray], np.ndarray]
WeightedPolicy = Callable[[np.ndarray, np.ndarray | None], np.ndarray]  # (obs, preference weight or None)


def episode_seeds(run_seed: int, stream: int, n: int) -> list[int]:
    return [derive_seed(run_seed, stream, i) for i in range(n)]


def evaluate(policy: Policy, make_env: Callable[[], gym.Env], seeds: list[int],
             n_parallel: int = N_PARALLEL, discount: float = 1.0) -> EvalResult:
    with torch_threads(1):  # batches of at most n_parallel observations: one thread is fastest
        return _evaluate(policy, make_env, seeds, n_parallel, discount)


def _evaluate(policy: Policy, make_env: Callable[[], gym.Env], seeds: list[int], n_parallel: int,
              discount: float) -> EvalResult:
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
            weight = discount ** lengths[ep] if discount != 1.0 else 1.0
            returns[ep] = returns[ep] + weight * np.asarray(reward, dtype=np.float64)
            lengths[ep] += 1
            costs[ep] += float(info.get("cost", 0.0))
            if terminated or truncated:
                start(slot)
    for env in envs:
        env.close()
    return EvalResult(np.asarray(returns, dtype=np.float64), lengths, costs, list(seeds))


def normalized_score(returns: np.ndarray | float, ref_min: float, ref_max: float) -> np.ndarray:
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def check_budget(kappa: float) -> float:
    """The per-episode cost budget as a float; it must be a finite number >= 0."""
    try:
        value = float(kappa)
    except (TypeError, ValueError):
        raise CtrlbenchError(f"cost budget kappa must be a number >= 0, got {kappa!r}") from None
    if not math.isfinite(value) or value < 0:
        raise CtrlbenchError(f"cost budget kappa must be a finite number >= 0, got {kappa!r}; OSRL uses 20, 40, 80")
    return value


def normalized_cost(cost: float | np.ndarray, kappa: float) -> float | np.ndarray:
    """DSRL's ``C_norm = (C + eps) / (kappa + eps)``, eps = 1 iff kappa == 0 (so a zero budget does not divide by 0).

    ``cost`` is the mean undiscounted episode cost (average first, then normalise, as OSRL's eval scripts do).
    """
    k = check_budget(kappa)
    eps = 1.0 if k == 0 else 0.0
    out = (np.asarray(cost, dtype=np.float64) + eps) / (k + eps)
    return float(out) if out.ndim == 0 else out


def is_safe(c_norm: float | np.ndarray) -> bool | np.ndarray:
    """Safe iff the normalised cost is at most 1 (exactly 1 is safe)."""
    out = np.asarray(c_norm) <= 1.0
    return bool(out) if out.ndim == 0 else out


def reference_scores(task: TaskSpec, meta: dict[str, Any]) -> tuple[float, float]:
    """The task's (ref_min, ref_max): set on the task, else read from its dataset's metadata."""
    ref_min = task.ref_min_score if task.ref_min_score is not None else meta.get("ref_min_score")
    ref_max = task.ref_max_score if task.ref_max_score is not None else meta.get("ref_max_score")
    if ref_min is None or ref_max is None or ref_max == ref_min:
        raise CtrlbenchError(f"task {task.id} has no usable reference scores (ref_min={ref_min}, "
                             f"ref_max={ref_max}); rebuild its dataset or set them in the task")
    return float(ref_min), float(ref_max)


class ScoringProtocol:
    """Scalar return per episode on the evaluation environment (offline and offline-to-online tasks)."""

    def __init__(self, task: TaskSpec, ref_min: float, ref_max: float) -> None:
        self.task, self.ref_min, self.ref_max = task, ref_min, ref_max

    def make_env(self) -> gym.Env:
        return self.task.make_env()

    def evaluate(self, policy: WeightedPolicy, seeds: list[int]) -> EvalResult:
        return evaluate(lambda obs: policy(obs, None), self.make_env, seeds, discount=self.task.eval_discount)

    def episode_returns(self, result: EvalResult) -> np.ndarray:
        """The scalar return of each episode, the quantity the normalized score is of."""
        return result.returns

    def summary(self, result: EvalResult) -> dict[str, Any]:
        """The fields of a curve point and of the final evaluation that every kind shares."""
        returns = self.episode_returns(result)
        scores = normalized_score(returns, self.ref_min, self.ref_max)
        return {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
                "score_mean": float(scores.mean()), "score_std": float(scores.std()),
                "length_mean": float(result.lengths.mean())}

    def metrics(self, result: EvalResult) -> dict[str, Any]:
        """The kind's own block of the record, from the final evaluation."""
        return {"kind": self.task.kind}


class SimToRealProtocol(ScoringProtocol):
    """Trained against a simulator, scored on the real environment (the task's `env_id`), always."""

    def metrics(self, result: EvalResult) -> dict[str, Any]:
        return {**super().metrics(result), "eval_env": self.task.env_id,
                "train_env": self.task.train_env_id or self.task.env_id, "gap": self.task.gap}


class SafeProtocol(ScoringProtocol):
    """Reward as usual, plus the undiscounted episode cost against the task's budget kappa."""

    @property
    def kappa(self) -> float:
        assert self.task.cost_limit is not None  # TaskSpec enforces it for safe tasks
        return float(self.task.cost_limit)

    def summary(self, result: EvalResult) -> dict[str, Any]:
        cost = float(result.costs.mean())
        c_norm = float(normalized_cost(cost, self.kappa))  # of the mean cost: DSRL averages first
        return {**super().summary(result), "cost_mean": cost, "cost_norm": c_norm, "safe": bool(is_safe(c_norm))}

    def metrics(self, result: EvalResult) -> dict[str, Any]:
        summary = self.summary(result)
        return {**super().metrics(result), "cost_limit": self.kappa, "cost_mean": summary["cost_mean"],
                "cost_std": float(result.costs.std()), "cost_norm": summary["cost_norm"], "safe": summary["safe"],
                "costs": result.costs.tolist()}


class MultiObjectiveProtocol(ScoringProtocol):
    """One evaluation per preference weight of the task's grid, on the same episodes; vector returns kept."""

    @property
    def weights(self) -> np.ndarray:
        return np.asarray(self.task.preference_weights, dtype=np.float64)

    def evaluate(self, policy: WeightedPolicy, seeds: list[int]) -> EvalResult:
        per_weight = [evaluate(lambda obs, w=w: policy(obs, w), self.make_env, seeds,
                               discount=self.task.eval_discount) for w in self.weights]
        returns = np.stack([r.returns.reshape(len(seeds), -1) for r in per_weight])
        if returns.shape[-1] != self.task.reward_dim:
            raise CtrlbenchError(f"task {self.task.id}: the environment returned {returns.shape[-1]}-dim rewards, "
                                 f"the task declares {self.task.reward_dim}")
        return EvalResult(returns, np.stack([r.lengths for r in per_weight]),
                          np.stack([r.costs for r in per_weight]), list(seeds))

    def episode_returns(self, result: EvalResult) -> np.ndarray:
        """Per episode, the linear utility w.R averaged over the weight grid."""
        return np.einsum("wd,wnd->wn", self.weights, result.returns).mean(axis=0)

    def metrics(self, result: EvalResult) -> dict[str, Any]:
        points = result.returns.mean(axis=1)  # (n_weights, reward_dim): one point per weight
        front = pareto.pareto_front(points)
        metrics = {**super().metrics(result), "weights": self.weights.tolist(), "vector_returns": points.tolist(),
                   "front": front.tolist(), "cardinality": len(front),
                   "expected_utility": pareto.expected_utility(front, self.weights),
                   "eval_discount": self.task.eval_discount}
        if self.task.reference_point:
            ref = np.asarray(self.task.reference_point, dtype=np.float64)
            inside = front[np.all(front > ref, axis=1)]
            metrics |= {"reference_point": ref.tolist(), "points_below_reference": len(front) - len(inside),
                        "hypervolume": pareto.hypervolume(inside, ref) if len(inside) else 0.0}
        return metrics


PROTOCOLS: dict[str, type[ScoringProtocol]] = {
    "offline": ScoringProtocol, "offline-to-online": ScoringProtocol, "sim-to-real": SimToRealProtocol,
    "safe": SafeProtocol, "offline-safe": SafeProtocol, "multi-objective": MultiObjectiveProtocol,
}


def protocol_for(task: TaskSpec, ref_min: float, ref_max: float) -> ScoringProtocol:
    return PROTOCOLS[task.kind](task, ref_min, ref_max)
