"""Score-regression check: new records against reference bands per (algorithm, task, config).

A band is derived from committed reference records of one (algorithm, task, config hash): the seeds' mean
+- (2 std + margin), std over seeds with ddof=1 (0 with one seed), margin in normalized-score points
(default 5). Each new record whose final score falls below its band fails the check; one above it is reported
as an improvement. The config hash covers the algorithm config, the protocol (steps, evaluation) and the
dataset version, so a band only ever judges runs made the same way. Each band keeps what its hash covered, so a
record without a band is told which fields set it apart from the band of its algorithm and task.

Coverage. A bands file says which records it judges: the (algorithm, task, protocol) cells it was derived from
(`covers`). A record in a covered cell without a band of its config is a failure (the config changed and the bands
were not renewed: `--allow-unbanded` to let it pass). A record outside every covered cell (a learning check, a
sweep at another budget) is listed as not judged and never fails, so `ctrlbench check --results results` judges
the regression records among all the committed ones. A failed run in a covered cell is a failure too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import atomic_write_json, read_json
from leaderboard.provenance import git_commit
from leaderboard.records import closest_identity, identity, load_records

BANDS_SCHEMA = 2  # 2: `covers` names the cells the bands judge
DEFAULT_MARGIN = 5.0


def band_key(record: dict[str, Any]) -> str:
    return f"{record['algorithm']}|{record['task']}|{record['config_hash']}"


def cell(record: dict[str, Any]) -> dict[str, Any]:
    """The (algorithm, task, protocol) cell of a record: what a bands file covers."""
    return {"algorithm": record["algorithm"], "task": record["task"], "protocol": record["protocol"]}


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
    covers = sorted({json.dumps(cell(r), sort_keys=True) for r in records})
    return {"schema_version": BANDS_SCHEMA, "margin": margin, "rule": "mean +- (2 std + margin)",
            "source_commit": git_commit(), "covers": [json.loads(c) for c in covers], "bands": bands}


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
                             f"expected {BANDS_SCHEMA}; renew it with `ctrlbench check --update-bands`")
    return bands


@dataclass
class CheckResult:
    failures: list[str] = field(default_factory=list)
    improvements: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    unbanded: list[str] = field(default_factory=list)  # covered cell, no band of the record's config
    not_covered: list[str] = field(default_factory=list)  # one line per cell the bands do not judge

    def report(self) -> str:
        lines = [f"check: {len(self.passed)} within band, {len(self.improvements)} above, "
                 f"{len(self.failures)} below or failed, {len(self.unbanded)} without a band; "
                 f"{len(self.not_covered)} cells outside the bands' coverage, not judged"]
        lines += [f"  REGRESSION {f}" for f in self.failures]
        lines += [f"  improved   {i}" for i in self.improvements]
        lines += [f"  no band    {u}" for u in self.unbanded]
        lines += [f"  not judged {c}" for c in self.not_covered]
        return "\n".join(lines)


def check(records: list[dict[str, Any]], bands: dict[str, Any]) -> CheckResult:
    result = CheckResult()
    covered = {json.dumps(c, sort_keys=True) for c in bands["covers"]}
    outside: dict[tuple, list[dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: (r["algorithm"], r["task"], r["seed"])):
        what = f"{r['algorithm']} on {r['task']} seed {r['seed']}"
        if json.dumps(cell(r), sort_keys=True) not in covered:
            outside.setdefault((r["algorithm"], r["task"], r["protocol"]["steps"], r["config_hash"]), []).append(r)
            continue
        if r.get("status") != "ok":
            result.failures.append(f"{what}: the run failed ({r.get('error', r.get('status'))})")
            continue
        band = bands["bands"].get(band_key(r))
        score = r["final"]["score_mean"]
        if band is None:
            result.unbanded.append(f"{what} (config {r['config_hash']}){_nearest_band_diff(r, bands)}")
        elif score < band["low"]:
            result.failures.append(f"{what}: expected {band['low']:.1f} .. {band['high']:.1f}, got {score:.1f}")
        elif score > band["high"]:
            result.improvements.append(f"{what}: expected {band['low']:.1f} .. {band['high']:.1f}, "
                                       f"got {score:.1f}")
        else:
            result.passed.append(what)
    for (algo, task, steps, config_hash), group in outside.items():
        failed = sum(r.get("status") != "ok" for r in group)
        result.not_covered.append(f"{algo} on {task} at {steps} updates, config {config_hash}: {len(group)} runs"
                                  + (f" ({failed} failed)" if failed else ""))
    return result


def _nearest_band_diff(record: dict[str, Any], bands: dict[str, Any]) -> str:
    """Why a record has no band: how it differs from a band of the same algorithm and task, if there is one."""
    closest = closest_identity([(b["config_hash"], b["identity"]) for b in bands["bands"].values()
                                if b["algorithm"] == record["algorithm"] and b["task"] == record["task"]
                                and "identity" in b], identity(record))
    return f"; its band's config {closest[0]} differs in {closest[1]}" if closest else ""
