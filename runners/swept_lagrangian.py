"""DSRL's behavior learner: a Lagrangian agent whose cost budget is swept during training, logged as snapshots.

DSRL builds each velocity dataset from one Lagrangian learner whose episode budget is annealed (HalfCheetah, Hopper,
Swimmer: 250 -> 10; reference A3) and logs episodes from its checkpoints, so the data holds, at every cost level, the
gait a constrained learner settles on there: running steadily just under the speed threshold, not only the slowed
torques of a scaled unconstrained policy (v0/v1's `expert-c` sources, whose safe episodes reach returns of ~2,300 on
HalfCheetah where SAC-Lag's reach ~2,800; docs/safe.md).

Here the learner is `sac_lag_epcost` (algorithms/sac_lag.py: its dual compares the last 10 training episodes' cost
with kappa, the on-policy Lagrangian methods' signal), on the task `<robot>-velocity-k<end>-v0`, with kappa moved
(`tasks.safe_datasets.LearnerSchedule`, which the dataset versions also check their learner's manifest against)
linearly from `kappa_start` at update `anneal_start` (default 0) to `kappa_end` at update `anneal_end` (default: the
last update) and held outside that stretch: the script sets the context's `cost_limit`, which that dual reads at
every gradient step. DSRL holds the start budget for the first 27% of its epochs (Hopper: 800 of 3000) and reaches
the end budget at 83% (2500), so its learner is competent before the budget tightens; `anneal_start`/`anneal_end`
give that shape. Every `snapshot_every` env steps from `first_snapshot`
on, the actor (about 290 KB) goes to `<out>/step_<env steps>.pt`, and a row with the budget and the last 10 training
episodes' return and cost to `<out>/training.csv`; `<out>/manifest.json` lists the snapshots with their hashes, the
learner and the schedule. A checkpoint under `work` every `snapshot_every` env steps makes an interrupted run resume
(with fresh episodes: not bit-identical to an uninterrupted run); the checkpoint is named after the output folder,
holds the schedule (a resume under another schedule is a one-line error) and a copy of every snapshot, which a
resume writes back where the output folder lacks it (a fresh work tree).
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import torch

from algorithms.core.checkpoint import load_checkpoint, save_checkpoint
from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import atomic_torch_save, atomic_write_json, atomic_write_text, check_writable_dir
from algorithms.core.seeding import capture_rng_state
from algorithms.sac_lag import SACLagEpCost
from runners.run import RunRequest, build_algorithm, checkpoint_errors, prepare, restore_training_state
from tasks.behavior import file_sha256
from tasks.safe_datasets import LearnerSchedule

ALGO = "sac_lag_epcost"
FIELDS = ("env_steps", "kappa", "train_episode_return", "train_episode_cost", "lambda")


def restore_snapshots(out: Path, rows: list[dict], snapshots: dict[str, dict], ckpt: Path) -> None:
    """Rewrite the snapshots a resumed run logged but `out` lacks (a fresh work tree) from the checkpoint's copies,
    and copy into `snapshots` the files a checkpoint of an older version did not keep."""
    for row in rows:
        path = out / row["file"]
        if path.exists():
            snapshots.setdefault(row["file"], torch.load(path, map_location="cpu", weights_only=True))
            continue
        if row["file"] not in snapshots:
            raise CtrlbenchError(f"{path} is missing and {ckpt} holds no copy of it (written by an older version); "
                                 "restore the file or move the checkpoint away to start afresh")
        atomic_torch_save(path, snapshots[row["file"]])


def train(robot: str, out: Path, work: Path, schedule: LearnerSchedule | None = None, seed: int = 0,
          threads: int = 1, overrides: dict | None = None, log=print) -> dict:
    sched = schedule or LearnerSchedule()  # (it validates itself: a bad schedule is a one-line error)
    budget = sched.budget()
    steps = budget.pop("updates")  # `budget` is now what the checkpoint holds and the manifest records
    task = f"{robot}-velocity-k{sched.kappa_end:g}-v0"
    req = RunRequest(algo=ALGO, task=task, seed=seed, steps=steps, threads=threads, device="cpu",
                     config_cli=dict(overrides or {}))
    p = prepare(req)  # a one-line error for an unknown robot
    check_writable_dir(out, "the learner's snapshots")
    check_writable_dir(work, "the learner's checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    algo, ctx = build_algorithm(req, p)
    assert isinstance(algo, SACLagEpCost)  # its dual reads ctx.cost_limit at every step: what the sweep moves
    ckpt = work / f"swept_lagrangian_{robot}_{out.name}_s{seed}.pt"
    rows: list[dict] = []
    snapshots: dict[str, dict] = {}  # every snapshot, also in the checkpoint: a fresh work tree can resume
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        if state.get("schedule", budget) != budget:
            raise CtrlbenchError(f"{ckpt} was trained under the budget schedule {state['schedule']}, not {budget}; "
                                 "move it away to start afresh")
        with checkpoint_errors(ckpt):
            restore_training_state(algo, ctx, state)
            rows, snapshots = list(state["rows"]), dict(state.get("snapshots", {}))
        restore_snapshots(out, rows, snapshots, ckpt)
        log(f"resuming at update {algo.step} ({ckpt})")
    started = time.time()
    metrics: dict = {}
    while algo.step < steps:
        ctx.cost_limit = sched.kappa_at(algo.step)
        metrics = algo.update()
        if algo.step % sched.snapshot_every:
            continue
        if algo.step >= sched.first_snapshot:
            path = out / f"step_{ctx.env_steps:08d}.pt"
            snapshots[path.name] = {k: v.detach().cpu().clone() for k, v in algo.sac.actor.state_dict().items()}
            atomic_torch_save(path, snapshots[path.name])
            rows.append({"env_steps": ctx.env_steps, "kappa": ctx.cost_limit, "file": path.name,
                         **{k: float(metrics[k]) for k in FIELDS[2:] if k in metrics}})
        save_checkpoint(ckpt, {"algorithm": algo.state_dict(), "rng": capture_rng_state(),
                               "env_steps": ctx.env_steps, "rows": rows, "schedule": budget,
                               "snapshots": snapshots})
        ret, cost, lam = (float(metrics.get(k, float("nan"))) for k in FIELDS[2:])
        log(f"{ctx.env_steps:7d} env steps  kappa {ctx.cost_limit:6.1f}  train episodes: return {ret:7.1f} "
            f"cost {cost:6.1f}  lambda {lam:.2f}  ({time.time() - started:.0f} s)")
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["file", *FIELDS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "training.csv", table.getvalue())
    manifest = {"robot": robot, "learner": ALGO, "task": task, "seed": seed, "updates": steps,
                "budget_schedule": ({"start": sched.kappa_start, "end": sched.kappa_end,
                                     "shape": "linear over the updates"}
                                    if (sched.anneal_start, sched.last_anneal) == (0, steps) else
                                    {**budget, "shape": "held, linear from anneal_start to anneal_end, held"}),
                "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(algo.config).items()},
                "snapshots": [{**r, "sha256": file_sha256(out / r["file"])} for r in rows]}
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
