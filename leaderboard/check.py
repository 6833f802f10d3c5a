"""Score-regression check: new records against reference bands per (algorithm, task, config).

A band is derived from committed reference records of one (algorithm, task, config hash): the seeds' mean
+- (2 std + margin), std over seeds with ddof=1 (0 with one seed), margin in normalized-score points
(default 5). Each new record whose final score falls below its band fails the check; one above it is reported
as an improvement. The config hash covers the algorithm config, the protocol (steps, evaluation) and the
dataset version, so a band only ever judges runs made the same way. Each band keeps what its hash covered, so a
record without a band is told which fields set it apart from the band of its algorithm and task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import atomic_write_json, read_json
from runners.provenance import git_commit
from runners.records import closest_identity, identity, load_records

BANDS_SCHEMA = 1
DEFAULT_MARGIN = 5.0


def band_key(record: dict[str, Any]) -> str:
    return f"{record['algorithm']}|{record['task']}|{record['config_hash']}"


def derive_bands(records: list[dict[str, Any]], margin: float = DEFAULT_MARGIN) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == "ok":
            groups.setdefault(band_key(r), []).append(r)
    bands = {}
    for key, group in sorted(groups.items()):
        scores = np.array([r["final"]["score_mean"] for r in group])
        std = float(scores.std(ddof=1)) if len(scores) > 1 else 0.0
        half = 2.0 * std + margin
        bands[key] = {"algorithm": group[0]["algorithm"], "task": group[0]["task"],
                      "config_hash": group[0]["config_hash"], "steps": group[0]["protocol"]["steps"],
                      "seeds": sorted(r["seed"] for r in group), "mean": float(scores.mean()), "std": std,
                      "low": float(scores.mean() - half), "high": float(scores.mean() + half),
                      "identity": identity(group[0])}
    return {"schema_version": BANDS_SCHEMA, "margin": margin, "rule": "mean +- (2 std + margin)",
            "source_commit": git_commit(), "bands": bands}


def write_bands(results_dir: Path, bands_file: Path, margin: float = DEFAULT_MARGIN) -> dict[str, Any]:
    records = load_records(results_dir)
    if not records:
        raise CtrlbenchError(f"no records under {results_dir / 'runs'} to derive bands from")
    bands = derive_bands(records, margin)
    atomic_write_json(bands_file, bands)
    return bands


def load_bands(bands_file: Path) -> dict[str, Any]:
    if not bands_file.exists():
        raise CtrlbenchError(f"bands file {bands_file} does not exist; create it with `ctrlbench check "
                             "--update-bands`")
    bands = read_json(bands_file, "bands file")
    if bands.get("schema_version") != BANDS_SCHEMA:
        raise CtrlbenchError(f"bands file {bands_file} has schema {bands.get('schema_version')}, "
                             f"expected {BANDS_SCHEMA}")
    return bands


@dataclass
class CheckResult:
    failures: list[str]
    improvements: list[str]
    passed: list[str]
    unbanded: list[str]

    def report(self) -> str:
        lines = [f"check: {len(self.passed)} within band, {len(self.improvements)} above, "
                 f"{len(self.failures)} below, {len(self.unbanded)} without a band"]
        lines += [f"  REGRESSION {f}" for f in self.failures]
        lines += [f"  improved   {i}" for i in self.improvements]
        lines += [f"  no band    {u}" for u in self.unbanded]
        return "\n".join(lines)


def check(records: list[dict[str, Any]], bands: dict[str, Any]) -> CheckResult:
    result = CheckResult([], [], [], [])
    for r in sorted(records, key=lambda r: (r["algorithm"], r["task"], r["seed"])):
        if r.get("status") != "ok":
            continue
        band = bands["bands"].get(band_key(r))
        score = r["final"]["score_mean"]
        what = f"{r['algorithm']} on {r['task']} seed {r['seed']}"
        if band is None:
            result.unbanded.append(f"{what} (config {r['config_hash']}){_nearest_band_diff(r, bands)}")
        elif score < band["low"]:
            result.failures.append(f"{what}: expected {band['low']:.1f} .. {band['high']:.1f}, got {score:.1f}")
        elif score > band["high"]:
            result.improvements.append(f"{what}: expected {band['low']:.1f} .. {band['high']:.1f}, "
                                       f"got {score:.1f}")
        else:
            result.passed.append(what)
    return result


def _nearest_band_diff(record: dict[str, Any], bands: dict[str, Any]) -> str:
    """Why a record has no band: how it differs from a band of the same algorithm and task, if there is one."""
    closest = closest_identity([(b["config_hash"], b["identity"]) for b in bands["bands"].values()
                                if b["algorithm"] == record["algorithm"] and b["task"] == record["task"]
                                and "identity" in b], identity(record))
    return f"; its band's config {closest[0]} differs in {closest[1]}" if closest else ""
