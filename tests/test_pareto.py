"""Multi-objective metrics on hand-made fronts (tasks/pareto.py)."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.core.errors import CtrlbenchError
from tasks.pareto import cardinality, expected_utility, hypervolume, pareto_front, sparsity, weight_grid

FRONT = [(100.0, 50.0), (50.0, 100.0), (80.0, 80.0)]


def test_hypervolume_of_the_reference_front() -> None:
    assert hypervolume(FRONT, (-100.0, -100.0)) == pytest.approx(38_400.0)  # the morl-baselines check


def test_dominated_and_repeated_points_add_nothing() -> None:
    padded = [*FRONT, (70.0, 70.0), (50.0, 100.0), (100.0, 50.0)]
    assert hypervolume(padded, (-100.0, -100.0)) == pytest.approx(38_400.0)
    assert cardinality(padded) == 3
    assert sorted(map(tuple, pareto_front(padded))) == sorted(FRONT)


def test_hypervolume_of_one_point_is_its_box() -> None:
    assert hypervolume([(1.0, 2.0, 3.0)], (0.0, 0.0, 0.0)) == pytest.approx(6.0)


def test_expected_utility_is_the_mean_of_the_best_linear_utility_per_weight() -> None:
    weights = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    # best per weight: 100 (first point), 80 (the middle point), 100 (second point)
    assert expected_utility(FRONT, weights) == pytest.approx((100.0 + 80.0 + 100.0) / 3)


def test_sparsity_is_pgmorls() -> None:
    # sorted per objective: (50, 80, 100) and (50, 80, 100): gaps 30, 20 each, (900 + 400) * 2 / (3 - 1)
    assert sparsity(FRONT) == pytest.approx(1300.0)
    assert sparsity([(1.0, 1.0)]) == 0.0


def test_weight_grid_spans_the_simplex_with_its_extremes() -> None:
    grid = weight_grid(2, 11)
    assert grid.shape == (11, 2) and np.allclose(grid.sum(axis=1), 1.0) and (grid >= 0).all()
    assert {tuple(np.round(w, 6)) for w in grid} >= {(0.0, 1.0), (1.0, 0.0)}
    np.testing.assert_array_equal(weight_grid(2, 11), grid)  # seeded: the same grid every time


@pytest.mark.parametrize("reference", [(60.0, -100.0), (-100.0, 100.0), (80.0, 80.0)])
def test_a_reference_point_not_below_every_point_is_one_line_error(reference: tuple[float, float]) -> None:
    with pytest.raises(CtrlbenchError, match="is not below every point of the front") as err:
        hypervolume(FRONT, reference)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("weights", [[[1.0, 0.0, 0.0]], [[0.5]], [[0.7, 0.7]], [[-0.5, 1.5]]])
def test_a_bad_weight_is_one_line_error(weights: list[list[float]]) -> None:
    with pytest.raises(CtrlbenchError) as err:
        expected_utility(FRONT, np.array(weights))
    assert "\n" not in str(err.value)


def test_a_reference_point_of_the_wrong_length_is_one_line_error() -> None:
    with pytest.raises(CtrlbenchError, match="the reference point has 3 entries, the front 2 objectives"):
        hypervolume(FRONT, (-1.0, -1.0, -1.0))
