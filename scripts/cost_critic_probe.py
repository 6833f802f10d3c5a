"""Does a safe method's cost critic match what its own policy costs? A probe on a run's checkpoint.

Loads a checkpoint (`$CTRLBENCH_CHECKPOINTS/<run id>.pt`) into the run's algorithm, rolls out its policy from the
task's reset states and compares the cost critic at the visited (s, a) with the Monte-Carlo discounted cost-to-go of
the same episode, over the steps t <= --horizon (the tail of a 1000-step episode beyond t = 500 weighs
gamma^500 < 0.7% at gamma 0.99).
- Online (SAC-Lag, CAL): the policy stochastic (as it trains) and deterministic (as it is evaluated); for an ensemble
  the mean and CAL's UCB (mean + k std).
- Offline (BCQ-Lag, CPQ, OGSRL): the evaluation policy; the reading is the one their actors use, the minimum over the
  cost networks, in unscaled cost units. Beside it, Q_c(s, pi(s)) averaged over every *dataset* state: what BCQ-Lag's
  and OGSRL's multipliers hold under d (a batch mean), so a policy can meet it there and still pay on its own states.
  pi(s) is the evaluation action throughout (BCQ-Lag: latent z = 0, where its actor loss draws one latent).

    python scripts/cost_critic_probe.py --algo cal --task halfcheetah-velocity-k40-v0 --seed 0 --steps 150000 \\
        --set utd_ratio=5 --checkpoint ~/.cache/ctrlbench/checkpoints/<run id>.pt
    python scripts/cost_critic_probe.py --algo bcq_lag --task offline-halfcheetah-velocity-k40-v1 --seed 0 \\
        --steps 60000 --set batch_size=256 --checkpoint ~/.cache/ctrlbench/checkpoints/<run id>.pt

--set must repeat the run's overrides that shape the networks or the critic (CAL's ensemble size, k); the
checkpoint must be of the same algorithm, task and seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml
from safe_cost_to_go import discounted_to_go

from algorithms.core.checkpoint import load_checkpoint
from algorithms.core.errors import CtrlbenchError
from runners.run import RunRequest, build_algorithm, prepare

ONLINE = ("sac_lag", "sac_lag_epcost", "cal")
OFFLINE = ("bcq_lag", "cpq", "ogsrl")


def policy_action(algo, obs: np.ndarray, deterministic: bool) -> np.ndarray:
    """The action for one state: an online method's SAC policy, an offline method's evaluation policy."""
    if hasattr(algo, "sac"):
        with torch.no_grad():
            return algo.sac.act(algo.obs_tensor(obs[None]), deterministic=deterministic).cpu().numpy()[0]
    return algo.act(obs[None])[0]


def offline_cost_reading(algo, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """min over the cost networks of Q_c(s, a) (what BCQ-Lag's, CPQ's and OGSRL's actors read), unscaled."""
    with torch.no_grad():
        q = algo.cost_critic(algo.obs_tensor(algo.normalizer(states)), torch.as_tensor(actions, device=algo.device))
    return q.min(dim=0).values.cpu().numpy() / getattr(algo.config, "cost_scale", 1.0)


def rollout(algo, env, seed: int, deterministic: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One episode of the algorithm's policy: states, actions and per-step costs."""
    obs, _ = env.reset(seed=seed)
    states, actions, costs = [], [], []
    done = False
    while not done:
        action = policy_action(algo, obs, deterministic)
        states.append(obs)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        costs.append(float(info["cost"]))
        done = terminated or truncated
    return np.asarray(states, np.float32), np.asarray(actions, np.float32), np.asarray(costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", required=True, choices=ONLINE + OFFLINE)
    parser.add_argument("--task", default="halfcheetah-velocity-k40-v0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, required=True, help="the run's --steps")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="the run's overrides")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--horizon", type=int, default=500)
    args = parser.parse_args()

    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    req = RunRequest(algo=args.algo, task=args.task, seed=args.seed, steps=args.steps, device="cpu",
                     config_cli=overrides)
    p = prepare(req)
    algo, ctx = build_algorithm(req, p)
    state = load_checkpoint(args.checkpoint)
    prefix = p.run_id.rsplit("__", 1)[0]  # algo__task__seed; the hash also covers the evaluation protocol
    if not str(state.get("run_id", "")).startswith(prefix + "__"):
        raise SystemExit(f"{args.checkpoint} holds run {state.get('run_id')}, not one of {prefix}")
    algo.load_state_dict(state["algorithm"])
    gamma = getattr(algo.config, "cost_discount", algo.config.discount)  # CAL has its own gamma_c
    k = getattr(algo.config, "k", 0.0)
    print(f"{state['run_id']}: update {algo.step}, {state['env_steps']} env steps, budget d = {algo.budget:.3f}")

    env = p.task.make_env()
    torch.manual_seed(args.seed)
    try:
        if args.algo in OFFLINE:
            probe_offline(algo, ctx.dataset.observations, env, gamma, args)
        else:
            probe_online(algo, env, gamma, k, args)
    finally:
        env.close()


def probe_online(algo, env, gamma: float, k: float, args: argparse.Namespace) -> None:
    """The stochastic (as it trains) and deterministic (as it is evaluated) policy: critic against Monte-Carlo."""
    for deterministic in (False, True):
        q_mean, q_ucb, mc, episode_costs = [], [], [], []
        for episode in range(args.episodes):
            states, actions, costs = rollout(algo, env, 10_000 + episode, deterministic)
            with torch.no_grad():
                q = algo.cost(torch.as_tensor(states), torch.as_tensor(actions))  # (members, T)
            n = min(args.horizon + 1, len(costs))
            std = q.std(dim=0) if q.shape[0] > 1 else torch.zeros_like(q[0])
            q_mean.append(q.mean(dim=0)[:n].numpy())
            q_ucb.append((q.mean(dim=0) + k * std)[:n].numpy())
            mc.append(discounted_to_go(costs, gamma)[:n])
            episode_costs.append(costs.sum())
        kind = "deterministic" if deterministic else "stochastic"
        each = ", ".join(f"{c:.0f}" for c in episode_costs)
        print(f"{kind:>13}: episode cost {np.mean(episode_costs):.1f} (each: {each}); "
              f"t <= {args.horizon}: Q_c {np.concatenate(q_mean).mean():.2f}, UCB {np.concatenate(q_ucb).mean():.2f}, "
              f"Monte-Carlo {np.concatenate(mc).mean():.2f}")


def probe_offline(algo, data_states: np.ndarray, env, gamma: float, args: argparse.Namespace) -> None:
    """The policy's own states (rollouts) against the dataset's states (what the batch-mean constraint sees)."""
    q_own, mc, episode_costs = [], [], []
    for episode in range(args.episodes):
        states, actions, costs = rollout(algo, env, 10_000 + episode, deterministic=True)
        n = min(args.horizon + 1, len(costs))
        q_own.append(offline_cost_reading(algo, states, actions)[:n])
        mc.append(discounted_to_go(costs, gamma)[:n])
        episode_costs.append(costs.sum())
    each = ", ".join(f"{c:.0f}" for c in episode_costs)
    print(f"  own states: episode cost {np.mean(episode_costs):.1f} (each: {each}); t <= {args.horizon}: "
          f"Q_c(s, pi(s)) {np.concatenate(q_own).mean():.2f}, Monte-Carlo {np.concatenate(mc).mean():.2f}")
    q_data = np.concatenate([offline_cost_reading(algo, chunk, algo.act(chunk))
                             for chunk in np.array_split(data_states, max(1, len(data_states) // 4096))])
    # the multiplier compares the critic's scaled reading with algo.budget: in unscaled units, budget / cost_scale
    budget = algo.budget / getattr(algo.config, "cost_scale", 1.0)
    print(f"dataset states ({len(q_data)}): Q_c(s, pi(s)) mean {q_data.mean():.2f} (the batch mean held under "
          f"d = {budget:.2f}), share above d {np.mean(q_data > budget):.1%}")


if __name__ == "__main__":
    try:
        main()
    except CtrlbenchError as e:  # bad input: one line, non-zero exit
        raise SystemExit(f"cost_critic_probe: {e}") from None
