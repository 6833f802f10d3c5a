"""Updates/s of this working tree against another git revision of ctrlbench, the two loops taking turns.

  python benchmarks/compare_revisions.py --base e0db4b4                 # TD3+BC, 40 rounds of 50 updates
  python benchmarks/compare_revisions.py --base HEAD~1 --algos td3_bc,iql --rounds 60
  python benchmarks/compare_revisions.py --base HEAD~1 --threads 1      # one thread a side, as a sweep's runs

A code change that saves a few percent is smaller than this 2-core guest's drift within a minute, and a ratio of
two separate benchmark runs cannot see it. Here each side runs in its own process (the base from a `git archive`
of its revision), on the same synthetic data as benchmarks/throughput.py, and the two take turns: round after
round, one runs `--updates` updates while the other waits on a pipe, the order alternating (throughput.py's
`interleaved_rates`). The speed-up is total base time over total working-tree time; the quartiles of the
per-round ratios show its spread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from throughput import harmonic_mean, interleaved_rates  # this file's directory is on sys.path

REPO = Path(__file__).resolve().parent.parent


def worker(name: str, size: int, warmup: int, threads: int | None) -> None:
    """Serve "N" lines on stdin: run N updates of `name`, answer "done" (the parent times the turn)."""
    import torch
    from throughput import context, synthetic  # `algorithms` comes from PYTHONPATH, the tree under test

    import algorithms
    from algorithms.core.registry import get_algorithm

    if threads:
        torch.set_num_threads(threads)

    cls = get_algorithm(name)
    update = cls(cls.Config(), context(synthetic(size), "cpu")).update
    for _ in range(warmup):
        update()
    print("ready", Path(algorithms.__file__).resolve().parent.parent, flush=True)
    for line in sys.stdin:
        for _ in range(int(line)):
            update()
        print("done", flush=True)


def checkout(rev: str, into: Path) -> Path:
    """The revision's tracked files, extracted under `into`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], check=True,
                             capture_output=True).stdout
    tar_path = into / "base.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def start(tree: Path, name: str, size: int, warmup: int, threads: int | None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen([sys.executable, __file__, "--worker", name, "--size", str(size), "--warmup",
                             str(warmup), *(["--threads", str(threads)] if threads else [])], cwd=tree, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    answer = proc.stdout.readline().split()
    if answer[:1] != ["ready"] or Path(answer[1]) != tree.resolve():
        raise SystemExit(f"error: the worker for {name} in {tree} did not start on that tree ({' '.join(answer)})")
    return proc


def remote_updates(proc: subprocess.Popen, n: int) -> Callable[[], None]:
    """One turn of a worker: n updates, returning when it answers."""
    def turn() -> None:
        proc.stdin.write(f"{n}\n")
        proc.stdin.flush()
        proc.stdout.readline()

    return turn


def compare(base_tree: Path, name: str, size: int, rounds: int, updates: int, warmup: int,
            threads: int | None) -> str:
    sides = {"new": start(REPO, name, size, warmup, threads), "base": start(base_tree, name, size, warmup, threads)}
    try:  # one timed call a round per side, each call a turn of `updates` updates (throughput.py's turn-taking)
        turns = interleaved_rates({side: remote_updates(proc, updates) for side, proc in sides.items()},
                                  rounds, 0, "cpu", rounds)
    finally:
        for proc in sides.values():
            proc.stdin.close()
            proc.wait()
    rate = {side: updates * harmonic_mean(r) for side, r in turns.items()}
    ratios = [new / base for new, base in zip(turns["new"], turns["base"], strict=True)]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return (f"{name:8s} working tree {rate['new']:7.1f} updates/s   base {rate['base']:7.1f} updates/s   "
            f"speed-up {rate['new'] / rate['base']:.3f}x (rounds: median {statistics.median(ratios):.3f}, "
            f"quartiles {q1:.3f}-{q3:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", help="git revision to compare against (e.g. HEAD, e0db4b4)")
    parser.add_argument("--algos", default="td3_bc")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--updates", type=int, default=50, help="updates per side per round")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--size", type=int, default=1_000_000, help="synthetic transitions")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of each side (default: all cores)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.size, args.warmup, args.threads)
    if not args.base:
        raise SystemExit("error: --base REVISION is required")
    if args.rounds < 2 or args.updates < 1:
        raise SystemExit("error: --rounds must be >= 2 and --updates >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            base_tree = checkout(args.base, Path(tmp))
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"error: cannot archive revision {args.base!r}: {e.stderr.decode().strip()}") from None
        print(f"# base {args.base}, {args.rounds} rounds of {args.updates} updates a side, cpu, "
              f"{args.threads or 'all'} threads a side, {args.size} synthetic transitions")
        for name in args.algos.split(","):
            print(compare(base_tree, name, args.size, args.rounds, args.updates, args.warmup, args.threads),
                  flush=True)


if __name__ == "__main__":
    main()
