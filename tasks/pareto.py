"""Multi-objective metrics of a front of vector returns (../shared/reference/safe_and_morl.md B2, C4).

A front is an (n, d) array of vector returns, one row per evaluated policy (or per preference weight of a
weight-conditioned policy); every objective is maximized.
- `pareto_front`: the non-dominated rows (duplicates kept once).
- `hypervolume`: pymoo's HV of the non-dominated front against a reference point that every point must strictly
  dominate (maximization by negation, as morl-baselines computes it).
- `expected_utility` (EUM): the mean over the weights w of max_{v in front} w.v (linear utility).
- `cardinality`: the number of non-dominated points.
- `sparsity` (PGMORL's): sum over objectives of the squared gaps between sorted neighbours, / (n - 1); reported for
  comparison with the PGMORL and C-MORL papers only: one point, or a cluster, scores "good".
- `weight_grid`: the evaluation weights, pymoo's Riesz s-energy directions with seed 42 (morl-baselines'
  `equally_spaced_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from algorithms.core.errors import CtrlbenchError


def as_front(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    front = np.asarray(points, dtype=np.float64)
    if front.ndim != 2 or front.shape[0] == 0 or front.shape[1] < 2:
        raise CtrlbenchError(f"a front must be a non-empty (n, d >= 2) array of vector returns, got shape "
                             f"{front.shape}")
    return front


def pareto_front(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """The non-dominated rows (maximization), each distinct point once, in their first order."""
    front = np.unique(as_front(points), axis=0)
    keep = [i for i, p in enumerate(front)
            if not np.any(np.all(front >= p, axis=1) & np.any(front > p, axis=1))]
    return front[keep]


def check_reference_point(front: np.ndarray, reference: np.ndarray | Sequence[float]) -> np.ndarray:
    """The reference point as an array, or a one-line error when it is not strictly below every point."""
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != (front.shape[1],):
        raise CtrlbenchError(f"the reference point has {ref.size} entries, the front {front.shape[1]} objectives")
    below = np.all(front > ref, axis=1)
    if not below.all():
        worst = front[np.argmin(below)]
        raise CtrlbenchError(f"reference point {ref.tolist()} is not below every point of the front (e.g. "
                             f"{np.round(worst, 3).tolist()}); choose a lower reference point")
    return ref


def hypervolume(points: np.ndarray | Sequence[Sequence[float]], reference: np.ndarray | Sequence[float]) -> float:
    from pymoo.indicators.hv import HV

    front = pareto_front(points)
    ref = check_reference_point(front, reference)
    return float(HV(ref_point=-ref)(-front))


def expected_utility(points: np.ndarray | Sequence[Sequence[float]], weights: np.ndarray) -> float:
    front = as_front(points)
    weights = check_weights(weights, front.shape[1])
    return float(np.max(weights @ front.T, axis=1).mean())


def cardinality(points: np.ndarray | Sequence[Sequence[float]]) -> int:
    return len(pareto_front(points))


def sparsity(points: np.ndarray | Sequence[Sequence[float]]) -> float:
    front = pareto_front(points)
    if len(front) < 2:
        return 0.0
    ordered = np.sort(front, axis=0)
    return float(np.sum(np.diff(ordered, axis=0) ** 2) / (len(front) - 1))


def check_weights(weights: np.ndarray | Sequence[Sequence[float]], n_objectives: int) -> np.ndarray:
    """(n, d) preference weights, each of the objectives' length, non-negative, summing to 1; else one line."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2 or w.shape[1] != n_objectives:
        raise CtrlbenchError(f"a preference weight must have {n_objectives} entries (one per objective), got "
                             f"{w.shape[-1] if w.ndim else 0}")
    if (w < 0).any() or not np.allclose(w.sum(axis=1), 1.0, atol=1e-6):
        raise CtrlbenchError("preference weights must be non-negative and sum to 1")
    return w


def weight_grid(n_objectives: int, n: int) -> np.ndarray:
    """n weights spread over the simplex: pymoo's Riesz s-energy reference directions, seed 42 (the extremes are
    included), as morl-baselines' `equally_spaced_weights`."""
    from pymoo.util.ref_dirs import get_reference_directions

    return np.asarray(get_reference_directions("energy", n_objectives, n, seed=42), dtype=np.float64)
