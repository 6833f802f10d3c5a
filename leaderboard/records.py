"""Result records: one JSON file per run under `<results>/runs/`, written atomically.

The schema lives here, below both its writer (runners/run.py) and its readers (leaderboard/), so neither imports
the other's layer for it. Besides the shared fields (DESIGN.md, "Results"), every record carries `env_steps`
(0 for offline methods) and `metrics`, its task kind's block from the scoring protocol (tasks/protocol.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import read_json

SCHEMA_VERSION = 1
# the record fields that a run's config hash covers (runners.run.prepare): same values, same run id
IDENTITY_KEYS = ("schema_version", "algorithm", "task", "config", "protocol", "dataset_id", "dataset_metadata_hash")
# dataset metadata a record leaves out (the spaces and specs are long and the task already fixes them)
METADATA_NOT_RECORDED = ("observation_space", "action_space", "env_spec", "eval_env_spec")


def run_id(algo: str, task: str, seed: int, config_hash: str) -> str:
    return f"{algo}__{task}__s{seed}__{config_hash}"


def record_path(results_dir: Path, rid: str) -> Path:
    return results_dir / "runs" / f"{rid}.json"


def failure_path(results_dir: Path, rid: str) -> Path:
    """A failed run's record: its error, never a score (`ctrlbench run` and `sweep` write it, a later success
    removes it)."""
    return results_dir / "failed" / f"{rid}.json"


# what every record holds, and what a finished (status "ok") record adds: what the readers index without a check
RECORD_KEYS = ("algorithm", "task", "seed", "config_hash", "protocol", "status")
SCORE_KEYS = ("final", "best", "curve")
FIX = "remove it, or restore it from git or a backup"


def _problem(record: Any) -> str | None:
    """Why a parsed JSON file is not a record of this schema, or None when it is one."""
    if not isinstance(record, dict):
        return f"is not a record (a JSON {type(record).__name__}, not an object)"
    if record.get("schema_version") != SCHEMA_VERSION:
        return f"has schema {record.get('schema_version')!r}, expected {SCHEMA_VERSION} (written by another version)"
    missing = [k for k in RECORD_KEYS if k not in record]
    if "protocol" in record and (not isinstance(record["protocol"], dict) or "steps" not in record["protocol"]):
        missing.append("protocol.steps")
    if record.get("status") == "ok":
        missing += [k for k in SCORE_KEYS if k not in record]
        for key in ("final", "best"):
            if key in record and not isinstance((record[key] if isinstance(record[key], dict) else {})
                                                .get("score_mean"), (int, float)):
                missing.append(f"{key}.score_mean")
    return f"is not a complete record (it lacks {', '.join(dict.fromkeys(missing))})" if missing else None


def read_record(path: Path) -> dict[str, Any]:
    """One record, checked against the schema; a corrupt or foreign file is a one-line error naming it."""
    record = read_json(path, "result record")
    problem = _problem(record)
    if problem:
        raise CtrlbenchError(f"result record {path} {problem}; {FIX}")
    # Records written before the per-kind block existed are all offline runs, whose block names only the kind
    # (an additive field: the schema and so every run id stay as they were).
    record.setdefault("metrics", {"kind": record.get("task_kind", "offline")})
    return record


def warn_stderr(message: str) -> None:
    sys.stderr.write(f"ctrlbench: warning: {message}\n")


def _read_all(paths: list[Path], warn: Callable[[str], None]) -> list[dict[str, Any]]:
    records = []
    for path in paths:
        try:
            records.append(read_record(path))
        except CtrlbenchError as e:  # one bad file never hides the others: reported, skipped, the rest counted
            warn(f"skipped: {e}")
    return records


def load_records(results_dir: str | Path, warn: Callable[[str], None] = warn_stderr) -> list[dict[str, Any]]:
    """Every record under `<results>/runs/` and under any `runs/` folder below `<results>` (e.g. the committed
    `results/regression/runs/`). A corrupt or foreign file (not JSON, another schema, fields missing) is skipped
    with one line to `warn` naming it and why."""
    root = Path(results_dir)
    return _read_all(sorted(set(root.glob("runs/*.json")) | set(root.glob("**/runs/*.json"))), warn)


def load_failures(results_dir: str | Path, warn: Callable[[str], None] = warn_stderr) -> list[dict[str, Any]]:
    """The failure records under `<results>/failed/` (and any `failed/` below it) of runs with no record under
    `runs/`: status "failed", never a score. Failure records too old to name their config (and so their cell) are
    left out silently; a corrupt one is skipped with a warning."""
    root = Path(results_dir)
    paths = sorted(set(root.glob("failed/*.json")) | set(root.glob("**/failed/*.json")))
    recorded = {p.stem for p in root.glob("**/runs/*.json")}
    failures = []
    for path in paths:
        if path.stem in recorded:  # it failed once, then succeeded: the record is what counts
            continue
        try:
            data = read_json(path, "failure record")
        except CtrlbenchError as e:
            warn(f"skipped: {e}")
            continue
        if isinstance(data, dict) and "schema_version" not in data:
            continue  # an older sweep's failure: it names no config to judge it by
        problem = _problem(data)
        if problem or data.get("status") == "ok":
            warn(f"skipped: failure record {path} {problem or 'holds a score'}; {FIX}")
            continue
        failures.append(data)
    return failures


def identity(record: dict[str, Any]) -> dict[str, Any]:
    """What a record's config hash covers, with the dataset metadata behind its hash (to tell what changed)."""
    return {**{k: record.get(k) for k in IDENTITY_KEYS}, "dataset_metadata": record.get("dataset_metadata")}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flatten(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def recorded_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k not in METADATA_NOT_RECORDED}


def closest_identity(candidates: list[tuple[str, dict[str, Any]]], target: dict[str, Any], limit: int = 4
                     ) -> tuple[str, str] | None:
    """Of (config hash, identity) candidates, the one that differs from `target` in the fewest fields, with
    'field: its value -> target's value' for the first `limit` of those fields; None without candidates."""
    def changes(before: dict[str, Any]) -> list[str]:
        old, new = _flatten(before), _flatten(target)
        return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys())
                if old.get(k) != new.get(k)]

    if not candidates:
        return None
    config_hash, changed = min(((h, changes(ident)) for h, ident in candidates), key=lambda c: len(c[1]))
    more = f"; and {len(changed) - limit} more" if len(changed) > limit else ""
    return config_hash, "; ".join(changed[:limit]) + more
