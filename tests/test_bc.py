"""BC: the MSE loss, %BC filtering, the update and act contracts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.bc import BC, BCConfig, bc_loss, keep_best_episodes
from tests.algo_helpers import hand_batch, params, same, tiny_context, tiny_dataset


class ConstantActor(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.full((obs.shape[0], 1), self.value)


def test_bc_loss_by_hand() -> None:
    # actions 0.5 and -0.5 against a constant 0.2: ((0.2-0.5)^2 + (0.2+0.5)^2) / 2 = (0.09 + 0.49) / 2
    assert bc_loss(ConstantActor(0.2), hand_batch()).item() == pytest.approx(0.29)


def test_keep_best_episodes_takes_highest_returns() -> None:
    data = tiny_dataset(n=64)  # 4 episodes of 16
    returns = data.episode_returns()
    kept = keep_best_episodes(data, 0.5)
    assert set(np.unique(kept.episode_ids)) == set(np.argsort(-returns)[:2])
    assert keep_best_episodes(data, 1.0) is data


def test_update_changes_actor_and_act_shape() -> None:
    algo = BC(BCConfig(batch_size=8), tiny_context())
    before = params(algo.actor)
    metrics = algo.update()
    assert algo.step == 1 and set(metrics) == {"bc_loss"}
    assert not same(before, params(algo.actor))
    actions = algo.act(np.zeros((5, 3), np.float32))
    assert actions.shape == (5, 2) and np.abs(actions).max() <= 1.0


def test_act_applies_dataset_normalization() -> None:
    algo = BC(BCConfig(), tiny_context())
    obs = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    expected = algo.actor(torch.as_tensor(algo.normalizer(obs))).detach().numpy()
    np.testing.assert_allclose(algo.act(obs), expected, rtol=1e-6)
    assert not np.allclose(algo.normalizer.mean, 0)
