"""One process per run: an advisory lock next to the run's checkpoint.

Two sweeps over one results folder (or a sweep and a `ctrlbench run`) would otherwise train the same run twice
and overwrite each other's checkpoint. The operating system drops a `flock` when its holder exits, however it
exits, so a killed run never leaves a stale lock behind. Where `fcntl` is missing (Windows) runs are not locked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from algorithms.core.errors import CtrlbenchError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


CHECKPOINTS_ENV = "CTRLBENCH_CHECKPOINTS"


def checkpoints_from_env(given: Path | None) -> Path | None:
    """The folder of checkpoints and run locks: `given` (a --checkpoints flag or a sweep file's `checkpoints`),
    else $CTRLBENCH_CHECKPOINTS, else None (the results folder's own). Checkpoints are named by run id, which hashes
    the whole config, so one folder serves all runs."""
    if given is not None:
        return Path(given)
    env = os.environ.get(CHECKPOINTS_ENV, "").strip()
    return Path(env) if env else None


class RunBusy(CtrlbenchError):
    """Another live process holds this run's lock."""


def lock_path(checkpoint_dir: Path, rid: str) -> Path:
    return checkpoint_dir / f"{rid}.lock"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def run_lock(checkpoint_dir: Path, rid: str) -> Iterator[None]:
    """Hold the run's lock for the block; raise RunBusy at once if another process holds it."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path = lock_path(checkpoint_dir, rid)
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a folder that is a file, read-only, or a full disk: one line, not started
            from algorithms.core.io import StorageError, os_error_reason  # (io imports torch: only when needed)

            raise StorageError(f"run {rid}: cannot create its lock {path}: {os_error_reason(e, path.parent)}; "
                               "not started") from None
        if not _try_lock(fd):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunBusy(f"run {rid} is being trained by another process (pid {holder}, lock {path}); "
                          "not started")
        try:  # the holder before us may have removed the file after we opened it: lock the current one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for the message above
        yield
    finally:
        path.unlink(missing_ok=True)  # still ours: a finished run leaves nothing behind
        os.close(fd)  # closing the descriptor releases the lock


def is_locked(checkpoint_dir: Path, rid: str) -> bool:
    """Whether a live process holds the run's lock now (never blocks; takes nothing it keeps)."""
    if fcntl is None:  # pragma: no cover - Windows
        return False
    try:
        fd = os.open(lock_path(checkpoint_dir, rid), os.O_RDWR)
    except FileNotFoundError:  # never locked, or its holder finished
        return False
    try:
        return not _try_lock(fd)
    finally:
        os.close(fd)
