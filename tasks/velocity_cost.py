"""Safety-Gymnasium "velocity" constrained tasks (SafetyXVelocity-v1), rebuilt as a gymnasium wrapper.

safety-gymnasium pins gymnasium 0.28 and does not install next to gymnasium 1.x, but its velocity tasks are just
gymnasium's MuJoCo **v4** envs (same reward, same obs, 1000 steps) plus a 0/1 cost per step. `VelocityCost` adds that
cost as ``info["cost"]`` and changes nothing else. v4 is the default so that DSRL's obs dims and reward min/max and the
OmniSafe numbers stay comparable; ``version="v5"`` is an extra (the suite's offline locomotion datasets use v5; v5 Ant
has a 105-dim obs and the v5 rewards differ, so DSRL/OmniSafe numbers do not transfer to it).
Checked on gymnasium 1.4.0 / mujoco 4.0.1: all v4 envs still make, reset and step and expose ``x_velocity``
(Ant, Swimmer and Humanoid also ``y_velocity``); gymnasium warns that v4 is "out of date", which we silence on purpose.

Cost rule per robot (safety_gymnasium/tasks/safe_velocity/safety_*_velocity_v1.py), v = velocity, th = v1 threshold:

* hopper, halfcheetah, walker2d: ``cost = float(x_velocity > th)`` with the SIGNED x-velocity (Δqpos[0]/dt).
  Pitfall: the safety-gymnasium docs say ``abs(x_velocity)``, the code does not; running backwards costs 0.
* ant (torso COM) and humanoid (mass centre): ``cost = float(hypot(vx, vy) > th)``.
* swimmer: v1 overrides v0's xy norm and uses the signed ``x_velocity`` only.

v1 thresholds ("50% of the max velocity of PPO after 1e7 steps", safety-gymnasium docs; values from the v1 files):
hopper 0.7402, halfcheetah 3.2096, walker2d 2.3415, ant 2.6222, swimmer 0.2282, humanoid 1.4149 (optional task).
The comparison is strict (v == th costs 0). mujoco >= 3 is not bit-identical to the 2.3.3 that made DSRL's data.

Budgets and normalisation follow DSRL/OSRL: kappa in {20, 40, 80} per episode (undiscounted cost),
``C_norm = (C + eps) / (kappa + eps)`` with eps = 1 iff kappa == 0, and safe iff ``C_norm <= 1`` (the scoring
protocol computes it: `normalized_cost` in tasks/protocol.py).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple, SupportsFloat

import gymnasium as gym

from algorithms.core.errors import CtrlbenchError


class VelocityTask(NamedTuple):
    v4: str  # gymnasium id of the base env, the default (what safety-gymnasium wraps)
    v5: str  # gymnasium id of the optional v5 variant
    threshold: float  # Safety-Gymnasium v1 velocity threshold
    rule: str  # "x": signed x-velocity; "xy": norm of the xy velocity


ROBOTS: dict[str, VelocityTask] = {
    "hopper": VelocityTask("Hopper-v4", "Hopper-v5", 0.7402, "x"),
    "halfcheetah": VelocityTask("HalfCheetah-v4", "HalfCheetah-v5", 3.2096, "x"),
    "walker2d": VelocityTask("Walker2d-v4", "Walker2d-v5", 2.3415, "x"),
    "ant": VelocityTask("Ant-v4", "Ant-v5", 2.6222, "xy"),
    "swimmer": VelocityTask("Swimmer-v4", "Swimmer-v5", 0.2282, "x"),  # v1: x only (v0 used the xy norm)
    "humanoid": VelocityTask("Humanoid-v4", "Humanoid-v5", 1.4149, "xy"),  # optional in the suite's design
}
CORE_ROBOTS = ("hopper", "halfcheetah", "walker2d", "ant", "swimmer")  # the five tasks of DSRL/OSRL's velocity set
VERSIONS = ("v4", "v5")
RULES = ("x", "xy")
COST_BUDGETS = (20, 40, 80)  # OSRL's per-episode budgets for the Safety-Gymnasium velocity tasks


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise CtrlbenchError(f"unknown velocity rule {rule!r}; allowed: {', '.join(RULES)}")


def compared_velocity(info: dict[str, Any], rule: str) -> float:
    """The velocity the cost rule compares with the threshold: signed vx ("x") or hypot(vx, vy) ("xy")."""
    _check_rule(rule)
    keys = ("x_velocity",) if rule == "x" else ("x_velocity", "y_velocity")
    missing = [k for k in keys if k not in info]
    if missing:
        raise CtrlbenchError(f"info lacks {', '.join(missing)} needed by rule {rule!r}; wrap a gymnasium MuJoCo env")
    if rule == "x":
        return float(info["x_velocity"])  # signed on purpose: moving backwards never costs
    return math.hypot(float(info["x_velocity"]), float(info["y_velocity"]))


def velocity_cost(info: dict[str, Any], rule: str, threshold: float) -> float:
    """Safety-Gymnasium v1 per-step cost: 1.0 if the compared velocity is strictly above ``threshold``, else 0.0."""
    return float(compared_velocity(info, rule) > threshold)


class VelocityCost(gym.Wrapper):
    """Puts the velocity cost in ``info["cost"]`` and the compared velocity in ``info["velocity"]``; nothing else."""

    def __init__(self, env: gym.Env, rule: str, threshold: float) -> None:
        super().__init__(env)
        _check_rule(rule)
        if not math.isfinite(threshold):
            raise CtrlbenchError(f"velocity threshold must be a finite number, got {threshold!r}")
        self.rule = rule
        self.threshold = float(threshold)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["velocity"] = compared_velocity(info, self.rule)
        info["cost"] = velocity_cost(info, self.rule, self.threshold)  # the one tested rule, not a copy of it
        return obs, reward, terminated, truncated, info


def make_velocity_env(robot: str, version: str = "v4", **env_kwargs: Any) -> gym.Env:
    """``gym.make`` of the robot's base env (v4 by default) wrapped in `VelocityCost` with its v1 threshold and rule.

    ``env_kwargs`` go to ``gym.make`` unchanged (e.g. ``render_mode``); changing reward weights breaks comparability.
    """
    if robot not in ROBOTS:
        raise CtrlbenchError(f"unknown velocity robot {robot!r}; known: {', '.join(ROBOTS)}")
    if version not in VERSIONS:
        raise CtrlbenchError(f"unknown velocity-task version {version!r}; allowed: {', '.join(VERSIONS)}")
    task = ROBOTS[robot]
    env_id = task.v4 if version == "v4" else task.v5
    with warnings.catch_warnings():
        # v4 is a deliberate choice (DSRL/OmniSafe comparability), so gymnasium's "out of date" notice is noise.
        warnings.filterwarnings("ignore", message=r".*is out of date", category=DeprecationWarning)
        env = gym.make(env_id, **env_kwargs)
    return VelocityCost(env, task.rule, task.threshold)
