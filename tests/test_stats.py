"""Leaderboard statistics: hand-computed values, and agreement with rliable on random data."""

from __future__ import annotations

import numpy as np
import pytest

from leaderboard.stats import (
    aggregate_iqm,
    aggregate_mean,
    aggregate_median,
    interval_estimate,
    optimality_gap,
    performance_profile,
    probability_of_improvement,
    t_interval,
)


def test_hand_computed_aggregates() -> None:
    scores = [np.array([0.0, 10.0, 20.0, 30.0]), np.array([40.0, 50.0, 60.0, 200.0])]
    assert aggregate_mean(scores) == pytest.approx((15 + 87.5) / 2)
    assert aggregate_median(scores) == pytest.approx((15 + 87.5) / 2)  # two tasks: the middle of two means
    # all 8 runs sorted: 0 10 20 30 40 50 60 200; trimming 25% each side keeps 20 30 40 50
    assert aggregate_iqm(scores) == pytest.approx(35.0)
    # min(score, 100): 0 10 20 30 40 50 60 100 -> mean 38.75
    assert optimality_gap(scores) == pytest.approx(100 - 38.75)
    # fraction above 25: task 1 1/4, task 2 4/4; above 100: 0 and 1/4
    np.testing.assert_allclose(performance_profile(scores, np.array([25.0, 100.0])), [(0.25 + 1.0) / 2, 0.25 / 2])


def test_probability_of_improvement_by_hand() -> None:
    x = [np.array([1.0, 3.0]), np.array([5.0, 5.0])]
    y = [np.array([2.0, 2.0]), np.array([5.0, 4.0])]
    # task 1: pairs (1>2 no)x2, (3>2 yes)x2 -> 0.5; task 2: 5 vs 5 tie (0.5) twice, 5 > 4 twice -> 3/4
    assert probability_of_improvement(x, y) == pytest.approx((0.5 + 0.75) / 2)
    assert probability_of_improvement(y, x) == pytest.approx(1 - (0.5 + 0.75) / 2)


def test_t_interval_and_bootstrap_ci_contain_the_mean() -> None:
    values = np.array([10.0, 12.0, 14.0])
    low, high = t_interval(values)
    assert low == pytest.approx(12 - 4.302653 * 2 / np.sqrt(3), rel=1e-5) and high > 12
    assert np.isnan(t_interval(np.array([1.0]))[0])
    point, lo, hi = interval_estimate([values, values + 5], aggregate_mean, reps=500)
    assert lo <= point <= hi


def test_bootstrap_is_reproducible() -> None:
    scores = [np.random.default_rng(0).normal(50, 10, 5) for _ in range(3)]
    assert interval_estimate(scores, aggregate_iqm, seed=3) == interval_estimate(scores, aggregate_iqm, seed=3)


def test_agrees_with_rliable_metrics_on_random_data() -> None:
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(1)
    matrix = rng.normal(60, 25, size=(7, 5))  # runs x tasks
    ours = [matrix[:, j] for j in range(matrix.shape[1])]
    assert aggregate_mean(ours) == pytest.approx(metrics.aggregate_mean(matrix))
    assert aggregate_median(ours) == pytest.approx(metrics.aggregate_median(matrix))
    assert aggregate_iqm(ours) == pytest.approx(metrics.aggregate_iqm(matrix))
    assert optimality_gap(ours, 100.0) == pytest.approx(metrics.aggregate_optimality_gap(matrix, 100.0))
    other = rng.normal(55, 25, size=(7, 5))
    assert probability_of_improvement(ours, [other[:, j] for j in range(5)]) == pytest.approx(
        metrics.probability_of_improvement(matrix, other))


def _pandas3_deprecate_kwarg_shim(monkeypatch: pytest.MonkeyPatch) -> None:
    """rliable needs arch < 8, and arch 7 calls pandas' private `deprecate_kwarg(old, new)`, which pandas 3 changed
    to `deprecate_kwarg(warning_class, old, new)`; arch 8 fixes that but rejects rliable's `random_state` argument.
    Patching the decorator while arch is first imported lets the reference run next to pandas 3."""
    import inspect

    from pandas.util import _decorators

    original = _decorators.deprecate_kwarg
    if next(iter(inspect.signature(original).parameters)) != "klass":
        return  # pandas < 3: arch imports as it is

    def compatible(*args, **kwargs):
        if args and isinstance(args[0], str):
            args = (FutureWarning, *args)
        return original(*args, **kwargs)

    monkeypatch.setattr(_decorators, "deprecate_kwarg", compatible)


def test_agrees_with_rliable_bootstrap_and_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    _pandas3_deprecate_kwarg_shim(monkeypatch)
    try:
        from rliable import library as rly
        from rliable import metrics
    except Exception as e:  # a future pandas or arch may break it again: say so instead of failing the suite
        pytest.skip(f"rliable.library cannot be imported here ({type(e).__name__}: {e})")
    matrix = np.random.default_rng(1).normal(60, 25, size=(7, 5))
    ours = [matrix[:, j] for j in range(matrix.shape[1])]
    taus = np.linspace(0, 150, 16)
    profile, _ = rly.create_performance_profile({"a": matrix}, taus, reps=10)
    np.testing.assert_allclose(performance_profile(ours, taus), profile["a"])
    # CIs: different bootstrap streams, so compare with a tolerance
    _, lo, hi = interval_estimate(ours, aggregate_iqm, reps=4000)
    _, ci = rly.get_interval_estimates({"a": matrix}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=4000)
    assert lo == pytest.approx(ci["a"][0, 0], abs=1.5) and hi == pytest.approx(ci["a"][1, 0], abs=1.5)
