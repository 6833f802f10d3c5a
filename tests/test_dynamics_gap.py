"""Sim-to-real dynamics gaps: model edits read back, per-instance models, joint noise, gap labels and their errors."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from algorithms.core.errors import CtrlbenchError
from tasks.dynamics_gap import DynamicsGap, JointNoise, apply_gap, make_sim_env, parse_gap

ENVS = ("HalfCheetah-v5", "Walker2d-v5")
GAPS = ("gravity2x", "friction0.3x", "jointnoise1.0")


def _xml_model(env: gym.Env) -> mujoco.MjModel:
    """The model compiled straight from the installed XML: the defaults, independent of any gym instance."""
    return mujoco.MjModel.from_xml_path(env.unwrapped.fullpath)


def _rollout(env: gym.Env, seed: int = 0, steps: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Observations and rewards of a seeded rollout with a fixed action sequence, up to the first episode end."""
    actions = np.random.default_rng(1).uniform(-1, 1, (steps, *env.action_space.shape)).astype(np.float32)
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards)


def _has_time_limit(env: gym.Env) -> bool:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return True
        env = env.env
    return False


@pytest.mark.parametrize("env_id", ENVS)
def test_gravity_and_friction_read_back_from_the_model(env_id: str) -> None:
    real = gym.make(env_id)
    heavy = make_sim_env(env_id, DynamicsGap("gravity", 2.0))
    slippery = make_sim_env(env_id, parse_gap("friction0.3x"))
    real_model = real.unwrapped.model
    np.testing.assert_allclose(heavy.unwrapped.model.opt.gravity, 2.0 * real_model.opt.gravity)
    assert heavy.unwrapped.model.opt.gravity[2] == pytest.approx(-19.62)
    np.testing.assert_allclose(heavy.unwrapped.model.geom_friction, real_model.geom_friction)  # only gravity changed
    np.testing.assert_allclose(slippery.unwrapped.model.geom_friction, 0.3 * real_model.geom_friction)
    np.testing.assert_allclose(slippery.unwrapped.model.opt.gravity, real_model.opt.gravity)
    for sim in (heavy, slippery):
        assert _has_time_limit(sim) and sim.spec.max_episode_steps == real.spec.max_episode_steps


@pytest.mark.parametrize("env_id", ENVS)
def test_the_real_env_is_untouched_by_sim_envs(env_id: str) -> None:
    before = gym.make(env_id)  # made before the sim envs: they must not reach into its model either
    sims = [make_sim_env(env_id, gap) for gap in ("gravity2x", "friction0.3x", "gravity2x")]
    after = gym.make(env_id)
    defaults = _xml_model(after)
    for real in (before, after):
        np.testing.assert_array_equal(real.unwrapped.model.opt.gravity, defaults.opt.gravity)
        np.testing.assert_array_equal(real.unwrapped.model.geom_friction, defaults.geom_friction)
    # Each sim env owns its model: the second gravity2x env is 2x, not 4x.
    np.testing.assert_allclose(sims[2].unwrapped.model.opt.gravity, 2.0 * defaults.opt.gravity)
    np.testing.assert_array_equal(sims[2].unwrapped.model.geom_friction, defaults.geom_friction)


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("gap", GAPS)
def test_seeded_rollout_differs_between_sim_and_real(env_id: str, gap: str) -> None:
    real_obs, real_rewards = _rollout(gym.make(env_id))
    again_obs, again_rewards = _rollout(gym.make(env_id))
    np.testing.assert_array_equal(real_obs, again_obs)  # the real env is deterministic given the seed
    np.testing.assert_array_equal(real_rewards, again_rewards)
    sim_obs, _ = _rollout(make_sim_env(env_id, gap))
    n = min(len(sim_obs), len(real_obs))
    np.testing.assert_array_equal(sim_obs[0], real_obs[0])  # same seed, same start: only the dynamics differ
    assert np.abs(sim_obs[:n] - real_obs[:n]).max() > 0.1


def test_joint_noise_executes_a_noisy_action_and_keeps_the_clean_one() -> None:
    env = make_sim_env("HalfCheetah-v5", "jointnoise1.0")
    assert isinstance(env, JointNoise) and _has_time_limit(env)
    env.reset(seed=0)
    clean = np.full(env.action_space.shape, 0.25, dtype=np.float32)
    kept = clean.copy()
    _, _, _, _, info = env.step(clean)
    executed = info["executed_action"]
    np.testing.assert_array_equal(clean, kept)  # the caller's array is not changed
    assert not np.allclose(executed, clean)
    assert executed.dtype == env.action_space.dtype and env.action_space.contains(executed)  # clipped to bounds
    np.testing.assert_array_equal(env.last_executed_action, executed)
    np.testing.assert_allclose(env.unwrapped.data.ctrl, executed)  # what MuJoCo ran is the noisy action


