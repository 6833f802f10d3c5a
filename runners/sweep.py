"""Sweeps: algorithms x tasks x seeds on a local process pool or a Ray cluster.

Every run is an ordinary `execute(RunRequest)` in its own process, so a sweep writes exactly the records that
single runs write. A run whose record exists (same resolved config) is skipped; a run that was killed resumes
from its checkpoint; a run that raises is recorded under `<results>/failed/` with its error and log file, and
the sweep goes on.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from algorithms.core.config import load_yaml_config
from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import read_json
from leaderboard.records import (
    closest_identity,
    failure_path,
    identity,
    read_record,
    record_path,
    recorded_metadata,
)
from runners.run import Prepared, RunRequest, check_writable, checkpoint_path, prepare, write_failure
from runners.run_lock import RunBusy, is_locked


@dataclass
class SweepSpec:
    algos: list[str]
    tasks: list[str]
    seeds: list[int]
    steps: int = 1_000_000
    eval_every: int = 5_000
    eval_every_env_steps: int = 0  # also evaluate each time the env steps pass a multiple of this (0: never)
    eval_episodes: int = 50
    curve_episodes: int = 10
    checkpoint_every: int = 10_000
    device: str = "cpu"
    results: Path = Path("results")
    checkpoints: Path | None = None  # checkpoint and lock folder (None: <results>/checkpoints)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # algo -> {field: value}
    algo_modules: list[str] = field(default_factory=list)
    cuda_graphs: bool = False  # replay whole updates from captured CUDA graphs

    def requests(self) -> list[RunRequest]:
        return [RunRequest(algo=a, task=t, seed=s, steps=self.steps, eval_every=self.eval_every,
                           eval_every_env_steps=self.eval_every_env_steps,
                           eval_episodes=self.eval_episodes, curve_episodes=self.curve_episodes, device=self.device,
                           results=self.results, checkpoint_every=self.checkpoint_every, checkpoints=self.checkpoints,
                           progress=False, cuda_graphs=self.cuda_graphs,
                           config_cli=dict(self.overrides.get(a, {})))
                for a in self.algos for t in self.tasks for s in self.seeds]


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0..4]; '0,3,7' -> [0, 3, 7]; ranges and lists mix ('0-2,9')."""
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                seeds += list(range(int(lo), int(hi) + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise CtrlbenchError(f"--seeds {text!r}: use a range like 0-4 or a list like 0,1,2") from None
    if not seeds:
        raise CtrlbenchError("no seeds given")
    return seeds


def load_sweep_file(path: Path) -> dict[str, Any]:
    """YAML: algos, tasks, seeds (list or '0-4'), steps, eval_every, ..., overrides: {algo: {field: value}}."""
    data = load_yaml_config(path, "sweep file")
    known = {f.name for f in dataclasses.fields(SweepSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CtrlbenchError(f"sweep file {path}: unknown keys {unknown}; known: {sorted(known)}")
    for key in ("algos", "tasks"):
        if isinstance(data.get(key), str):
            data[key] = [x.strip() for x in data[key].split(",") if x.strip()]
    if "seeds" in data and not isinstance(data["seeds"], list):
        data["seeds"] = parse_seeds(data["seeds"])
    for key in ("results", "checkpoints"):
        if key in data:
            data[key] = Path(data[key])
    return data


def default_workers(device: str) -> int:
    """One run per core on CPU; several runs share a GPU (small MLPs leave it mostly idle)."""
    cores = os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(1, min(cores, 4))
    return max(1, cores)


def _run_one(req: RunRequest, threads: int, algo_modules: list[str], pool_worker: bool = False) -> dict[str, Any]:
    """Worker body: one run with its output in its own log file; never raises."""
    import torch

    from algorithms.core.registry import load_algo_module
    from runners.run import execute

    if pool_worker:  # Ctrl-C reaches the whole process group: the sweep decides, and stops its workers itself
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    prepared: Prepared | None = None
    try:
        for module in algo_modules:
            load_algo_module(module)
        prepared = prepare(req)
        name = prepared.run_id
    except Exception:  # a bad config still gets a log and a failure record
        name = f"{req.algo}__{req.task}__s{req.seed}"
    log_path = req.results / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with log_path.open("a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            record = execute(req, log=lambda m: print(m, flush=True), log_file=log_path)
            failure_path(req.results, name).unlink(missing_ok=True)  # an earlier attempt's failure is history now
            return {"status": "ok", "run_id": record["run_id"], "score": record["final"]["score_mean"],
                    "seconds": time.time() - started, "log": str(log_path)}
        except RunBusy as e:  # another process trains it: not a failure, and its checkpoint is left alone
            print(e, flush=True)
            return {"status": "busy", "algorithm": req.algo, "task": req.task, "seed": req.seed, "run_id": name,
                    "seconds": time.time() - started}
        except BaseException as e:  # isolate every failure, including NaN checks and bad configs
            traceback.print_exc(file=log)
            failure = getattr(e, "failure_record", None)  # written by execute() when training itself failed
            if failure is None:
                failure, _ = write_failure(req, e, prepared, log_file=log_path, seconds=time.time() - started)
            return {**failure, "log": str(log_path), "seconds": time.time() - started}


class Progress:
    """done / running / failed / remaining and an ETA, printed on one line per change."""

    def __init__(self, total: int, workers: int, out=sys.stdout) -> None:
        self.total, self.workers, self.out = total, workers, out
        self.done = self.failed = self.running = 0
        self.durations: list[float] = []

    def line(self) -> str:
        remaining = self.total - self.done - self.failed
        eta = ""
        if self.durations:
            mean = sum(self.durations) / len(self.durations)
            eta = f", ETA {mean * max(0, remaining) / self.workers / 60:.1f} min"
        return (f"sweep: {self.done} done, {self.running} running, {self.failed} failed, "
                f"{remaining - self.running} queued{eta}")

    def show(self) -> None:
        print(self.line(), file=self.out, flush=True)

    def finished(self, result: dict[str, Any], still_running: int) -> None:
        if result["status"] == "ok":
            self.done += 1
            self.durations.append(result["seconds"])
        elif result["status"] == "busy":
            self.total -= 1  # another process owns it
        else:
            self.failed += 1
        self.running = still_running
        self.show()


def plan(spec: SweepSpec) -> tuple[list[RunRequest], list[RunRequest]]:
    """(to run, already recorded). Resolves every config first, so a bad sweep fails before anything starts."""
    todo, skipped = [], []
    for req, p in resolved(spec):
        record = record_path(req.results, p.run_id)
        if record.exists():
            try:  # a corrupt record would count as done, and training over it would overwrite it: neither silently
                read_record(record)
            except CtrlbenchError as e:
                raise CtrlbenchError(f"{e}; the sweep did not start") from None
        (skipped if record.exists() else todo).append(req)
    return todo, skipped


def resolved(spec: SweepSpec) -> list[tuple[RunRequest, Prepared]]:
    """Every run of the sweep, prepared (run id included); resolving each config first makes a bad sweep fail at
    once."""
    from algorithms.core.registry import load_algo_module

    for module in spec.algo_modules:
        load_algo_module(module)
    return [(req, prepare(req)) for req in spec.requests()]


@dataclass
class RunState:
    """Where one planned run stands: `recorded` (final score known), `running` (in some live process, with its
    checkpoint's `step`), `failed` (its last attempt raised `error`; resumes from `step` if checkpointed),
    `partial` (a checkpoint at `step`, nobody training it) or `pending`."""

    req: RunRequest
    run_id: str
    state: str
    step: int = 0
    score: float | None = None
    error: str | None = None
    differs: str | None = None  # for a pending run: how it differs from a recorded run of the same seed
    rate: float | None = None  # updates per training second between the checkpoint and the one before it


def run_states(spec: SweepSpec) -> list[RunState]:
    """The state of every run of the sweep, from its record, checkpoint, lock and failure files alone (nothing is
    trained)."""
    from algorithms.core.checkpoint import load_checkpoint

    states = []
    for req, p in resolved(spec):
        rid = p.run_id
        record, ckpt = record_path(req.results, rid), checkpoint_path(req.checkpoint_dir, rid)
        if record.exists():
            try:
                score = read_record(record)["final"]["score_mean"]
            except (CtrlbenchError, KeyError) as e:  # the run is not trained again over it: say so
                states.append(RunState(req, rid, "failed", error=f"{e}" if isinstance(e, CtrlbenchError)
                                       else f"result record {record} holds no score; remove it"))
                continue
            states.append(RunState(req, rid, "recorded", req.steps, score))
            continue
        try:
            saved = load_checkpoint(ckpt) if ckpt.exists() else {}
        except CtrlbenchError as e:  # a resume would stop on it: one line for this run, not for the whole status
            states.append(RunState(req, rid, "failed", error=str(e)))
            continue
        step = int(saved["algorithm"]["step"]) if saved else 0
        rate = checkpoint_rate(saved)
        if is_locked(req.checkpoint_dir, rid):
            states.append(RunState(req, rid, "running", step, rate=rate))
        elif (failure := failure_path(req.results, rid)).exists():
            data = read_json(failure, "failure record")
            error = data.get("error") if isinstance(data, dict) else None
            states.append(RunState(req, rid, "failed", step, error=error or f"failure record {failure} names no error"))
        else:
            states.append(RunState(req, rid, "partial" if saved else "pending", step, rate=rate,
                                   differs=None if saved else _recorded_otherwise(req, p)))
    return states


def checkpoint_rate(saved: dict[str, Any]) -> float | None:
    """Updates per training second over the last checkpoint interval; a checkpoint written before that was saved
    gives the rate over the whole run."""
    if not saved:
        return None
    recent = saved.get("recent") or {"updates": saved["algorithm"]["step"], "train_seconds": saved.get("train_seconds")}
    updates, seconds = recent["updates"], recent["train_seconds"] or 0.0
    return updates / seconds if updates and seconds > 0 else None


def _recorded_otherwise(req: RunRequest, p: Prepared) -> str | None:
    """A pending run that was recorded with another config (a changed default, a rebuilt dataset): which config,
    and the fields that set it apart. Without this a whole sweep reads `pending` with no hint why."""
    others = []
    for path in sorted(req.results.glob(f"runs/{req.algo}__{p.task.id}__s{req.seed}__*.json")):
        with contextlib.suppress(CtrlbenchError):  # a corrupt one tells nothing; `ctrlbench leaderboard` names it
            others.append(read_record(path))
    closest = closest_identity([(r["config_hash"], identity(r)) for r in others],
                               {**p.identity, "dataset_metadata": recorded_metadata(p.metadata)})
    return f"recorded with config {closest[0]}, which differs in {closest[1]}" if closest else None


def print_states(states: list[RunState], out=sys.stdout) -> None:
    """One line per run, then the totals and the updates still to train."""
    for s in states:
        if s.state == "recorded":
            detail = f"score {s.score:.1f}"
        elif s.state == "failed":
            detail = f"{s.error} (resumes from update {s.step:,})" if s.step else s.error
        elif s.state in ("partial", "running"):
            detail = f"checkpoint at {s.step:,} of {s.req.steps:,} updates"
            if s.rate:  # training time only: evaluations come on top
                left = (s.req.steps - s.step) / s.rate
                eta = f"{left / 3600:.1f} h" if left >= 3600 else f"{left / 60:.0f} min"
                detail += f" ({s.rate:.3g} updates/s, about {eta} of training left)"
        else:
            detail = f"not started; {s.differs}" if s.differs else "not started"
        print(f"{s.state:9s} {s.run_id}  {detail}", file=out)
    counts = {k: sum(s.state == k for s in states) for k in ("recorded", "running", "failed", "partial", "pending")}
    left = sum(s.req.steps - s.step for s in states if s.state != "recorded")
    failed = f"{counts['failed']} failed, " if counts["failed"] else ""
    print(f"sweep status: {counts['recorded']} recorded, {counts['running']} running, {failed}{counts['partial']} "
          f"partial, {counts['pending']} pending; {left:,} updates left to train", file=out)


def run_sweep(spec: SweepSpec, workers: int | None = None, backend: str = "local", address: str | None = None,
              gpus_per_run: float | None = None, threads: int | None = None, out=sys.stdout
              ) -> list[dict[str, Any]]:
    todo, skipped = plan(spec)
    workers = workers or default_workers(spec.device)
    print(f"sweep: {len(spec.requests())} runs, {len(skipped)} already recorded, {len(todo)} to run "
          f"on {workers} {backend} worker(s)", file=out, flush=True)
    if not todo:
        return []
    check_writable(todo[0])  # one results and checkpoint folder per sweep: checked before any worker starts
    # the cores split evenly between the workers unless told (a machine busy with other jobs wants 1)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    if backend == "ray":
        return _run_ray(todo, spec, workers, threads, address, gpus_per_run, out)
    if backend != "local":
        raise CtrlbenchError(f"unknown --backend {backend!r}; use local or ray")
    progress = Progress(len(todo), workers, out)
    results: list[dict[str, Any]] = []
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter per worker: no forked torch state
    with _sigterm_as_exit(), cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                                    max_tasks_per_child=1) as pool:
        try:
            pending = {pool.submit(_run_one, req, threads, spec.algo_modules, True) for req in todo}
            progress.running = min(workers, len(todo))
            progress.show()
            while pending:
                # a timed wait: the kernel may hand Ctrl-C or SIGTERM to one of the pool's threads, and Python runs
                # the handler only once the main thread wakes; an untimed wait could sleep through it for good
                done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    results.append(fut.result())
                    progress.finished(results[-1], min(workers, len(todo) - len(results)))
        except BaseException:  # Ctrl-C, SIGTERM or a crash of the sweep itself: no worker outlives it
            _stop_workers(pool)
            raise
    return results


@contextlib.contextmanager
def _sigterm_as_exit():
    """SIGTERM (kill, a scheduler's stop) unwinds the sweep like Ctrl-C, so that it stops its workers on the way out;
    by default it would end this process alone and leave them training, unseen, to the end of their runs."""
    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel the queued runs and end the running ones; each resumes from its last checkpoint next time."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # the executor has no public handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=20)
    for proc in procs:  # the pool's exit joins its workers with no timeout: one that outlives SIGTERM would hang it
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)


def _run_ray(todo: list[RunRequest], spec: SweepSpec, workers: int, threads: int, address: str | None,
             gpus_per_run: float | None, out) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise CtrlbenchError("--backend ray needs Ray: pip install 'ctrlbench[ray]'") from None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": workers}
        ray.init(log_to_driver=False, include_dashboard=False, **kwargs)
    gpus = gpus_per_run if gpus_per_run is not None else (0.25 if spec.device.startswith("cuda") else 0)
    remote = ray.remote(num_cpus=threads, num_gpus=gpus)(_run_one)
    progress = Progress(len(todo), workers, out)
    pending = {remote.remote(req, threads, spec.algo_modules): req for req in todo}
    results = []
    progress.running = min(workers, len(todo))
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            pending.pop(ref)
            results.append(ray.get(ref))
            progress.finished(results[-1], min(workers, len(pending)))
    return results


def summarize(results: list[dict[str, Any]], out=sys.stdout) -> int:
    """Print the end-of-sweep summary. Exit code 1 when any run failed, else 3 when runs were left to another process
    training them (the sweep is not complete yet: a `sweep && leaderboard` script must not go on), else 0."""
    ok = [r for r in results if r["status"] == "ok"]
    busy = [r for r in results if r["status"] == "busy"]
    failed = [r for r in results if r["status"] not in ("ok", "busy")]
    print(f"sweep finished: {len(ok)} ok, {len(failed)} failed", file=out)
    if busy:
        print(f"  {len(busy)} run(s) left to the other process training them: "
              + ", ".join(r["run_id"] for r in busy)
              + " (not trained here, not recorded yet: `--status` shows them running; run this sweep again once "
                "that process ends to check they were recorded)", file=out)
    for r in failed:
        print(f"  FAILED {r['algorithm']} {r['task']} seed {r['seed']}: {r['error']} (log: {r['log']})", file=out)
    return 1 if failed else 3 if busy else 0
