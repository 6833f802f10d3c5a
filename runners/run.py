"""One run: algorithm x task x seed. The runner owns the loop; the algorithm owns `update()`.

Protocol (DESIGN.md): evaluate every `eval_every` updates on `curve_episodes` seeded episodes;
the run's score is the final evaluation on `eval_episodes` episodes after the last update.
A checkpoint is written atomically every `checkpoint_every` updates; a restarted run resumes
from it and ends with the same record as an uninterrupted one on CPU. Only one process trains a run at a
time (runners/run_lock.py); a second one stops at once with a one-line error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from algorithms.core.checkpoint import FIX as CHECKPOINT_FIX
from algorithms.core.checkpoint import load_checkpoint, save_checkpoint
from algorithms.core.config import build_config, config_to_dict, stable_hash, task_overrides
from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.errors import CtrlbenchError
from algorithms.core.graphs import updater
from algorithms.core.io import StorageError, atomic_write_json, check_writable_dir, os_error_message
from algorithms.core.registry import get_algorithm, overrides_file
from algorithms.core.seeding import capture_rng_state, restore_rng_state, seed_everything
from leaderboard.provenance import device_name, git_commit, package_versions
from leaderboard.records import SCHEMA_VERSION, failure_path, read_record, record_path, recorded_metadata, run_id
from runners.metrics_log import MetricsLog
from runners.run_lock import run_lock
from tasks.datasets import dataset_metadata, load_transitions
from tasks.protocol import CURVE_STREAM, FINAL_STREAM, WeightedPolicy, episode_seeds, protocol_for, reference_scores
from tasks.registry import get_task
from tasks.spec import TaskSpec


@dataclass
class RunRequest:
    algo: str
    task: str
    seed: int = 0
    steps: int = 1_000_000  # gradient updates
    eval_every: int = 5_000
    eval_every_env_steps: int = 0  # also evaluate after the update that passes each multiple of this (0: never)
    eval_episodes: int = 50  # final evaluation
    curve_episodes: int = 10  # each evaluation during training
    device: str = "auto"
    results: Path = Path("results")
    checkpoint_every: int = 10_000
    checkpoints: Path | None = None  # checkpoint and lock folder (None: <results>/checkpoints), e.g. scratch space
    check_every: int = 100  # losses are synced and checked for NaN/inf this often (one device sync each)
    log_every: int = 1_000  # a row of training metrics goes to the run's CSV this often
    overwrite: bool = False
    progress: bool | None = None  # None: a bar only on a terminal
    threads: int | None = None  # torch CPU threads (None: torch's default, all cores)
    cuda_graphs: bool = False  # replay captured CUDA graphs of whole updates (algorithms/core/graphs.py)
    config_file: dict[str, Any] = field(default_factory=dict)  # values from --config
    config_cli: dict[str, Any] = field(default_factory=dict)  # values from --field flags

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoints) if self.checkpoints is not None else self.results / "checkpoints"

    def validate(self) -> None:
        for name in ("steps", "eval_every", "eval_episodes", "curve_episodes", "checkpoint_every", "check_every",
                     "log_every"):
            value = getattr(self, name)
            minimum = 0 if name == "steps" else 1
            if not isinstance(value, int) or value < minimum:
                raise CtrlbenchError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value}")
        if not isinstance(self.eval_every_env_steps, int) or self.eval_every_env_steps < 0:
            raise CtrlbenchError(f"--eval-every-env-steps must be an integer >= 0, got {self.eval_every_env_steps}")


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CtrlbenchError(f"--device {requested} requested but no CUDA GPU is available to torch "
                                 f"(torch {torch.__version__}); use --device cpu or auto")
        return torch.device(requested)
    if requested == "cpu":
        return torch.device("cpu")
    raise CtrlbenchError(f"unknown --device {requested!r}; use auto, cpu, cuda or cuda:N")


@dataclass
class Prepared:
    """Everything resolved before training: enough to name the run and build the algorithm."""

    request: RunRequest
    algo_cls: type[Algorithm]
    task: TaskSpec
    config: Any
    metadata: dict[str, Any]  # the dataset's ({} without one)
    ref_min: float
    ref_max: float
    config_hash: str
    run_id: str
    identity: dict[str, Any]


def resolve(req: RunRequest) -> tuple[type[Algorithm], TaskSpec, Any]:
    """The algorithm, the task and the full config of a request, checked; reads no dataset."""
    req.validate()
    algo_cls = get_algorithm(req.algo)
    task = get_task(req.task)
    if task.kind not in algo_cls.kinds:
        raise CtrlbenchError(f"algorithm {req.algo} supports task kinds {list(algo_cls.kinds)}, "
                             f"but {task.id} is {task.kind}")
    config = build_config(algo_cls.Config, task_overrides(overrides_file(algo_cls), task.id),
                          req.config_file, req.config_cli)
    return algo_cls, task, config


def prepare(req: RunRequest) -> Prepared:
    algo_cls, task, config = resolve(req)
    metadata, metadata_hash = dataset_metadata(task.dataset_id, task.build_command) if task.dataset_id else ({}, None)
    ref_min, ref_max = reference_scores(task, metadata)
    identity = {
        "schema_version": SCHEMA_VERSION,
        "algorithm": req.algo,
        "task": task.id,
        "config": config_to_dict(config),
        "protocol": {"steps": req.steps, "eval_every": req.eval_every, "eval_episodes": req.eval_episodes,
                     "curve_episodes": req.curve_episodes,
                     # only when set, so that the ids of runs without it stay what they were
                     **({"eval_every_env_steps": req.eval_every_env_steps} if req.eval_every_env_steps else {})},
        "dataset_id": task.dataset_id,
        "dataset_metadata_hash": metadata_hash,
    }
    config_hash = stable_hash(identity)
    return Prepared(req, algo_cls, task, config, metadata, ref_min, ref_max, config_hash,
                    run_id(req.algo, task.id, req.seed, config_hash), identity)


def checkpoint_path(checkpoint_dir: Path, rid: str) -> Path:
    """A run's resumable checkpoint. Run ids hash the whole config, so one folder can serve many results folders."""
    return checkpoint_dir / f"{rid}.pt"


