"""The safe leaderboard never rewards an unsafe policy: the raw pair is shown, the headline gates reward by cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaderboard.report import write_leaderboard
from leaderboard.safe import headline_scores, safe_runs_frame, safe_task_stats


def safe_record(algo: str, task: str, seed: int, score: float, cost: float, kappa: float = 40.0) -> dict:
    return {"schema_version": 1, "status": "ok", "algorithm": algo, "task": task, "seed": seed,
            "task_kind": "safe", "task_family": "velocity", "config_hash": f"{algo}cfg", "protocol": {"steps": 100},
            "dataset_metadata_hash": None, "curve": [],
            "final": {"step": 100, "score_mean": score, "return_mean": score, "cost_mean": cost,
                      "cost_norm": cost / kappa},
            "best": {"step": 100, "score_mean": score, "return_mean": score},
            "metrics": {"kind": "safe", "cost_limit": kappa}}


RECORDS = [
    safe_record("sac", "hopper-velocity-k40-v0", 0, 90.0, 400.0),  # fast and unsafe
    safe_record("sac", "hopper-velocity-k40-v0", 1, 80.0, 300.0),
    safe_record("sac_lag", "hopper-velocity-k40-v0", 0, 50.0, 30.0),  # safe
    safe_record("sac_lag", "hopper-velocity-k40-v0", 1, 40.0, 50.0),  # this seed alone over budget: mean 1.0
]


def leaderboard_markdown(tmp_path: Path, records: list[dict]) -> str:
    """The markdown `ctrlbench leaderboard` writes for these records."""
    runs = tmp_path / "runs"
    runs.mkdir()
    for i, r in enumerate(records):
        (runs / f"{i}.json").write_text(json.dumps(r))
    return write_leaderboard(tmp_path, tmp_path / "out", plots=False, reps=10).markdown


def test_unsafe_entries_score_zero_and_the_raw_pair_stays() -> None:
    stats = safe_task_stats(safe_runs_frame(RECORDS)).set_index("algorithm")
    assert stats.loc["sac", "reward_norm"] == pytest.approx(0.85) and stats.loc["sac", "cost_norm"] == 8.75
    assert not stats.loc["sac", "safe"] and stats.loc["sac", "headline"] == 0.0
    assert stats.loc["sac_lag", "cost_norm"] == pytest.approx(1.0) and stats.loc["sac_lag", "safe"]  # <= 1 is safe
    assert stats.loc["sac_lag", "headline"] == pytest.approx(0.45)
    assert stats.loc["sac_lag", "safe_rate"] == 0.5 and stats.loc["sac", "safe_rate"] == 0.0


def test_a_task_not_run_leaves_no_headline_rather_than_a_zero(tmp_path: Path) -> None:
    extra = [*RECORDS, safe_record("sac_lag", "ant-velocity-k40-v0", 0, 60.0, 10.0)]
    assert headline_scores(safe_runs_frame(extra)) == {"sac": None, "sac_lag": pytest.approx((0.45 + 0.6) / 2)}
    markdown = leaderboard_markdown(tmp_path, extra)
    assert "| sac | – | ~~0.85~~ / **8.75** (2) | – (1 of 2 tasks) | 0% |" in markdown
    assert "| sac_lag | 0.60 / 0.25 (1) | 0.45 / 1.00 (2) | 0.53 | 67% |" in markdown


def test_leaderboard_puts_safe_tasks_in_their_own_table(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    for r in RECORDS:
        (runs / f"{r['algorithm']}_{r['seed']}.json").write_text(json.dumps(r))
    report = write_leaderboard(tmp_path, tmp_path / "out", plots=False, reps=10)
    assert "**safe (online)**" in report.markdown and "~~0.85~~ / **8.75** (2)" in report.markdown
    assert "| sac_lag | 0.45 / 1.00 (2) | 0.45 | 50% |" in report.markdown
    assert "Final normalized score" not in report.markdown  # no reward-only table of the safe runs
    assert (tmp_path / "out" / "safe_per_task.csv").exists()


def test_online_and_offline_safe_tasks_get_a_table_and_headline_each(tmp_path: Path) -> None:
    offline = safe_record("bc_safe", "offline-hopper-velocity-k40-v0", 0, 30.0, 20.0)
    offline["task_kind"] = offline["metrics"]["kind"] = "offline-safe"
    markdown = leaderboard_markdown(tmp_path, [*RECORDS, offline])
    assert markdown.count("**offline-safe**") == 1 and markdown.count("**safe (online)**") == 1
    offline_part, online_part = markdown.split("**safe (online)**")
    assert "| bc_safe | 0.30 / 0.50 (1) | 0.30 | 100% |" in offline_part  # not halved by the online task
    assert "sac_lag" not in offline_part and "bc_safe" not in online_part
    assert "| sac_lag | 0.45 / 1.00 (2) | 0.45 | 50% |" in online_part
