"""`ctrlbench leaderboard`: every output regenerated from the result records alone."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from algorithms.core.io import atomic_write_text
from leaderboard import figures, html
from leaderboard.morl import mo_report, peer_records
from leaderboard.safe import is_safe_record, safe_markdown, safe_runs_frame, safe_task_stats
from leaderboard.table import (
    aggregate_stats,
    curves_frame,
    improvement_matrix,
    markdown_table,
    per_task_stats,
    runs_frame,
    select_records,
)

README_START, README_END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


@dataclass
class Report:
    markdown: str
    files: list[Path] = field(default_factory=list)


def write_leaderboard(results_dir: str | Path, out_dir: str | Path, algos: Sequence[str] | None = None,
                      tasks: Sequence[str] | None = None, kinds: Sequence[str] | None = None,
                      plots: bool = True, reps: int = 2000) -> Report:
    """Markdown, CSV (and Parquet when pyarrow is there), PNG/SVG figures and a static HTML page."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    selected = select_records(results_dir, algos, tasks, kinds)
    safe_runs = safe_runs_frame(selected)  # safe tasks have their own table: reward counts only within budget
    records = [r for r in selected if not is_safe_record(r)]
    runs = runs_frame(records)
    aggregate = aggregate_stats(runs, reps=reps) if not runs.empty else None  # once: the tables and figures share it
    markdown = markdown_table(runs, reps=reps, aggregate=aggregate) if records or safe_runs.empty else ""
    if not safe_runs.empty:
        markdown = "\n\n".join(part for part in (markdown, safe_markdown(safe_runs)) if part)
    peers = peer_records(results_dir, algos, tasks, kinds)  # peer libraries' fronts join the MO tables only
    mo_markdown, mo_files = mo_report(selected + peers, out, plots)  # multi-objective tasks: fronts, HV, EUM
    markdown = "\n\n".join(part for part in (markdown, mo_markdown) if part)
    report = Report(markdown)
    report.files += mo_files

    def text(name: str, content: str) -> None:
        atomic_write_text(out / name, content)
        report.files.append(out / name)

    text("leaderboard.md", markdown + "\n")
    if not safe_runs.empty:
        text("safe_runs.csv", safe_runs.to_csv(index=False))
        text("safe_per_task.csv", safe_task_stats(safe_runs).to_csv(index=False))
    if runs.empty:
        return report
    per_task = per_task_stats(runs)
    assert aggregate is not None
    improvement = improvement_matrix(runs)
    for name, frame in (("runs", runs), ("per_task", per_task), ("aggregate", aggregate)):
        text(f"{name}.csv", frame.to_csv(index=False))
        try:
            frame.to_parquet(out / f"{name}.parquet", index=False)
            report.files.append(out / f"{name}.parquet")
        except ImportError:  # parquet needs pyarrow or fastparquet, both optional
            pass
    text("improvement.csv", improvement.to_csv())
    figs: list[Path] = []
    if plots:
        figs += figures.learning_curves(curves_frame(records), out)
        figs += figures.interval_estimates(aggregate, out)
        figs += figures.performance_profiles(runs, out)
    report.files += figs
    text("index.html", html.render(per_task, aggregate, improvement, runs, figs))
    return report


def update_readme(readme: Path, markdown: str) -> None:
    """Replace the text between the leaderboard markers of the README with the generated table."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} section")
    block = f"{README_START}\n{markdown}\n{README_END}"
    atomic_write_text(readme, re.sub(re.escape(README_START) + ".*?" + re.escape(README_END),
                                     lambda _: block, text, flags=re.S))
