"""Leaderboard outputs from records, and the score-regression check against committed bands."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from algorithms.core.config import stable_hash
from leaderboard.check import check, derive_bands, load_bands
from leaderboard.records import IDENTITY_KEYS, load_records
from leaderboard.report import README_END, README_START, update_readme, write_leaderboard
from tests.conftest import REPO, run_cli

REGRESSION = REPO / "results" / "regression"


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)

    def handle_data(self, data) -> None:
        self.text.append(data)


def test_leaderboard_writes_every_output(tmp_path: Path) -> None:
    report = write_leaderboard(REGRESSION, tmp_path, reps=200)
    names = {p.name for p in report.files}
    assert {"leaderboard.md", "runs.csv", "per_task.csv", "aggregate.csv", "index.html",
            "learning_curves.png", "learning_curves.svg", "performance_profiles.svg",
            "interval_estimates.png"} <= names
    page = _Collector()
    page.feed((tmp_path / "index.html").read_text())
    text = " ".join(page.text)
    for algo in {r["algorithm"] for r in load_records(REGRESSION)}:
        assert algo in text
    assert "table" in page.tags and "svg" in page.tags and "script" in page.tags
    assert "Protocol" in text and "ctrlbench/pendulum/smoke-v0" in text


def test_filters_restrict_the_table(tmp_path: Path) -> None:
    report = write_leaderboard(REGRESSION, tmp_path, algos=["bc"], plots=False, reps=100)
    assert "| bc |" in report.markdown and "td3_bc" not in report.markdown


def test_readme_section_is_replaced(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold\n{README_END}\noutro\n")
    update_readme(readme, "| new | table |")
    assert readme.read_text() == f"intro\n{README_START}\n| new | table |\n{README_END}\noutro\n"


def test_committed_bands_pass_on_reference_records() -> None:
    result = check(load_records(REGRESSION), load_bands(REGRESSION / "bands.json"))
    assert not result.failures and not result.unbanded and len(result.passed) == 9


def test_derived_bands_match_the_committed_file() -> None:
    committed = load_bands(REGRESSION / "bands.json")
    fresh = derive_bands(load_records(REGRESSION), committed["margin"])
    assert fresh["bands"] == committed["bands"]


def test_check_fails_naming_algorithm_and_task_on_a_degraded_record(tmp_path: Path) -> None:
    shutil.copytree(REGRESSION / "runs", tmp_path / "runs")
    bands = load_bands(REGRESSION / "bands.json")
    victim = sorted((tmp_path / "runs").glob("td3_bc*.json"))[0]
    record = json.loads(victim.read_text())
    band = next(b for b in bands["bands"].values() if b["algorithm"] == "td3_bc")
    record["final"]["score_mean"] = band["low"] - 1.0
    victim.write_text(json.dumps(record))
    res = run_cli("check", "--results", str(tmp_path), "--bands", str(REGRESSION / "bands.json"))
    assert res.returncode == 1
    assert f"REGRESSION td3_bc on smoke-v0 seed {record['seed']}: expected {band['low']:.1f}" in res.stdout


def test_identity_keys_are_what_the_config_hash_covers() -> None:
    """IDENTITY_KEYS must name exactly the fields each committed record's config hash was computed from."""
    records = load_records(REPO / "results")
    assert len(records) > 9
    for r in records:
        assert stable_hash({k: r[k] for k in IDENTITY_KEYS}) == r["config_hash"], r["run_id"]


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("config.alpha", 3.0, "config.alpha: 2.5 -> 3.0"),
    ("dataset_metadata.ref_max_score", -165.7917, "dataset_metadata.ref_max_score: -165.7916 -> -165.7917"),
])
def test_a_record_without_a_band_is_told_what_sets_it_apart(field: str, value: float, expected: str) -> None:
    record = json.loads(sorted((REGRESSION / "runs").glob("td3_bc*.json"))[0].read_text())
    section, key = field.split(".")
    record[section][key] = value
    record["config_hash"] = "feedfacefeed"
    result = check([record], load_bands(REGRESSION / "bands.json"))
    assert len(result.unbanded) == 1 and expected in result.unbanded[0], result.unbanded


@pytest.mark.parametrize("bad", ["missing", "garbage"])
def test_bad_bands_file_is_one_line(tmp_path: Path, bad: str) -> None:
    bands = tmp_path / "bands.json"
    if bad == "garbage":
        bands.write_text("{not json")
    res = run_cli("check", "--results", str(REGRESSION), "--bands", str(bands))
    assert res.returncode == 1 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_regression_suite_reproduces_within_committed_bands(minari_root: Path, tmp_path: Path) -> None:
    """The CI regression suite: rerun the committed sweep and check it against the committed bands."""
    res = run_cli("sweep", "--file", str(REGRESSION / "sweep.yaml"), "--results", str(tmp_path), "--workers", "2",
                  minari=minari_root)
    assert res.returncode == 0, res.stdout + res.stderr
    verdict = run_cli("check", "--results", str(tmp_path), "--bands", str(REGRESSION / "bands.json"))
    assert verdict.returncode == 0, verdict.stdout
    assert "9 within band" in verdict.stdout or "0 below or failed, 0 without a band" in verdict.stdout


