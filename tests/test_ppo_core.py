"""The PPO fine-tuning core (algorithms/core/ppo.py): GAE with terminations and truncations, the clipped surrogate
and value losses on hand-made numbers, reward scaling, minibatches, min-max scaling, pretraining chunks and EMA, and
chunked rollouts that execute every action of a chunk (summing rewards) unless the episode ends first."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from algorithms.core.contract import AlgoContext
from algorithms.core.data import TransitionData
from algorithms.core.errors import CtrlbenchError
from algorithms.core.ppo import (
    EMA,
    ActionChunks,
    ChunkEnvs,
    MinMaxScaler,
    RunningRewardScaler,
    approx_kl,
    clip_fraction,
    clipped_surrogate,
    collect_rollout,
    episode_bounds,
    explained_variance,
    gae,
    minibatches,
    normalize_advantages,
    value_loss,
    warmup_cosine_lr,
)
from algorithms.core.seeding import derive_seed
from tasks.smoke import swing_up_controller
from tests.algo_helpers import io_round_trip

SAME_STEP = gym.vector.AutoresetMode.SAME_STEP


# --- shared helpers (also used by test_dppo.py and test_gaussian_ppo.py) ----------------------------------------------

def pendulum_dataset(episodes: int = 3) -> TransitionData:
    """Pendulum episodes of the smoke task's swing-up controller (200 steps each, negative returns)."""
    env = gym.make("Pendulum-v1")
    rows: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "next", "term", "ep")}
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        done = False
        while not done:
            action = swing_up_controller(obs)
            nxt, r, term, trunc, _ = env.step(action)
            for k, v in zip(rows, (obs, action, r, nxt, term, ep)):
                rows[k].append(v)
            obs, done = nxt, term or trunc
    return TransitionData(np.asarray(rows["obs"], np.float32), np.asarray(rows["act"], np.float32).reshape(-1, 1),
                          np.asarray(rows["rew"], np.float32), np.asarray(rows["next"], np.float32),
                          np.asarray(rows["term"], np.float32), np.asarray(rows["ep"], np.int64))


def pendulum_context(data: TransitionData | None = None, seed: int = 0, total_updates: int = 100) -> AlgoContext:
    probe = gym.make("Pendulum-v1")
    ctx = AlgoContext(observation_space=probe.observation_space, action_space=probe.action_space,
                      device=torch.device("cpu"), seed=seed, total_updates=total_updates,
                      dataset=data if data is not None else pendulum_dataset())
    ctx.make_envs = lambda n: gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")] * n,
                                                       autoreset_mode=SAME_STEP)
    return ctx


# --- GAE --------------------------------------------------------------------------------------------------------------

