"""Behavior policies for the dataset factory: SAC trained with stable-baselines3, kept as small snapshots.

`train(...)` runs SB3 SAC (its defaults: 2x256 MLPs, lr 3e-4, batch 256, auto entropy, one gradient step
per env step; `learning_starts` 10k as the Minari recipe) and, every `snapshot_every` env steps,
  - saves the actor alone (about 280 KB) under `<work>/<env>/snapshots/`,
  - evaluates it deterministically on seeded episodes and appends to `<policies>/<env>/training.csv`.
The full SB3 state (model + replay buffer) goes to a work directory every `checkpoint_every` steps, so an
interrupted training resumes (SB3 resumption continues the run but is not bit-identical to an uninterrupted one).

`select(...)` then picks the expert (best snapshot on 100 episodes) and the medium snapshot (return closest to
one third of the expert's, within [0.25, 0.45]), copies them and the snapshots up to the medium point (from
which medium-replay is regenerated) into `<policies>/<env>/`, and writes `manifest.json`: that folder is all a
fresh clone needs to rebuild every dataset.
"""

from __future__ import annotations

import csv
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import atomic_torch_save, atomic_write_json
from tasks.locomotion import MEDIUM_FRACTION, MEDIUM_TARGET, env_id
from tasks.protocol import episode_seeds, evaluate

POLICIES_DIR = Path(__file__).resolve().parent / "policies"
LEARNING_STARTS = 10_000
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's clamp
SELECTION_STREAM = 7  # seeds of the episodes that rank snapshots


class SquashedGaussianActor(nn.Module):
    """SB3's SAC actor without SB3: obs -> 256 -> 256 -> (mu, log_std); action = tanh(mu [+ std * eps])."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.latent_pi = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> SquashedGaussianActor:
        actor = cls(state["latent_pi.0.weight"].shape[1], state["mu.weight"].shape[0], state["mu.weight"].shape[1])
        actor.load_state_dict(state)
        return actor.eval()

    @torch.no_grad()
    def act(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Deterministic (tanh of the mean) without `noise`; with standard-normal `noise` (B, act_dim), the
        policy's sample tanh(mean + std * noise)."""
        h = self.latent_pi(torch.as_tensor(np.asarray(obs, dtype=np.float32)))
        mu = self.mu(h)
        if noise is not None:
            std = self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
            mu = mu + std * torch.as_tensor(noise)
        return torch.tanh(mu).numpy()


def load_actor(path: Path) -> SquashedGaussianActor:
    return SquashedGaussianActor.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evaluate_actor(actor: SquashedGaussianActor, env_name: str, n: int, stream: int = SELECTION_STREAM,
                   n_parallel: int = 10) -> np.ndarray:
    """Deterministic returns on `n` seeded episodes (the scoring protocol's evaluator)."""
    result = evaluate(actor.act, lambda: gym.make(env_id(env_name)), episode_seeds(0, stream, n), n_parallel)
    return result.returns


@dataclass
class TrainSettings:
    env: str
    total_steps: int
    seed: int = 0
    snapshot_every: int = 10_000
    checkpoint_every: int = 50_000
    eval_episodes: int = 10
    policies_dir: Path = POLICIES_DIR
    # Resumable SB3 state (model + replay buffer, ~100 MB) lives outside the repo.
    work_dir: Path = Path.home() / ".cache" / "ctrlbench" / "behavior-training"


