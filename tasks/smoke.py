"""`smoke-v0`: a Pendulum-v1 dataset that builds in seconds, for tests and first contact; `smoke-cost-v0`, the same
episodes with the per-step cost of PendulumSpeedCost (tasks/envs.py), for the offline safe smoke task.

Behavior: a hand-written swing-up controller (energy pumping, then PD balancing) whose action is
replaced by a uniform random one with a per-episode probability that rises from 0 to 0.8, so
returns span from expert-like to poor (a "medium-replay"-like mixture).
Reference scores: seeded uniform-random policy (min) and the noiseless controller (max),
100 episodes each, as the scoring protocol asks.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np

from algorithms.core.seeding import derive_seed
from tasks.datasets import Episode, dataset_exists, write_minari_dataset
from tasks.envs import PENDULUM_COST_ID, pendulum_speed_cost, suite_env_id

DATASET_ID = "ctrlbench/pendulum/smoke-v0"
COST_DATASET_ID = "ctrlbench/pendulum/smoke-cost-v0"
ENV_ID = "Pendulum-v1"
N_EPISODES = 100
SEED = 0


def swing_up_controller(obs: np.ndarray) -> np.ndarray:
    """Energy pumping far from upright, PD control near it (torque limit 2)."""
    cos, sin, vel = obs[..., 0], obs[..., 1], obs[..., 2]
    angle = np.arctan2(sin, cos)
    energy = 0.5 * vel**2 + 15.0 * (cos - 1.0)  # 0 at rest upright (theta'' = 15 sin + 3 u)
    pump = 2.0 * np.sign(vel * -energy + 1e-6)
    balance = np.clip(-10.0 * angle - 2.0 * vel, -2.0, 2.0)
    return np.where(cos > 0.85, balance, pump)[..., None].astype(np.float32)


def _rollout(env: gym.Env, seed: int, policy) -> Episode:
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    while True:
        action = policy(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        if terminated or truncated:
            break
    return Episode(np.asarray(observations, np.float32), np.asarray(actions, np.float32),
                   np.asarray(rewards, np.float32), np.asarray(terms), np.asarray(truncs), seed)


REFERENCE_DECIMALS = 4


def mean_return(policy_factory, n: int, stream: int) -> float:
    """Mean return over n seeded episodes, rounded to REFERENCE_DECIMALS.

    Rounded because Pendulum's numpy sin/cos take CPU-specific SIMD paths (AVX-512 vs AVX2 differ in the
    last bit), which 200 chaotic steps grow to ~1e-9 in the return: unrounded, the reference score, and with
    it the dataset's metadata hash and every smoke run id, would change from one CI machine to the next.
    """
    env = gym.make(ENV_ID)
    returns = [float(_rollout(env, derive_seed(SEED, stream, i), policy_factory(i)).rewards.sum()) for i in range(n)]
    return round(float(np.mean(returns)), REFERENCE_DECIMALS)


def build(overwrite: bool = False) -> str:
    """Both smoke datasets; those already built are kept unless `overwrite`."""
    env = gym.make(ENV_ID)
    space = env.action_space

    def random_policy(i: int):
        rng = np.random.default_rng(derive_seed(SEED, 1, i))
        return lambda obs: rng.uniform(space.low, space.high).astype(np.float32)

    def behavior_policy(i: int):
        rng = np.random.default_rng(derive_seed(SEED, 2, i))
        p_random = 0.8 * i / (N_EPISODES - 1)

        def act(obs: np.ndarray) -> np.ndarray:
            if rng.random() < p_random:
                return rng.uniform(space.low, space.high).astype(np.float32)
            noisy = swing_up_controller(obs) + rng.normal(0.0, 0.2, size=1)
            return np.clip(noisy, space.low, space.high).astype(np.float32)

        return act

    episodes = [_rollout(env, derive_seed(SEED, 3, i), behavior_policy(i)) for i in range(N_EPISODES)]
    ref_min = mean_return(random_policy, 100, stream=4)
    ref_max = mean_return(lambda i: swing_up_controller, 100, stream=5)
    recipe = {"builder": "tasks.smoke", "seed": SEED, "episodes": N_EPISODES}
    if overwrite or not dataset_exists(DATASET_ID):
        write_minari_dataset(
            DATASET_ID, episodes, env, eval_env=ENV_ID, ref_min_score=ref_min, ref_max_score=ref_max,
            algorithm_name="swing-up controller with per-episode random-action mixing",
            description="ctrlbench smoke dataset: Pendulum-v1, 100 episodes of a mixed-quality controller",
            extra_metadata={"ctrlbench_recipe": recipe}, overwrite=overwrite,
        )
    # The cost dataset: the same episodes, each step's cost computed from its recorded next state (PendulumSpeedCost
    # changes nothing else); rewards normalized with the same references as smoke-v0.
    costed = [dataclasses.replace(ep, costs=pendulum_speed_cost(ep.observations[1:])) for ep in episodes]
    episode_costs = [float(ep.costs.sum()) for ep in costed]
    if overwrite or not dataset_exists(COST_DATASET_ID):
        write_minari_dataset(
            COST_DATASET_ID, costed, gym.make(suite_env_id(PENDULUM_COST_ID)),
            eval_env=gym.make(suite_env_id(PENDULUM_COST_ID)), ref_min_score=ref_min, ref_max_score=ref_max,
            algorithm_name="swing-up controller with per-episode random-action mixing",
            description="ctrlbench smoke cost dataset: smoke-v0's episodes with PendulumSpeedCost's per-step cost",
            extra_metadata={"cost_min_score": min(episode_costs), "cost_max_score": max(episode_costs),
                            "ctrlbench_recipe": {**recipe, "cost": "PendulumSpeedCost"}}, overwrite=overwrite,
        )
    return DATASET_ID