def test_check_defaults_to_the_committed_regression_suite() -> None:
    res = run_cli("check")
    assert res.returncode == 0 and "9 within band" in res.stdout, res.stdout + res.stderr


def test_check_on_every_committed_record_judges_the_covered_ones_and_lists_the_rest() -> None:
    """A fresh clone's `ctrlbench check --results results`: the regression records are judged, the learning-check
    records are listed as not judged, and the check passes."""
    res = run_cli("check", "--results", str(REPO / "results"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "9 within band" in res.stdout and "0 without a band" in res.stdout
    assert "not judged td3_bc on walker2d-medium-v0" in res.stdout


def test_a_covered_record_without_a_band_fails_and_an_uncovered_one_is_only_listed() -> None:
    bands = load_bands(REGRESSION / "bands.json")
    record = json.loads(sorted((REGRESSION / "runs").glob("bc*.json"))[0].read_text())
    changed = {**record, "config_hash": "feedfacefeed", "config": {**record["config"], "lr": 1e-3}}
    longer = {**record, "protocol": {**record["protocol"], "steps": 2000}, "config_hash": "0123456789ab"}
    result = check([changed, longer], bands)
    assert len(result.unbanded) == 1 and "config.lr: 0.0003 -> 0.001" in result.unbanded[0]
    assert result.not_covered == ["bc on smoke-v0 at 2000 updates, config 0123456789ab: 1 runs"]
    failed = {**record, "status": "failed", "error": "non-finite critic_loss = nan at update 40"}
    assert check([failed], bands).failures == [f"bc on smoke-v0 seed {record['seed']}: the run failed "
                                              "(non-finite critic_loss = nan at update 40)"]


def test_records_below_results_are_all_found() -> None:
    """`ctrlbench leaderboard` and `check` with the default --results see every committed record below it."""
    committed = sorted((REPO / "results").glob("*/runs/*.json"))
    assert len(load_records(REGRESSION)) == 9 and len(committed) > 9
    assert len(load_records(REPO / "results")) == len(committed)


def test_markdown_names_the_std_and_the_algorithms_left_out_of_the_aggregates() -> None:
    import pandas as pd

    from leaderboard.table import RUN_COLUMNS, markdown_table

    rows = [{"algorithm": a, "task": t, "task_family": "f", "seed": s, "final_score": 10.0 * s, "best_score": 0.0,
             "steps": 1} for a, ts in (("full", ("t1", "t2")), ("partial", ("t1",))) for t in ts for s in range(3)]
    md = markdown_table(pd.DataFrame(rows).reindex(columns=RUN_COLUMNS), reps=50)
    assert "10.0 ± 8.2 (3)" in md  # scores 0, 10, 20: population std 8.16, not the sample std 10.0
    assert "ddof 0" in md
    assert "| full |" in md.split("optimality gap")[1] and "| partial |" not in md.split("optimality gap")[1]
    assert "Left out of the aggregates (no score on every task): partial." in md


def _record(algo: str, task: str, steps: int, config: str = "cfg000", data: str = "data00") -> dict:
    return {"algorithm": algo, "task": task, "protocol": {"steps": steps}, "config_hash": config,
            "dataset_metadata_hash": data}


def test_entry_labels_split_budgets_configs_and_datasets_but_nothing_else() -> None:
    from leaderboard.table import entry_labels

    records = [_record("bc", "t1", 50_000), _record("bc", "t2", 50_000), _record("bc", "t1", 200_000),
               _record("iql", "t1", 1_000), _record("iql", "t2", 1_000, config="cfg111"),
               _record("spot", "t1", 50_000, config="aaaaaaaa"), _record("spot", "t1", 50_000, config="bbbbbbbb"),
               _record("cql", "t1", 1_500, data="d1"), _record("cql", "t1", 1_500, data="d2")]
    assert entry_labels(records) == ["bc @50k", "bc @50k", "bc @200k", "iql", "iql",
                                     "spot config aaaaaa", "spot config bbbbbb", "cql data d1", "cql data d2"]


def test_rows_sort_by_algorithm_then_budget() -> None:
    from leaderboard.table import row_order

    labels = ["bc @200k", "td3_bc", "bc @50k", "bc @1M", "bc @50k config abc", "bc @1k"]
    assert sorted(labels, key=row_order) == ["bc @1k", "bc @50k", "bc @50k config abc", "bc @200k", "bc @1M",
                                             "td3_bc"]


def test_regenerating_from_the_same_records_gives_identical_files(tmp_path: Path) -> None:
    first = write_leaderboard(REGRESSION, tmp_path / "a", reps=50)
    write_leaderboard(REGRESSION, tmp_path / "b", reps=50)
    assert any(p.suffix == ".svg" for p in first.files)
    for path in first.files:
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name
    assert not list((tmp_path / "a").glob(".*.tmp"))  # atomic writes leave no temporary files behind