def make_training_envs(task: TaskSpec, ctx: AlgoContext) -> Callable[[int], gym.vector.VectorEnv]:
    """ctx.make_envs: n copies of the task's training environment (sim-to-real: the simulator) in one vector env
    whose steps are counted. SAME_STEP autoreset: a done step returns the reset observation and keeps the last
    one in info["final_obs"], so an algorithm can store the true (s, a, s') of the step that ended an episode."""
    def make(n: int) -> gym.vector.VectorEnv:
        fns, mode = [task.make_train_env] * n, gym.vector.AutoresetMode.SAME_STEP
        envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode) if task.reward_dim == 1 \
            else _VectorRewardSyncVectorEnv(fns, task.reward_dim, autoreset_mode=mode)
        return _CountingVectorEnv(envs, ctx)

    return make


class _VectorRewardSyncVectorEnv(gym.vector.SyncVectorEnv):
    """A SyncVectorEnv whose rewards are (n, reward_dim) vectors (multi-objective tasks). gymnasium's keeps (n,)
    scalars; mo-gymnasium's MOSyncVectorEnv (1.3.2) has vector rewards but only the NEXT_STEP autoreset. Only the
    reward buffer differs: the autoreset modes, SAME_STEP included, are gymnasium's own."""

    def __init__(self, env_fns, reward_dim: int, **kwargs) -> None:
        super().__init__(env_fns, **kwargs)
        self._rewards = np.zeros((self.num_envs, reward_dim), dtype=np.float64)


