"""Shape and behavior contracts of the shared core."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from algorithms.core.config import build_config, field_help, stable_hash
from algorithms.core.data import DeviceSampler, TransitionData
from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import atomic_write_json
from algorithms.core.nets import DeterministicActor, EnsembleQ, Polyak, VectorizedLinear, adam, frozen, mlp
from algorithms.core.normalization import StateNormalizer
from algorithms.core.registry import available
from algorithms.core.seeding import derive_seed


def make_data(n: int = 50, obs_dim: int = 3, act_dim: int = 2, vector_reward: int = 0) -> TransitionData:
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(n, vector_reward) if vector_reward else n).astype(np.float32)
    return TransitionData(
        observations=rng.normal(5, 2, (n, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rewards=rewards,
        next_observations=rng.normal(5, 2, (n, obs_dim)).astype(np.float32),
        terminals=(rng.random(n) < 0.1).astype(np.float32),
        episode_ids=np.repeat(np.arange(5), n // 5),
    )


def test_mlp_shapes_and_layers() -> None:
    net = mlp(4, 3, (8, 8))
    assert net(torch.zeros(5, 4)).shape == (5, 3)
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 3


@pytest.mark.parametrize("out_dim", [3, 1])  # 1: a Q head, which runs member by member on CPU
def test_vectorized_linear_equals_separate_layers(out_dim: int) -> None:
    layer = VectorizedLinear(4, out_dim, n=3)
    x = torch.randn(3, 7, 4)
    out = layer(x)
    assert out.shape == (3, 7, out_dim)
    for i in range(3):
        expected = x[i] @ layer.weight[i] + layer.bias[i]
        torch.testing.assert_close(out[i], expected)


def test_ensemble_q_members_are_independent() -> None:
    q = EnsembleQ(3, 2, (16, 16), n=2)
    out = q(torch.randn(9, 3), torch.randn(9, 2))
    assert out.shape == (2, 9)
    assert not torch.allclose(out[0], out[1])


def test_ensemble_member_equals_forward_row() -> None:
    q = EnsembleQ(3, 2, (16, 16), n=2)
    obs, act = torch.randn(9, 3), torch.randn(9, 2)
    torch.testing.assert_close(q.member(1, obs, act), q(obs, act)[1])


def test_frozen_blocks_parameter_gradients_only() -> None:
    q = EnsembleQ(3, 2, (8,), n=2)
    act = torch.randn(4, 2, requires_grad=True)
    with frozen(q):
        q.member(0, torch.randn(4, 3), act).sum().backward()
    assert act.grad is not None and all(p.grad is None for p in q.parameters())
    assert all(p.requires_grad for p in q.parameters())


def test_fused_adam_matches_plain_adam() -> None:
    a, b = torch.nn.Parameter(torch.ones(5)), torch.nn.Parameter(torch.ones(5))
    fused, plain = adam([a], lr=0.1), torch.optim.Adam([b], lr=0.1)
    for _ in range(3):
        for p, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            (p**2).sum().backward()
            opt.step()
    torch.testing.assert_close(a, b)


def test_actor_respects_max_action() -> None:
    actor = DeterministicActor(3, 2, max_action=2.0)
    a = actor(torch.randn(100, 3) * 100)
    assert a.shape == (100, 2) and a.abs().max() <= 2.0


def test_polyak_step() -> None:
    src, tgt = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = tgt.weight.detach().clone()
    Polyak([(tgt, src)], 0.25)()
    torch.testing.assert_close(tgt.weight, 0.75 * before + 0.25 * src.weight.detach())


def test_normalizer_matches_td3bc_definition() -> None:
    obs = np.random.default_rng(0).normal(3, 2, (1000, 4)).astype(np.float32)
    norm = StateNormalizer.fit(obs)
    np.testing.assert_allclose(norm.std, obs.astype(np.float64).std(0) + 1e-3, rtol=1e-5)
    np.testing.assert_allclose(norm(obs).mean(0), 0, atol=1e-4)
    torch.testing.assert_close(norm.torch(torch.as_tensor(obs)), torch.as_tensor(norm(obs)))


def test_sampler_batch_shapes_and_normalization() -> None:
    data = make_data()
    norm = StateNormalizer.fit(data.observations)
    sampler = DeviceSampler(data, "cpu", seed=0, normalizer=norm)
    batch = sampler.sample(16)
    assert batch.observations.shape == (16, 3) and batch.actions.shape == (16, 2)
    assert batch.rewards.shape == (16,) and batch.dones.shape == (16,) and batch.costs is None
    idx = torch.arange(5)
    rows = sampler.gather(idx)
    np.testing.assert_allclose(rows.observations.numpy(), norm(data.observations[:5]), rtol=1e-6)
    np.testing.assert_allclose(rows.next_observations.numpy(), norm(data.next_observations[:5]), rtol=1e-6)
    np.testing.assert_array_equal(rows.actions.numpy(), data.actions[:5])
    np.testing.assert_array_equal(rows.dones.numpy(), data.terminals[:5])


def test_sampler_vector_rewards_and_costs() -> None:
    data = make_data(vector_reward=3)
    data.costs = np.arange(len(data), dtype=np.float32)
    batch = DeviceSampler(data, "cpu", seed=0).gather(torch.tensor([2, 7]))
    assert batch.rewards.shape == (2, 3)
    np.testing.assert_array_equal(batch.costs.numpy(), [2.0, 7.0])


def test_sampler_is_seeded_and_resumable() -> None:
    data = make_data()
    a, b = DeviceSampler(data, "cpu", seed=3), DeviceSampler(data, "cpu", seed=3)
    torch.testing.assert_close(a.sample(8).actions, b.sample(8).actions)
    state = a.state_dict()
    first = a.sample(8).actions
    a.load_state_dict(state)
    torch.testing.assert_close(a.sample(8).actions, first)


def test_transition_data_rejects_ragged_columns() -> None:
    data = make_data()
    with pytest.raises(ValueError, match="rewards"):
        TransitionData(data.observations, data.actions, data.rewards[:-1], data.next_observations,
                       data.terminals, data.episode_ids)


@dataclasses.dataclass
class _Cfg:
    lr: float = 3e-4  # the learning rate
    # widths of the hidden layers
    hidden: tuple[int, ...] = (256, 256)
    normalize: bool = True  # normalize states

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError("lr must be positive")


def test_field_help_reads_source_comments() -> None:
    assert field_help(_Cfg) == {"lr": "the learning rate", "hidden": "widths of the hidden layers",
                                "normalize": "normalize states"}


@dataclasses.dataclass
class _SubCfg(_Cfg):
    normalize: bool = False  # off here
    extra: int = 1  # a field of the subclass


def test_field_help_includes_inherited_fields_and_redeclared_comments_win() -> None:
    assert field_help(_SubCfg) == {"lr": "the learning rate", "hidden": "widths of the hidden layers",
                                   "normalize": "off here", "extra": "a field of the subclass"}


def test_every_registered_config_field_has_help() -> None:
    for name, cls in available().items():
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        assert fields == set(field_help(cls.Config)), name


def test_build_config_layers_and_types() -> None:
    cfg = build_config(_Cfg, {"lr": 1e-3}, {"hidden": "64,32"}, {"normalize": "false", "lr": "2e-3"})
    assert cfg == _Cfg(lr=2e-3, hidden=(64, 32), normalize=False)
    with pytest.raises(CtrlbenchError, match=r"unknown config field 'lrr'.*known fields: hidden, lr, normalize"):
        build_config(_Cfg, {"lrr": 1})
    with pytest.raises(CtrlbenchError, match="cannot read 'abc' as float"):
        build_config(_Cfg, {"lr": "abc"})
    with pytest.raises(CtrlbenchError, match="lr must be positive"):
        build_config(_Cfg, {"lr": -1})


def test_stable_hash_ignores_key_order() -> None:
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_derive_seed_is_stable_and_distinct() -> None:
    seeds = {derive_seed(k, s, i) for k in range(3) for s in range(2) for i in range(20)}
    assert len(seeds) == 120
    assert derive_seed(1, 0, 5) == derive_seed(1, 0, 5)


def test_atomic_write_keeps_old_file_on_failure(tmp_path) -> None:
    path = tmp_path / "r.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert path.read_text().strip().startswith("{") and '"ok": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
