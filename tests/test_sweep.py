"""Sweeps: a 2-worker local sweep, skip on rerun, isolated failures, kill -9 + resume, --status, run locks,
the Ray backend."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from algorithms.core.checkpoint import save_checkpoint
from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import atomic_write_json
from runners.run import checkpoint_path, resolve
from runners.run_lock import is_locked, run_lock
from runners.sweep import (
    SweepSpec,
    checkpoint_rate,
    load_sweep_file,
    parse_seeds,
    print_states,
    run_states,
    run_sweep,
    summarize,
)
from tests.conftest import CLI, REPO, TINY, cli_env, run_cli

SWEEP = ("sweep", "--algos", "bc,td3_bc", "--tasks", "smoke-v0", "--seeds", "0-1", "--steps", "40",
         "--eval-every", "20", "--eval-episodes", "3", "--curve-episodes", "2", "--workers", "2")

NAN_ALGO = '''
from dataclasses import dataclass
import numpy as np, torch
from algorithms.core.contract import Algorithm
from algorithms.core.registry import register

@dataclass
class NanConfig:
    blow_up_at: int = 5  # the update that returns a NaN loss

@register("nan_algo", kinds=("offline",))
class NanAlgo(Algorithm):
    Config = NanConfig
    def update(self):
        self.step += 1
        return {"loss": torch.tensor(float("nan") if self.step >= self.config.blow_up_at else 1.0)}
    def act(self, obs, weight=None):
        return np.zeros((len(obs), self.ctx.act_dim), np.float32)
'''


def wait_until(condition: Callable[[], bool], seconds: float, poll: float = 0.1) -> None:
    """Poll `condition` until it holds or `seconds` pass; the caller asserts what it needs afterwards."""
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(poll)


def test_parse_seeds() -> None:
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    with pytest.raises(CtrlbenchError):
        parse_seeds("a-b")


def test_two_worker_sweep_then_rerun_starts_nothing(minari_root: Path, tmp_path: Path) -> None:
    res = run_cli(*SWEEP, "--results", str(tmp_path), minari=minari_root)
    assert res.returncode == 0, res.stdout + res.stderr
    records = sorted((tmp_path / "runs").glob("*.json"))
    assert len(records) == 4
    assert {json.loads(p.read_text())["seed"] for p in records} == {0, 1}
    assert "4 done, 0 running, 0 failed" in res.stdout
    assert len(list((tmp_path / "logs").glob("*.csv"))) == 4 and len(list((tmp_path / "logs").glob("*.log"))) == 4
    mtimes = [p.stat().st_mtime for p in records]
    again = run_cli(*SWEEP, "--results", str(tmp_path), minari=minari_root)
    assert again.returncode == 0 and "4 already recorded, 0 to run" in again.stdout
    assert [p.stat().st_mtime for p in sorted((tmp_path / "runs").glob("*.json"))] == mtimes


def test_failing_run_is_isolated_and_reported(minari_root: Path, tmp_path: Path) -> None:
    module = tmp_path / "nan_algo.py"
    module.write_text(NAN_ALGO)
    spec = SweepSpec(algos=["nan_algo", "bc"], tasks=["smoke-v0"], seeds=[0], steps=200, eval_every=100,
                     eval_episodes=2, curve_episodes=2, checkpoint_every=100, results=tmp_path / "r",
                     algo_modules=[str(module)], overrides={"nan_algo": {"blow_up_at": 150}})
    spec_log = tmp_path / "out.txt"
    with spec_log.open("w") as out:
        results = run_sweep(spec, workers=2, out=out)
        code = summarize(results, out=out)
    assert code == 1
    failed = [r for r in results if r["status"] == "failed"]
    assert len(failed) == 1 and "non-finite loss" in failed[0]["error"] and "update 200" in failed[0]["error"]
    assert Path(failed[0]["log"]).exists()
    assert len(list((tmp_path / "r" / "runs").glob("*.json"))) == 1  # bc finished
    assert len(list((tmp_path / "r" / "failed").glob("*.json"))) == 1
    assert "FAILED nan_algo smoke-v0 seed 0" in spec_log.read_text()
    states = {s.req.algo: s for s in run_states(spec)}
    assert states["bc"].state == "recorded" and states["nan_algo"].state == "failed"
    assert "non-finite loss" in states["nan_algo"].error and states["nan_algo"].step == 100  # its checkpoint
    status = io.StringIO()
    print_states(list(states.values()), out=status)
    assert "(resumes from update 100)" in status.getvalue() and "1 failed, 0 partial" in status.getvalue()


def test_a_run_that_succeeds_clears_its_earlier_failure(minari_root: Path, tmp_path: Path) -> None:
    spec = SweepSpec(algos=["bc"], tasks=["smoke-v0"], seeds=[0], steps=20, eval_every=20, eval_episodes=2,
                     curve_episodes=2, results=tmp_path)
    (state,) = run_states(spec)
    atomic_write_json(tmp_path / "failed" / f"{state.run_id}.json", {"status": "failed", "error": "OSError: disk"})
    assert [s.state for s in run_states(spec)] == ["failed"]
    (result,) = run_sweep(spec, workers=1, threads=1, out=io.StringIO())
    assert result["status"] == "ok" and not list((tmp_path / "failed").glob("*.json"))
    assert [s.state for s in run_states(spec)] == ["recorded"]


def test_sigkill_mid_run_resumes_to_the_same_final_score(minari_root: Path, tmp_path: Path) -> None:
    args = ["run", "--algo", "td3_bc", "--task", "smoke-v0", "--seed", "2", "--steps", "600", "--eval-every", "100",
            "--eval-episodes", "4", "--curve-episodes", "2", "--checkpoint-every", "100", "--no-progress",
            "--threads", "1"]
    ref = run_cli(*args, "--results", str(tmp_path / "a"), minari=minari_root)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen([*CLI, *args, "--results", str(tmp_path / "b")], env=cli_env(minari_root), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "b" / "checkpoints"
    wait_until(lambda: ckpts.exists() and bool(list(ckpts.glob("*.pt"))), 120, poll=0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(ckpts.glob("*.pt")), "the run should have written a checkpoint before being killed"
    assert not (tmp_path / "b" / "runs").exists() or not list((tmp_path / "b" / "runs").iterdir())
    resumed = run_cli(*args, "--results", str(tmp_path / "b"), minari=minari_root)
    assert resumed.returncode == 0, resumed.stderr
    (a,) = [json.loads(p.read_text()) for p in (tmp_path / "a" / "runs").glob("*.json")]
    (b,) = [json.loads(p.read_text()) for p in (tmp_path / "b" / "runs").glob("*.json")]
    assert b["final"]["returns"] == a["final"]["returns"]
    assert b["final"]["score_mean"] == a["final"]["score_mean"]


@pytest.fixture
def ctrl_c_live():
    """SIGINT raises KeyboardInterrupt here, and a child process starts with it handled by default, as at a
    terminal. A shell without job control starts its `&` jobs with SIGINT ignored, children inherit that, and
    Python then installs no KeyboardInterrupt handler; a handled signal, unlike an ignored one, resets on exec."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("how", ["sigterm to the sweep", "ctrl-c to its process group"])
