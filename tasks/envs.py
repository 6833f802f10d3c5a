"""The suite's own gymnasium environment ids, registered when this module is imported.

Tasks name these environments as "tasks.envs:<id>", gymnasium's "module:id" form: `gym.make` imports this module
first, so the ids resolve in any process (sweep workers, Ray) without a registration step of their own.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from tasks.dynamics_gap import make_sim_env

PENDULUM_COST_ID = "ctrlbench/PendulumSpeedCost-v1"
PENDULUM_SPEED_LIMIT = 4.0  # rad/s; a swing-up passes it, a hanging or balanced pendulum does not


class PendulumSpeedCost(gym.Wrapper):
    """Pendulum-v1 with a per-step cost, the smoke stand-in for the velocity tasks: 1 while |theta_dot| is above
    PENDULUM_SPEED_LIMIT, in info["cost"]. Reward and dynamics are Pendulum's."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["cost"] = float(pendulum_speed_cost(obs))
        return obs, reward, terminated, truncated, info


def pendulum_speed_cost(next_obs: np.ndarray) -> np.ndarray:
    """The cost of the steps that led to these Pendulum observations (..., 3): 1 where |theta_dot| is above the
    limit."""
    return (np.abs(np.asarray(next_obs)[..., 2]) > PENDULUM_SPEED_LIMIT).astype(np.float32)


def make_pendulum_speed_cost(**kwargs) -> gym.Env:
    return PendulumSpeedCost(gym.make("Pendulum-v1", **kwargs))


def suite_env_id(env_id: str) -> str:
    """The id a task stores: importable from any process (see the module docstring)."""
    return f"{__name__}:{env_id}"


if PENDULUM_COST_ID not in gym.registry:
    # max_episode_steps stays with the inner Pendulum-v1 (200); none here, or the limit would apply twice
    gym.register(PENDULUM_COST_ID, entry_point=f"{__name__}:make_pendulum_speed_cost", disable_env_checker=True)



DYNAMICS_GAP_ID = "ctrlbench/DynamicsGap-v0"


def make_dynamics_gap_env(real_env_id: str, gap: str, **env_kwargs) -> gym.Env:
    """The simulator of a sim-to-real task: `real_env_id` with one dynamics change (tasks/dynamics_gap.py)."""
    return make_sim_env(real_env_id, gap, **env_kwargs)


if DYNAMICS_GAP_ID not in gym.registry:
    # the real env's own TimeLimit is kept inside; the checker would only see the real env again
    gym.register(DYNAMICS_GAP_ID, entry_point=f"{__name__}:make_dynamics_gap_env", disable_env_checker=True)


VELOCITY_ID = "ctrlbench/Velocity-v1"  # Safety-Gymnasium's velocity-v1 rule on a robot (kwarg `robot`)

if VELOCITY_ID not in gym.registry:
    # the base env's own TimeLimit (1000) and checker are kept inside
    gym.register(VELOCITY_ID, entry_point="tasks.velocity_cost:make_velocity_env", disable_env_checker=True)
