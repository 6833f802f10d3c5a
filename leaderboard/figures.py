"""Figures from the tables: learning curves per task, aggregate interval estimates, performance profiles."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from algorithms.core.io import atomic_write_bytes
from leaderboard.stats import performance_profile
from leaderboard.table import score_sets


def _save(fig: plt.Figure, out: Path, name: str) -> list[Path]:
    """PNG and SVG, written atomically and byte-identical when regenerated from the same records (no creation
    date, fixed SVG element ids), so a committed leaderboard changes only when its numbers do."""
    paths = []
    for ext in ("png", "svg"):
        buffer = io.BytesIO()
        with plt.rc_context({"svg.hashsalt": "ctrlbench"}):
            fig.savefig(buffer, format=ext, dpi=120, bbox_inches="tight", metadata={"Date": None})
        atomic_write_bytes(out / f"{name}.{ext}", buffer.getvalue())
        paths.append(out / f"{name}.{ext}")
    plt.close(fig)
    return paths


def learning_curves(curves: pd.DataFrame, out: Path) -> list[Path]:
    """Mean +- std over seeds of the normalized score against updates, one panel per task."""
    tasks = sorted(curves["task"].unique())
    if not tasks:
        return []
    cols = min(3, len(tasks))
    rows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for algo, g in curves[curves["task"] == task].groupby("algorithm"):
            stats = g.groupby("step")["score"].agg(["mean", "std"]).fillna(0.0)
            ax.plot(stats.index, stats["mean"], marker="o", markersize=3, label=algo)
            ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("updates")
        ax.set_ylabel("normalized score")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out, "learning_curves")


def interval_estimates(agg: pd.DataFrame, out: Path) -> list[Path]:
    """Point estimates and 95% CIs of mean, median, IQM and optimality gap per algorithm."""
    if agg.empty:
        return []
    metrics = ["median", "iqm", "mean", "optimality_gap"]
    algos = list(agg.sort_values("iqm")["algorithm"])
    fig, axes = plt.subplots(1, 4, figsize=(14, 0.5 * len(algos) + 1.5), sharey=True)
    for ax, m in zip(axes, metrics):
        for i, algo in enumerate(algos):
            r = agg[agg["algorithm"] == algo].iloc[0]
            ax.barh(i, r[f"{m}_high"] - r[f"{m}_low"], left=r[f"{m}_low"], height=0.6, alpha=0.6)
            ax.plot([r[m]], [i], "k|", markersize=14)
        ax.set_yticks(range(len(algos)), algos)
        ax.set_title(m.replace("_", " "))
        ax.grid(axis="x", alpha=0.3)
    fig.supxlabel("normalized score (stratified bootstrap 95% CI)")
    fig.tight_layout()
    return _save(fig, out, "interval_estimates")


def performance_profiles(df: pd.DataFrame, out: Path) -> list[Path]:
    """Fraction of runs scoring above tau, per algorithm."""
    tasks = sorted(df["task"].unique())
    sets = score_sets(df, tasks)
    if not sets:
        return []
    top = max(110.0, float(df["final_score"].max()) * 1.05)
    taus = np.linspace(0.0, top, 101)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for algo, scores in sorted(sets.items()):
        ax.plot(taus, performance_profile(scores, taus), label=algo)
    ax.set_xlabel("normalized score tau")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out, "performance_profiles")
