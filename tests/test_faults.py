"""Faults and bad input across the commands, as a standing battery (issue 46): the file system, corrupt state, two
sweeps on one folder, NaN losses. Each fault is one line on stderr (`ctrlbench: error: ...`, or a warning for a
file a reader skips), no traceback, a non-zero exit where the command could not do its job, and every file that
was there before is byte-identical afterwards with no temporary or partial file left behind.

The commands run in this process (`runners.cli.main`), which keeps each test to a second or two and lets a test
fake what a test machine cannot provide: a read-only folder (the tests run as root, whom permissions do not stop)
and a full disk.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from algorithms.core import registry
from algorithms.core.checkpoint import save_checkpoint
from leaderboard import report
from leaderboard.records import failure_path, load_records, record_path
from runners import cli
from runners.run import RunRequest, checkpoint_path, prepare
from runners.run_lock import run_lock
from tests.conftest import REPO, TINY

REGRESSION_RUNS = REPO / "results" / "regression" / "runs"
BANDS = REPO / "results" / "regression" / "bands.json"
RUN = ("run", "--algo", "bc", "--task", "smoke-v0", "--seed", "0", *TINY, "--threads", "1")
NAN_ALGO = '''
from dataclasses import dataclass
import numpy as np, torch
from algorithms.core.contract import Algorithm
from algorithms.core.registry import register

@dataclass
class FaultsNanConfig:
    blow_up_at: int = 30  # the update from which the loss is NaN

@register("faults_nan", kinds=("offline",))
class FaultsNan(Algorithm):
    Config = FaultsNanConfig
    def update(self):
        self.step += 1
        return {"critic_loss": torch.tensor(float("nan") if self.step >= self.config.blow_up_at else 1.0)}
    def act(self, obs, weight=None):
        return np.zeros((len(obs), self.ctx.act_dim), np.float32)
'''


# ---------------------------------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """A developer's $CTRLBENCH_CHECKPOINTS never leaks into these runs, and their `--threads 1` does not outlive
    them in this process."""
    monkeypatch.delenv("CTRLBENCH_CHECKPOINTS", raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder that already holds records: the committed regression records."""
    folder = tmp_path / "results"
    shutil.copytree(REGRESSION_RUNS, folder / "runs")
    return folder


def ctrlbench(capsys, *argv: str) -> tuple[int, str, str]:
    """`ctrlbench ARGV` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tree(root: Path) -> list[str]:
    """Every path below `root`, folders included: where a fault must not even create an empty folder."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def assert_one_line_error(code: int, err: str, *expected: str) -> str:
    """A non-zero exit, no traceback, one `ctrlbench: error:` line on stderr that holds every `expected` text."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("ctrlbench: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def assert_intact(before: dict[str, bytes], root: Path, new_allowed: tuple[str, ...] = ()) -> None:
    """Every earlier file byte-identical; no temporary or hidden file; new files only where `new_allowed` globs."""
    after = snapshot(root) if root.exists() else {}
    for name, data in before.items():
        assert after.get(name) == data, f"{name} changed or vanished"
    new = sorted(set(after) - set(before))
    assert not [n for n in new if Path(n).name.startswith(".") or n.endswith(".tmp")], new
    unexpected = [n for n in new if not any(Path(n).match(glob) for glob in new_allowed)]
    assert not unexpected, f"written although the command failed: {unexpected}"


def fewer_bootstrap_samples(monkeypatch) -> None:
    """20 bootstrap samples for the leaderboard's aggregate CIs instead of 2,000: the tests read no CI, and the
    2,000 take seconds."""
    monkeypatch.setattr(report, "write_leaderboard", functools.partial(report.write_leaderboard, reps=20))


def tiny_run_id() -> str:
    """The run id of RUN (its config and protocol), as `ctrlbench run` names it."""
    return prepare(RunRequest(algo="bc", task="smoke-v0", seed=0, steps=40, eval_every=20, eval_episodes=3,
                              curve_episodes=2)).run_id


def refuse_writes_under(monkeypatch, folder: Path, error: int) -> None:
    """Make `folder` behave as one the process cannot write into: creating a folder or a file in it (or below it)
    fails with `error`, as a read-only folder or file system does. Patched at the primitives ctrlbench writes
    through (os.mkdir, os.open with O_CREAT, tempfile.mkstemp); reads and existing folders are untouched."""
    real_mkdir, real_open, real_mkstemp = os.mkdir, os.open, tempfile.mkstemp

    def inside(path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(folder)

    def mkdir(path, *args, **kwargs):
        if inside(path) and not os.path.exists(path):
            raise OSError(error, os.strerror(error), str(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if inside(path) and flags & os.O_CREAT and not os.path.exists(path):
            raise OSError(error, os.strerror(error), str(path))
        return real_open(path, flags, *args, **kwargs)

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and inside(dir):
            raise OSError(error, os.strerror(error), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def disk_full_in(monkeypatch, folder: Path) -> None:
    """A full disk under `folder`: the atomic writer's temporary file there is created as usual, but its writes go
    to /dev/full, where the kernel fails them with ENOSPC, as on a disk that just ran out of space."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full to make the kernel fail a write with ENOSPC")
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        fd, name = real_mkstemp(*args, dir=dir, **kwargs)
        if dir is not None and Path(dir).resolve() == folder.resolve():
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


