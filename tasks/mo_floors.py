"""Trivial-policy anchors of the multi-objective tasks: what any learned front must beat (safe_and_morl.md B1, C4).

`measure(task)` rolls out, on reset seeds 0..n-1 (5 by default, B1's seeds 0-4), the task's discounted vector
returns (its `eval_discount`, 0.99) of
- the zero-action policy (standing still, hanging: on the "+healthy" envs it dominates random),
- the uniform-random policy (episode i draws its actions from `numpy.random.default_rng(i)`),
- and, where the suite has one, an expert (`EXPERTS`): the committed single-objective SAC expert of the same robot
  (tasks/policies/<robot>/expert.pt, trained on the gymnasium v5 env whose observations and dynamics the
  MO-Gymnasium env shares), or the smoke task's swing-up controller; deterministic.
From those points (`Anchors`):
- `hv_floor`: the hypervolume of {zero, random} against the task's reference point;
- `eum_floor`: the expected utility of {zero, random} over the task's weight grid (per weight, the better one);
- `utility_floor`: the scalar score's floor, the protocol's utility (mean over the grid of w.R, one policy for
  every weight) of the better trivial policy: max(w_bar.R_zero, w_bar.R_random), w_bar the grid's mean weight;
  this is the task's `ref_min_score`;
- `anchor_eum`: the expected utility of {zero, random, expert} over the grid: per weight, the best of standing
  still, acting at random and running as the single-objective expert does; the task's `ref_max_score` where an
  expert exists (tasks/mo_tasks.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from algorithms.core.errors import CtrlbenchError
from tasks import pareto
from tasks.spec import TaskSpec

N_EPISODES = 5
POLICIES_DIR = Path(__file__).resolve().parent / "policies"
# task id -> its expert: a robot of tasks/policies (the committed SAC expert.pt) or "swing-up" (tasks/smoke.py)
EXPERTS = {"smoke-mo-v0": "swing-up", "mo-halfcheetah-v5": "halfcheetah", "mo-hopper-2obj-v5": "hopper",
           "mo-hopper-v5": "hopper", "mo-walker2d-v5": "walker2d"}

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Anchors:
    task: str
    zero: np.ndarray  # (d,) mean discounted vector return of the zero-action policy
    random: np.ndarray  # (d,) of the uniform-random policy
    expert: np.ndarray | None  # (d,) of the task's expert, None without one
    hv_floor: float
    eum_floor: float
    utility_floor: float  # ref_min_score
    anchor_eum: float | None  # ref_max_score where an expert exists
    episodes: int
    mean_length: dict[str, float]


def rollout(make_env: Callable[[], gym.Env], policy_for_episode: Callable[[int], Policy], n: int,
            discount: float) -> tuple[np.ndarray, float]:
    """(n, d) discounted vector returns on reset seeds 0..n-1, and the mean episode length."""
    env = make_env()
    returns, lengths = [], []
    for i in range(n):
        policy = policy_for_episode(i)
        obs, _ = env.reset(seed=i)
        total, weight, steps, done = 0.0, 1.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total = total + weight * np.asarray(reward, dtype=np.float64)
            weight *= discount
            steps += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(steps)
    env.close()
    return np.asarray(returns, dtype=np.float64), float(np.mean(lengths))


def zero_policy(space: gym.spaces.Box) -> Callable[[int], Policy]:
    action = np.zeros(space.shape, dtype=space.dtype)
    return lambda i: (lambda obs: action)


def random_policy(space: gym.spaces.Box) -> Callable[[int], Policy]:
    def for_episode(i: int) -> Policy:
        rng = np.random.default_rng(i)
        return lambda obs: rng.uniform(space.low, space.high).astype(space.dtype)
    return for_episode


def expert_policy(name: str) -> Callable[[int], Policy]:
    if name == "swing-up":
        from tasks.smoke import swing_up_controller

        return lambda i: swing_up_controller
    from tasks.behavior import load_actor

    path = POLICIES_DIR / name / "expert.pt"
    if not path.exists():
        raise CtrlbenchError(f"no committed expert at {path}; restore tasks/policies/{name}/ from git")
    actor = load_actor(path)
    return lambda i: (lambda obs: actor.act(obs[None])[0])


def floors(task: TaskSpec, points: dict[str, np.ndarray]) -> dict[str, float]:
    """hv_floor, eum_floor and utility_floor of the trivial points {"zero": ..., "random": ...}."""
    trivial = np.stack([points["zero"], points["random"]])
    weights = pareto.check_weights(task.preference_weights, task.reward_dim)
    reference = np.asarray(task.reference_point, dtype=np.float64)
    return {"hv_floor": pareto.hypervolume(trivial, reference),
            "eum_floor": pareto.expected_utility(trivial, weights),
            "utility_floor": float(np.max(trivial @ weights.mean(axis=0)))}


def measure(task: TaskSpec, episodes: int = N_EPISODES, expert: bool = True) -> Anchors:
    if task.kind != "multi-objective":
        raise CtrlbenchError(f"task {task.id} is not multi-objective (kind {task.kind})")
    space = task.make_env().action_space
    policies = {"zero": zero_policy(space), "random": random_policy(space)}
    if expert and task.id in EXPERTS:
        policies["expert"] = expert_policy(EXPERTS[task.id])
    points, lengths = {}, {}
    for name, policy in policies.items():
        returns, lengths[name] = rollout(task.make_env, policy, episodes, task.eval_discount)
        if returns.shape[1] != task.reward_dim:
            raise CtrlbenchError(f"task {task.id}: {task.env_id} returned {returns.shape[1]}-dim rewards, the task "
                                 f"declares {task.reward_dim}")
        points[name] = returns.mean(axis=0)
    anchor_eum = None
    if "expert" in points:
        anchor_eum = pareto.expected_utility(np.stack(list(points.values())), np.asarray(task.preference_weights))
    return Anchors(task.id, points["zero"], points["random"], points.get("expert"), **floors(task, points),
                   anchor_eum=anchor_eum, episodes=episodes, mean_length=lengths)