def test_stopping_a_sweep_stops_its_workers(minari_root: Path, tmp_path: Path, how: str, ctrl_c_live: None) -> None:
    """A killed sweep leaves no worker training on unseen (and holding its run's lock); nothing is recorded as
    failed, and the run stays resumable from its checkpoint."""
    spec = SweepSpec(algos=["bc"], tasks=["smoke-v0"], seeds=[0, 1], steps=10**7, eval_every=10**6,
                     eval_episodes=2, curve_episodes=2, results=tmp_path)
    ids = [s.run_id for s in run_states(spec)]
    # stderr goes to a file, not a pipe: the check is that the sweep exits, not that every descendant has closed
    # the pipe; and faulthandler lets a hung sweep show where it hangs (SIGABRT below)
    err_path = tmp_path / "sweep.err"
    with err_path.open("w") as err_file:
        proc = subprocess.Popen([*CLI, "sweep", "--algos", "bc", "--tasks", "smoke-v0",
                                 "--seeds", "0-1", "--steps", str(10**7), "--eval-every", str(10**6),
                                 "--eval-episodes", "2", "--curve-episodes", "2", "--results", str(tmp_path),
                                 "--workers", "1", "--threads", "1"],
                                env=cli_env(minari_root, {"PYTHONFAULTHANDLER": "1"}), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=err_file, start_new_session=True)
    try:
        checkpoints = tmp_path / "checkpoints"
        wait_until(lambda: is_locked(checkpoints, ids[0]), 120)
        assert is_locked(checkpoints, ids[0]), "the worker should be training seed 0"
        if how == "sigterm to the sweep":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            group = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,args", "-g", str(proc.pid)],
                                   capture_output=True, text=True).stdout
            proc.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to err_path
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            pytest.fail(f"the sweep did not exit within 60 s of the signal\n{group}\n{err_path.read_text()}")
        err = err_path.read_text()
        assert proc.returncode != 0 and "Traceback" not in err, err
        wait_until(lambda: not is_locked(checkpoints, ids[0]), 30)
        assert not is_locked(checkpoints, ids[0]), "the worker outlived its sweep"
        assert not is_locked(checkpoints, ids[1]), "a queued run started after the sweep was stopped"
        assert not (tmp_path / "failed").exists() and not (tmp_path / "runs").exists()
    finally:  # a failing check must not leave the sweep or its workers training
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_ctrl_c_landing_on_another_thread_still_stops_the_sweep(minari_root: Path, tmp_path: Path,
                                                               ctrl_c_live: None) -> None:
    """The kernel hands a process-wide Ctrl-C to any one thread, and Python runs the handler only when the main
    thread next wakes: a sweep whose main thread waited untimed slept through it until its runs ended."""
    spec = SweepSpec(algos=["bc"], tasks=["smoke-v0"], seeds=[0], steps=10**7, eval_every=10**6, eval_episodes=2,
                     curve_episodes=2, results=tmp_path)
    (rid,) = [s.run_id for s in run_states(spec)]
    checkpoints = tmp_path / "checkpoints"
    sent_at: list[float] = []
    sweep_ended = threading.Event()

    def ctrl_c_on_this_thread() -> None:
        wait_until(lambda: is_locked(checkpoints, rid) or sweep_ended.is_set(), 120)
        if sweep_ended.is_set():  # the sweep ended on its own (a failed run): a late Ctrl-C would stop pytest
            return
        sent_at.append(time.time())
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        if not sweep_ended.wait(30):  # a sweep that slept through it: end its run so that this test ends
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((checkpoints / f"{rid}.lock").read_text()), signal.SIGKILL)

    helper = threading.Thread(target=ctrl_c_on_this_thread, daemon=True)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(spec, workers=1, threads=1, out=io.StringIO())
        reacted_in = time.time() - sent_at[0]
    finally:
        sweep_ended.set()
        helper.join()
    assert reacted_in < 10, f"the sweep took {reacted_in:.0f} s to act on Ctrl-C"
    assert not is_locked(checkpoints, rid), "the worker outlived its sweep"
    assert not (tmp_path / "failed").exists() and not (tmp_path / "runs").exists()


