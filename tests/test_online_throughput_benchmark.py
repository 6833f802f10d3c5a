"""benchmarks/online_throughput.py runs end to end on a tiny budget (its numbers are measured by hand, never
asserted)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import cli_env

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_prints_each_rate_and_the_ratios(minari_root: Path) -> None:
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "benchmarks/online_throughput.py", "--task", "smoke-sim-to-real-v0",
                          "--algos", "h2o,sac", "--sb3", "--updates", "6", "--rounds", "2", "--warmup", "260",
                          "--threads", "1", "--hidden", "32,32"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=cli_env(minari_root))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("# smoke-sim-to-real-v0, cpu")
    assert [line.split()[0] for line in lines[1:4]] == ["h2o", "sac", "sb3"]
    assert any(line.startswith("ratio h2o / sac:") for line in lines)
    assert any(line.startswith("ratio sac / sb3 sac:") for line in lines)
