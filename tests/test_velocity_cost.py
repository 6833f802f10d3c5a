"""Safety-Gymnasium velocity tasks: cost rule per robot, the wrapper on real MuJoCo envs, budgets, errors."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

from algorithms.core.errors import CtrlbenchError
from tasks.protocol import check_budget, is_safe, normalized_cost
from tasks.velocity_cost import (
    CORE_ROBOTS,
    COST_BUDGETS,
    ROBOTS,
    VelocityCost,
    make_velocity_env,
    velocity_cost,
)


def _cost(robot: str, vx: float, vy: float = 0.0) -> float:
    task = ROBOTS[robot]
    return velocity_cost({"x_velocity": vx, "y_velocity": vy}, task.rule, task.threshold)


def test_table_matches_safety_gymnasium_v1() -> None:
    assert {r: t.threshold for r, t in ROBOTS.items()} == {
        "hopper": 0.7402, "halfcheetah": 3.2096, "walker2d": 2.3415, "ant": 2.6222, "swimmer": 0.2282,
        "humanoid": 1.4149}
    assert {r: t.rule for r, t in ROBOTS.items()} == {
        "hopper": "x", "halfcheetah": "x", "walker2d": "x", "ant": "xy", "swimmer": "x", "humanoid": "xy"}
    assert {r: (t.v4, t.v5) for r, t in ROBOTS.items() if r in CORE_ROBOTS} == {
        "hopper": ("Hopper-v4", "Hopper-v5"), "halfcheetah": ("HalfCheetah-v4", "HalfCheetah-v5"),
        "walker2d": ("Walker2d-v4", "Walker2d-v5"), "ant": ("Ant-v4", "Ant-v5"),
        "swimmer": ("Swimmer-v4", "Swimmer-v5")}


@pytest.mark.parametrize("robot", ["hopper", "halfcheetah", "walker2d"])
def test_x_rule_is_signed_and_strict(robot: str) -> None:
    th = ROBOTS[robot].threshold
    assert _cost(robot, -5.0) == 0.0  # abs() would give 1: running backwards fast is not a violation
    assert _cost(robot, -th - 1.0) == 0.0
    assert _cost(robot, th) == 0.0  # strict ">"
    assert _cost(robot, float(np.nextafter(th, np.inf))) == 1.0
    assert _cost(robot, th + 1e-6) == 1.0
    assert _cost(robot, 0.0, vy=100.0) == 0.0  # y never counts for these robots


def test_ant_uses_xy_norm() -> None:
    assert _cost("ant", 2.0, 2.0) == 1.0  # hypot = 2.83 > 2.6222
    assert _cost("ant", 2.0, 0.0) == 0.0  # vx alone is under the threshold
    assert _cost("ant", 0.0, -3.0) == 1.0  # the norm ignores direction
    assert _cost("ant", -2.0, -2.0) == 1.0
    assert _cost("ant", 2.6222, 0.0) == 0.0


def test_swimmer_v1_uses_x_only() -> None:
    assert _cost("swimmer", 0.1, 5.0) == 0.0  # v0's xy norm would give 1
    assert _cost("swimmer", 0.3, 0.0) == 1.0
    assert _cost("swimmer", -1.0, 0.0) == 0.0


def test_rule_errors_are_one_line() -> None:
    with pytest.raises(CtrlbenchError, match="y_velocity") as err:
        velocity_cost({"x_velocity": 1.0}, "xy", 1.0)
    assert "\n" not in str(err.value)
    with pytest.raises(CtrlbenchError, match="allowed: x, xy"):
        velocity_cost({"x_velocity": 1.0}, "abs", 1.0)


class _FixedVelocityEnv(gym.Env):
    """A stand-in env whose info reports a chosen velocity, to hit the threshold exactly through the wrapper."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
    action_space = gym.spaces.Box(-1.0, 1.0, (1,))

    def __init__(self, vx: float, vy: float = 0.0) -> None:
        self.vx, self.vy = vx, vy

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return np.zeros(1, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(1, np.float32), 7.5, False, False, {"x_velocity": self.vx, "y_velocity": self.vy}


def test_wrapper_applies_the_rule_exactly() -> None:
    th = ROBOTS["halfcheetah"].threshold
    for vx, cost in ((th, 0.0), (float(np.nextafter(th, np.inf)), 1.0), (-10.0, 0.0)):
        info = VelocityCost(_FixedVelocityEnv(vx), "x", th).step(np.zeros(1))[4]
        assert (info["cost"], info["velocity"]) == (cost, vx)
    _, reward, terminated, truncated, info = VelocityCost(_FixedVelocityEnv(2.0, 2.0), "xy", 2.6222).step(np.zeros(1))
    assert (reward, terminated, truncated, info["cost"]) == (7.5, False, False, 1.0)
    assert info["velocity"] == pytest.approx(2.0 * np.sqrt(2.0))
    with pytest.raises(CtrlbenchError, match="allowed: x, xy"):
        VelocityCost(_FixedVelocityEnv(0.0), "abs", 1.0)


def _step_with_velocity(env: gym.Env, qvel_xy: tuple[float, ...]) -> dict:
    """Reset, overwrite the root's planar velocity through set_state, take one zero-action step; return info."""
    env.reset(seed=0)
    data = env.unwrapped.data
    qvel = data.qvel.copy()
    qvel[: len(qvel_xy)] = qvel_xy
    env.unwrapped.set_state(data.qpos.copy(), qvel)
    return env.step(np.zeros(env.action_space.shape))[4]


def test_wrapper_cost_follows_halfcheetah_velocity() -> None:
    env = make_velocity_env("halfcheetah")
    fast, backwards, still = (_step_with_velocity(env, (v,)) for v in (10.0, -10.0, 0.0))
    assert fast["x_velocity"] > 8.0 and fast["cost"] == 1.0
    assert backwards["x_velocity"] < -8.0 and backwards["cost"] == 0.0  # signed on the real env too
    assert abs(still["x_velocity"]) < 1.0 and still["cost"] == 0.0
    for info in (fast, backwards, still):
        assert info["velocity"] == info["x_velocity"]
        assert isinstance(info["cost"], float)


def test_wrapper_uses_each_robots_rule_on_real_envs() -> None:
    ant = make_velocity_env("ant")
    info = _step_with_velocity(ant, (0.0, 5.0))  # sideways: only the xy norm catches it
    assert abs(info["x_velocity"]) < 1.0 and info["cost"] == 1.0
    assert info["velocity"] == pytest.approx(np.hypot(info["x_velocity"], info["y_velocity"]))
    assert _step_with_velocity(ant, (0.0, 0.0))["cost"] == 0.0
    swimmer = make_velocity_env("swimmer")
    info = _step_with_velocity(swimmer, (0.0, 3.0))  # sideways: v1 looks at x only
    assert info["y_velocity"] > 1.0 and info["cost"] == 0.0
    assert _step_with_velocity(swimmer, (1.0, 0.0))["cost"] == 1.0


def test_wrapper_changes_nothing_but_info() -> None:
    wrapped = make_velocity_env("halfcheetah")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        plain = gym.make("HalfCheetah-v4")
    assert wrapped.spec.max_episode_steps == plain.spec.max_episode_steps == 1000
    obs_w, _ = wrapped.reset(seed=3)
    obs_p, _ = plain.reset(seed=3)
    np.testing.assert_array_equal(obs_w, obs_p)
    for env in (wrapped, plain):  # the same forward kick in both, so the run starts over the threshold and slows down
        data = env.unwrapped.data
        env.unwrapped.set_state(data.qpos.copy(), np.r_[8.0, data.qvel[1:]])
    rng = np.random.default_rng(0)
    costs = []
    for t in range(60):
        # seeded open-loop gait plus noise (open loop alone rarely beats 3.2 m/s; the kick makes both cases occur)
        action = np.clip(np.sin(0.8 * t + np.arange(6)) + 0.3 * rng.standard_normal(6), -1, 1)
        ow, rw, tw, uw, iw = wrapped.step(action)
        op, rp, tp, up, ip = plain.step(action)
        np.testing.assert_array_equal(ow, op)
        assert (rw, tw, uw) == (rp, tp, up)
        assert set(iw) == set(ip) | {"cost", "velocity"}
        assert all(np.array_equal(iw[k], ip[k]) for k in ip)
        assert iw["cost"] == float(ip["x_velocity"] > 3.2096)
        costs.append(iw["cost"])
    assert 0 < sum(costs) < len(costs), costs  # the pattern crosses the threshold both ways


@pytest.mark.parametrize(("robot", "dim"), [("hopper", 11), ("halfcheetah", 17), ("walker2d", 17), ("ant", 27),
                                            ("swimmer", 8)])
def test_v4_observation_dims(robot: str, dim: int) -> None:
    env = make_velocity_env(robot)
    assert env.observation_space.shape == (dim,)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (dim,)
    assert env.unwrapped.spec.id == ROBOTS[robot].v4
    assert "cost" in env.step(env.action_space.sample())[4]


def test_v5_variant_and_no_deprecation_noise() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = make_velocity_env("hopper")
    assert not [w for w in caught if "out of date" in str(w.message)]
    assert env.unwrapped.spec.id == "Hopper-v4"
    ant5 = make_velocity_env("ant", version="v5")
    assert ant5.unwrapped.spec.id == "Ant-v5" and ant5.observation_space.shape == (105,)
    ant5.reset(seed=0)
    assert ant5.step(ant5.action_space.sample())[4]["cost"] in (0.0, 1.0)


def test_normalized_cost_and_safety() -> None:
    assert COST_BUDGETS == (20, 40, 80)
    assert normalized_cost(20.0, 40) == 0.5
    assert normalized_cost(40.0, 40) == 1.0 and is_safe(normalized_cost(40.0, 40)) is True
    assert is_safe(normalized_cost(41.0, 40)) is False
    assert normalized_cost(0.0, 0) == 1.0  # eps = 1 when kappa == 0: zero cost is exactly on budget
    assert normalized_cost(1.0, 0) == 2.0
    assert normalized_cost(10.0, 20) == 0.5  # eps = 0 otherwise: (10 + 1) / (20 + 1) would be wrong
    np.testing.assert_allclose(normalized_cost(np.array([0.0, 40.0, 100.0]), 80), [0.0, 0.5, 1.25])
    np.testing.assert_array_equal(is_safe(np.array([0.5, 1.0, 1.0 + 1e-9])), [True, True, False])
    assert is_safe(1.0) is True and is_safe(np.nextafter(1.0, 2.0)) is False
    assert check_budget(20) == 20.0 and isinstance(check_budget(20), float)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: make_velocity_env("cheetah"), "known: hopper, halfcheetah, walker2d, ant, swimmer"),
        (lambda: make_velocity_env("hopper", version="v3"), "allowed: v4, v5"),
        (lambda: check_budget(-1), "kappa"),
        (lambda: normalized_cost(5.0, -0.5), ">= 0"),
        (lambda: check_budget(float("nan")), "finite"),
    ],
)
def test_bad_input_raises_one_line_error(call, match: str) -> None:
    with pytest.raises(CtrlbenchError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("robot", ["halfcheetah", "hopper"])
def test_unconstrained_sac_pays_the_published_cost_signature(robot: str) -> None:
    """The committed expert behavior policies are unconstrained SB3 SAC: on the velocity task they run fast nearly
    every step, as OmniSafe's unconstrained SAC does (about 982 and 975 per 1000 steps on HalfCheetah and Hopper,
    safe_and_morl.md C5). A wrong rule (abs, xy for a planar robot, a v0 threshold) moves this far."""
    from tasks.behavior import POLICIES_DIR, load_actor

    actor = load_actor(POLICIES_DIR / robot / "expert.pt")
    env = make_velocity_env(robot)
    obs, _ = env.reset(seed=0)
    cost, steps = 0.0, 0
    while True:
        obs, _, terminated, truncated, info = env.step(actor.act(obs[None])[0])
        cost, steps = cost + info["cost"], steps + 1
        if terminated or truncated:
            break
    assert steps == 1000 and 900.0 <= cost <= 1000.0, (steps, cost)
