"""The suite's multi-objective environment ids, registered when this module is imported.

Tasks name them as "tasks.mo_envs:<id>" (gymnasium's "module:id" form, as tasks/envs.py does), so `gym.make`
imports this module first and the ids resolve in any process. Entry points are strings, so an env spec serializes
(Minari stores it in a dataset's metadata) and is made again from it without this module being imported first.

`ctrlbench/TwoObjectivePendulum-v1` is the smoke stand-in for the MO-Gymnasium MuJoCo tasks (tasks/mo_tasks.py):
Pendulum-v1 (200 steps) whose reward is a vector of two objectives, both maximized, in MO-Gymnasium's convention:
- `upright`: Pendulum's reward without its torque term, -(theta^2 + 0.1 theta_dot^2), in [-16.3, 0] per step;
- `energy`: the unscaled control cost -u^2 (MO-Gymnasium's `ctrl`, Pendulum itself weights it 1e-3), in [-4, 0].
Hanging still is the best for energy and worst for upright; a swing-up buys upright with torque: a real trade-off.
`reward_space` is set on the environment, as MO-Gymnasium environments do (MORL libraries read it).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv

TWO_OBJECTIVE_PENDULUM_ID = "ctrlbench/TwoObjectivePendulum-v1"
PENDULUM_STEPS = 200


class TwoObjectivePendulum(PendulumEnv):
    """Pendulum-v1 with the vector reward [upright, energy] (module docstring)."""

    def __init__(self, render_mode: str | None = None, g: float = 10.0) -> None:
        super().__init__(render_mode=render_mode, g=g)
        self.reward_space = gym.spaces.Box(low=np.array([-16.3, -4.0], np.float32), high=np.zeros(2, np.float32))
        self.reward_dim = 2

    def step(self, action):
        u = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -self.max_torque, self.max_torque))
        obs, reward, terminated, truncated, info = super().step(np.array([u], np.float32))
        energy = -(u**2)
        upright = float(reward) - 0.001 * energy  # Pendulum's reward is upright - 0.001 u^2
        return obs, np.array([upright, energy], dtype=np.float32), terminated, truncated, info


def suite_mo_env_id(env_id: str) -> str:
    """The id a task stores: importable from any process (see the module docstring)."""
    return f"{__name__}:{env_id}"


if TWO_OBJECTIVE_PENDULUM_ID not in gym.registry:
    # the passive checker wants scalar rewards: off, as MO-Gymnasium's own `make` does
    gym.register(TWO_OBJECTIVE_PENDULUM_ID, entry_point=f"{__name__}:TwoObjectivePendulum",
                 max_episode_steps=PENDULUM_STEPS, disable_env_checker=True)
