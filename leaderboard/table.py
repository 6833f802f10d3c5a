"""Records -> tables: per (algorithm, task) statistics over seeds, and per-algorithm aggregates over tasks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from leaderboard.records import load_records
from leaderboard.stats import AGGREGATES, interval_estimate, probability_of_improvement, t_interval

RUN_COLUMNS = ["algorithm", "task", "task_kind", "task_family", "seed", "config_hash", "steps", "final_score",
               "best_score", "final_return", "dataset_id", "dataset_metadata_hash"]


def select_records(results_dir: str | Path, algos: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                   kinds: Sequence[str] | None = None) -> list[dict]:
    """Finished runs, optionally filtered by algorithm, task and task kind."""
    return [r for r in load_records(results_dir) if r.get("status") == "ok"
            and (not algos or r["algorithm"] in algos) and (not tasks or r["task"] in tasks)
            and (not kinds or r.get("task_kind", "offline") in kinds)]


def _budget(steps: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if steps % size == 0:
            return f"{steps // size}{unit}"
    return str(steps)


def entry_labels(records: list[dict]) -> list[str]:
    """Each record's leaderboard row: its algorithm, told apart by update budget when the selection holds the
    algorithm at several budgets, and by config or dataset hash when one (algorithm, task, budget) was run several
    ways; so no cell averages runs made differently (`ctrlbench beats` refuses such a mix outright)."""
    budgets: dict[str, set[int]] = {}
    ways: dict[tuple, set[tuple]] = {}
    for r in records:
        steps = r["protocol"]["steps"]
        budgets.setdefault(r["algorithm"], set()).add(steps)
        ways.setdefault((r["algorithm"], r["task"], steps), set()).add(
            (r["config_hash"], r.get("dataset_metadata_hash")))
    labels = []
    for r in records:
        algo, steps = r["algorithm"], r["protocol"]["steps"]
        label = f"{algo} @{_budget(steps)}" if len(budgets[algo]) > 1 else algo
        same = ways[(algo, r["task"], steps)]
        if len({c for c, _ in same}) > 1:
            label += f" config {r['config_hash'][:6]}"
        if len({d for _, d in same}) > 1:
            label += f" data {str(r.get('dataset_metadata_hash'))[:6]}"
        labels.append(label)
    return labels


def row_order(label: str) -> tuple:
    """Sort key for leaderboard rows: by algorithm, then budget ascending (`bc @50k` before `bc @200k`)."""
    match = re.fullmatch(r"(\S+)(?: @(\d+)([kM]?))?(.*)", label)
    assert match is not None  # the pattern matches every string
    name, number, unit, rest = match.groups()
    return name, int(number or 0) * {"": 1, "k": 1_000, "M": 1_000_000}[unit or ""], rest


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run; `algorithm` is the run's leaderboard row (`entry_labels`)."""
    rows = [{
        "algorithm": label, "task": r["task"], "task_kind": r.get("task_kind", "offline"),
        "task_family": r.get("task_family", ""), "seed": r["seed"], "config_hash": r["config_hash"],
        "steps": r["protocol"]["steps"], "final_score": r["final"]["score_mean"],
        "best_score": r["best"]["score_mean"], "final_return": r["final"]["return_mean"],
        "dataset_id": r.get("dataset_id"), "dataset_metadata_hash": r.get("dataset_metadata_hash"),
    } for r, label in zip(records, entry_labels(records), strict=True)]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def curves_frame(records: list[dict]) -> pd.DataFrame:
    """Learning curves: one row per (run, evaluation point), the final evaluation included."""
    rows = [{"algorithm": label, "task": r["task"], "seed": r["seed"], "step": p["step"], "score": p["score_mean"]}
            for r, label in zip(records, entry_labels(records), strict=True) for p in [*r["curve"], r["final"]]]
    return pd.DataFrame(rows, columns=["algorithm", "task", "seed", "step", "score"])


