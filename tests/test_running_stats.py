"""The running statistics online learners update from their rollouts (algorithms/core/normalization.py)."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.core.normalization import RunningMeanStd
from tests.algo_helpers import io_round_trip


def test_running_mean_std_matches_the_pooled_statistics() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(3.0, 2.0, (50, 2)), rng.normal(-1.0, 0.5, (30, 2))
    rms = RunningMeanStd((2,))
    rms.update(x)
    rms.update(y)
    both = np.concatenate([x, y])
    np.testing.assert_allclose(rms.mean, both.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, both.var(0), rtol=1e-3)
    assert rms.count == pytest.approx(80 + 1e-4)
    np.testing.assert_allclose(rms.std, np.sqrt(rms.var + 1e-8))


def test_bessel_divides_the_combined_m2_by_count_minus_one() -> None:
    x = np.array([1.0, 2.0, 4.0])
    plain, bessel = RunningMeanStd(), RunningMeanStd(bessel=True)
    plain.update(x)
    bessel.update(x)
    assert plain.mean == bessel.mean
    assert bessel.var == pytest.approx(plain.var * plain.count / (plain.count - 1.0))


def test_state_round_trip_is_a_copy() -> None:
    rms = RunningMeanStd((2,))
    rms.update(np.ones((4, 2)))
    fresh = RunningMeanStd((2,))
    state = io_round_trip(rms.state_dict())
    fresh.load_state_dict(state)
    rms.update(np.zeros((4, 2)))
    np.testing.assert_allclose(fresh.mean, [1.0 * 4 / (4 + 1e-4)] * 2)
    assert fresh.count == pytest.approx(4 + 1e-4)
