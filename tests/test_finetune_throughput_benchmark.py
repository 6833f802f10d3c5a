"""benchmarks/finetune_throughput.py runs end to end on a tiny budget (its numbers are measured by hand, never
asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import cli_env

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_prints_each_rate_its_split_and_the_ratios(minari_root: Path) -> None:
    res = subprocess.run([sys.executable, "benchmarks/finetune_throughput.py", "--task", "smoke-finetune-v0",
                          "--n-envs", "2", "--n-steps", "5", "--hidden", "16,16,16", "--sb3", "--sb3-steps", "64",
                          "--rounds", "2", "--threads", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=cli_env(minari_root))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("# smoke-finetune-v0, cpu")
    assert [line.split()[0] for line in lines[1:4]] == ["dppo", "gaussian_ppo", "sb3"]
    for line in lines[1:3]:  # the split of an iteration's time sums to 100% (up to rounding)
        shares = [int(part.split()[-1].rstrip("%")) for part in line.split("  ")[-1].split(", ")]
        assert [part.split()[0] for part in line.split("  ")[-1].split(", ")] == ["policy", "sim", "update"]
        assert 98 <= sum(shares) <= 102
    assert any(line.startswith("ratio dppo / sb3 ppo:") for line in lines)