def test_gae_by_hand_with_a_truncation_and_a_termination() -> None:
    # env 0 is truncated after t = 1 (the time limit: bootstrapped from its last state's value 9), env 1 terminates
    # at t = 0 (its next value 7 must be ignored); gamma 0.9, lambda 0.5
    t = torch.tensor
    rewards = t([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    values = t([[0.5, 0.0], [1.0, 0.0], [1.5, 0.0]])
    next_values = t([[1.0, 7.0], [9.0, 0.0], [2.0, 5.0]])
    terminated = t([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    dones = t([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    adv, ret = gae(rewards, values, next_values, terminated, dones, gamma=0.9, lam=0.5)
    # env 0: A2 = 3 + .9*2 - 1.5 = 3.3; A1 = 2 + .9*9 - 1 = 9.1 (cut: the episode ended); A0 = 1.4 + .45*9.1
    # env 1: A2 = 1 + .9*5 = 5.5; A1 = 1 + .45*5.5; A0 = 1 (terminated: no bootstrap, no carry)
    expected = t([[1.4 + 0.45 * 9.1, 1.0], [9.1, 1.0 + 0.45 * 5.5], [3.3, 5.5]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)
    # were the truncation a termination, the time limit would not be bootstrapped
    adv_term, _ = gae(rewards, values, next_values, dones, dones, gamma=0.9, lam=0.5)
    assert adv_term[1, 0].item() == pytest.approx(1.0)


def reference_gae(rewards, values, last_values, terminated, gamma, lam):
    """The reference's loop (agent/finetune/train_ppo_diffusion_agent.py:255-279)."""
    adv = np.zeros_like(rewards)
    last = 0
    for t in reversed(range(len(rewards))):
        nxt = last_values if t == len(rewards) - 1 else values[t + 1]
        nonterminal = 1.0 - terminated[t]
        delta = rewards[t] + gamma * nxt * nonterminal - values[t]
        adv[t] = last = delta + gamma * lam * nonterminal * last
    return adv


def test_gae_matches_the_reference_when_episodes_only_terminate() -> None:
    rng = np.random.default_rng(0)
    T, N = 12, 3
    rewards, values, last = rng.normal(size=(T, N)), rng.normal(size=(T, N)), rng.normal(size=N)
    terminated = (rng.random((T, N)) < 0.2).astype(np.float64)
    next_values = np.concatenate([values[1:], last[None]])  # inside an episode V(s'_t) = V(s_{t+1})
    as_t = torch.as_tensor
    adv, _ = gae(as_t(rewards), as_t(values), as_t(next_values), as_t(terminated), as_t(terminated), 0.99, 0.95)
    np.testing.assert_allclose(adv.numpy(), reference_gae(rewards, values, last, terminated, 0.99, 0.95))


# --- losses -----------------------------------------------------------------------------------------------------------

def test_clipped_surrogate_by_hand() -> None:
    ratio = torch.tensor([0.5, 1.0, 1.5, 1.5], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    # max(-A r, -A clip(r, 0.8, 1.2)): -0.5 (unclipped is larger), 1, -1.2 (clipped), 1.5 (unclipped)
    loss = clipped_surrogate(ratio, adv, 0.2)
    assert loss.item() == pytest.approx((-0.5 + 1.0 - 1.2 + 1.5) / 4)
    loss.backward()
    # the clipped sample (r = 1.5 > 1.2 with A > 0) carries no gradient; the others -A / 4
    torch.testing.assert_close(ratio.grad, torch.tensor([-0.25, 0.25, 0.0, 0.25]))
    # one eps per sample: 0.6 leaves r = 0.5 and 1.5 unclipped
    per_sample = clipped_surrogate(ratio.detach(), adv, torch.tensor([0.6, 0.2, 0.6, 0.2]))
    assert per_sample.item() == pytest.approx((-0.5 + 1.0 - 1.5 + 1.5) / 4)
    assert clip_fraction(ratio.detach(), 0.2).item() == pytest.approx(0.75)


def test_value_loss_clipped_and_unclipped() -> None:
    v, r = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])
    assert value_loss(v, r).item() == pytest.approx(0.5 * (1 + 9) / 2)
    # clipping only ever raises the loss: V moved from 0 to 1 onto the return 1; clipped to 0.5 it misses by 0.5
    v, r, old = torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([0.0])
    assert value_loss(v, r).item() == 0.0
    assert value_loss(v, r, old, clip=0.5).item() == pytest.approx(0.5 * 0.25)
    assert value_loss(torch.tensor([1.0, 3.0]), torch.zeros(2), torch.zeros(2), clip=0.5).item() == pytest.approx(2.5)


def test_advantage_normalization_kl_and_explained_variance() -> None:
    a = normalize_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert a.mean().item() == pytest.approx(0.0, abs=1e-6) and a.std().item() == pytest.approx(1.0, abs=1e-6)
    assert approx_kl(torch.tensor([math.log(2.0), 0.0])).item() == pytest.approx((1.0 - math.log(2.0)) / 2)
    y = torch.tensor([1.0, 2.0, 3.0])
    assert explained_variance(y, y) == 1.0 and explained_variance(torch.zeros(3), y) == 0.0
    assert math.isnan(explained_variance(y, torch.ones(3)))


def test_minibatches_cover_each_epoch_and_stop_on_break() -> None:
    g = torch.Generator().manual_seed(0)
    batches = list(minibatches(10, 4, 2, g))
    assert [len(b) for b in batches] == [4, 4, 4, 4]  # 10 // 4 per epoch, the remainder skipped
    for epoch in (batches[:2], batches[2:]):
        assert len(set(torch.cat(epoch).tolist())) == 8  # no repeats within an epoch
    assert [len(b) for b in minibatches(3, 4, 2, g)] == [3, 3]  # at least one (short) minibatch
    seen = 0
    for _ in minibatches(100, 10, 5, g):
        seen += 1
        if seen == 3:
            break  # a target-KL stop ends every remaining epoch
    assert seen == 3


def test_running_reward_scaler_by_hand() -> None:
    scaler = RunningRewardScaler(1, gamma=0.5, clip=10.0)
    r = torch.tensor([[1.0], [1.0], [1.0]])
    scaled = scaler(r, torch.tensor([[0.0], [1.0], [0.0]]))
    rets = np.array([1.0, 1.5, 1.0])  # the running return restarts after the episode ended at t = 1
    count = 1e-4 + 3
    delta = rets.mean()
    var = (1.0 * 1e-4 + rets.var() * 3 + delta**2 * 1e-4 * 3 / count) / (count - 1)
    assert scaler.stats.var == pytest.approx(var) and scaler.stats.mean == pytest.approx(delta * 3 / count)
    torch.testing.assert_close(scaled, r / math.sqrt(var + 1e-8))
    assert scaler.ret.tolist() == [1.0]  # carried into the next rollout: that episode goes on
    assert (scaled > 3.0).all()  # 1 / sqrt(var) = 3.46...
    clipped = RunningRewardScaler(1, gamma=0.5, clip=3.0)(r, torch.tensor([[0.0], [1.0], [0.0]]))
    assert clipped.flatten().tolist() == [3.0, 3.0, 3.0]
    fresh = RunningRewardScaler(1, gamma=0.5)
    fresh.load_state_dict(io_round_trip(scaler.state_dict()))
    assert fresh.stats.var == scaler.stats.var and fresh.ret.tolist() == [0.0]  # statistics kept, episodes restart


# --- pretraining data -------------------------------------------------------------------------------------------------

def test_min_max_scaling_round_trip() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 5.0, size=(50, 4)).astype(np.float32)
    x[:, 3] = 2.0  # a constant dimension: the 1e-6 keeps it finite
    scaler = MinMaxScaler.fit(x)
    y = scaler.scale(torch.as_tensor(x))
    assert y.min().item() >= -1.0 and y.max().item() <= 1.0
    torch.testing.assert_close(y.min(0).values[:3], -torch.ones(3))
    torch.testing.assert_close(y.max(0).values[:3], torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(scaler.unscale(y), torch.as_tensor(x), atol=1e-5, rtol=1e-6)
    other = MinMaxScaler(np.zeros(4), np.ones(4))
    other.load_state_dict(io_round_trip(scaler.state_dict()))
    torch.testing.assert_close(other.scale(torch.as_tensor(x)), y)


def test_action_chunks_stay_inside_positive_episodes() -> None:
    lengths, returns = [6, 2, 5, 7], [1.0, 1.0, 1.0, -1.0]  # episode 1 is too short, episode 3 has a negative return
    ids = np.repeat(np.arange(4), lengths)
    n = len(ids)
    rewards = np.concatenate([np.full(k, r / k) for k, r in zip(lengths, returns)]).astype(np.float32)
    obs = np.arange(n, dtype=np.float32)[:, None].repeat(2, 1)
    data = TransitionData(obs, obs[:, :1].copy(), rewards, obs + 1, np.zeros(n, np.float32), ids)
    assert episode_bounds(ids) == [(0, 6), (6, 8), (8, 13), (13, 20)]
    identity = MinMaxScaler(np.full(2, -1.0), np.full(2, 1.0 - 1e-6))  # scale(x) = x
    chunks = ActionChunks(data, 4, identity, MinMaxScaler(np.array([-1.0]), np.array([1.0 - 1e-6])), "cpu", seed=0)
    assert sorted(chunks.starts.tolist()) == [0, 1, 2, 8, 9]
    states, acts = chunks.sample(64)
    assert states.shape == (64, 2) and acts.shape == (64, 4, 1)
    start = acts[:, 0, 0]
    torch.testing.assert_close(acts[:, :, 0], start[:, None] + torch.arange(4.0), atol=1e-5, rtol=0)  # consecutive
    torch.testing.assert_close(states[:, 0], start, atol=1e-5, rtol=0)  # the chunk starts at the state's step
    kept = ActionChunks(data, 4, identity, identity, "cpu", seed=0, drop_nonpositive=False)
    assert len(kept) == 5 + 4
    with pytest.raises(CtrlbenchError, match="drop_nonpositive_episodes"):
        ActionChunks(data.select(ids == 3), 4, identity, identity, "cpu", seed=0)


def test_ema_copies_then_averages_every_few_steps() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.5, every=2, start=3)
    seen = []
    for step in range(1, 8):
        with torch.no_grad():
            model.weight.fill_(float(step))
        ema.update(step)
        seen.append(ema.average.weight.item())
    # steps 1, 3: copies (step <= start); step 5: 0.5 * 3 + 0.5 * 5; step 7: 0.5 * 4 + 0.5 * 7
    assert seen == [1.0, 1.0, 3.0, 3.0, 4.0, 4.0, 5.5]
    assert not ema.average.weight.requires_grad


def test_warmup_cosine_lr_endpoints() -> None:
    assert warmup_cosine_lr(0, 100, 10, 1e-3, 1e-4) == pytest.approx(1e-4)
    assert warmup_cosine_lr(5, 100, 10, 1e-3, 1e-4) == pytest.approx(5.5e-4)
    assert warmup_cosine_lr(10, 100, 10, 1e-3, 1e-4) == pytest.approx(1e-3)
    assert warmup_cosine_lr(55, 100, 10, 1e-3, 1e-4) == pytest.approx(5.5e-4)
    assert warmup_cosine_lr(100, 100, 10, 1e-3, 1e-4) == pytest.approx(1e-4)
    assert warmup_cosine_lr(7, 100, 0, 1e-4, 1e-4) == pytest.approx(1e-4)  # min_lr = lr: constant


# --- chunked rollouts -------------------------------------------------------------------------------------------------

class Counting(gym.Wrapper):
    """Reward 1 per step; counts every step; terminates on the `terminate_at`-th step of an episode."""

    steps = 0  # over all instances

    def __init__(self, env: gym.Env, terminate_at: int | None = None) -> None:
        super().__init__(env)
        self.terminate_at, self.t = terminate_at, 0

    def reset(self, **kwargs):
        self.t = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        Counting.steps += 1
        self.t += 1
        obs, _, term, trunc, info = self.env.step(action)
        return obs, 1.0, term or self.t == self.terminate_at, trunc, info


def counting_context(terminate_at: int | None, time_limit: int) -> AlgoContext:
    ctx = pendulum_context(data=pendulum_dataset(1))

    def make() -> gym.Env:
        return Counting(gym.make("Pendulum-v1", max_episode_steps=time_limit), terminate_at)

    ctx.make_envs = lambda n: gym.vector.SyncVectorEnv([make] * n, autoreset_mode=SAME_STEP)
    return ctx


@pytest.mark.parametrize("ending", ["terminated", "truncated"])
def test_a_chunk_executes_every_action_and_stops_where_the_episode_ends(ending: str) -> None:
    terminate_at, limit = (6, 100) if ending == "terminated" else (None, 6)
    envs = ChunkEnvs(counting_context(terminate_at, limit), 2, "test")
    Counting.steps = 0
    chunks = np.zeros((2, 4, 1), np.float32)
    first = envs.step(chunks)
    assert Counting.steps == 8 and first.env_steps.tolist() == [4, 4]
    assert first.rewards.tolist() == [4.0, 4.0] and first.dones.tolist() == [0.0, 0.0]
    before = envs.observations()
    np.testing.assert_array_equal(first.next_obs, before)  # mid-episode the next state is the next decision's
    second = envs.step(chunks)  # the episode ends on the 2nd action: the chunk stops there
    assert Counting.steps == 12 and second.env_steps.tolist() == [2, 2] and second.rewards.tolist() == [2.0, 2.0]
    assert second.dones.tolist() == [1.0, 1.0]
    assert second.terminated.tolist() == ([1.0, 1.0] if ending == "terminated" else [0.0, 0.0])
    assert second.episode_returns == [6.0, 6.0]
    after = envs.observations()  # a new episode began: its first state is not the last one
    assert not np.allclose(second.next_obs, after)
    third = envs.step(chunks)
    assert third.env_steps.tolist() == [4, 4] and third.dones.tolist() == [0.0, 0.0]
    assert envs.env_steps == 20 and envs.metrics()["train_episode_return"] == 6.0


def test_the_true_last_state_is_kept_where_an_episode_ends() -> None:
    """The next state of a chunk that ends an episode is the final observation, replayed here step by step."""
    ctx = counting_context(None, 6)
    envs = ChunkEnvs(ctx, 1, "test")
    actions = np.array([[[0.5], [-1.0], [2.0], [0.1]], [[1.0], [1.0], [-2.0], [0.0]]], np.float32)
    envs.step(actions[0:1])
    last = envs.step(actions[1:2])
    env = gym.make("Pendulum-v1", max_episode_steps=6)
    obs, _ = env.reset(seed=derive_seed(0, 0))
    for a in [*actions[0], *actions[1][:2]]:
        obs, *_ = env.step(a)
    np.testing.assert_allclose(last.next_obs[0], obs, rtol=1e-6)


def test_collect_rollout_stores_scaled_states_and_records_on_the_device() -> None:
    ctx = counting_context(None, 6)
    envs = ChunkEnvs(ctx, 3, "test")
    scaler = MinMaxScaler(np.full(3, -8.0), np.full(3, 8.0))
    seen = []

    def policy(states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(states)
        return torch.zeros(3, 4, 1), torch.ones(3, 7)

    rollout = collect_rollout(envs, 5, policy, scaler, lambda c: c.numpy())
    assert rollout.obs.shape == (5, 3, 3) and rollout.records.shape == (5, 3, 7)
    assert rollout.rewards.shape == rollout.dones.shape == rollout.terminated.shape == (5, 3)
    assert rollout.next_obs.shape == (5, 3, 3) and rollout.size == 15
    torch.testing.assert_close(rollout.obs[1], seen[1])
    torch.testing.assert_close(rollout.next_obs[0], rollout.obs[1])  # no episode ended after the first chunk
    assert rollout.dones[1].tolist() == [1.0, 1.0, 1.0]  # 6-step episodes end on each 2nd chunk
    assert rollout.env_steps == 3 * (4 + 2 + 4 + 2 + 4) and len(rollout.episode_returns) == 6


def test_chunk_envs_need_training_environments() -> None:
    ctx = pendulum_context(data=pendulum_dataset(1))
    ctx.make_envs = None
    with pytest.raises(CtrlbenchError, match="no training environments"):
        ChunkEnvs(ctx, 2, "dppo")
