"""Leaderboard statistics with rliable's definitions (Agarwal et al., 2021), in numpy.

Scores are normalized scores (100 = expert). A score set is one array of run scores per task (seeds may
differ in number between tasks). Aggregates pool runs x tasks; confidence intervals come from a stratified
bootstrap (runs resampled with replacement within each task) with percentile 95% intervals, as rliable's
`get_interval_estimates`. Tested against rliable itself on random data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sps

ScoreSet = Sequence[np.ndarray]  # one 1-D array of run scores per task


def _pooled(scores: ScoreSet) -> np.ndarray:
    return np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in scores])


def aggregate_mean(scores: ScoreSet) -> float:
    """Mean over tasks of the per-task mean (rliable: mean of the run x task matrix)."""
    return float(np.mean([np.mean(s) for s in scores]))


def aggregate_median(scores: ScoreSet) -> float:
    """Median over tasks of the per-task mean (rliable's `aggregate_median`)."""
    return float(np.median([np.mean(s) for s in scores]))


def aggregate_iqm(scores: ScoreSet) -> float:
    """Interquartile mean of all runs x tasks: the mean of the middle 50% (scipy trim_mean, 0.25)."""
    return float(sps.trim_mean(_pooled(scores), 0.25, axis=None))


def optimality_gap(scores: ScoreSet, gamma: float = 100.0) -> float:
    """gamma - mean(min(score, gamma)) over all runs x tasks: how far from expert, ignoring overshoot."""
    return float(gamma - np.mean(np.minimum(_pooled(scores), gamma)))


AGGREGATES: dict[str, Callable[[ScoreSet], float]] = {
    "mean": aggregate_mean, "median": aggregate_median, "iqm": aggregate_iqm, "optimality_gap": optimality_gap,
}


def stratified_bootstrap(scores: ScoreSet, metric: Callable[[ScoreSet], float], reps: int = 2000,
                         seed: int = 0) -> np.ndarray:
    """`reps` values of `metric` on score sets resampled with replacement within each task."""
    rng = np.random.RandomState(seed)
    arrays = [np.asarray(s, dtype=np.float64).ravel() for s in scores]
    out = np.empty(reps)
    for r in range(reps):
        out[r] = metric([a[rng.randint(0, len(a), size=len(a))] for a in arrays])
    return out


def interval_estimate(scores: ScoreSet, metric: Callable[[ScoreSet], float], reps: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> tuple[float, float, float]:
    """(point estimate, CI low, CI high) with a percentile stratified-bootstrap interval."""
    samples = stratified_bootstrap(scores, metric, reps, seed)
    alpha = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [alpha, 100 - alpha])
    return metric(scores), float(low), float(high)


def performance_profile(scores: ScoreSet, taus: np.ndarray) -> np.ndarray:
    """Fraction of runs with score > tau, averaged over tasks (rliable's run-score profile)."""
    return np.mean([[np.mean(np.asarray(s) > t) for t in taus] for s in scores], axis=0)


def probability_of_improvement(x: ScoreSet, y: ScoreSet) -> float:
    """P(X > Y): per task the Mann-Whitney U statistic / (n_x n_y) (ties count 1/2), averaged over tasks."""
    probs = []
    for xs, ys in zip(x, y, strict=True):
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        greater = (xs[:, None] > ys[None, :]).sum()
        ties = (xs[:, None] == ys[None, :]).sum()
        probs.append((greater + 0.5 * ties) / (len(xs) * len(ys)))
    return float(np.mean(probs))


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean over seeds; (nan, nan) with fewer than 2 seeds."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    half = sps.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)
