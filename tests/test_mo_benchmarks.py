"""benchmarks/mo_floors.py and benchmarks/pgmorl_peer.py run end to end on the smoke task (their numbers are
measured by hand and written in docs/morl.md, never asserted here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_floors_benchmark_prints_the_smoke_row() -> None:
    res = subprocess.run([sys.executable, "benchmarks/mo_floors.py", "--tasks", "smoke-mo-v0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if line.startswith("| smoke-mo-v0 |"))
    assert "| 385,917 | -267.62 | -267.6204 | -93.9428 |" in row  # the stored floors and reference scores


def test_floors_benchmark_refuses_an_unknown_task_in_one_line() -> None:
    res = subprocess.run([sys.executable, "benchmarks/mo_floors.py", "--tasks", "mo-nope-v5"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and res.stderr.strip().startswith("error: unknown MO task")
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(importlib.util.find_spec("morl_baselines") is not None, reason="morl-baselines is installed")
def test_pgmorl_peer_without_morl_baselines_fails_in_one_line() -> None:
    res = subprocess.run([sys.executable, "benchmarks/pgmorl_peer.py", "--task", "smoke-mo-v0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith("error: morl-baselines is not installed here")
