"""The kernel-density guard (algorithms/core/kde_guard.py): guardian.py's normalization, density and 5th-percentile
threshold on hand-made points; the reference subset; log space where float32 would underflow; the checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algorithms.core.kde_guard import KDEGuard
from tests.algo_helpers import io_round_trip

SIGMA = 0.535


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: one thread is fastest (tests/conftest.py)


def official_density(queries: np.ndarray, train: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """guardian.py:72-86 `compute_kernel_density`, in float64."""
    out = np.zeros(len(queries))
    for i, x in enumerate(queries):
        norm_sq = np.sum((train - x) ** 2, axis=1)
        out[i] = np.sum(np.exp(-0.5 * norm_sq / sigma ** 2) / (sigma * np.sqrt(2 * np.pi))) / len(train)
    return out


def official_normalize(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """ddpg_cql_guard.py:130-135: 2 (x - min) / range - 1, range 0 replaced by 1."""
    low, high = train.min(0), train.max(0)
    span = np.where(high - low > 0, high - low, 1.0)
    return 2 * (x - low) / span - 1


def spread_pairs(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.uniform(-1, 1, (n, 1)).astype(np.float32)


def t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32)


def test_normalization_maps_the_training_box_to_minus_one_one_and_keeps_constant_features() -> None:
    obs = np.array([[0.0, 5.0], [2.0, 5.0], [1.0, 5.0]], np.float32)
    act = np.array([[-2.0], [2.0], [0.0]], np.float32)
    x = KDEGuard.fit(obs, act).normalize(t(obs), t(act))
    assert x[:, 0].tolist() == [-1.0, 1.0, 0.0]
    assert x[:, 1].tolist() == [-1.0, -1.0, -1.0]  # a constant feature: range 1 (ddpg_cql_guard.py:132)
    assert x[:, 2].tolist() == [-1.0, 1.0, 0.0]


def test_density_is_the_official_kernel_sum_including_far_pairs() -> None:
    obs, act = spread_pairs()
    guard = KDEGuard.fit(obs, act)
    train = official_normalize(np.hstack([obs, act]).astype(np.float64), np.hstack([obs, act]).astype(np.float64))
    queries_obs = np.vstack([obs[:5], np.array([[3.0, -2.0, 0.5], [10.0, 10.0, 10.0]], np.float32)])
    queries_act = np.vstack([act[:5], np.array([[0.9], [-5.0]], np.float32)])
    q = official_normalize(np.hstack([queries_obs, queries_act]).astype(np.float64),
                           np.hstack([obs, act]).astype(np.float64))
    expected = official_density(q, train)
    assert expected[-1] < 1e-40  # the far pair: a density float32 holds only as a subnormal
    got = guard.log_density(t(queries_obs), t(queries_act)).double().numpy()
    np.testing.assert_allclose(got, np.log(expected), rtol=0, atol=2e-4)
    np.testing.assert_allclose(guard.density(t(queries_obs[:6]), t(queries_act[:6])).numpy(), expected[:6], rtol=2e-4)


def test_threshold_is_the_5th_percentile_of_training_densities_self_included() -> None:
    obs, act = spread_pairs(100)
    guard = KDEGuard.fit(obs, act)
    pairs = np.hstack([obs, act]).astype(np.float64)
    train = official_normalize(pairs, pairs)
    dens = official_density(train, train)  # each against all, itself included (guardian.py:135)
    assert guard.threshold == pytest.approx(np.percentile(dens, 5), rel=1e-4)
    loo = (dens * 100 - 1 / (SIGMA * math.sqrt(2 * math.pi))) / 99  # leave-one-out would give another threshold
    assert guard.threshold != pytest.approx(np.percentile(loo, 5), rel=1e-2)
    # percentile 5 of 100 distinct values interpolates between the 5th and 6th smallest: exactly 5 fall below
    flagged = guard.out_of_support(t(obs), t(act))
    assert flagged.sum().item() == 5
    np.testing.assert_array_equal(np.sort(np.flatnonzero(flagged.numpy())), np.sort(np.argsort(dens)[:5]))


def test_a_training_pair_is_in_support_a_far_pair_is_penalized() -> None:
    # 19 pairs in a tight cluster and one isolated pair: the isolated one is the lowest 5%
    rng = np.random.default_rng(1)
    obs = np.vstack([rng.normal(0.0, 0.05, (19, 2)), [[1.0, 1.0]]]).astype(np.float32)
    act = np.vstack([rng.normal(0.0, 0.05, (19, 1)), [[1.0]]]).astype(np.float32)
    guard = KDEGuard.fit(obs, act, penalty_value=-25.0)
    at_training = guard.penalty(t(obs[:3]), t(act[:3]))
    assert at_training.tolist() == [0.0, 0.0, 0.0]
    assert guard.penalty(t(obs[19:]), t(act[19:])).tolist() == [-25.0]  # below the 5th percentile itself
    far = guard.penalty(t(np.array([[-3.0, 4.0]], np.float32)), t(np.array([[0.0]], np.float32)))
    assert far.tolist() == [-25.0]
    # the same state with an action far from the data's is out of support too: the action counts
    assert guard.penalty(t(obs[:1]), t(np.array([[-2.0]], np.float32))).tolist() == [-25.0]


def test_percentile_is_a_parameter() -> None:
    obs, act = spread_pairs(100)
    assert KDEGuard.fit(obs, act, percentile=20.0).out_of_support(t(obs), t(act)).sum().item() == 20
    assert KDEGuard.fit(obs, act, percentile=0.0).out_of_support(t(obs), t(act)).sum().item() == 0


def test_reference_subset_plays_the_training_set_and_min_max_use_all_pairs() -> None:
    obs, act = spread_pairs(100)
    guard = KDEGuard.fit(obs, act, reference_size=30, seed=3)
    assert guard.reference.shape == (30, 4)
    pairs = np.hstack([obs, act]).astype(np.float64)
    np.testing.assert_array_equal(guard.low.numpy(), pairs.min(0).astype(np.float32))  # normalization from all N pairs
    ref = guard.reference.double().numpy()
    gaps = np.abs(ref[:, None, :] - official_normalize(pairs, pairs)[None]).max(axis=2).min(axis=1)
    assert gaps.max() < 1e-5  # each reference pair is a (normalized) training pair
    assert guard.threshold == pytest.approx(np.percentile(official_density(ref, ref), 5), rel=1e-4)
    again = KDEGuard.fit(obs, act, reference_size=30, seed=3)
    assert torch.equal(again.reference, guard.reference) and again.log_threshold == guard.log_threshold
    assert not torch.equal(KDEGuard.fit(obs, act, reference_size=30, seed=4).reference, guard.reference)


def test_fit_queries_estimate_the_percentile_from_a_sample() -> None:
    obs, act = spread_pairs(200)
    full = KDEGuard.fit(obs, act)
    assert KDEGuard.fit(obs, act, fit_queries=200).log_threshold == full.log_threshold  # M >= K: all
    sampled = KDEGuard.fit(obs, act, fit_queries=50, seed=0)
    assert sampled.reference.shape == full.reference.shape  # scored against all K still
    pairs = np.hstack([obs, act]).astype(np.float64)
    train = official_normalize(pairs, pairs)
    dens = official_density(train, train)
    pick = np.sort(np.random.default_rng(0).choice(200, 50, replace=False))
    assert sampled.threshold == pytest.approx(np.percentile(dens[pick], 5), rel=1e-4)


def test_log_space_keeps_far_pairs_apart_where_float32_underflows() -> None:
    # one training pair, 30 constant state features (range 1): it sits at -1, a query at +1 is 2 away per feature
    guard = KDEGuard.fit(np.zeros((1, 30), np.float32), np.zeros((1, 1), np.float32))
    q_obs, q_act = t(np.ones((1, 30), np.float32)), t(np.zeros((1, 1), np.float32))
    r2 = 30 * 2.0 ** 2
    float32_direct = torch.exp(torch.tensor(-r2 / (2 * SIGMA ** 2)))
    assert float32_direct.item() == 0.0  # what a plain float32 sum of kernels gives
    expected = -r2 / (2 * SIGMA ** 2) - math.log(SIGMA * math.sqrt(2 * math.pi))  # about -210
    assert guard.log_density(q_obs, q_act).item() == pytest.approx(expected, rel=1e-5)
    assert guard.out_of_support(q_obs, q_act).item() == 1.0
    assert guard.out_of_support(t(np.zeros((1, 30), np.float32)), q_act).item() == 0.0  # the training pair itself


def test_chunked_scoring_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    obs, act = spread_pairs(300)
    guard = KDEGuard.fit(obs, act)
    whole = guard.log_density(t(obs), t(act))
    import algorithms.core.kde_guard as kg

    monkeypatch.setattr(kg, "CHUNK_ELEMENTS", 1000)  # references in chunks of 1000 // 7 per query block
    monkeypatch.setattr(kg, "QUERY_BLOCK", 7)
    np.testing.assert_allclose(guard.log_density(t(obs), t(act)).numpy(), whole.numpy(), rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip() -> None:
    obs, act = spread_pairs(100)
    guard = KDEGuard.fit(obs, act, reference_size=40, sigma=0.4, penalty_value=-7.0, seed=1)
    other = KDEGuard.fit(*spread_pairs(60, seed=9))
    other.load_state_dict(io_round_trip(guard.state_dict()))
    q_obs, q_act = spread_pairs(20, seed=5)
    assert torch.equal(other.log_density(t(q_obs), t(q_act)), guard.log_density(t(q_obs), t(q_act)))
    assert other.log_threshold == guard.log_threshold and other.sigma == 0.4 and other.penalty_value == -7.0
    assert torch.equal(other.penalty(t(obs), t(act)), guard.penalty(t(obs), t(act)))


def test_bad_arguments() -> None:
    obs, act = spread_pairs(10)
    with pytest.raises(ValueError, match="percentile"):
        KDEGuard.fit(obs, act, percentile=150.0)
    with pytest.raises(ValueError, match=">= 0"):
        KDEGuard.fit(obs, act, reference_size=-1)
    with pytest.raises(ValueError, match="sigma"):
        KDEGuard.fit(obs, act, sigma=0.0)
