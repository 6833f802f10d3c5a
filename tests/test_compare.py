"""`ctrlbench beats`: an algorithm beats a baseline on a task when the mean gap exceeds the summed seed stds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from algorithms.core.errors import CtrlbenchError
from leaderboard.compare import compare, verdicts
from leaderboard.records import SCHEMA_VERSION
from tests.conftest import run_cli


def record(algo: str, task: str, seed: int, score: float, steps: int = 1000, config: str = "c") -> dict:
    return {"schema_version": SCHEMA_VERSION, "status": "ok", "algorithm": algo, "task": task, "seed": seed,
            "config_hash": f"{algo}{config}",
            "protocol": {"steps": steps}, "dataset_metadata_hash": "d", "final": {"score_mean": score},
            "best": {"score_mean": score}, "curve": []}


def write_runs(results: Path, rows: list[dict]) -> None:
    (results / "runs").mkdir()
    for i, r in enumerate(rows):
        (results / "runs" / f"{i}.json").write_text(json.dumps(r))


def test_margin_spread_and_verdict_by_hand() -> None:
    records = [record("bc", "t1", s, v) for s, v in enumerate((40.0, 42.0, 44.0))]  # mean 42, std 2
    records += [record("bc", "t2", s, v) for s, v in enumerate((40.0, 42.0, 44.0))]
    records += [record("x", "t1", s, v) for s, v in enumerate((50.0, 51.0, 52.0))]  # +9 > 2 + 1
    records += [record("x", "t2", s, v) for s, v in enumerate((44.0, 45.0, 46.0))]  # +3 < 2 + 1: no
    records += [record("x", "t3", 0, 99.0)]  # no baseline on t3: not compared
    (t1, t2) = compare(records, "bc")
    assert (t1.task, t1.margin, t1.spread, t1.beats) == ("t1", 9.0, 3.0, True)
    assert (t2.margin, t2.spread, t2.beats) == (3.0, 3.0, False)
    assert verdicts([t1, t2], min_tasks=1) == {"x": True} and verdicts([t1, t2], min_tasks=2) == {"x": False}


def test_only_runs_made_the_same_way_are_compared() -> None:
    records = [record("bc", "t1", 0, 10.0, steps=1000), record("x", "t1", 0, 90.0, steps=5000)]
    assert compare(records, "bc") == []
    with pytest.raises(CtrlbenchError, match="mix several configs"):
        compare([record("bc", "t1", 0, 1.0), record("bc", "t1", 1, 1.0, config="other")], "bc")
    with pytest.raises(CtrlbenchError, match="no records of the baseline 'bc'"):
        compare([record("x", "t1", 0, 1.0)], "bc")


def test_cli_exit_code_follows_the_verdict(tmp_path: Path) -> None:
    write_runs(tmp_path, [record("bc", "t1", s, 40.0 + s) for s in range(3)]
               + [record("x", "t1", s, 60.0 + s) for s in range(3)])
    ok = run_cli("beats", "--results", str(tmp_path))
    assert ok.returncode == 0 and "x: PASS" in ok.stdout
    fail = run_cli("beats", "--results", str(tmp_path), "--min-tasks", "2")
    assert fail.returncode == 1 and "x: FAIL" in fail.stdout


def test_a_task_with_too_few_seeds_does_not_count(tmp_path: Path) -> None:
    rows = [record("bc", "t1", s, 40.0 + s) for s in range(3)] + [record("x", "t1", s, 90.0 + s) for s in range(2)]
    write_runs(tmp_path, rows)
    (c,) = compare(rows, "bc")
    assert c.beats and verdicts([c], 1) == {"x": False} and verdicts([c], 1, min_seeds=2) == {"x": True}
    short = run_cli("beats", "--results", str(tmp_path))
    assert short.returncode == 1 and "too few seeds (< 3)" in short.stdout and "x: FAIL" in short.stdout
    assert run_cli("beats", "--results", str(tmp_path), "--min-seeds", "2").returncode == 0
    bad = run_cli("beats", "--results", str(tmp_path), "--min-seeds", "0")
    assert bad.returncode != 0 and "at least 1" in bad.stderr