def test_bad_sweep_fails_before_anything_runs(minari_root: Path, tmp_path: Path) -> None:
    res = run_cli("sweep", "--algos", "bc,nope", "--tasks", "smoke-v0", *TINY[:2], "--results", str(tmp_path),
                  minari=minari_root)
    assert res.returncode != 0 and "unknown algorithm 'nope'" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()


def test_sweep_file_with_per_algorithm_overrides(minari_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("algos: [td3_bc]\ntasks: [smoke-v0]\nseeds: 0-0\nsteps: 20\neval_every: 20\n"
                     "eval_episodes: 2\ncurve_episodes: 2\noverrides:\n  td3_bc: {alpha: 4.0}\n")
    res = run_cli("sweep", "--file", str(sweep), "--results", str(tmp_path / "r"), "--workers", "1",
                  "--threads", "1", minari=minari_root)
    assert res.returncode == 0, res.stdout + res.stderr
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "runs").glob("*.json")]
    assert record["config"]["alpha"] == 4.0
    assert record["torch_threads"] == 1


def test_status_lists_recorded_running_partial_and_pending_runs_without_training(minari_root: Path,
                                                                                  tmp_path: Path) -> None:
    spec = SweepSpec(algos=["bc"], tasks=["smoke-v0"], seeds=[0, 1, 2, 3], steps=40, eval_every=20,
                     eval_episodes=2, curve_episodes=2, results=tmp_path)
    run_sweep(dataclasses.replace(spec, seeds=[0]), workers=1, threads=1, out=io.StringIO())
    ids = {s.req.seed: s.run_id for s in run_states(spec)}
    save_checkpoint(checkpoint_path(tmp_path / "checkpoints", ids[1]), {
        "algorithm": {"step": 20}, "train_seconds": 1200.0, "recent": {"updates": 10, "train_seconds": 60.0}})
    save_checkpoint(checkpoint_path(tmp_path / "checkpoints", ids[2]), {"algorithm": {"step": 10}})
    with run_lock(tmp_path / "checkpoints", ids[2]):  # as if another process were training seed 2
        res = run_cli("sweep", "--algos", "bc", "--tasks", "smoke-v0", "--seeds", "0-3", "--steps", "40",
                      "--eval-every", "20", "--eval-episodes", "2", "--curve-episodes", "2",
                      "--results", str(tmp_path), "--status", minari=minari_root)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("recorded  bc__smoke-v0__s0__") and "score" in lines[0]
    assert lines[1].startswith("partial   bc__smoke-v0__s1__") and "checkpoint at 20 of 40 updates" in lines[1]
    assert "(0.167 updates/s, about 2 min of training left)" in lines[1]  # the last 10 updates took 1 min
    assert lines[2].startswith("running   bc__smoke-v0__s2__") and lines[2].endswith("checkpoint at 10 of 40 updates")
    assert lines[3].startswith("pending   bc__smoke-v0__s3__")
    assert lines[4] == "sweep status: 1 recorded, 1 running, 1 partial, 1 pending; 90 updates left to train"
    assert len(list((tmp_path / "runs").glob("*.json"))) == 1  # nothing was trained


