"""PRDC: exact nearest-neighbor search against brute force, the dataset-constraint target, the update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.core.neighbors import NearestNeighbor
from algorithms.core.td3 import actor_loss
from algorithms.prdc import PRDC, PRDCConfig, constraint_term, dataset_constraint_target
from tests.algo_helpers import hand_batch, tiny_context


@pytest.mark.parametrize("backend", ["kdtree", "torch"])
def test_nearest_neighbor_matches_brute_force(backend: str) -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(5000, 7)).astype(np.float32)
    keys = rng.normal(size=(300, 7)).astype(np.float32)
    nn = NearestNeighbor(torch.as_tensor(points), backend=backend, chunk=1024)
    got = nn.query(torch.as_tensor(keys)).numpy()
    expected = ((keys[:, None, :] - points[None, :, :]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(got, expected)


def test_target_is_the_nearest_pairs_action_by_hand() -> None:
    # dataset pairs (s, a): states 0 and 10 with actions 0.9 and -0.9
    states = torch.tensor([[0.0], [10.0]])
    actions = torch.tensor([[0.9], [-0.9]])
    beta = 2.0
    nn = NearestNeighbor(torch.cat([beta * states, actions], 1), backend="torch")
    # a query at s = 4.9 with pi(s) = 0.9: distance to (0, 0.9) is 9.8, to (20, -0.9) is ~10.36
    obs, pi = torch.tensor([[4.9], [5.2]]), torch.tensor([[0.9], [0.9]])
    target = dataset_constraint_target(nn, actions, obs, pi, beta)
    torch.testing.assert_close(target, torch.tensor([[0.9], [-0.9]]))


def test_large_beta_recovers_td3_bc_target() -> None:
    """With beta -> infinity the nearest pair is the batch's own state, so the target is its dataset action."""
    ctx = tiny_context()
    algo = PRDC(PRDCConfig(beta=1e4, batch_size=16), ctx)
    idx = torch.arange(16)
    batch = algo.sampler.gather(idx)
    target = dataset_constraint_target(algo.neighbors, algo.dataset_actions, batch.observations,
                                       algo.actor(batch.observations), 1e4)
    torch.testing.assert_close(target, batch.actions)


def test_actor_loss_value() -> None:
    batch = hand_batch()
    states, actions = batch.observations, batch.actions
    nn = NearestNeighbor(torch.cat([2.0 * states, actions], 1), backend="torch")

    class Critic(torch.nn.Module):
        def member(self, i, obs, act):
            return 3.0 * act.sum(-1)

    actor = lambda s: torch.full((s.shape[0], 1), 0.1)  # noqa: E731
    loss, info = actor_loss(actor, Critic(), batch.observations, 2.5,
                            constraint_term(batch, nn, actions, beta=2.0))
    lmbda = info["lambda_"]
    # each state's nearest pair is itself (beta * s dominates): targets 0.5 and -0.5
    expected_lambda = 2.5 / 0.3
    expected = -expected_lambda * 0.3 + ((0.1 - 0.5) ** 2 + (0.1 + 0.5) ** 2) / 2
    assert lmbda.item() == pytest.approx(expected_lambda) and loss.item() == pytest.approx(expected, rel=1e-6)


def test_update_runs_with_both_backends_and_delays_the_actor() -> None:
    for backend in ("kdtree", "torch"):
        algo = PRDC(PRDCConfig(batch_size=8, search=backend), tiny_context())
        assert set(algo.update()) == {"critic_loss"}
        assert {"critic_loss", "actor_loss", "lambda_"} == set(algo.update())
    assert algo.act(np.zeros((2, 3), np.float32)).shape == (2, 2)
