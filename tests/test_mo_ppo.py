"""The multi-objective PPO core (algorithms/core/mo_ppo.py): per-objective GAE, the scalarized advantage, C-MORL's
log barrier, the running statistics, the weight grid, the vector-reward training envs, one PPO iteration."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from algorithms.core.contract import AlgoContext
from algorithms.core.mo_ppo import (
    Constraint,
    MOEnvs,
    MOPPOConfig,
    barrier_term,
    mo_gae,
    new_learner,
    ppo_iteration,
    scalarized_advantages,
    simplex_grid,
)
from runners.run import make_training_envs
from tests.algo_helpers import params, same
from tests.test_protocol import mo_task

TINY = dict(n_envs=2, n_steps=16, num_minibatches=4, update_epochs=2)


def mo_context(total_updates: int = 10, seed: int = 0) -> AlgoContext:
    """The two-objective pendulum of test_protocol with training envs as the runner builds them."""
    task = mo_task()
    env = task.make_env()
    ctx = AlgoContext(observation_space=env.observation_space, action_space=env.action_space,
                      device=torch.device("cpu"), seed=seed, total_updates=total_updates, reward_dim=2,
                      preference_weights=np.asarray(task.preference_weights, np.float32))
    env.close()
    ctx.make_envs = make_training_envs(task, ctx)
    return ctx


def test_per_objective_gae_on_hand_values() -> None:
    # T = 3 steps, N = 1 env, d = 2 objectives; the episode terminates after step 1, a new one is cut at step 2
    rewards = torch.tensor([[[1.0, 0.0]], [[2.0, -1.0]], [[0.5, 3.0]]])
    values = torch.tensor([[[0.5, 1.0]], [[1.0, 0.0]], [[2.0, 2.0]]])
    next_values = torch.tensor([[[1.0, 0.0]], [[9.0, 9.0]], [[4.0, -2.0]]])  # step 1's is the terminal state's
    terminated = torch.tensor([[0.0], [1.0], [0.0]])
    dones = torch.tensor([[0.0], [1.0], [1.0]])  # step 2 truncated: bootstrapped from its own next value
    gamma, lam = 0.9, 0.5
    adv, ret = mo_gae(rewards, values, next_values, terminated, dones, gamma, lam)
    d2 = rewards[2, 0] + gamma * next_values[2, 0] - values[2, 0]  # truncated: bootstrap, no carry from later
    d1 = rewards[1, 0] - values[1, 0]  # terminated: no bootstrap
    d0 = rewards[0, 0] + gamma * next_values[0, 0] - values[0, 0]
    expected = torch.stack([d0 + gamma * lam * d1, d1, d2])
    torch.testing.assert_close(adv[:, 0], expected)
    torch.testing.assert_close(ret, adv + values)
    assert adv.shape == (3, 1, 2)
    # objective 1 alone, by hand
    assert adv[1, 0, 1].item() == pytest.approx(-1.0 - 0.0)
    assert adv[2, 0, 1].item() == pytest.approx(3.0 + 0.9 * -2.0 - 2.0)


def test_scalarized_advantage_denormalizes_then_weights_then_normalizes() -> None:
    adv = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 0.0]])
    std = np.array([2.0, 10.0])
    w = np.array([0.25, 0.75])
    raw = 0.25 * 2.0 * adv[:, 0] + 0.75 * 10.0 * adv[:, 1]
    torch.testing.assert_close(scalarized_advantages(adv, std, w), (raw - raw.mean()) / (raw.std() + 1e-5))
    one_hot = scalarized_advantages(adv, std, np.array([1.0, 0.0]))  # the constrained update's objective-j advantage
    torch.testing.assert_close(one_hot, (adv[:, 0] - adv[:, 0].mean()) / (adv[:, 0].std() + 1e-5))


def test_barrier_term_on_hand_values_and_its_clamp() -> None:
    ratio = torch.tensor([1.0, 1.1], requires_grad=True)
    returns = torch.tensor([[5.0, 3.0], [-1.0, 5.0]])  # minibatch means R = (2, 4)
    term = barrier_term(ratio, returns, objective=0, beta=0.9, t=20.0, clip=0.2)
    # objective 1 only: clip(r) * 4 - 0.9 * 4 = 0.4 and 0.8
    assert term.item() == pytest.approx(-(math.log(0.4) + math.log(0.8)) / 2 / 20, rel=1e-6)
    term.backward()
    assert ratio.grad is not None and torch.all(ratio.grad < 0)  # the barrier pushes r up, away from beta
    # clamp: clip(0.5) = 0.8, 0.8 R - 0.9 R < 0 -> the constant -(1/t) log(0.001), no gradient
    low = torch.tensor([0.5], requires_grad=True)
    clamped = barrier_term(low, torch.tensor([[1.0, 4.0]]), objective=0, beta=0.9, t=20.0, clip=0.2)
    assert clamped.item() == pytest.approx(-math.log(0.001) / 20)
    clamped.backward()
    assert low.grad is not None and low.grad.item() == 0.0
    # a negative mean return is never feasible for the barrier (the reference's behaviour): constant too
    neg = barrier_term(torch.tensor([1.0]), torch.tensor([[1.0, -4.0]]), objective=0, beta=0.9, t=20.0, clip=0.2)
    assert neg.item() == pytest.approx(-math.log(0.001) / 20)
    # three objectives: the maximized one is left out, the other two averaged
    three = barrier_term(torch.tensor([1.0]), torch.tensor([[1.0, 10.0, 20.0]]), objective=1, beta=0.9, t=10.0,
                         clip=0.2)
    assert three.item() == pytest.approx(-(math.log(0.1) + math.log(2.0)) / 2 / 10, rel=1e-6)


def test_simplex_grid_is_the_references() -> None:
    np.testing.assert_allclose(simplex_grid(2, 0.0, 1.0, 0.2)[:, 0], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-9)
    np.testing.assert_allclose(simplex_grid(2, 0.0, 1.0, 0.5), [[0, 1], [0.5, 0.5], [1, 0]], atol=1e-9)
    # hopper-3d's grid (0.2, 0.8, 0.3): the last component is 1 - the others, possibly 0
    np.testing.assert_allclose(simplex_grid(3, 0.2, 0.8, 0.3), [[0.2, 0.2, 0.6], [0.2, 0.5, 0.3], [0.2, 0.8, 0.0],
                                                                [0.5, 0.2, 0.3], [0.5, 0.5, 0.0], [0.8, 0.2, 0.0]],
                               atol=1e-9)


def test_multi_objective_training_envs_keep_vector_rewards_with_same_step_autoreset() -> None:
    ctx = mo_context()
    assert ctx.make_envs is not None
    envs = ctx.make_envs(2)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    envs.reset(seed=0)
    for _ in range(200):  # Pendulum's episodes are 200 steps
        _, rew, _, trunc, info = envs.step(np.zeros((2, 1), np.float32))
        assert rew.shape == (2, 2)
    assert trunc.all() and info["_final_obs"].all()  # the last step ends both episodes: final obs kept
    assert ctx.env_steps == 400
    envs.close()


def test_collect_normalizes_and_counts() -> None:
    ctx = mo_context()
    cfg = MOPPOConfig(**TINY)
    learner = new_learner(cfg, ctx, np.array([0.5, 0.5]))
    envs = MOEnvs(ctx, 2, seed=3, algo="test")
    rollout = envs.collect(learner, 16, torch.Generator().manual_seed(0))
    assert rollout.obs.shape == (16, 2, 3) and rollout.rewards.shape == (16, 2, 2) and rollout.env_steps == 32
    assert learner.ob_rms.count == pytest.approx(1e-4 + 2 * 17)  # the reset's observations and every step's
    assert learner.obj_rms.count == pytest.approx(1e-4 + 2 * 16)
    assert rollout.obs.abs().max() <= 10.0
    # each objective's reward scaled by its own return std (the last step's statistics: compare that step)
    np.testing.assert_allclose(rollout.rewards[-1].numpy(),
                               np.clip(rollout.raw_rewards[-1] / learner.obj_rms.std, -10, 10), rtol=1e-5)
    assert ctx.env_steps == 32
    envs.close()


def test_ppo_iteration_trains_and_the_constrained_one_adds_the_barrier() -> None:
    torch.manual_seed(0)
    ctx = mo_context()
    cfg = MOPPOConfig(**TINY)
    learner = new_learner(cfg, ctx, np.array([0.5, 0.5]))
    envs = MOEnvs(ctx, 2, seed=3, algo="test")
    gen = torch.Generator().manual_seed(0)
    before = params(learner.net)
    metrics = ppo_iteration(learner, envs.collect(learner, 16, gen), gen)
    assert not same(before, params(learner.net)) and learner.iterations == 1
    assert "barrier" not in metrics and all(math.isfinite(v) for v in metrics.values())
    metrics = ppo_iteration(learner, envs.collect(learner, 16, gen), gen, Constraint(objective=1))
    assert "barrier" in metrics and learner.iterations == 2
    envs.close()
