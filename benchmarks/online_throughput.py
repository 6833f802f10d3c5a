"""Online and hybrid training throughput, measured side by side in the same run.

  python benchmarks/online_throughput.py                 # H2O and our SAC on halfcheetah-gravity2x-medium-replay-v0
  python benchmarks/online_throughput.py --sb3           # + stable-baselines3's SAC, the peer of our SAC
  python benchmarks/online_throughput.py --algos h2o,h2o_naive_mix,sac --updates 2000 --threads 1

Each algorithm is built as a run builds it, on a real sim-to-real task (its real dataset and its simulator), so a
timed update holds what a run's does: one simulator step with the policy and one gradient step (H2O adds two
discriminator steps and the gap estimate over 10 perturbed next states per sim sample; the naive mix skips those
but the discriminator steps). SAC's warm-up is set to 0 so that every timed update takes a gradient step. The
loops take turns, --rounds times (throughput.py's `interleaved_rates`), so that all see the same machine; each
line gives updates/s (total updates over total time) and its spread over the rounds, the ratio lines divide one
by another. With --sb3, stable-baselines3's SAC (train_freq 1, one gradient step, batch 256, 2x256 nets, the same
simulator) runs in the same rounds, `model.learn` timing whole rounds (its per-call setup is then negligible).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from throughput import harmonic_mean, turns

from algorithms.core.config import build_config
from algorithms.core.contract import AlgoContext
from algorithms.core.registry import get_algorithm
from leaderboard.provenance import cpu_model
from runners.run import make_training_envs
from tasks.datasets import load_transitions
from tasks.registry import get_task

TASK = "halfcheetah-gravity2x-medium-replay-v0"
NO_WARMUP = {"sac": {"learning_starts": 0}}  # every timed update takes its gradient step


def ours(name: str, task_id: str, device: str, overrides: dict) -> Callable[[int], None]:
    """`n -> n updates` of a ctrlbench algorithm, built as a run builds it."""
    task = get_task(task_id)
    data = load_transitions(task.dataset_id, task.build_command).transitions if task.dataset_id else None
    probe = task.make_env()
    ctx = AlgoContext(observation_space=probe.observation_space, action_space=probe.action_space,
                      device=torch.device(device), seed=0, total_updates=1_000_000, dataset=data)
    probe.close()
    ctx.make_envs = make_training_envs(task, ctx)
    algo_cls = get_algorithm(name)
    algo = algo_cls(build_config(algo_cls.Config, {**NO_WARMUP.get(name, {}), **overrides}), ctx)

    def run(n: int) -> None:
        for _ in range(n):
            algo.update()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return run


def sb3_sac(task_id: str, device: str) -> Callable[[int], None]:
    """`n -> n env steps and gradient steps` of stable-baselines3's SAC on the task's simulator."""
    from stable_baselines3 import SAC

    task = get_task(task_id)
    model = SAC("MlpPolicy", task.make_train_env(), learning_starts=0, train_freq=1, gradient_steps=1,
                batch_size=256, buffer_size=1_000_000, policy_kwargs={"net_arch": [256, 256]}, device=device, seed=0,
                verbose=0)

    def run(n: int) -> None:
        model.learn(total_timesteps=n, reset_num_timesteps=False)

    return run


def rates(loops: dict[str, Callable[[int], None]], updates: int, warmup: int, rounds: int) -> dict[str, list[float]]:
    """Each loop's updates/s per round; the loops take turns, the order rotating from round to round."""
    for loop in loops.values():
        loop(warmup)
    names = list(loops)
    per_round = max(1, updates // rounds)
    out: dict[str, list[float]] = {name: [] for name in names}
    for name in turns(names, rounds):
        t0 = time.perf_counter()
        loops[name](per_round)
        out[name].append(per_round / (time.perf_counter() - t0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", default="h2o,sac", help="ctrlbench algorithms (comma-separated)")
    parser.add_argument("--task", default=TASK, help="a sim-to-real task whose dataset is built")
    parser.add_argument("--updates", type=int, default=1000, help="timed updates per algorithm (all rounds)")
    parser.add_argument("--warmup", type=int, default=1100, help="untimed updates first (H2O's first update also "
                        "collects its 1000 initial simulator steps)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--sb3", action="store_true", help="add stable-baselines3's SAC")
    parser.add_argument("--hidden", default=None, help="e.g. 32,32 for a quick check (every algorithm)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    overrides = {"hidden": args.hidden} if args.hidden else {}
    loops = {name: ours(name, args.task, args.device, overrides) for name in args.algos.split(",")}
    if args.sb3:
        loops["sb3 sac"] = sb3_sac(args.task, args.device)
    print(f"# {args.task}, {args.device} ({cpu_model()}, {torch.get_num_threads()} threads), "
          f"{args.updates} updates x {args.rounds} rounds after {args.warmup} warm-up")
    measured = rates(loops, args.updates, args.warmup, args.rounds)
    mean = {name: harmonic_mean(r) for name, r in measured.items()}
    for name, r in measured.items():
        print(f"{name:14s} {mean[name]:8.1f} updates/s  (rounds {min(r):.1f} .. {max(r):.1f})")
    pairs = [("h2o", "sac"), ("h2o_naive_mix", "sac"), ("sac", "sb3 sac")]
    for a, b in pairs:
        if a in mean and b in mean:
            per_round = [x / y for x, y in zip(measured[a], measured[b])]
            print(f"ratio {a} / {b}: {mean[a] / mean[b]:.3f}  (rounds {min(per_round):.3f} .. {max(per_round):.3f})")


if __name__ == "__main__":
    main()