def test_status_rate_is_the_last_checkpoint_interval_or_the_whole_run_for_older_checkpoints() -> None:
    assert checkpoint_rate({"algorithm": {"step": 30}, "train_seconds": 30.0,
                             "recent": {"updates": 10, "train_seconds": 2.0}}) == 5.0
    assert checkpoint_rate({"algorithm": {"step": 30}, "train_seconds": 30.0}) == 1.0  # written before `recent`
    assert checkpoint_rate({"algorithm": {"step": 10}}) is None and checkpoint_rate({}) is None


def test_status_says_why_a_run_recorded_under_another_config_is_pending(minari_root: Path, tmp_path: Path) -> None:
    spec = SweepSpec(algos=["bc"], tasks=["smoke-v0"], seeds=[0, 1], steps=40, eval_every=20, eval_episodes=2,
                     curve_episodes=2, results=tmp_path)
    run_sweep(dataclasses.replace(spec, seeds=[0]), workers=1, threads=1, out=io.StringIO())
    states = run_states(dataclasses.replace(spec, steps=60, overrides={"bc": {"lr": 1e-4}}))
    assert [s.state for s in states] == ["pending", "pending"]
    assert states[0].differs.startswith("recorded with config ")
    assert "config.lr: 0.0003 -> 0.0001; protocol.steps: 40 -> 60" in states[0].differs
    assert states[1].differs is None  # seed 1 was never recorded: nothing to explain
    out = io.StringIO()
    print_states(states, out=out)
    assert "not started; recorded with config" in out.getvalue().splitlines()[0]


def test_status_finds_checkpoints_in_the_folder_named_by_flag_file_or_environment(minari_root: Path,
                                                                                   tmp_path: Path) -> None:
    spec = SweepSpec(algos=["bc"], tasks=["smoke-v0"], seeds=[0], steps=40, eval_every=20, eval_episodes=2,
                     curve_episodes=2, results=tmp_path / "results")
    (state,) = run_states(spec)
    save_checkpoint(checkpoint_path(tmp_path / "scratch", state.run_id), {"algorithm": {"step": 20}})
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"algos: [bc]\ntasks: [smoke-v0]\nseeds: 0-0\nsteps: 40\neval_every: 20\n"
                     f"eval_episodes: 2\ncurve_episodes: 2\nresults: {tmp_path / 'results'}\n")
    with_file = tmp_path / "with_checkpoints.yaml"
    with_file.write_text(sweep.read_text() + f"checkpoints: {tmp_path / 'scratch'}\n")

    def status(*extra: str, env: dict[str, str] | None = None) -> str:
        res = run_cli("sweep", *extra, "--status", minari=minari_root, env_vars=env)
        assert res.returncode == 0, res.stderr
        return res.stdout.splitlines()[0].split()[0]

    scratch = {"CTRLBENCH_CHECKPOINTS": str(tmp_path / "scratch")}
    assert status("--file", str(sweep)) == "pending"  # default: <results>/checkpoints, empty
    assert status("--file", str(sweep), env=scratch) == "partial"
    assert status("--file", str(with_file)) == "partial"
    assert status("--file", str(sweep), "--checkpoints", str(tmp_path / "scratch")) == "partial"
    assert status("--file", str(with_file), "--checkpoints", str(tmp_path / "elsewhere"), env=scratch) == "pending"


