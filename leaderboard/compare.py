"""Does an algorithm beat a baseline by more than the seed spread? The learning checks' criterion.

Per task where both have records made the same way (same update budget, same dataset version):
  margin = mean_A - mean_B and spread = std_A + std_B, over the seeds' final normalized scores (std with ddof=1)
  A beats B on the task when margin > spread.
An algorithm passes when it beats the baseline on at least `min_tasks` of the tasks it was compared on.
A task counts only when both sides have at least `min_seeds` seeds (default 3, the fewest the protocol allows):
with fewer, the stds say little about the spread, and one seed has none at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from algorithms.core.errors import CtrlbenchError

DEFAULT_MIN_SEEDS = 3


@dataclass
class Comparison:
    algorithm: str
    task: str
    scores: list[float]
    baseline_scores: list[float]

    @staticmethod
    def _std(x: list[float]) -> float:
        return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0

    @property
    def margin(self) -> float:
        return float(np.mean(self.scores) - np.mean(self.baseline_scores))

    @property
    def spread(self) -> float:
        return self._std(self.scores) + self._std(self.baseline_scores)

    @property
    def beats(self) -> bool:
        return self.margin > self.spread

    def enough_seeds(self, min_seeds: int) -> bool:
        return min(len(self.scores), len(self.baseline_scores)) >= min_seeds

    def verdict(self, min_seeds: int) -> str:
        if not self.enough_seeds(min_seeds):
            return f"too few seeds (< {min_seeds})"
        return "yes" if self.beats else "no"


def _groups(records: list[dict[str, Any]]) -> dict[tuple[str, str, int, str | None], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, int, str | None], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == "ok":
            key = (r["algorithm"], r["task"], r["protocol"]["steps"], r.get("dataset_metadata_hash"))
            groups.setdefault(key, []).append(r)
    for (algo, task, steps, _), group in groups.items():
        if len({r["config_hash"] for r in group}) > 1:
            raise CtrlbenchError(f"records of {algo} on {task} at {steps} updates mix several configs; "
                                 f"compare one config at a time (a separate --results directory)")
    return groups


def compare(records: list[dict[str, Any]], baseline: str) -> list[Comparison]:
    """Every (algorithm, task) with a baseline group made the same way, sorted by algorithm then task."""
    groups = _groups(records)
    if not any(key[0] == baseline for key in groups):
        raise CtrlbenchError(f"no records of the baseline {baseline!r} to compare with")
    out = []
    for (algo, task, steps, data), group in sorted(groups.items(), key=lambda kv: kv[0][:3]):
        base = groups.get((baseline, task, steps, data))
        if algo != baseline and base:
            out.append(Comparison(algo, task, [r["final"]["score_mean"] for r in group],
                                  [r["final"]["score_mean"] for r in base]))
    return out


def verdicts(comparisons: list[Comparison], min_tasks: int, min_seeds: int = DEFAULT_MIN_SEEDS) -> dict[str, bool]:
    wins: dict[str, int] = {}
    for c in comparisons:
        wins[c.algorithm] = wins.get(c.algorithm, 0) + int(c.beats and c.enough_seeds(min_seeds))
    return {algo: n >= min_tasks for algo, n in wins.items()}


def report(comparisons: list[Comparison], baseline: str, min_tasks: int, min_seeds: int = DEFAULT_MIN_SEEDS) -> str:
    lines = [f"| algorithm | task | seeds | score | {baseline} | margin | spread | beats {baseline} |",
             "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c.algorithm} | {c.task} | {len(c.scores)} | {np.mean(c.scores):.1f} ± "
                     f"{Comparison._std(c.scores):.1f} | {np.mean(c.baseline_scores):.1f} ± "
                     f"{Comparison._std(c.baseline_scores):.1f} | {c.margin:+.1f} | {c.spread:.1f} | "
                     f"{c.verdict(min_seeds)} |")
    lines.append("")
    for algo, ok in verdicts(comparisons, min_tasks, min_seeds).items():
        lines.append(f"{algo}: {'PASS' if ok else 'FAIL'} (needs to beat {baseline} by more than the seed spread "
                     f"on at least {min_tasks} task(s), with at least {min_seeds} seeds on each side)")
    return "\n".join(lines)