class _CountingVectorEnv(gym.vector.VectorWrapper):
    """Counts environment steps taken by online/hybrid algorithms into the context."""

    def __init__(self, env: gym.vector.VectorEnv, ctx: AlgoContext) -> None:
        super().__init__(env)
        self._ctx = ctx

    def step(self, actions):
        self._ctx.env_steps += self.num_envs
        return super().step(actions)


def _checked_policy(algo: Algorithm, run: str) -> WeightedPolicy:
    def policy(obs: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
        actions = algo.act(obs) if weight is None else algo.act(obs, weight)
        if not np.all(np.isfinite(actions)):
            raise CtrlbenchError(f"{run}: the policy produced non-finite actions at update {algo.step}; "
                                 "the run was stopped (try a lower learning rate)")
        return actions

    return policy


def _check_finite(metrics: dict[str, Any], step: int, run: str, last_check: int = 0) -> dict[str, float]:
    """The metrics as floats; a NaN or inf stops the run, naming the metric, its value and the update."""
    values = {k: float(v) for k, v in metrics.items()}
    for k, v in values.items():
        if not math.isfinite(v):
            since = f"finite at update {last_check}, the check before" if last_check else "the first check"
            raise CtrlbenchError(f"{run}: non-finite {k} = {v} at update {step} ({since}); the run was stopped "
                                 "(try a lower learning rate, or check the dataset for NaN/inf values)")
    return values


def write_failure(req: RunRequest, error: BaseException, p: Prepared | None = None, step: int | None = None,
                  log_file: Path | None = None, seconds: float | None = None) -> tuple[dict[str, Any], Path | None]:
    """Record a failed run under `<results>/failed/<run>.json`: its identity (config, protocol, dataset: the cell
    `ctrlbench check` judges it in), the update it reached and its error; status "failed", never a score. Returns
    the record and its path, or None for the path when it could not be written (a full disk): the error that made
    the run fail is the one to report then, not this one."""
    name = p.run_id if p is not None else f"{req.algo}__{req.task}__s{req.seed}"
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    record = {**(p.identity if p is not None else {}),
              **({"run_id": p.run_id, "config_hash": p.config_hash} if p is not None else {}),
              "status": "failed", "algorithm": req.algo, "task": p.task.id if p is not None else req.task,
              "seed": req.seed, "step": step, "error": f"{type(error).__name__}: {message}",
              "log": str(log_file) if log_file else None, "seconds": seconds,
              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path = failure_path(req.results, name)
    try:
        atomic_write_json(path, record)
    except CtrlbenchError:
        return record, None
    return record, path


def _existing(out: Path) -> dict[str, Any]:
    """A record already written for this run; a corrupt one is an error, never silently trained over."""
    try:
        record = read_record(out)
    except CtrlbenchError as e:
        raise CtrlbenchError(f"{e} (or pass --overwrite to train the run again)") from None
    if record["status"] != "ok":
        raise CtrlbenchError(f"result record {out} is of a run that did not finish (status {record['status']!r}); "
                             "remove it, or pass --overwrite to train the run again")
    return record


def check_writable(req: RunRequest) -> None:
    """The folders a run writes to can be written (or created), checked before any training rather than at the
    first write; nothing is created here."""
    check_writable_dir(req.results, "results folder")
    for sub in ("runs", "logs", "failed"):
        check_writable_dir(req.results / sub, "results folder")
    check_writable_dir(req.checkpoint_dir, "checkpoint folder" if req.checkpoints is not None else "results folder")


def _milestone_scores(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """{"milestones": {name: its curve point's step, env steps, return and score}} when the algorithm named any
    (e.g. DPPO's end of pretraining: the score before fine-tuning); {} otherwise."""
    keys = ("step", "env_steps", "return_mean", "score_mean")
    marked = {p["milestone"]: {k: p[k] for k in keys} for p in curve if "milestone" in p}
    return {"milestones": marked} if marked else {}


def execute(req: RunRequest, log: Callable[[str], None] = print, log_file: Path | None = None) -> dict[str, Any]:
    """Run (or resume) one run and write its record. Returns the record.

    A run that fails while it trains or evaluates (a NaN loss, an error in the algorithm) leaves a failure record
    under `<results>/failed/` (`write_failure`; `log_file` is named in it) and raises, the exception carrying
    that record as `failure_record`. Bad input (config, dataset, checkpoint) and file-system faults (a folder that
    cannot be written, a full disk) leave no failure record: they are not the run's doing, and the run resumes
    once they are fixed."""
    p = prepare(req)
    out = record_path(req.results, p.run_id)
    if out.exists() and not req.overwrite:
        record = _existing(out)
        log(f"{p.run_id}: a record with this exact config exists at {out}; skipped (--overwrite to redo it)")
        return record
    check_writable(req)
    with run_lock(req.checkpoint_dir, p.run_id):
        if out.exists() and not req.overwrite:  # another process finished it while we prepared
            log(f"{p.run_id}: recorded meanwhile by another process at {out}; skipped")
            return _existing(out)
        attempt = _Attempt()
        try:
            record = _train_and_record(req, p, out, log, attempt)
        except OSError as e:  # a file written along the way (the metrics log): the disk's fault, one line
            raise StorageError(f"{p.run_id}: {os_error_message(e)}") from None
        except Exception as e:
            if attempt.algo is None or isinstance(e, StorageError):  # bad input or the disk: not the run's failure
                raise
            replacement = _record_failure(req, p, e, attempt, log_file)
            if replacement is not None:
                raise replacement from None
            raise
    failure_path(req.results, p.run_id).unlink(missing_ok=True)  # an earlier attempt's failure is history now
    return record


def _resume(algo: Algorithm, ctx: AlgoContext, ckpt: Path, rid: str) -> tuple[list[dict[str, Any]], float, float]:
    """Load a run's checkpoint into `algo` and the RNGs: (curve, train seconds, wall seconds) so far. A checkpoint
    that cannot be read, or holds another run's state, is a one-line error that leaves it as it is."""
    state = load_checkpoint(ckpt)
    if state.get("run_id", rid) != rid:
        raise CtrlbenchError(f"checkpoint {ckpt} holds run {state['run_id']}, not {rid}; {CHECKPOINT_FIX}")
    with checkpoint_errors(ckpt):
        restore_training_state(algo, ctx, state)
        return list(state["curve"]), float(state["train_seconds"]), float(state["wall_seconds"])


def restore_training_state(algo: Algorithm, ctx: AlgoContext, state: dict[str, Any]) -> None:
    """The part of a checkpoint every trainer resumes: the algorithm, the RNGs and the env-step count."""
    algo.load_state_dict(state["algorithm"])
    restore_rng_state(state["rng"])
    ctx.env_steps = int(state["env_steps"])


@contextmanager
def checkpoint_errors(ckpt: Path) -> Iterator[None]:
    """A checkpoint whose contents do not fit the trainer (another algorithm's, a truncated dict) becomes a one-line
    error that leaves the file as it is."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        detail = f"no {e}" if isinstance(e, KeyError) else (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CtrlbenchError(f"checkpoint {ckpt} does not hold this run's state ({type(e).__name__}: {detail}); "
                             f"{CHECKPOINT_FIX}") from None


@dataclass
class _Attempt:
    """How far an attempt at a run got, for its failure record: the algorithm while it trains and is evaluated."""

    algo: Algorithm | None = None
    started: float = field(default_factory=time.time)


def _record_failure(req: RunRequest, p: Prepared, e: Exception, attempt: _Attempt,
                    log_file: Path | None) -> CtrlbenchError | None:
    """Write the failure record of an attempt that raised `e` while training, attach it to `e` as `failure_record`;
    for a CtrlbenchError, return the error to raise instead: the same line, naming the record."""
    step = attempt.algo.step if attempt.algo is not None else None
    record, path = write_failure(req, e, p, step, log_file, round(time.time() - attempt.started, 3))
    e.failure_record = record  # type: ignore[attr-defined]
    if isinstance(e, CtrlbenchError) and path is not None:
        err = CtrlbenchError(f"{e}; recorded as failed in {path}")
        err.failure_record = record  # type: ignore[attr-defined]
        return err
    return None


def build_algorithm(req: RunRequest, p: Prepared) -> tuple[Algorithm, AlgoContext]:
    """The run's algorithm, freshly initialized from its seed, and its context (dataset, spaces, training envs):
    what a run trains, and what a probe loads a checkpoint's `state["algorithm"]` into."""
    device = resolve_device(req.device)
    if req.threads is not None:
        torch.set_num_threads(req.threads)
    dataset = load_transitions(p.task.dataset_id, p.task.build_command) if p.task.dataset_id else None
    if p.task.kind == "offline-safe" and dataset.transitions.costs is None:
        raise CtrlbenchError(f"{p.task.id} needs per-step costs and dataset {p.task.dataset_id} has none; rebuild "
                             f"it with `{p.task.build_command} --overwrite`")
    probe = p.task.make_env()
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    seed_everything(req.seed)
    ctx = AlgoContext(observation_space=obs_space, action_space=act_space, device=device, seed=req.seed,
                      total_updates=req.steps, dataset=dataset.transitions if dataset else None,
                      reward_dim=p.task.reward_dim, cost_limit=p.task.cost_limit,
                      preference_weights=np.asarray(p.task.preference_weights, dtype=np.float32)
                      if p.task.preference_weights else None, reference_point=tuple(p.task.reference_point))
    ctx.make_envs = make_training_envs(p.task, ctx)
    return p.algo_cls(p.config, ctx), ctx


def _train_and_record(req: RunRequest, p: Prepared, out: Path, log: Callable[[str], None],
                      attempt: _Attempt) -> dict[str, Any]:
    protocol = protocol_for(p.task, p.ref_min, p.ref_max)
    algo, ctx = build_algorithm(req, p)
    updates = updater(algo, req.cuda_graphs)  # a bad --cuda-graphs fails here, before any work; capture waits

    ckpt = checkpoint_path(req.checkpoint_dir, p.run_id)
    curve: list[dict[str, Any]] = []
    train_seconds = wall_before = 0.0
    if ckpt.exists():
        curve, train_seconds, wall_before = _resume(algo, ctx, ckpt, p.run_id)
        log(f"{p.run_id}: resuming from update {algo.step} ({ckpt})")
    # Where the last checkpoint (or this resume) stood: the rate since then is what `sweep --status` reports, since
    # a cumulative rate lags for hours after a change of threads or of what shares the machine.
    mark_step, mark_seconds = algo.step, train_seconds

    metrics_log = MetricsLog(req.results / "logs" / f"{p.run_id}.csv", resume_step=algo.step)
    policy = _checked_policy(algo, p.run_id)
    curve_seeds = episode_seeds(req.seed, CURVE_STREAM, req.curve_episodes)
    started = time.time()
    last_metrics: dict[str, float] = {}
    last_check = algo.step
    bar = tqdm(total=req.steps, initial=algo.step, desc=f"{req.algo} {p.task.id} s{req.seed}",
               disable=(not req.progress) if req.progress is not None else None, dynamic_ncols=True)
    attempt.algo = algo  # training begins: from here on, an error is the run's failure
    milestones = {step: name for name, step in algo.milestones().items() if 0 < step < req.steps}
    every_env = req.eval_every_env_steps
    next_env_eval = (ctx.env_steps // every_env + 1) * every_env if every_env else None
    while algo.step < req.steps:
        # Train until the next event (log / eval / checkpoint / milestone / end) without syncing the device, or,
        # with evaluations by env steps, until an update passes the next multiple (the algorithm decides how many
        # env steps an update takes).
        events = (req.check_every, req.log_every, req.eval_every, req.checkpoint_every)
        stop = min([req.steps] + [(algo.step // e + 1) * e for e in events] + [m for m in milestones if m > algo.step])
        t0 = time.perf_counter()
        until = (lambda mark=next_env_eval: ctx.env_steps >= mark) if every_env else None
        metrics: dict[str, Any] = updates.run(stop - algo.step, until)
        step = algo.step
        last_metrics = _check_finite(metrics, step, p.run_id, last_check)
        last_check = step
        train_seconds += time.perf_counter() - t0
        bar.update(step - bar.n)
        logged = dict(last_metrics) if step % req.log_every == 0 or step == req.steps else None
        env_eval = next_env_eval is not None and ctx.env_steps >= next_env_eval
        if env_eval:
            next_env_eval = (ctx.env_steps // every_env + 1) * every_env
        if (step % req.eval_every == 0 or step in milestones or env_eval) and step < req.steps:
            point = {"step": step, **protocol.summary(protocol.evaluate(policy, curve_seeds)),
                     "env_steps": ctx.env_steps, **last_metrics}
            if step in milestones:
                point["milestone"] = milestones[step]
            curve.append(point)
            bar.set_postfix(score=f"{point['score_mean']:.1f}")
            logged = {**last_metrics, "score": point["score_mean"], "eval_return": point["return_mean"]}
        if logged is not None:
            metrics_log.log(step, logged)
        # An online phase's updates may be whole iterations (DPPO: 20k env steps), too few for a period in updates
        # to reach: its evaluations by env steps are checkpoints too.
        if (step % req.checkpoint_every == 0 or env_eval) and step < req.steps:
            recent = {"updates": step - mark_step, "train_seconds": train_seconds - mark_seconds}
            save_checkpoint(ckpt, {"algorithm": algo.state_dict(), "rng": capture_rng_state(), "curve": curve,
                                   "train_seconds": train_seconds, "recent": recent, "env_steps": ctx.env_steps,
                                   "wall_seconds": wall_before + time.time() - started, "run_id": p.run_id})
            mark_step, mark_seconds = step, train_seconds
    bar.close()
    metrics_log.close()

    final_result = protocol.evaluate(policy, episode_seeds(req.seed, FINAL_STREAM, req.eval_episodes))
    final = {"step": algo.step, **protocol.summary(final_result),
             "returns": protocol.episode_returns(final_result).tolist(), "env_steps": ctx.env_steps}
    points = [*curve, final]
    best = max(points, key=lambda x: x["score_mean"])
    attempt.algo = None
    record = {
        **p.identity,
        "run_id": p.run_id,
        "status": "ok",
        "seed": req.seed,
        "config_hash": p.config_hash,
        "task_kind": p.task.kind,
        "task_family": p.task.family,
        "ref_min_score": p.ref_min,
        "ref_max_score": p.ref_max,
        "dataset_metadata": recorded_metadata(p.metadata),
        "packages": package_versions(),
        "git_commit": git_commit(),
        "device": device_name(ctx.device),
        "torch_threads": torch.get_num_threads(),
        "cuda_graphs": req.cuda_graphs,  # with the device, what the timings below were measured on
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(wall_before + time.time() - started, 3),
        "train_time_s": round(train_seconds, 3),
        "updates_per_s": round(req.steps / train_seconds, 2) if train_seconds > 0 else None,
        "env_steps": ctx.env_steps,  # environment steps taken while training (0 for offline methods)
        # the task kind's own block (tasks/protocol.py), with the curve points of the algorithm's milestones
        "metrics": {**protocol.metrics(final_result), **_milestone_scores(curve)},
        "curve": curve,
        "final": final,
        "best": {"step": best["step"], "return_mean": best["return_mean"], "score_mean": best["score_mean"]},
        "last_metrics": last_metrics,
    }
    atomic_write_json(out, record)
    ckpt.unlink(missing_ok=True)
    return record