def train(s: TrainSettings, log=print) -> None:
    """Train (or resume) SAC on `s.env` up to `s.total_steps` env steps, leaving snapshots behind."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    out = s.policies_dir / s.env
    out.mkdir(parents=True, exist_ok=True)
    work = s.work_dir / s.env
    snaps = work / "snapshots"
    snaps.mkdir(parents=True, exist_ok=True)
    model_path, buffer_path = work / "model.zip", work / "replay_buffer.pkl"
    env = gym.make(env_id(s.env))
    if model_path.exists() and buffer_path.exists():
        model = SAC.load(model_path, env=env, device="cpu")
        model.load_replay_buffer(buffer_path)
        log(f"{s.env}: resuming SAC from {model.num_timesteps} env steps ({model_path})")
        _truncate_curve(out / "training.csv", model.num_timesteps)
    else:
        model = SAC("MlpPolicy", env, learning_starts=LEARNING_STARTS, seed=s.seed, device="cpu", verbose=0)
    csv_path = out / "training.csv"
    started = time.time()

    class Snapshots(BaseCallback):
        def _on_step(self) -> bool:
            t = self.num_timesteps
            if t % s.snapshot_every == 0:
                path = snaps / f"step_{t:08d}.pt"
                atomic_torch_save(path, {k: v.detach().clone() for k, v in model.policy.actor.state_dict().items()})
                returns = evaluate_actor(load_actor(path), s.env, s.eval_episodes)
                new = not csv_path.exists()
                with csv_path.open("a", newline="") as f:
                    w = csv.writer(f)
                    if new:
                        w.writerow(["env_steps", "return_mean", "return_std", "wall_s"])
                    w.writerow([t, f"{returns.mean():.2f}", f"{returns.std():.2f}", f"{time.time() - started:.0f}"])
                log(f"{s.env}: {t} env steps, deterministic return {returns.mean():.1f} +- {returns.std():.1f}")
            if t % s.checkpoint_every == 0:
                model.save(work / "model.tmp.zip")
                model.save_replay_buffer(work / "replay_buffer.tmp.pkl")
                (work / "model.tmp.zip").replace(model_path)
                (work / "replay_buffer.tmp.pkl").replace(buffer_path)
            return True

    remaining = s.total_steps - model.num_timesteps
    if remaining > 0:
        model.learn(total_timesteps=remaining, callback=Snapshots(), reset_num_timesteps=False)
    log(f"{s.env}: training done at {model.num_timesteps} env steps")


def _truncate_curve(csv_path: Path, last_step: int) -> None:
    """On resume, drop the evaluations logged after the checkpoint: training redoes those steps."""
    if not csv_path.exists():
        return
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if int(r[0]) <= last_step]
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


def _snapshot_step(path: Path) -> int:
    return int(path.stem.split("_")[1])


def select(env_name: str, policies_dir: Path = POLICIES_DIR, work_dir: Path = TrainSettings.work_dir,
           episodes: int = 100, log=print) -> dict:
    """Pick expert and medium snapshots, copy what datasets need into the policies folder, write manifest.json."""
    out = policies_dir / env_name
    snap_dir = work_dir / env_name / "snapshots"
    snaps = sorted(snap_dir.glob("step_*.pt"), key=_snapshot_step)
    if not snaps:
        raise CtrlbenchError(f"no snapshots under {snap_dir}; run `ctrlbench datasets train-policies "
                             f"--env {env_name}` first")
    curve = {}
    with (out / "training.csv").open() as f:
        for row in csv.DictReader(f):
            curve[int(row["env_steps"])] = float(row["return_mean"])
    # Rank by the training-time evaluation, then confirm the top few on `episodes` seeded episodes.
    top = sorted(snaps, key=lambda p: -curve.get(_snapshot_step(p), -np.inf))[:3]
    scored = {p: float(evaluate_actor(load_actor(p), env_name, episodes).mean()) for p in top}
    expert = max(scored, key=scored.get)
    expert_return = scored[expert]
    target = MEDIUM_TARGET * expert_return
    candidates = [p for p in snaps if _snapshot_step(p) < _snapshot_step(expert)
                  and MEDIUM_FRACTION[0] * expert_return <= curve.get(_snapshot_step(p), -np.inf)
                  <= MEDIUM_FRACTION[1] * expert_return]
    if not candidates:
        raise CtrlbenchError(f"{env_name}: no snapshot returns between {MEDIUM_FRACTION} of the expert's "
                             f"{expert_return:.0f}; train longer or snapshot more often")
    # The training-time curve is a few episodes; confirm on `episodes` and take the closest to a third that
    # stays inside the band (a noisy curve point can fall outside it on more episodes).
    medium = medium_return = None
    for p in sorted(candidates, key=lambda p: abs(curve[_snapshot_step(p)] - target))[:5]:
        ret = float(evaluate_actor(load_actor(p), env_name, episodes).mean())
        if MEDIUM_FRACTION[0] <= ret / expert_return <= MEDIUM_FRACTION[1]:
            medium, medium_return = p, ret
            break
    if medium is None:
        raise CtrlbenchError(f"{env_name}: no snapshot confirmed between {MEDIUM_FRACTION} of the expert's "
                             f"{expert_return:.0f} on {episodes} episodes; train longer or snapshot more often")
    for name, src in (("expert", expert), ("medium", medium)):
        (out / f"{name}.pt").write_bytes(src.read_bytes())
    replay = [p for p in snaps if _snapshot_step(p) <= _snapshot_step(medium)]
    (out / "replay").mkdir(exist_ok=True)
    for p in replay:
        (out / "replay" / p.name).write_bytes(p.read_bytes())
    manifest = {
        "env": env_name,
        "env_id": env_id(env_name),
        "algorithm": "stable-baselines3 SAC (defaults, learning_starts 10000), one env, seed 0",
        "expert": {"file": "expert.pt", "env_steps": _snapshot_step(expert), "return_mean": expert_return,
                   "episodes": episodes, "sha256": file_sha256(out / "expert.pt")},
        "medium": {"file": "medium.pt", "env_steps": _snapshot_step(medium), "return_mean": medium_return,
                   "episodes": episodes, "fraction_of_expert": medium_return / expert_return,
                   "sha256": file_sha256(out / "medium.pt")},
        "replay_snapshots": [{"file": f"replay/{p.name}", "env_steps": _snapshot_step(p),
                              "sha256": file_sha256(p)} for p in replay],
        "learning_starts": LEARNING_STARTS,
        "snapshot_every": _snapshot_step(snaps[1]) - _snapshot_step(snaps[0]) if len(snaps) > 1 else None,
    }
    atomic_write_json(out / "manifest.json", manifest)
    log(f"{env_name}: expert {expert.name} return {expert_return:.1f}; medium {medium.name} return "
        f"{medium_return:.1f} ({medium_return / expert_return:.2f} of expert); {len(replay)} replay snapshots")
    return manifest