def test_sweep_leaves_a_run_locked_by_another_process_alone(minari_root: Path, tmp_path: Path) -> None:
    spec = SweepSpec(algos=["bc"], tasks=["smoke-v0"], seeds=[0, 1], steps=20, eval_every=20, eval_episodes=2,
                     curve_episodes=2, results=tmp_path)
    ids = {s.req.seed: s.run_id for s in run_states(spec)}
    ckpt = checkpoint_path(tmp_path / "checkpoints", ids[1])
    save_checkpoint(ckpt, {"algorithm": {"step": 10}})
    before = ckpt.read_bytes()
    out = io.StringIO()
    with run_lock(tmp_path / "checkpoints", ids[1]):
        results = run_sweep(spec, workers=2, threads=1, out=out)
    assert sorted(r["status"] for r in results) == ["busy", "ok"]
    assert summarize(results, out=out) == 3  # not a failure, but not complete here either
    assert f"1 run(s) left to the other process training them: {ids[1]}" in out.getvalue()
    assert [p.stem for p in (tmp_path / "runs").glob("*.json")] == [ids[0]]
    assert ckpt.read_bytes() == before and not (tmp_path / "failed").exists()


def test_ray_backend_writes_the_same_records(minari_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    local = run_cli(*SWEEP, "--results", str(tmp_path / "local"), minari=minari_root)
    assert local.returncode == 0, local.stderr
    ray_run = run_cli(*SWEEP, "--backend", "ray", "--results", str(tmp_path / "ray"), minari=minari_root)
    assert ray_run.returncode == 0, ray_run.stdout + ray_run.stderr
    names = lambda d: sorted(p.name for p in (tmp_path / d / "runs").glob("*.json"))  # noqa: E731
    assert names("ray") == names("local") and len(names("ray")) == 4
    for name in names("local"):
        a = json.loads((tmp_path / "local" / "runs" / name).read_text())
        b = json.loads((tmp_path / "ray" / "runs" / name).read_text())
        assert a["final"]["returns"] == b["final"]["returns"]


@pytest.mark.parametrize("path", sorted((REPO / "results").glob("*/*.yaml")), ids=lambda p: str(p.relative_to(REPO)))
def test_committed_sweep_files_still_describe_runnable_runs(path: Path) -> None:
    """Each committed check must stay reproducible from its file: known algorithms and tasks, and overrides that
    name real config fields with valid values (a renamed field would silently change what a rerun trains)."""
    spec = SweepSpec(**load_sweep_file(path))
    assert spec.results.parts[0] == "results" and set(spec.overrides) <= set(spec.algos)
    assert len([resolve(req) for req in spec.requests()]) == len(spec.algos) * len(spec.tasks) * len(spec.seeds) > 0


@pytest.mark.parametrize("text, message", [
    (None, r"sweep file .*missing.yaml does not exist"),
    ("algos: [bc\n", r"sweep file .* is not valid YAML"),
    ("- bc\n- td3_bc\n", r"sweep file .* must be a mapping of key: value"),
    ("algos: [bc]\nstep: 10\n", r"sweep file .*: unknown keys \['step'\]"),
])
def test_bad_sweep_file_gives_one_line_error(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "missing.yaml"
    if text is not None:
        path = tmp_path / "sweep.yaml"
        path.write_text(text)
    with pytest.raises(CtrlbenchError, match=message):
        load_sweep_file(path)
