"""Run locks: one process trains a run; a second stops at once, and the lock dies with its holder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runners.run_lock import RunBusy, is_locked, lock_path, run_lock
from tests.conftest import TINY, run_cli


def test_second_holder_is_refused_until_the_first_releases(tmp_path: Path) -> None:
    assert not is_locked(tmp_path, "r")
    with run_lock(tmp_path, "r"):
        assert is_locked(tmp_path, "r")
        busy = rf"run r is being trained by another process \(pid {os.getpid()},"
        with pytest.raises(RunBusy, match=busy), run_lock(tmp_path, "r"):
            pass
        with run_lock(tmp_path, "other"):  # other runs are independent
            pass
    assert not is_locked(tmp_path, "r") and not lock_path(tmp_path, "r").exists()  # released and removed
    with run_lock(tmp_path, "r"):
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from pathlib import Path; from runners.run_lock import run_lock\n"
                               f"with run_lock(Path({str(tmp_path)!r}), 'r'):\n"
                               "    print('held', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_locked(tmp_path, "r")
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(tmp_path, "r").exists() and not is_locked(tmp_path, "r")


def test_run_of_a_locked_run_is_one_line_and_touches_nothing(minari_root: Path, tmp_path: Path) -> None:
    args = ("run", "--algo", "bc", "--task", "smoke-v0", "--seed", "0", *TINY, "--results", str(tmp_path))
    first = run_cli(*args, minari=minari_root)
    assert first.returncode == 0, first.stderr
    (record,) = (tmp_path / "runs").glob("*.json")
    rid = record.stem
    record.unlink()
    ckpt = tmp_path / "checkpoints" / f"{rid}.pt"
    ckpt.write_bytes(b"someone else's checkpoint")
    with run_lock(tmp_path / "checkpoints", rid):
        res = run_cli(*args, minari=minari_root)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "is being trained by another process" in res.stderr
    assert ckpt.read_bytes() == b"someone else's checkpoint" and not record.exists()
