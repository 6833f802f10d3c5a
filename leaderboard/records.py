"""Result records: one JSON file per run under `<results>/runs/`, written atomically.

The schema lives here, below both its writer (runners/run.py) and its readers (leaderboard/), so neither imports
the other's layer for it. Besides the shared fields (DESIGN.md, "Results"), every record carries `env_steps`
(0 for offline methods) and `metrics`, its task kind's block from the scoring protocol (tasks/protocol.py).
"""

from __future__ import annotations

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


def load_records(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every record under `<results>/runs/` and under any `runs/` folder below `<results>` (e.g. the committed
    `results/regression/runs/`); an unreadable file or an unknown schema is an error."""
    root = Path(results_dir)
    records = []
    for path in sorted(set(root.glob("runs/*.json")) | set(root.glob("**/runs/*.json"))):
        record = read_json(path, "result record")
        if record.get("schema_version") != SCHEMA_VERSION:
            raise CtrlbenchError(f"result record {path} has schema {record.get('schema_version')}, "
                                 f"expected {SCHEMA_VERSION}")
        # Records written before the per-kind block existed are all offline runs, whose block names only the kind
        # (an additive field: the schema and so every run id stay as they were).
        record.setdefault("metrics", {"kind": record.get("task_kind", "offline")})
        records.append(record)
    return records


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
