"""Online fine-tuning throughput (DPPO, Gaussian PPO) against stable-baselines3's PPO, measured in the same run.

  python benchmarks/finetune_throughput.py                          # DPPO and Gaussian PPO at the reference's sizes
  python benchmarks/finetune_throughput.py --sb3                    # + SB3's PPO on the same environment
  python benchmarks/finetune_throughput.py --algos dppo --n-steps 100 --rounds 3 --sb3

Each algorithm is built as a run builds it, on an offline-to-online task, with pretraining skipped
(`pretrain_steps 0`: a fine-tuning iteration costs the same whatever the weights), so every timed update is one
fine-tuning iteration: a rollout of n_envs x n_steps decisions (chunks of 4 actions), then the PPO epochs. A line
gives env steps/s over all rounds and where an iteration's time went, from the timers of the PPO core's rollout:
- `policy`: choosing the chunks (DPPO: the reverse denoising chain, 20 network calls per decision);
- `sim`: stepping the MuJoCo environments (in this process, as the runner builds them);
- `update`: the rest of the iteration (the rollout's old log-probabilities, GAE, the PPO minibatches).
SB3's PPO (its defaults: one environment, n_steps 2048, batch 64, 10 epochs, 64x64 nets) learns on the task's
training environment for --sb3-steps per round; the algorithms take turns within each round, the order rotating,
so that all see the same machine (see throughput.py's `interleaved_rates`). Ratio lines divide env steps/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from throughput import turns

from algorithms.core.config import build_config, task_overrides
from algorithms.core.contract import AlgoContext
from algorithms.core.registry import get_algorithm, overrides_file
from leaderboard.provenance import cpu_model
from runners.run import make_training_envs
from tasks.datasets import load_transitions
from tasks.registry import get_task

TASK = "hopper-medium-finetune-v0"


@dataclass
class Timing:
    """Seconds and env steps accumulated over the timed rounds of one loop."""

    env_steps: list[int] = field(default_factory=list)  # per round
    seconds: list[float] = field(default_factory=list)  # per round
    parts: dict[str, float] = field(default_factory=dict)  # seconds per part, all rounds

    def rate(self) -> float:
        return sum(self.env_steps) / sum(self.seconds)

    def round_rates(self) -> list[float]:
        return [n / s for n, s in zip(self.env_steps, self.seconds)]


Loop = Callable[[Timing], None]  # one round: run, then append its env steps and seconds


def ours(name: str, task_id: str, overrides: dict, iterations: int) -> Loop:
    """`iterations` fine-tuning iterations of a ctrlbench algorithm per round, built as a run builds it."""
    task = get_task(task_id)
    data = load_transitions(task.dataset_id, task.build_command).transitions
    probe = task.make_env()
    ctx = AlgoContext(observation_space=probe.observation_space, action_space=probe.action_space,
                      device=torch.device("cpu"), seed=0, total_updates=1_000_000, dataset=data)
    probe.close()
    ctx.make_envs = make_training_envs(task, ctx)
    algo_cls = get_algorithm(name)
    config = build_config(algo_cls.Config, task_overrides(overrides_file(algo_cls), task.id),
                          {"pretrain_steps": 0, **overrides})  # the layers a run applies, then the benchmark's
    algo = algo_cls(config, ctx)

    def run(timing: Timing) -> None:
        steps, t0 = 0, time.perf_counter()
        for _ in range(iterations):
            t = time.perf_counter()
            m = algo.update()
            total = time.perf_counter() - t
            steps += int(m["rollout_env_steps"])
            for part, seconds in (("policy", m["rollout_policy_s"]), ("sim", m["rollout_env_s"]),
                                  ("update", total - m["rollout_policy_s"] - m["rollout_env_s"])):
                timing.parts[part] = timing.parts.get(part, 0.0) + seconds
        timing.seconds.append(time.perf_counter() - t0)
        timing.env_steps.append(steps)

    return run


def sb3_ppo(task_id: str, steps: int) -> Loop:
    """`steps` env steps (and their PPO updates) of stable-baselines3's PPO per round, on the task's training env."""
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", get_task(task_id).make_train_env(), device="cpu", seed=0, verbose=0)

    def run(timing: Timing) -> None:
        before, t0 = model.num_timesteps, time.perf_counter()
        model.learn(total_timesteps=steps, reset_num_timesteps=False)
        timing.seconds.append(time.perf_counter() - t0)
        timing.env_steps.append(model.num_timesteps - before)  # whole rollouts of n_steps: may pass `steps`

    return run


def measure(loops: dict[str, Loop], rounds: int) -> dict[str, Timing]:
    """One untimed round each (first-call costs), then `rounds` timed rounds taking turns."""
    for loop in loops.values():
        loop(Timing())
    names = list(loops)
    timings = {name: Timing() for name in names}
    for name in turns(names, rounds):
        loops[name](timings[name])
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", default="dppo,gaussian_ppo", help="ctrlbench algorithms (comma-separated)")
    parser.add_argument("--task", default=TASK, help="an offline-to-online task whose dataset is built")
    parser.add_argument("--iterations", type=int, default=1, help="fine-tuning iterations per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n-envs", type=int, default=None, help="override n_envs (reference: 40)")
    parser.add_argument("--n-steps", type=int, default=None, help="override n_steps (reference: 500 decisions)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--sb3", action="store_true", help="add stable-baselines3's PPO")
    parser.add_argument("--sb3-steps", type=int, default=16384, help="SB3 env steps per round")
    parser.add_argument("--hidden", default=None, help="e.g. 32,32,32 for a quick check (actor and critic)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    overrides: dict = {key: value for key, value in (("n_envs", args.n_envs), ("n_steps", args.n_steps))
                       if value is not None}
    if args.hidden:
        overrides |= {"hidden": args.hidden, "critic_hidden": args.hidden}
    loops = {name: ours(name, args.task, overrides, args.iterations) for name in args.algos.split(",")}
    if args.sb3:
        loops["sb3 ppo"] = sb3_ppo(args.task, args.sb3_steps)
    print(f"# {args.task}, cpu ({cpu_model()}, {torch.get_num_threads()} threads), {args.iterations} iteration(s) "
          f"x {args.rounds} rounds, overrides {overrides or 'none'}")
    timings = measure(loops, args.rounds)
    for name, t in timings.items():
        rates = t.round_rates()
        split = ""
        if t.parts:
            total = sum(t.parts.values())
            split = "  " + ", ".join(f"{part} {100 * s / total:.0f}%" for part, s in t.parts.items())
        print(f"{name:14s} {t.rate():8.1f} env steps/s  (rounds {min(rates):.1f} .. {max(rates):.1f}){split}")
    for name in timings:
        if name != "sb3 ppo" and "sb3 ppo" in timings:
            per_round = [a / b for a, b in zip(timings[name].round_rates(), timings["sb3 ppo"].round_rates())]
            print(f"ratio {name} / sb3 ppo: {timings[name].rate() / timings['sb3 ppo'].rate():.3f}  "
                  f"(rounds {min(per_round):.3f} .. {max(per_round):.3f})")


if __name__ == "__main__":
    main()
