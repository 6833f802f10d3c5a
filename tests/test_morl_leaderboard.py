"""The multi-objective leaderboard (leaderboard/morl.py): HV and EUM normalized between the trivial floor and the
union reference front, on hand-made records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import atomic_write_json
from leaderboard import morl
from leaderboard.report import write_leaderboard

TASK = "toy-mo-v0"
WEIGHTS = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
REF = [-100.0, -100.0]


def mo_record(algo: str, seed: int, front: list[tuple[float, float]], task: str = TASK, ref: list[float] = REF
              ) -> dict:
    return {"schema_version": 1, "status": "ok", "algorithm": algo, "task": task, "seed": seed,
            "task_kind": "multi-objective", "task_family": "mo-mujoco", "config_hash": f"{algo}cfg",
            "protocol": {"steps": 100}, "dataset_metadata_hash": None, "curve": [],
            "final": {"step": 100, "score_mean": 0.0, "return_mean": 0.0},
            "best": {"step": 100, "score_mean": 0.0, "return_mean": 0.0},
            "metrics": {"kind": "multi-objective", "front": [list(p) for p in front], "weights": WEIGHTS,
                        "reference_point": ref, "cardinality": len(front), "hypervolume": 0.0,
                        "expected_utility": 0.0}}


RECORDS = [
    mo_record("capql", 0, [(100.0, 50.0), (50.0, 100.0), (80.0, 80.0)]),  # HV 38,400 (morl-baselines' check)
    mo_record("capql", 1, [(50.0, 50.0)]),  # HV 150 x 150 = 22,500
    mo_record("pgmorl", 0, [(120.0, 0.0), (10.0, -5.0)]),  # (10, -5) is dominated: HV 220 x 100 = 22,000
]


@pytest.fixture(autouse=True)
def toy_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(morl.FLOOR_POINTS, TASK, ((0.0, 0.0), (-10.0, -10.0)))  # HV_floor 10,000, EUM_floor 0


def test_hv_and_eum_are_normalized_between_the_floor_and_the_union_front() -> None:
    runs = morl.mo_runs_frame(RECORDS).set_index(["algorithm", "seed"])
    # union front {(50,100), (80,80), (100,50), (120,0)}: 150*200 + 30*180 + 20*150 + 20*100 = 40,400;
    # its EUM: (120 + 80 + 100) / 3 = 100
    assert runs["hv_floor"].iloc[0] == pytest.approx(10_000.0) and runs["hv_ref"].iloc[0] == pytest.approx(40_400.0)
    assert runs["eum_floor"].iloc[0] == pytest.approx(0.0) and runs["eum_ref"].iloc[0] == pytest.approx(100.0)
    expected = {("capql", 0): (38_400.0, 280 / 3, 3), ("capql", 1): (22_500.0, 50.0, 1),
                ("pgmorl", 0): (22_000.0, 60.0, 1)}
    for key, (hv, eum, card) in expected.items():
        row = runs.loc[key]
        assert row["hypervolume"] == pytest.approx(hv) and row["expected_utility"] == pytest.approx(eum)
        assert row["cardinality"] == card
        assert row["hv_norm"] == pytest.approx((hv - 10_000) / 30_400)
        assert row["eum_norm"] == pytest.approx(eum / 100.0)


def test_per_algorithm_table_is_mean_and_std_over_seeds() -> None:
    stats = morl.mo_task_stats(morl.mo_runs_frame(RECORDS)).set_index("algorithm")
    assert stats.loc["capql", "n"] == 2
    assert stats.loc["capql", "hypervolume"] == pytest.approx(30_450.0)
    assert stats.loc["capql", "hypervolume_std"] == pytest.approx(7_950.0)  # population std, as leaderboard/safe
    assert stats.loc["capql", "cardinality"] == 2.0
    assert stats.loc["capql", "hv_norm"] == pytest.approx(np.mean([28_400 / 30_400, 12_500 / 30_400]))
    agg = morl.mo_aggregate(morl.mo_runs_frame(RECORDS)).set_index("algorithm")
    assert agg.loc["pgmorl", "eum_norm"] == pytest.approx(0.6) and agg.loc["pgmorl", "tasks"] == 1
    markdown = morl.mo_markdown(morl.mo_runs_frame(RECORDS))
    assert "| capql | toy-mo-v0 | 30,450 ± 7,950 | 71.7 ± 21.7 | 2.0 ± 1.0 | 0.67 ± 0.26 | 0.72 ± 0.22 | 2 |" \
        in markdown
    assert "| pgmorl | toy-mo-v0 | 22,000 ± 0 | 60.0 ± 0.0 |" in markdown and "| pgmorl | 1 | 0.39 | 0.60 |" in markdown


def test_a_point_below_the_reference_adds_nothing_and_is_counted() -> None:
    records = [*RECORDS, mo_record("sac", 0, [(200.0, -150.0), (50.0, 50.0)])]
    runs = morl.mo_runs_frame(records).set_index(["algorithm", "seed"])
    assert runs.loc[("sac", 0), "hypervolume"] == pytest.approx(22_500.0)
    assert runs.loc[("sac", 0), "points_below_reference"] == 1
    assert runs.loc[("sac", 0), "expected_utility"] > runs.loc[("capql", 1), "expected_utility"]  # EUM counts it


def test_no_run_above_the_floor_gives_nan_not_a_division_by_zero() -> None:
    runs = morl.mo_runs_frame([mo_record("bad", 0, [(-5.0, -5.0)])])
    assert np.isnan(runs["hv_norm"].iloc[0]) and np.isnan(runs["eum_norm"].iloc[0])
    assert "| bad | toy-mo-v0 | 9,025 ± 0 | -5.0 ± 0.0 | 1.0 ± 0.0 | – | – | 1 |" in morl.mo_markdown(runs)


def test_runs_of_one_task_with_different_reference_points_are_refused() -> None:
    records = [*RECORDS, mo_record("sac", 0, [(1.0, 1.0)], ref=[-1000.0, -100.0])]
    with pytest.raises(CtrlbenchError, match="2 reference points") as err:
        morl.mo_runs_frame(records)
    assert "\n" not in str(err.value)


def test_other_kinds_are_left_out() -> None:
    other = {**RECORDS[0], "task_kind": "offline", "task": "hopper-medium-v0"}
    assert set(morl.mo_runs_frame([*RECORDS, other])["task"]) == {TASK}


def test_front_plots_are_written_per_task(tmp_path: Path) -> None:
    three = mo_record("capql", 0, [(1.0, 2.0, 3.0), (3.0, 2.0, 1.0)], task="mo-hopper-v5", ref=[-100.0] * 3)
    three["metrics"]["weights"] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    paths = morl.plot_fronts([*RECORDS, three], tmp_path / "figs")
    assert [p.name for p in paths] == ["fronts_mo-hopper-v5.png", "fronts_toy-mo-v0.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5_000 for p in paths)
    again = morl.plot_fronts([*RECORDS, three], tmp_path / "again")
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]  # same records, same bytes


def test_mo_report_writes_tables_and_fronts(tmp_path: Path) -> None:
    markdown, files = morl.mo_report(RECORDS, tmp_path, plots=True)
    assert markdown.startswith("**multi-objective**")
    assert sorted(p.name for p in files) == ["fronts_toy-mo-v0.png", "mo_aggregate.csv", "mo_per_task.csv",
                                             "mo_runs.csv"]
    assert morl.mo_report([{**RECORDS[0], "task_kind": "offline"}], tmp_path / "none") == ("", [])


def test_peer_fronts_join_the_tables_scored_by_the_same_code(tmp_path: Path) -> None:
    for r in RECORDS:
        atomic_write_json(tmp_path / "runs" / f"{r['algorithm']}__{r['task']}__s{r['seed']}.json", r)
    peer = {"task": TASK, "algorithm": "pgmorl (morl-baselines)", "seed": 0, "env_steps": 4096,
            "front": [[130.0, 10.0]], "weights": WEIGHTS, "reference_point": REF,
            "hypervolume": -1.0}  # the peer script's own numbers are not what the table shows
    atomic_write_json(tmp_path / "peers" / "pgmorl__toy__s0.json", peer)
    (peer_row,) = morl.peer_records(tmp_path)
    runs = morl.mo_runs_frame([*RECORDS, peer_row]).set_index(["algorithm", "seed"])
    assert runs.loc[("pgmorl (morl-baselines)", 0), "hypervolume"] == pytest.approx(230.0 * 110.0)
    # the peer's point joins the union front and dominates (120, 0): 40,400 - 20 x 100 + 30 x 110
    assert runs["hv_ref"].iloc[0] == pytest.approx(40_400.0 - 20.0 * 100.0 + 30.0 * 110.0)
    report = write_leaderboard(tmp_path, tmp_path / "board", plots=False, reps=50)
    assert "| pgmorl (morl-baselines) | toy-mo-v0 | 25,300 ± 0 |" in report.markdown
    assert morl.peer_records(tmp_path, tasks=["other-task"]) == morl.peer_records(tmp_path, kinds=["offline"]) == []
    (tmp_path / "peers" / "broken.json").write_text('{"task": "toy-mo-v0"}')
    with pytest.raises(CtrlbenchError, match=r"broken.json is not a peer front .*KeyError") as e:
        morl.peer_records(tmp_path)
    assert "\n" not in str(e.value)
