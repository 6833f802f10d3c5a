"""How much discounted cost a velocity-cost dataset's own states carry, whatever the policy does next.

The offline safe Q-learning methods (BCQ-Lag, CPQ, OGSRL here, as OSRL writes them) hold the cost critic's value at
the *dataset's* states under the discounted budget d = kappa (1 - gamma^T) / ((1 - gamma) T): BCQ-Lag and OGSRL on the
batch mean of Q_c(s, pi(s)), CPQ per state. On a dataset whose states often move faster than the threshold, part of
that value cannot be avoided: from a state above the threshold, any policy pays cost until the robot has slowed down.
This script measures, for a built velocity dataset:
  behaviour:  the discounted cost-to-go of the data's own episodes, averaged over all states, over the states of
              episodes within the budget, and over the rest
  braking:    from a random sample of the data's costly states (cost 1), the robot restored to that state (x = 0) and
              driven by constant actions for --horizon steps: the discounted cost of the zero action, and the least
              over --candidates random constant actions and the zero action, an upper bound on what the best
              policy must pay from there
The data-averaged floor (share of costly states x the braking cost) against d says how much of the budget is spent
before the policy chooses anything. --max-episode-cost C measures the same on the episodes costing at most C alone
(DSRL's velocity datasets hold episodes of cost 0-250 for HalfCheetah; reference A2).

    python scripts/safe_cost_to_go.py --robot halfcheetah --kappa 40 [--version 0] [--max-episode-cost 250]
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

from algorithms.core.lagrangian import discounted_budget
from algorithms.core.ppo import episode_bounds
from tasks.datasets import load_transitions
from tasks.safe_datasets import LATEST, RECIPES, velocity_dataset_id
from tasks.velocity_cost import ROBOTS, velocity_cost

# robots whose observation is (qpos without x, qvel), so that a data state can be restored exactly up to x
RESTORABLE = ("hopper", "halfcheetah", "walker2d")


def discounted_to_go(costs: np.ndarray, gamma: float) -> np.ndarray:
    """sum_{k >= t} gamma^(k - t) c_k for every t of one episode."""
    out = np.zeros(len(costs))
    acc = 0.0
    for t in range(len(costs) - 1, -1, -1):
        acc = costs[t] + gamma * acc
        out[t] = acc
    return out


def braking_cost(env: gym.Env, obs: np.ndarray, action: np.ndarray, horizon: int, gamma: float, rule: str,
                 threshold: float) -> float:
    """Discounted cost of holding `action` for `horizon` steps from the state behind `obs` (x set to 0)."""
    base = env.unwrapped
    nq = base.model.nq
    base.set_state(np.concatenate([[0.0], obs[:nq - 1]]), obs[nq - 1:])
    total = 0.0
    for t in range(horizon):
        x0 = float(base.data.qpos[0])
        base.do_simulation(action, base.frame_skip)
        info = {"x_velocity": (float(base.data.qpos[0]) - x0) / base.dt}
        total += gamma**t * velocity_cost(info, rule, threshold)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="halfcheetah", choices=RESTORABLE)
    parser.add_argument("--kappa", type=float, default=40.0, help="episode cost budget")
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--episode-len", type=int, default=1000, help="T of the budget conversion")
    parser.add_argument("--states", type=int, default=200, help="costly data states to brake from")
    parser.add_argument("--candidates", type=int, default=32, help="random constant actions tried per state")
    parser.add_argument("--horizon", type=int, default=200, help="steps simulated per braking try")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--version", type=int, default=LATEST, choices=sorted(RECIPES),
                        help="the velocity dataset's version (default: the latest)")
    parser.add_argument("--max-episode-cost", type=float, default=None,
                        help="keep only the episodes costing at most this (DSRL's velocity data: 250 for HalfCheetah)")
    args = parser.parse_args()

    task = ROBOTS[args.robot]
    did = velocity_dataset_id(args.robot, args.version)
    data = load_transitions(did).transitions
    obs, cost = data.observations, data.costs.astype(np.float64)
    bounds = episode_bounds(data.episode_ids)
    q = np.concatenate([discounted_to_go(cost[begin:end], args.gamma) for begin, end in bounds])
    _, episode_of = np.unique(data.episode_ids, return_inverse=True)
    state_episode_cost = data.episode_costs()[episode_of]
    if args.max_episode_cost is not None:  # the states of the episodes within the cap, in data order
        keep = state_episode_cost <= args.max_episode_cost
        obs, cost, q, state_episode_cost = obs[keep], cost[keep], q[keep], state_episode_cost[keep]
        if not len(cost):
            raise SystemExit(f"no episode of {did} costs at most {args.max_episode_cost:g}")
    within = state_episode_cost <= args.kappa  # each state: is its episode within the budget?
    budget = discounted_budget(args.kappa, args.gamma, args.episode_len)
    cap = "" if args.max_episode_cost is None else f" (episodes costing <= {args.max_episode_cost:g})"
    print(f"{did}{cap}: {len(cost)} transitions, kappa {args.kappa:g}, d = {budget:.3f}")
    print(f"behaviour cost-to-go, mean over states: all {q.mean():.2f}, episodes within kappa {q[within].mean():.2f} "
          f"({within.mean():.0%} of states), the rest {q[~within].mean():.2f}")

    rng = np.random.default_rng(args.seed)
    costly = np.flatnonzero(cost > 0)
    sample = rng.choice(costly, size=min(args.states, len(costly)), replace=False)
    env = gym.make(task.v4)
    env.reset(seed=args.seed)
    act_dim = env.action_space.shape[0]
    high = env.action_space.high
    zero_costs, best_costs = [], []
    for i in sample:
        tries = [np.zeros(act_dim)] + [rng.uniform(-high, high) for _ in range(args.candidates)]
        results = [braking_cost(env, obs[i], a, args.horizon, args.gamma, task.rule, task.threshold) for a in tries]
        zero_costs.append(results[0])
        best_costs.append(min(results))
    share = len(costly) / len(cost)
    zero, best = float(np.mean(zero_costs)), float(np.mean(best_costs))
    print(f"costly states: {share:.1%} of the data; discounted cost from them, mean over {len(sample)}: "
          f"zero action {zero:.2f}, best of {args.candidates + 1} constant actions {best:.2f} "
          f"(median {np.median(best_costs):.2f})")
    print(f"data-averaged floor, costly share x best braking cost: {share * best:.2f} against d = {budget:.3f}")


if __name__ == "__main__":
    main()