def test_joint_noise_sigma_is_a_standard_deviation() -> None:
    env = JointNoise(gym.make("HalfCheetah-v5"), sigma=0.2)
    env.reset(seed=3)
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    noise = np.array([env.step(zero)[4]["executed_action"] for _ in range(200)])  # bounds +-1 = 5 sigma: ~no clip
    assert abs(noise.mean()) < 0.03
    assert 0.18 < noise.std() < 0.22  # N(0, sigma^2): std 0.2, not 0.04 (variance) nor 0.45 (sqrt sigma)


def test_joint_noise_zero_equals_real_and_seeded_noise_is_reproducible() -> None:
    real_obs, real_rewards = _rollout(gym.make("HalfCheetah-v5"), steps=50)
    zero_obs, zero_rewards = _rollout(make_sim_env("HalfCheetah-v5", "jointnoise0.0"), steps=50)
    np.testing.assert_array_equal(zero_obs, real_obs)
    np.testing.assert_array_equal(zero_rewards, real_rewards)

    noisy = make_sim_env("HalfCheetah-v5", "jointnoise1.0")
    first, _ = _rollout(noisy, seed=7, steps=50)
    repeat, _ = _rollout(noisy, seed=7, steps=50)  # re-seeding the same env restarts the noise stream
    other_env, _ = _rollout(make_sim_env("HalfCheetah-v5", "jointnoise1.0"), seed=7, steps=50)
    other_seed, _ = _rollout(noisy, seed=8, steps=50)
    np.testing.assert_array_equal(first, repeat)
    np.testing.assert_array_equal(first, other_env)
    assert not np.allclose(first[1:], other_seed[1:])


@pytest.mark.parametrize(("gap", "label"), [
    (DynamicsGap("gravity", 2), "gravity2x"), (DynamicsGap("gravity", 0.5), "gravity0.5x"),
    (DynamicsGap("friction", 0.3), "friction0.3x"), (DynamicsGap("friction", 1.5), "friction1.5x"),
    (DynamicsGap("jointnoise", 1), "jointnoise1.0"), (DynamicsGap("jointnoise", 0.5), "jointnoise0.5"),
    (DynamicsGap("jointnoise", 0), "jointnoise0.0"), (DynamicsGap("gravity", 1 / 3), f"gravity{1 / 3!r}x"),
])
def test_labels_round_trip(gap: DynamicsGap, label: str) -> None:
    assert gap.label == label
    assert parse_gap(label) == gap
    assert isinstance(parse_gap(label).value, float)


def test_describe() -> None:
    assert DynamicsGap("gravity", 2).describe() == "gravity x2 (sim)"
    assert DynamicsGap("friction", 0.3).describe() == "friction x0.3 (sim)"
    assert DynamicsGap("jointnoise", 1).describe() == "joint noise N(0, 1.0^2) on executed actions (sim)"


@pytest.mark.parametrize(("text", "match"), [
    ("gravity0x", "gravity factor must be > 0, got 0"),
    ("gravity-1x", "gravity factor must be > 0, got -1"),
    ("friction0x", "friction factor must be > 0, got 0"),
    ("jointnoise-1", "joint noise sigma must be >= 0, got -1.0"),
    ("wind2x", "unknown dynamics gap 'wind2x'; expected gravity<factor>x"),
    ("gravityabcx", "cannot read the number 'abc'"),
    ("gravity2", "must end in 'x'"),
    ("frictioninfx", "cannot read the number 'inf'"),
    ("jointnoise", "cannot read the number ''"),
    ("", "unknown dynamics gap ''"),
])
def test_bad_gap_text_is_a_one_line_error(text: str, match: str) -> None:
    with pytest.raises(CtrlbenchError, match=match) as err:
        parse_gap(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("kind", "value", "match"), [
    ("gravity", 0, "gravity factor must be > 0, got 0"),
    ("friction", -0.5, "friction factor must be > 0, got -0.5"),
    ("jointnoise", -1, "joint noise sigma must be >= 0"),
    ("wind", 2.0, "unknown dynamics gap kind 'wind'; known: gravity, friction, jointnoise"),
    ("gravity", float("nan"), "must be a finite number"),
])
def test_bad_gap_fails_at_construction(kind: str, value: float, match: str) -> None:
    with pytest.raises(CtrlbenchError, match=match) as err:
        DynamicsGap(kind, value)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_model_gaps_need_a_mujoco_env() -> None:
    with pytest.raises(CtrlbenchError, match="needs a MuJoCo env"):
        apply_gap(gym.make("Pendulum-v1"), DynamicsGap("gravity", 2))
