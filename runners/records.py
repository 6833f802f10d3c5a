"""Result records: one JSON file per run under `<results>/runs/`, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import read_json

SCHEMA_VERSION = 1
# the record fields that a run's config hash covers (runners.run.prepare): same values, same run id
IDENTITY_KEYS = ("schema_version", "algorithm", "task", "config", "protocol", "dataset_id", "dataset_metadata_hash")


def run_id(algo: str, task: str, seed: int, config_hash: str) -> str:
    return f"{algo}__{task}__s{seed}__{config_hash}"


def record_path(results_dir: Path, rid: str) -> Path:
    return results_dir / "runs" / f"{rid}.json"


def checkpoint_path(checkpoint_dir: Path, rid: str) -> Path:
    """A run's resumable checkpoint. Run ids hash the whole config, so one folder can serve many results folders."""
    return checkpoint_dir / f"{rid}.pt"


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
        records.append(record)
    return records
