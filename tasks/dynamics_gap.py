"""Sim-to-real dynamics gaps for the H2O task kind: the "sim" env is the real MuJoCo env with one documented change.

The real env is a gymnasium MuJoCo v5 env ("HalfCheetah-v5", "Walker2d-v5", "Hopper-v5"); the sim env is the same
env made the same way, then changed by one gap:

- ``gravity<f>x`` (e.g. ``gravity2x``): ``model.opt.gravity`` is multiplied by f, as H2O multiplies every number of
  the XML ``gravity`` attribute (-9.81 -> -19.62 for 2x).
- ``friction<f>x`` (e.g. ``friction0.3x``): every geom's friction triple (sliding, torsional, rolling) and every
  explicit contact pair's friction is multiplied by f, as H2O multiplies every number of every ``friction``
  attribute.
- ``jointnoise<sigma>`` (e.g. ``jointnoise1.0``): the executed action is a + N(0, sigma^2), clipped to the action
  bounds, while the caller keeps (and stores) the clean action a.

Gravity and friction are applied to the compiled ``MjModel`` of one env instance, never to the installed XML files:
H2O's official code overwrites gym's XML, which needs write access to site-packages, makes the real/sim make order
matter and changes every env made afterwards in any process. Gymnasium's MuJoCo envs compile their own ``MjModel``
per instance (``MjModel.from_xml_path`` in ``MujocoEnv.__init__``), so changing one instance's model leaves every
other instance, real or sim, as it was.

Caveat: ``env.spec`` of a gravity/friction sim env is the real env's spec (the change is not part of the spec), so
anything that re-makes an env from the spec (vector envs, ``gym.make(env.spec)``) gets the real dynamics; make sim
envs with :func:`make_sim_env`.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from algorithms.core.errors import CtrlbenchError

GapKind = Literal["gravity", "friction", "jointnoise"]
KINDS: tuple[str, ...] = ("gravity", "friction", "jointnoise")
_EXAMPLES = "gravity<factor>x, friction<factor>x or jointnoise<sigma> (e.g. gravity2x, friction0.3x, jointnoise1.0)"
# A plain decimal number; stricter than float(), which also takes "inf", "nan", "1_0" and surrounding spaces.
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
# Offsets the noise stream from the env's own reset stream: both are seeded from the same reset seed, and the same
# seed would otherwise give the noise the very numbers that drew the initial state.
_NOISE_STREAM = 0x4A4E


def _fmt_factor(value: float) -> str:
    """The shortest text that parses back to value, without a trailing ".0": 2 -> "2", 0.3 -> "0.3"."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _check(kind: str, value: float) -> None:
    """The one validation of a gap, shared by the constructor and the parser so their messages agree."""
    if kind not in KINDS:
        raise CtrlbenchError(f"unknown dynamics gap kind '{kind}'; known: {', '.join(KINDS)}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise CtrlbenchError(f"{kind} value must be a finite number, got {value!r}")
    if kind in ("gravity", "friction") and value <= 0:
        raise CtrlbenchError(f"{kind} factor must be > 0, got {_fmt_factor(value)}")
    if kind == "jointnoise" and value < 0:
        raise CtrlbenchError(f"joint noise sigma must be >= 0, got {value!r}")


@dataclass(frozen=True)
class DynamicsGap:
    """One sim-vs-real dynamics change: a gravity or friction factor, or a joint-noise standard deviation."""

    kind: GapKind
    value: float

    def __post_init__(self) -> None:
        _check(self.kind, self.value)
        # Stored as a float so DynamicsGap("gravity", 2) == parse_gap("gravity2x") and both label "gravity2x".
        object.__setattr__(self, "value", float(self.value))

    @property
    def label(self) -> str:
        """The task-id fragment: "gravity2x", "friction0.3x", "jointnoise1.0"."""
        if self.kind == "jointnoise":
            return f"jointnoise{self.value!r}"  # repr keeps one decimal at least: 1.0, 0.5, 0.05
        return f"{self.kind}{_fmt_factor(self.value)}x"

    def describe(self) -> str:
        """A short human description, e.g. "gravity x2 (sim)"."""
        if self.kind == "jointnoise":
            return f"joint noise N(0, {self.value!r}^2) on executed actions (sim)"
        return f"{self.kind} x{_fmt_factor(self.value)} (sim)"


def parse_gap(text: str) -> DynamicsGap:
    """The gap a label names: "gravity2x" -> DynamicsGap("gravity", 2.0); the inverse of DynamicsGap.label."""
    text = text.strip()
    kind = next((k for k in KINDS if text.startswith(k)), None)
    if kind is None:
        raise CtrlbenchError(f"unknown dynamics gap '{text}'; expected {_EXAMPLES}")
    number = text[len(kind):]
    if kind != "jointnoise":
        if not number.endswith("x"):
            raise CtrlbenchError(f"{kind} gap '{text}' must end in 'x' (a factor, e.g. {kind}2x); expected {_EXAMPLES}")
        number = number[:-1]
    if re.fullmatch(_NUMBER, number) is None:
        raise CtrlbenchError(f"cannot read the number '{number}' in dynamics gap '{text}'; expected {_EXAMPLES}")
    return DynamicsGap(kind, float(number))  # type: ignore[arg-type]  # kind is one of KINDS


class JointNoise(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Executes a + N(0, sigma^2) (clipped to the action bounds) for the caller's clean action a.

    The noise comes from the wrapper's own generator, re-seeded by ``reset(seed=...)``, so a seeded rollout is
    reproducible. The executed action is in ``info["executed_action"]`` and ``last_executed_action``.
    """

    def __init__(self, env: gym.Env, sigma: float, seed: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, sigma=sigma, seed=seed)
        gym.Wrapper.__init__(self, env)
        _check("jointnoise", sigma)
        if not isinstance(env.action_space, gym.spaces.Box):
            raise CtrlbenchError(f"joint noise needs a continuous (Box) action space, got {env.action_space}")
        self.sigma = float(sigma)
        self._rng = self._make_rng(seed)
        self.last_executed_action: np.ndarray | None = None

    @staticmethod
    def _make_rng(seed: int | None) -> np.random.Generator:
        return np.random.default_rng(None if seed is None else [_NOISE_STREAM, seed])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self._rng = self._make_rng(seed)
        self.last_executed_action = None
        return self.env.reset(seed=seed, options=options)

    def noisy(self, action: np.ndarray) -> np.ndarray:
        """The action to execute for the clean one; a new array, the caller's is left as it is."""
        space = self.env.action_space
        noisy = np.asarray(action, dtype=np.float64) + self._rng.normal(0.0, self.sigma, size=space.shape)
        # Clipped to the bounds: MuJoCo clamps ctrl to ctrlrange anyway, and clipping here makes the env's control
        # cost (computed from the action it is given) charge what is executed rather than the unbounded noise.
        # H2O's gym-v2 envs got the unclipped sum. Cast to the space's dtype so sigma=0 steps bit-identically.
        return np.clip(noisy, space.low, space.high).astype(space.dtype)

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        executed = self.noisy(action)
        self.last_executed_action = executed
        obs, reward, terminated, truncated, info = self.env.step(executed)
        return obs, reward, terminated, truncated, {**info, "executed_action": executed}


def _mujoco_model(env: gym.Env, gap: DynamicsGap) -> Any:
    model = getattr(env.unwrapped, "model", None)
    if model is None or not hasattr(model, "geom_friction"):
        raise CtrlbenchError(f"the {gap.label} gap needs a MuJoCo env; {env.unwrapped} has no MuJoCo model")
    return model


def apply_gap(env: gym.Env, gap: DynamicsGap) -> gym.Env:
    """The sim version of env: gravity/friction change env's own MjModel in place (env is returned); joint noise
    returns env wrapped in JointNoise. Changes to the model take effect from the next step; no recompile is needed."""
    if gap.kind == "jointnoise":
        return JointNoise(env, gap.value)
    model = _mujoco_model(env, gap)
    if gap.kind == "gravity":
        model.opt.gravity[:] *= gap.value
    else:
        model.geom_friction[:] *= gap.value
        if model.npair:  # explicit <pair> contacts carry their own friction, which H2O's XML edit also scales
            model.pair_friction[:] *= gap.value
    return env


def make_sim_env(env_id: str, gap: DynamicsGap | str, **env_kwargs: Any) -> gym.Env:
    """gym.make(env_id, **env_kwargs) with the gap applied; the TimeLimit (and other wrappers) of gym.make stay."""
    if isinstance(gap, str):
        gap = parse_gap(gap)
    return apply_gap(gym.make(env_id, **env_kwargs), gap)


def make_real_env(env_id: str, **env_kwargs: Any) -> gym.Env:
    """The real env of an H2O task: gym.make as is (evaluation always runs here)."""
    return gym.make(env_id, **env_kwargs)
