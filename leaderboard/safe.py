"""The safe leaderboard: reward counts only when the cost is within budget (the DSRL/OSRL convention).

Per run, from its record: the normalized reward R_norm (the run's final score / 100: DSRL's (R - r_min) / (r_max -
r_min) with the task's constants) and the normalized cost C_norm = (C + eps) / (kappa + eps), eps = 1 iff kappa = 0
(tasks/protocol.py); the run is safe iff C_norm <= 1.
Per (algorithm, task), over seeds: the raw pair (mean R_norm, mean C_norm, each with its std); the safe rate, the
share of seeds whose run is safe; and the headline, mean R_norm when the seed-mean C_norm is at most 1 (OSRL applies
the test to the averaged cost) and 0 otherwise, so an unsafe entry never scores. Over the tasks of one kind (online
`safe`, `offline-safe`: one table each), per algorithm: the mean headline and the overall safe rate. An algorithm
that has not run every task of its table gets no headline (shown as how many tasks it ran): a mean over a subset
is not comparable, and counting the missing task as 0 would rank "not run" with "unsafe". Safe tasks
appear only here, never in the reward-only tables, whose aggregates would otherwise rank an unsafe policy by its
reward.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from algorithms.core.registry import SAFE_KINDS
from leaderboard.table import entry_labels, row_order

SAFE_COLUMNS = ["algorithm", "task", "kind", "seed", "reward_norm", "cost", "cost_norm", "safe", "cost_limit"]
KIND_TITLES = {"safe": "safe (online)", "offline-safe": "offline-safe"}


def is_safe_record(record: dict) -> bool:
    return record.get("task_kind") in SAFE_KINDS


def safe_runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per safe-task run."""
    records = [r for r in records if is_safe_record(r)]
    rows = [{"algorithm": label, "task": r["task"], "kind": r["task_kind"], "seed": r["seed"],
             "reward_norm": r["final"]["score_mean"] / 100.0, "cost": r["final"]["cost_mean"],
             "cost_norm": r["final"]["cost_norm"], "safe": bool(r["final"]["cost_norm"] <= 1.0),
             "cost_limit": r["metrics"]["cost_limit"]}
            for r, label in zip(records, entry_labels(records), strict=True)]
    return pd.DataFrame(rows, columns=SAFE_COLUMNS)


def safe_task_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (algorithm, task): the raw pair over seeds, the safe rate and the gated headline."""
    rows = []
    for (algo, task), g in runs.groupby(["algorithm", "task"], sort=True):
        reward, cost_norm = g["reward_norm"].to_numpy(), g["cost_norm"].to_numpy()
        safe = bool(cost_norm.mean() <= 1.0)
        rows.append({"algorithm": algo, "task": task, "reward_norm": reward.mean(), "reward_std": reward.std(),
                     "cost_norm": cost_norm.mean(), "cost_norm_std": cost_norm.std(), "cost": g["cost"].mean(),
                     "safe_rate": g["safe"].mean(), "safe": safe, "headline": reward.mean() if safe else 0.0,
                     "n": len(g)})
    return pd.DataFrame(rows, columns=["algorithm", "task", "reward_norm", "reward_std", "cost_norm", "cost_norm_std",
                                       "cost", "safe_rate", "safe", "headline", "n"])


def safe_markdown(runs: pd.DataFrame) -> str:
    """One table per safe kind (online, offline): an online method never runs an offline task, so a headline over
    both would count every method's other kind as tasks not run."""
    out: list[str] = []
    for kind, of_kind in runs.groupby("kind", sort=True):
        out += [*kind_markdown(of_kind, KIND_TITLES.get(str(kind), str(kind))), ""]
    out += ["Cells: normalized reward / normalized cost (number of seeds), seed means. Normalized cost = "
            "(C + eps) / (kappa + eps), eps = 1 iff kappa = 0; an entry is safe when its mean normalized cost is "
            "at most 1. Unsafe entries are struck through and score 0 in the headline (mean over the table's tasks "
            "of the reward of safe entries, DSRL's convention; an algorithm that did not run every task has none, "
            "shown as the number of tasks it ran); the safe rate is the share of runs with normalized cost <= 1."]
    return "\n".join(out)


def kind_markdown(runs: pd.DataFrame, title: str) -> list[str]:
    stats = safe_task_stats(runs)
    tasks = sorted(stats["task"].unique())
    algos = sorted(stats["algorithm"].unique(), key=row_order)
    cell = {(r.algorithm, r.task): (f"{r.reward_norm:.2f} / {r.cost_norm:.2f} ({r.n})" if r.safe
                                    else f"~~{r.reward_norm:.2f}~~ / **{r.cost_norm:.2f}** ({r.n})")
            for r in stats.itertuples()}
    out = [f"**{title}**", "", "| algorithm | " + " | ".join(tasks) + " | headline | safe rate |",
           "|---|" + "---|" * (len(tasks) + 2)]
    headline = headline_scores(runs)
    for a in algos:
        safe_rate = runs.loc[runs["algorithm"] == a, "safe"].mean()
        ran = sum((a, t) in cell for t in tasks)
        score = f"{headline[a]:.2f}" if headline[a] is not None else f"– ({ran} of {len(tasks)} tasks)"
        out.append(f"| {a} | " + " | ".join(cell.get((a, t), "–") for t in tasks) + f" | {score} | {safe_rate:.0%} |")
    return out


def headline_scores(runs: pd.DataFrame) -> dict[str, float | None]:
    """Per algorithm, the mean over the table's tasks of its gated headline; None when it did not run them all."""
    stats = safe_task_stats(runs)
    n_tasks = len(stats["task"].unique())
    return {a: float(np.mean(g["headline"])) if len(g) == n_tasks else None for a, g in stats.groupby("algorithm")}
