"""Atomic file writes: a reader sees the old file or the new one, never half of one.

A write that fails (a full disk, a read-only or missing folder) removes its temporary file and raises a
`StorageError`: one line that names the file, what is wrong and what to do.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from algorithms.core.errors import CtrlbenchError


class StorageError(CtrlbenchError):
    """A file or folder could not be written: the file system's fault, not the run's (no failure record)."""


def _blocking_file(path: Path) -> Path | None:
    """The first component of `path` (or of its parents) that exists and is not a folder, if any."""
    for part in [*reversed(path.parents), path]:
        if part.exists() and not part.is_dir():
            return part
    return None


def os_error_reason(e: OSError, path: str | os.PathLike | None = None) -> str:
    """'what is wrong; what to do' for an OSError met while writing `path` (default: the error's own file)."""
    target = Path(path if path is not None else (e.filename or "."))
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return ("no space left on the device (disk or quota full); free some space and run the command again "
                "(a run resumes from its last checkpoint)")
    if e.errno == errno.EROFS:
        return "the file system is read-only; choose a folder on a writable disk"
    if e.errno in (errno.ENOTDIR, errno.EEXIST) and (blocker := _blocking_file(target)) is not None:
        return f"{blocker} is a file, not a folder; move it away or choose another folder"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied; make {target} writable or choose another folder"
    return f"{e.strerror or type(e).__name__}; check the path and the disk"


def os_error_message(e: OSError) -> str:
    """One line for an OSError nobody caught nearer to it: `<file>: what is wrong; what to do`."""
    return f"{e.filename}: {os_error_reason(e)}" if e.filename else os_error_reason(e)


def check_writable_dir(path: str | os.PathLike, what: str) -> None:
    """Raise a StorageError naming `what` the folder is for unless files can be created in folder `path`, or, if it
    does not exist yet, in the nearest folder above it that does (where it would be created). Creates nothing: a
    probe file is made and removed at once. Run before work whose output goes there, not hours later."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".ctrlbench-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise StorageError(f"{what} {path} cannot be written: {os_error_reason(e, existing)}") from None


def _atomic_replace(path: Path, write) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise StorageError(f"cannot write {path}: {os_error_reason(e, path.parent)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error_behind(e)
        if cause is not None:
            raise StorageError(f"cannot write {path}: {os_error_reason(cause, path.parent)}") from None
        raise


def _os_error_behind(e: BaseException | None) -> OSError | None:
    """The OSError that `e` is or that led to it: torch.save may report a failed write (ENOSPC) as a RuntimeError
    of its zip writer raised while handling it."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic_replace(Path(path), lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    _atomic_replace(Path(path), lambda f: torch.save(obj, f))


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file, or raise a one-line error naming `what` it is."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise CtrlbenchError(f"{what} {path} is not valid JSON ({e}); remove or restore it") from None
    except UnicodeDecodeError:
        raise CtrlbenchError(f"{what} {path} is not valid JSON (not UTF-8 text); remove or restore it") from None
    except OSError as e:
        raise CtrlbenchError(f"{what} {path} cannot be read ({e.strerror or type(e).__name__}); "
                             "check its permissions, or remove it") from None
