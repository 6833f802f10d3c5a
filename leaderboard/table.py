"""Records -> a per-task table: rows algorithms, columns tasks, cells mean +- std (n seeds)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from algorithms.core.io import atomic_write_text
from runners.records import load_records


def records_frame(results_dir: str | Path) -> pd.DataFrame:
    """One row per finished run: algorithm, task, seed, final and best normalized scores."""
    rows = [{
        "algorithm": r["algorithm"], "task": r["task"], "seed": r["seed"], "config_hash": r["config_hash"],
        "steps": r["protocol"]["steps"], "final_score": r["final"]["score_mean"],
        "best_score": r["best"]["score_mean"], "final_return": r["final"]["return_mean"],
    } for r in load_records(results_dir) if r.get("status") == "ok"]
    columns = ["algorithm", "task", "seed", "config_hash", "steps", "final_score", "best_score", "final_return"]
    return pd.DataFrame(rows, columns=columns)


def per_task_stats(df: pd.DataFrame) -> pd.DataFrame:
    """mean, std (ddof=0 over seeds) and seed count of the final normalized score."""
    grouped = df.groupby(["algorithm", "task"])["final_score"]
    return grouped.agg(mean="mean", std=lambda x: x.std(ddof=0), n="count").reset_index()


def markdown_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_no result records yet: run `ctrlbench run ...` first_"
    stats = per_task_stats(df)
    tasks = sorted(stats["task"].unique())
    algos = sorted(stats["algorithm"].unique())
    cell = {(r.algorithm, r.task): f"{r.mean:.1f} ± {r.std:.1f} ({r.n})" for r in stats.itertuples()}
    lines = ["| algorithm | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for a in algos:
        lines.append(f"| {a} | " + " | ".join(cell.get((a, t), "–") for t in tasks) + " |")
    lines.append("")
    lines.append("Final normalized score (100 = expert, 0 = random): mean ± std over seeds (number of seeds).")
    return "\n".join(lines)


def write_leaderboard(results_dir: str | Path, out_dir: str | Path) -> tuple[str, Path]:
    markdown = markdown_table(records_frame(results_dir))
    path = Path(out_dir) / "leaderboard.md"
    atomic_write_text(path, markdown + "\n")
    return markdown, path