# --------------------------------------------------------------------------------------- folders and disks


def test_results_parent_is_a_file_is_one_line_error(minari_root: Path, tmp_path: Path, capsys) -> None:
    """Before: NotADirectoryError traceback from the checkpoint folder's mkdir."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder is expected\n")
    before, paths = snapshot(tmp_path), tree(tmp_path)
    code, _, err = ctrlbench(capsys, *RUN, "--results", tmp_path / "notes.txt" / "results")
    assert_one_line_error(code, err, f"results folder {blocker}/results cannot be written",
                          f"{blocker} is a file, not a folder")
    assert_intact(before, tmp_path)
    assert tree(tmp_path) == paths


def test_results_folder_is_a_file_is_one_line_error(minari_root: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "results").write_text("not a folder\n")
    before, paths = snapshot(tmp_path), tree(tmp_path)
    code, _, err = ctrlbench(capsys, *RUN, "--results", tmp_path / "results")
    assert_one_line_error(code, err, f"{tmp_path / 'results'} is a file, not a folder")
    assert_intact(before, tmp_path)
    assert tree(tmp_path) == paths


def test_checkpoints_parent_is_a_file_is_one_line_error(minari_root: Path, results: Path, capsys) -> None:
    (results / "scratch").write_text("a file\n")
    before, paths = snapshot(results), tree(results)
    code, _, err = ctrlbench(capsys, *RUN, "--results", results, "--checkpoints", results / "scratch" / "ckpt")
    assert_one_line_error(code, err, "checkpoint folder", f"{results / 'scratch'} is a file, not a folder")
    assert_intact(before, results)
    assert tree(results) == paths


def test_sweep_results_parent_is_a_file_is_one_line_error(minari_root: Path, tmp_path: Path, capsys) -> None:
    """Before: the sweep's workers died on the log folder's mkdir and the sweep ended in a traceback."""
    (tmp_path / "notes.txt").write_text("a file\n")
    before, paths = snapshot(tmp_path), tree(tmp_path)
    code, _, err = ctrlbench(capsys, "sweep", "--algos", "bc", "--tasks", "smoke-v0", "--seeds", "0", "--steps", "40",
                             "--workers", "1", "--results", tmp_path / "notes.txt" / "results")
    assert_one_line_error(code, err, "results folder", f"{tmp_path / 'notes.txt'} is a file, not a folder")
    assert_intact(before, tmp_path)
    assert tree(tmp_path) == paths


def test_leaderboard_out_parent_is_a_file_is_one_line_error(results: Path, capsys) -> None:
    (results / "notes.txt").write_text("a file\n")
    before = snapshot(results)
    code, _, err = ctrlbench(capsys, "leaderboard", "--no-plots", "--results", results,
                             "--out", results / "notes.txt" / "board")
    assert_one_line_error(code, err, f"{results / 'notes.txt'} is a file, not a folder")
    assert_intact(before, results)


@pytest.mark.parametrize("error", [errno.EACCES, errno.EROFS], ids=["permission", "read-only-fs"])
def test_read_only_results_folder_is_one_line_error(minari_root: Path, results: Path, capsys, monkeypatch,
                                                    error: int) -> None:
    """A results folder that cannot be written (simulated: see refuse_writes_under) stops the run before it
    trains, not hours later at its record. Before: a traceback from the first mkdir or write."""
    before, paths = snapshot(results), tree(results)
    refuse_writes_under(monkeypatch, results, error)
    code, _, err = ctrlbench(capsys, *RUN, "--results", results)
    line = assert_one_line_error(code, err, f"results folder {results} cannot be written")
    assert ("permission denied" if error == errno.EACCES else "read-only") in line
    monkeypatch.undo()
    assert_intact(before, results)
    assert tree(results) == paths


def test_full_disk_while_writing_the_record_is_one_line_error(minari_root: Path, results: Path, capsys,
                                                              monkeypatch) -> None:
    """Before: an OSError traceback (the temporary file was removed). Now one line; the checkpoint stays, so the
    same command resumes once there is space, and ends with the record."""
    before = snapshot(results)
    disk_full_in(monkeypatch, results / "runs")
    code, _, err = ctrlbench(capsys, *RUN, "--checkpoint-every", "20", "--results", results)
    rid = tiny_run_id()
    assert_one_line_error(code, err, f"cannot write {record_path(results, rid)}", "no space left on the device",
                          "free some space")
    assert_intact(before, results, new_allowed=(f"checkpoints/{rid}.pt", f"logs/{rid}.csv"))
    monkeypatch.undo()
    code, out, err = ctrlbench(capsys, *RUN, "--checkpoint-every", "20", "--results", results)
    assert code == 0 and "resuming from update 20" in out, err
    assert record_path(results, rid).exists() and not checkpoint_path(results / "checkpoints", rid).exists()


def test_full_disk_while_writing_a_checkpoint_is_one_line_error(minari_root: Path, results: Path, capsys,
                                                                monkeypatch) -> None:
    before = snapshot(results)
    disk_full_in(monkeypatch, results / "checkpoints")
    code, _, err = ctrlbench(capsys, *RUN, "--checkpoint-every", "20", "--results", results)
    rid = tiny_run_id()
    assert_one_line_error(code, err, f"cannot write {checkpoint_path(results / 'checkpoints', rid)}",
                          "no space left on the device")
    assert_intact(before, results, new_allowed=(f"logs/{rid}.csv",))
    assert not (results / "failed").exists()  # the disk's fault, not the run's: no failure record


# --------------------------------------------------------------------------------------------- corrupt state


@pytest.fixture
def corrupt_minari(minari_root: Path, tmp_path: Path, monkeypatch) -> Path:
    """A private copy of the smoke dataset for a test to damage; the session's stays intact."""
    root = tmp_path / "minari"
    shutil.copytree(minari_root / "ctrlbench" / "pendulum" / "smoke-v0", root / "ctrlbench" / "pendulum" / "smoke-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root / "ctrlbench" / "pendulum" / "smoke-v0" / "data"


def test_truncated_dataset_is_one_line_error(corrupt_minari: Path, results: Path, capsys) -> None:
    hdf5 = corrupt_minari / "main_data.hdf5"
    with hdf5.open("r+b") as f:
        f.truncate(hdf5.stat().st_size // 3)
    before, data_before = snapshot(results), snapshot(corrupt_minari)
    code, _, err = ctrlbench(capsys, *RUN, "--results", results)
    assert_one_line_error(code, err, "dataset ctrlbench/pendulum/smoke-v0", "cannot be read",
                          "`ctrlbench datasets build smoke --overwrite`")
    assert_intact(before, results)
    assert snapshot(corrupt_minari) == data_before


def test_corrupt_dataset_metadata_is_one_line_error(corrupt_minari: Path, results: Path, capsys) -> None:
    (corrupt_minari / "metadata.json").write_text('{"dataset_id": "ctrlbench/pend')
    before = snapshot(results)
    code, _, err = ctrlbench(capsys, *RUN, "--results", results)
    assert_one_line_error(code, err, "metadata.json cannot be read", "--overwrite")
    assert_intact(before, results)


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_corrupt_checkpoint_on_resume_is_one_line_error(minari_root: Path, results: Path, capsys,
                                                        damage: str) -> None:
    """Before: a truncated checkpoint was one line already, but a readable one without the run's state was a
    KeyError traceback. Both now name the file and say to delete it; it is left as it was."""
    ckpt = checkpoint_path(results / "checkpoints", tiny_run_id())
    if damage == "truncated":
        save_checkpoint(ckpt, {"algorithm": {"step": 20}, "rng": {}, "curve": [], "padding": list(range(5000))})
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    else:
        save_checkpoint(ckpt, {"weights": [1.0, 2.0]})
    before = snapshot(results)
    code, _, err = ctrlbench(capsys, *RUN, "--results", results)
    assert_one_line_error(code, err, f"checkpoint {ckpt}", "delete it")
    assert_intact(before, results)


def test_corrupt_checkpoint_in_sweep_status_is_named_on_its_run_line(minari_root: Path, results: Path,
                                                                      capsys) -> None:
    """`sweep --status` reads every checkpoint: before, one truncated checkpoint ended the whole listing in an
    error; now its run reads `failed` with the reason, and the other runs are listed as usual."""
    ckpt = checkpoint_path(results / "checkpoints", tiny_run_id())
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    before = snapshot(results)
    code, out, err = ctrlbench(capsys, "sweep", "--algos", "bc", "--tasks", "smoke-v0", "--seeds", "0-1", "--steps",
                               "40", "--eval-every", "20", "--eval-episodes", "3", "--curve-episodes", "2",
                               "--results", results, "--status")
    assert code == 0 and not err, err
    lines = out.splitlines()
    assert lines[0].startswith(f"failed    {tiny_run_id()}") and f"checkpoint {ckpt} cannot be read" in lines[0]
    assert lines[1].startswith("pending   bc__smoke-v0__s1__")
    assert "1 failed, 0 partial, 1 pending" in lines[2]
    assert_intact(before, results)


def test_corrupt_record_of_the_same_run_is_one_line_error(minari_root: Path, results: Path, capsys) -> None:
    """A run whose record is corrupt is neither trained over silently nor read: before, a JSONDecodeError traceback."""
    out = record_path(results, tiny_run_id())
    out.write_text('{"schema_version": 1, "final": {"score_me')
    before = snapshot(results)
    code, _, err = ctrlbench(capsys, *RUN, "--results", results)
    assert_one_line_error(code, err, f"result record {out} is not valid JSON", "--overwrite")
    assert_intact(before, results)


BAD_RECORDS = {"truncated.json": '{"schema_version": 1, "algorithm": "bc", "fin',
               "foreign.json": '["not", "a", "record"]',
               "other-schema.json": '{"schema_version": 99, "algorithm": "bc"}'}
REASONS = {"truncated.json": "is not valid JSON", "foreign.json": "is not a record",
           "other-schema.json": "has schema 99, expected 1"}
READERS = {"leaderboard": ("leaderboard", "--no-plots"), "check": ("check", "--bands", BANDS),
           "beats": ("beats", "--baseline", "bc", "--algos", "td3_bc")}


@pytest.mark.parametrize("command", sorted(READERS))
def test_corrupt_or_foreign_record_is_reported_and_skipped(results: Path, capsys, monkeypatch, command: str) -> None:
    """Before: `load_records` stopped at the first bad file (a one-line error, or an AttributeError traceback for a
    JSON list). Now each bad file is one warning line naming it and why; the other records still count."""
    # 20 bootstrap samples instead of 2,000 for the aggregate CIs, which the test does not read: seconds saved
    fewer_bootstrap_samples(monkeypatch)
    for name, text in BAD_RECORDS.items():
        (results / "runs" / name).write_text(text)
    before = {k: v for k, v in snapshot(results).items() if k.startswith("runs/")}
    code, out, err = ctrlbench(capsys, *READERS[command], "--results", results)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == len(BAD_RECORDS), err
    for name, line in zip(sorted(BAD_RECORDS), lines, strict=True):
        assert line.startswith("ctrlbench: warning: skipped: result record ") and name in line
        assert REASONS[name] in line, line
    if command == "leaderboard":
        assert code == 0 and "| bc | 81.9 ± 10.3 (3) |" in out
    elif command == "check":
        assert code == 0 and "9 within band" in out
    else:  # td3_bc does not beat bc on smoke-v0: the verdict of the 6 good records, not of the bad files
        assert code == 1 and "| td3_bc | smoke-v0 | 3 |" in out
    assert {k: v for k, v in snapshot(results).items() if k.startswith("runs/")} == before


def test_corrupt_record_stops_a_sweep_before_it_starts(minari_root: Path, results: Path, capsys) -> None:
    out = record_path(results, tiny_run_id())
    out.write_text("{")
    before = snapshot(results)
    code, _, err = ctrlbench(capsys, "sweep", "--algos", "bc", "--tasks", "smoke-v0", "--seeds", "0", "--steps", "40",
                             "--eval-every", "20", "--eval-episodes", "3", "--curve-episodes", "2",
                             "--results", results)
    assert_one_line_error(code, err, f"result record {out} is not valid JSON", "the sweep did not start")
    assert_intact(before, results)


# ----------------------------------------------------------------------------------- concurrency and NaNs


def test_two_sweeps_on_one_results_folder_never_train_the_same_run(minari_root: Path, results: Path,
                                                                   capsys) -> None:
    """The first sweep's worker holds the run's lock (here: this process); the second sweep leaves that run to it,
    trains nothing, records no failure, says so at the end and exits 3 (incomplete here)."""
    rid = tiny_run_id()
    before = snapshot(results)
    with run_lock(results / "checkpoints", rid):
        code, out, err = ctrlbench(capsys, "sweep", "--algos", "bc", "--tasks", "smoke-v0", "--seeds", "0",
                                   "--steps", "40", "--eval-every", "20", "--eval-episodes", "3",
                                   "--curve-episodes", "2", "--workers", "1", "--threads", "1", "--results", results)
    assert "Traceback" not in err and not err.strip(), err
    assert code == 3  # not a failure (the run is in hand elsewhere), but this sweep is not complete: non-zero
    last = out.strip().splitlines()[-1]
    assert f"1 run(s) left to the other process training them: {rid}" in last and "not recorded yet" in last
    assert "sweep finished: 0 ok, 0 failed" in out
    assert_intact(before, results, new_allowed=(f"logs/{rid}.log",))
    assert not record_path(results, rid).exists() and not failure_path(results, rid).exists()


@pytest.fixture
def nan_module(tmp_path: Path, monkeypatch) -> Path:
    """An algorithm whose critic loss turns NaN at update 30, registered for this test only."""
    registry.available()  # discover the built-in ones first: the copy below must hold them
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    module = tmp_path / "faults_nan.py"
    module.write_text(NAN_ALGO)
    return module


def test_nan_loss_stops_run_with_a_failure_record_never_a_score(minari_root: Path, results: Path, capsys,
                                                                monkeypatch, nan_module: Path) -> None:
    """Before: `ctrlbench run` stopped with one line (pointing at a `--check-every` flag that does not exist) and
    wrote no failure record, unlike `ctrlbench sweep`. Now it names the loss and the update, and leaves the
    sweep's failure record under failed/, which leaderboard, check and beats never read as a score."""
    before = snapshot(results)
    code, _, err = ctrlbench(capsys, "run", "--algo-module", nan_module, "--algo", "faults_nan", "--task", "smoke-v0",
                             *TINY, "--checkpoint-every", "20", "--results", results)
    (failed,) = (results / "failed").glob("*.json")
    assert_one_line_error(code, err, "non-finite critic_loss = nan at update 40", "finite at update 20",
                          f"recorded as failed in {failed}")
    rid = failed.stem
    assert_intact(before, results, new_allowed=(f"failed/{rid}.json", f"logs/{rid}.csv", f"checkpoints/{rid}.pt"))
    record = json.loads(failed.read_text())
    assert record["status"] == "failed" and record["step"] == 40 and record["run_id"] == rid
    assert "non-finite critic_loss = nan at update 40" in record["error"] and "final" not in record
    assert record["protocol"]["steps"] == 40 and record["algorithm"] == "faults_nan"

    assert all(r["algorithm"] != "faults_nan" for r in load_records(results))
    fewer_bootstrap_samples(monkeypatch)
    code, out, err = ctrlbench(capsys, "leaderboard", "--no-plots", "--results", results)
    assert code == 0 and not err and "faults_nan |" not in out and "not scored: 1 failed run(s)" in out
    code, out, err = ctrlbench(capsys, "check", "--bands", BANDS, "--results", results)
    assert code == 0 and not err and "9 within band" in out
    assert "not judged faults_nan on smoke-v0 at 40 updates" in out and "(1 failed)" in out
    code, out, err = ctrlbench(capsys, "beats", "--baseline", "faults_nan", "--results", results)
    assert_one_line_error(code, err, "no records of the baseline 'faults_nan'")


def test_failed_run_in_a_covered_cell_fails_the_check(results: Path, capsys) -> None:
    """A failure record in a cell the bands judge (here: a 4th bc seed of the regression suite) fails the check."""
    reference = json.loads(sorted((results / "runs").glob("bc__*.json"))[0].read_text())
    rid = f"bc__smoke-v0__s3__{reference['config_hash']}"
    keep = ("schema_version", "algorithm", "task", "config", "protocol", "dataset_id", "dataset_metadata_hash",
            "config_hash")
    failure = {**{k: reference[k] for k in keep}, "run_id": rid, "seed": 3, "status": "failed", "step": 700,
               "error": "CtrlbenchError: non-finite critic_loss = nan at update 700"}
    failure_path(results, rid).parent.mkdir()
    failure_path(results, rid).write_text(json.dumps(failure))
    code, out, err = ctrlbench(capsys, "check", "--bands", BANDS, "--results", results)
    assert code == 1 and not err, err
    assert "REGRESSION bc on smoke-v0 seed 3: the run failed (CtrlbenchError: non-finite critic_loss" in out
    assert "9 within band" in out
