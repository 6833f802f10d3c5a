"""Trivial-policy anchors of the multi-objective tasks (tasks/mo_floors.py): zero-action, uniform-random and, where
the suite has one, the single-objective expert; discounted (gamma 0.99) vector returns over reset seeds 0-4; the
hypervolume and expected-utility floors and the scalar score's reference scores (tasks/mo_tasks.py).

  python benchmarks/mo_floors.py                                  # every MO task (about 1 minute of one core)
  python benchmarks/mo_floors.py --tasks smoke-mo-v0,mo-hopper-v5 --episodes 5

Prints one markdown table (the one in docs/morl.md) and each task's measured ref_min/ref_max.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from algorithms.core.errors import CtrlbenchError
from tasks.mo_floors import N_EPISODES, measure
from tasks.mo_tasks import mo_tasks


def fmt(point) -> str:
    return "–" if point is None else "[" + ", ".join(f"{v:.1f}" for v in point) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", help="comma-separated MO task ids (default: all)")
    parser.add_argument("--episodes", type=int, default=N_EPISODES, help="episodes per policy (reset seeds 0..n-1)")
    parser.add_argument("--no-expert", action="store_true", help="skip the expert anchors")
    args = parser.parse_args()
    tasks = {t.id: t for t in mo_tasks()}
    wanted = args.tasks.split(",") if args.tasks else list(tasks)
    unknown = [t for t in wanted if t not in tasks]
    if unknown:
        raise SystemExit(f"error: unknown MO task(s) {', '.join(unknown)}; known: {', '.join(tasks)}")
    print(f"# {args.episodes} episodes per policy, reset seeds 0-{args.episodes - 1}, discounted vector returns")
    print("| task | ref point | zero-action | uniform-random | expert | HV floor | EUM floor | ref_min | ref_max "
          "| s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task_id in wanted:
        task, start = tasks[task_id], time.time()
        try:
            a = measure(task, args.episodes, expert=not args.no_expert)
        except CtrlbenchError as e:
            raise SystemExit(f"error: {e}") from None
        ref_max = a.anchor_eum if a.anchor_eum is not None else a.utility_floor + 100.0
        print(f"| {task_id} | {fmt(task.reference_point)} | {fmt(a.zero)} | {fmt(a.random)} | {fmt(a.expert)} "
              f"| {a.hv_floor:,.0f} | {a.eum_floor:.2f} | {a.utility_floor:.4f} | {ref_max:.4f} "
              f"| {time.time() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