def per_task_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Per (algorithm, task): mean, std (ddof=0), Student-t 95% CI and seed count of the final score;
    mean of the best score as a secondary column."""
    rows = []
    for (algo, task), g in df.groupby(["algorithm", "task"], sort=True):
        scores = g["final_score"].to_numpy()
        low, high = t_interval(scores)
        rows.append({"algorithm": algo, "task": task, "family": g["task_family"].iloc[0],
                     "mean": scores.mean(), "std": scores.std(), "ci_low": low, "ci_high": high,
                     "n": len(scores), "best_mean": g["best_score"].mean(), "steps": int(g["steps"].max())})
    return pd.DataFrame(rows, columns=["algorithm", "task", "family", "mean", "std", "ci_low", "ci_high", "n",
                                       "best_mean", "steps"])


def score_sets(df: pd.DataFrame, tasks: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """Per algorithm, one array of final scores per task; only algorithms that ran every task."""
    sets = {}
    for algo, g in df.groupby("algorithm"):
        per_task = [g.loc[g["task"] == t, "final_score"].to_numpy() for t in tasks]
        if all(len(s) for s in per_task):
            sets[algo] = per_task
    return sets


def aggregate_stats(df: pd.DataFrame, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per algorithm over all tasks: mean, median, IQM and optimality gap with stratified-bootstrap 95% CIs."""
    tasks = sorted(df["task"].unique())
    rows = []
    for algo, scores in score_sets(df, tasks).items():
        row: dict = {"algorithm": algo, "tasks": len(tasks), "runs": int(sum(len(s) for s in scores))}
        for name, fn in AGGREGATES.items():
            point, low, high = interval_estimate(scores, fn, reps=reps, seed=seed)
            row.update({name: point, f"{name}_low": low, f"{name}_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def improvement_matrix(df: pd.DataFrame) -> pd.DataFrame:
    """P(row algorithm > column algorithm) over the tasks both ran."""
    tasks = sorted(df["task"].unique())
    sets = score_sets(df, tasks)
    algos = sorted(sets)
    return pd.DataFrame([[probability_of_improvement(sets[a], sets[b]) if a != b else np.nan for b in algos]
                         for a in algos], index=algos, columns=algos)


def markdown_table(df: pd.DataFrame, reps: int = 2000, aggregate: pd.DataFrame | None = None) -> str:
    """The per-task table by family, then the aggregates (`aggregate`: `aggregate_stats(df)` when the caller has
    it already, since its bootstrap is the slow part)."""
    if df.empty:
        return "_no result records yet: run `ctrlbench run ...` first_"
    stats = per_task_stats(df)
    out: list[str] = []
    for family, fam in stats.groupby("family", sort=True):
        tasks = sorted(fam["task"].unique())
        algos = sorted(fam["algorithm"].unique(), key=row_order)
        cell = {(r.algorithm, r.task): f"{r.mean:.1f} ± {r.std:.1f} ({r.n})" for r in fam.itertuples()}
        if len(stats["family"].unique()) > 1:
            out.append(f"**{family}**\n")
        out.append("| algorithm | " + " | ".join(tasks) + " |")
        out.append("|---|" + "---|" * len(tasks))
        for a in algos:
            out.append(f"| {a} | " + " | ".join(cell.get((a, t), "–") for t in tasks) + " |")
        out.append("")
    # ddof 0 as in the papers' tables (CORL, TD3+BC); `ctrlbench beats` and `check` use ddof 1, so say which.
    out.append("Final normalized score (100 = expert, 0 = random): mean ± std over seeds (ddof 0; number of seeds).")
    agg = aggregate_stats(df, reps=reps) if aggregate is None else aggregate
    if len(df["task"].unique()) > 1 and not agg.empty:
        out += ["", "| algorithm | mean | median | IQM | optimality gap |", "|---|---|---|---|---|"]
        for r in agg.sort_values("iqm", ascending=False).itertuples():
            cells = [f"{getattr(r, m):.1f} [{getattr(r, m + '_low'):.1f}, {getattr(r, m + '_high'):.1f}]"
                     for m in ("mean", "median", "iqm", "optimality_gap")]
            out.append(f"| {r.algorithm} | " + " | ".join(cells) + " |")
        out += ["", "Aggregates over tasks with stratified-bootstrap 95% CIs (rliable's definitions)."]
        left_out = sorted(set(df["algorithm"]) - set(agg["algorithm"]))
        if left_out:
            out.append(f"Left out of the aggregates (no score on every task): {', '.join(left_out)}.")
    return "\n".join(out)
