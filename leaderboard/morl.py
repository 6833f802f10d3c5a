"""The multi-objective leaderboard: hypervolume and expected utility, normalized between the trivial-policy floor and
the a-posteriori reference front (../shared/reference/safe_and_morl.md C4).

Per run, from its record's `metrics` (tasks/protocol.py MultiObjectiveProtocol): the front (the non-dominated
per-weight mean discounted vector returns), its hypervolume HV against the task's reference point (points that do
not strictly dominate it add nothing), its expected utility EUM over the task's weight grid, and its cardinality.
HV and EUM are recomputed from the recorded front with tasks/pareto.py, so every run of a task is measured by the
same code against the same reference point and weights (runs of one task that recorded different ones are refused).

Per task:
- the floor: HV_floor and EUM_floor of the trivial points {zero-action, uniform-random} (tasks/mo_tasks.py
  FLOOR_POINTS, measured by benchmarks/mo_floors.py); a task without floor points has floor 0;
- the reference: HV_ref and EUM_ref of the union of every front of every run of the task in the selection (all
  algorithms and seeds) and the floor points: the reference front a posteriori, as the morl-baselines docs propose.
  So HV_ref >= HV_floor, and it moves when a run improves the union front: normalized values compare the runs of
  one selection, never two leaderboards built from different records.
- HV_norm = (HV - HV_floor) / (HV_ref - HV_floor), EUM_norm likewise: 1 = the reference front, 0 = the floor, < 0
  below it; NaN when no run beats the floor (HV_ref = HV_floor).
Per (algorithm, task): mean +- std over seeds of HV, EUM, cardinality, HV_norm and EUM_norm. Per algorithm: the mean
of its per-task HV_norm and EUM_norm over the tasks it ran. Sparsity is not reported (it ranks a single point or a
cluster as "good"). `plot_fronts` draws each task's runs (one colour per algorithm, seeds pooled) with the floor
points and the reference front. `mo_report` writes all of it for `ctrlbench leaderboard`.

Peers: a results folder's `peers/*.json` (benchmarks/pgmorl_peer.py's output: a peer library's final front, evaluated
by the suite's protocol) join the multi-objective tables and plots as rows of their own (`peer_records`), scored by
the same code against the same reference point and weights, and their fronts count in the union reference front.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import atomic_write_bytes, atomic_write_text
from leaderboard.table import entry_labels, row_order
from tasks import pareto
from tasks.mo_tasks import FLOOR_POINTS, OBJECTIVES

MO_KIND = "multi-objective"
MO_COLUMNS = ["algorithm", "task", "seed", "hypervolume", "expected_utility", "cardinality", "hv_norm", "eum_norm",
              "hv_floor", "hv_ref", "eum_floor", "eum_ref", "points_below_reference"]
STAT_COLUMNS = ["algorithm", "task", "n", *[f"{m}{s}" for m in ("hypervolume", "expected_utility", "cardinality",
                                                                 "hv_norm", "eum_norm") for s in ("", "_std")]]


def is_mo_record(record: dict) -> bool:
    return record.get("task_kind") == MO_KIND


def peer_records(results_dir: str | Path, algos: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                 kinds: Sequence[str] | None = None) -> list[dict]:
    """The peer runs under `<results_dir>/peers/` as leaderboard records (module docstring), filtered like the
    suite's records; a file that is not a peer front is a one-line error naming it."""
    if kinds and MO_KIND not in kinds:
        return []
    records = []
    for path in sorted(Path(results_dir).glob("peers/*.json")):
        try:
            peer = json.loads(path.read_text())
            record = {"status": "ok", "task_kind": MO_KIND, "algorithm": str(peer["algorithm"]), "task": peer["task"],
                      "seed": int(peer["seed"]), "protocol": {"steps": int(peer["env_steps"])},
                      "config_hash": "peer", "dataset_metadata_hash": None,
                      "metrics": {k: peer[k] for k in ("front", "weights", "reference_point")}}
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise CtrlbenchError(f"{path} is not a peer front (benchmarks/pgmorl_peer.py --out): "
                                 f"{type(e).__name__}: {e}") from None
        if (not algos or record["algorithm"] in algos) and (not tasks or record["task"] in tasks):
            records.append(record)
    return records


def hypervolume_above(points: np.ndarray, reference: np.ndarray) -> float:
    """HV of the points that strictly dominate the reference point (the others add nothing); 0 when none does."""
    inside = points[np.all(points > reference, axis=1)]
    return pareto.hypervolume(inside, reference) if len(inside) else 0.0


def _protocol(task: str, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The task's reference point and weight grid, which every record of the task must share."""
    refs = {tuple(r["metrics"].get("reference_point") or ()) for r in records}
    grids = {tuple(map(tuple, r["metrics"]["weights"])) for r in records}
    if len(refs) > 1 or len(grids) > 1:
        raise CtrlbenchError(f"task {task}: its runs recorded {len(refs)} reference points and {len(grids)} weight "
                             "grids; select runs of one protocol (--algos/--tasks) or rerun the old ones")
    (ref,), (grid,) = refs, grids
    if not ref:
        raise CtrlbenchError(f"task {task}: its runs recorded no reference point, so no hypervolume")
    return np.asarray(ref, dtype=np.float64), np.asarray(grid, dtype=np.float64)


def task_anchors(task: str, records: list[dict]) -> dict[str, float]:
    """HV and EUM of the task's floor points and of its reference front (the union of the records' fronts)."""
    ref, weights = _protocol(task, records)
    floor = np.asarray(FLOOR_POINTS.get(task, ()), dtype=np.float64).reshape(-1, len(ref))
    union = np.concatenate([floor, *[np.asarray(r["metrics"]["front"], dtype=np.float64) for r in records]])
    union = pareto.pareto_front(union)
    return {"hv_floor": hypervolume_above(floor, ref) if len(floor) else 0.0,
            "eum_floor": pareto.expected_utility(floor, weights) if len(floor) else 0.0,
            "hv_ref": hypervolume_above(union, ref), "eum_ref": pareto.expected_utility(union, weights)}


def _normalize(value: float, floor: float, top: float) -> float:
    return (value - floor) / (top - floor) if top > floor else float("nan")


def mo_runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per multi-objective run, with its normalized HV and EUM (module docstring)."""
    records = [r for r in records if is_mo_record(r)]
    labels = dict(zip(map(id, records), entry_labels(records), strict=True))
    rows = []
    for task in sorted({r["task"] for r in records}):
        runs = [r for r in records if r["task"] == task]
        anchors = task_anchors(task, runs)
        ref, weights = _protocol(task, runs)
        for r in runs:
            front = pareto.pareto_front(r["metrics"]["front"])
            hv, eum = hypervolume_above(front, ref), pareto.expected_utility(front, weights)
            rows.append({"algorithm": labels[id(r)], "task": task, "seed": r["seed"], "hypervolume": hv,
                         "expected_utility": eum, "cardinality": len(front),
                         "hv_norm": _normalize(hv, anchors["hv_floor"], anchors["hv_ref"]),
                         "eum_norm": _normalize(eum, anchors["eum_floor"], anchors["eum_ref"]), **anchors,
                         "points_below_reference": int(np.sum(~np.all(front > ref, axis=1)))})
    return pd.DataFrame(rows, columns=MO_COLUMNS)


def mo_task_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (algorithm, task): mean and std over seeds of HV, EUM, cardinality, HV_norm and EUM_norm."""
    rows = []
    for (algo, task), g in runs.groupby(["algorithm", "task"], sort=True):
        row = {"algorithm": algo, "task": task, "n": len(g)}
        for m in ("hypervolume", "expected_utility", "cardinality", "hv_norm", "eum_norm"):
            values = g[m].to_numpy(dtype=np.float64)
            row |= {m: float(values.mean()), f"{m}_std": float(values.std())}
        rows.append(row)
    return pd.DataFrame(rows, columns=STAT_COLUMNS)


def mo_aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Per algorithm: the mean over the tasks it ran of its seed-mean HV_norm and EUM_norm."""
    stats = mo_task_stats(runs)
    rows = [{"algorithm": a, "tasks": len(g), "hv_norm": float(g["hv_norm"].mean()),
             "eum_norm": float(g["eum_norm"].mean())} for a, g in stats.groupby("algorithm")]
    return pd.DataFrame(rows, columns=["algorithm", "tasks", "hv_norm", "eum_norm"])


def _mean_std(mean: float, std: float) -> str:
    """Hypervolumes run to millions: thousands separators and no decimals from 1,000 on, one decimal below."""
    return f"{mean:,.0f} ± {std:,.0f}" if abs(mean) >= 1000 else f"{mean:.1f} ± {std:.1f}"


def _norm(mean: float, std: float | None = None) -> str:
    """A normalized value ("–" when no run beat the floor: undefined)."""
    if np.isnan(mean):
        return "–"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def mo_markdown(runs: pd.DataFrame) -> str:
    stats = mo_task_stats(runs)
    out = ["**multi-objective**", "", "| algorithm | task | HV | EUM | cardinality | HV_norm | EUM_norm | seeds |",
           "|---|---|---|---|---|---|---|---|"]
    for r in sorted(stats.itertuples(), key=lambda r: (r.task, row_order(r.algorithm))):
        out.append(f"| {r.algorithm} | {r.task} | {_mean_std(r.hypervolume, r.hypervolume_std)} "
                   f"| {r.expected_utility:.1f} ± {r.expected_utility_std:.1f} "
                   f"| {r.cardinality:.1f} ± {r.cardinality_std:.1f} | {_norm(r.hv_norm, r.hv_norm_std)} "
                   f"| {_norm(r.eum_norm, r.eum_norm_std)} | {r.n} |")
    agg = mo_aggregate(runs)
    out += ["", "| algorithm | tasks | mean HV_norm | mean EUM_norm |", "|---|---|---|---|"]
    out += [f"| {r.algorithm} | {r.tasks} | {_norm(r.hv_norm)} | {_norm(r.eum_norm)} |"
            for r in sorted(agg.itertuples(), key=lambda r: row_order(r.algorithm))]
    out += ["", "Seed means ± std. HV against the task's reference point, EUM over its weight grid, on discounted "
            "(gamma 0.99) vector returns. HV_norm = (HV - HV_floor) / (HV_ref - HV_floor), EUM_norm likewise: the "
            "floor is the {zero-action, uniform-random} front, the reference the union of every run's front in this "
            "table (a posteriori), so 1 is the best front found by any algorithm here and 0 standing still; – when "
            "no run of the task beats the floor. EUM takes, per weight, the best point of the front; the normalized "
            "score of the generic tables is, for these tasks, the utility of the policy each method answers each "
            "weight with (docs/morl.md), so the two can rank methods differently. A peer library's row (e.g. "
            "`pgmorl (morl-baselines)`, from the results' peers/ folder) is its final front scored by this code."]
    return "\n".join(out)


def _save_png(fig: plt.Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_fronts(records: list[dict], out_dir: str | Path) -> list[Path]:
    """One PNG per multi-objective task, `fronts_<task>.png`: every run's front (one colour per algorithm, seeds
    pooled), the floor points and the reference front; 3 objectives are drawn as their three pairwise projections."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = [r for r in records if is_mo_record(r)]
    labels = dict(zip(map(id, records), entry_labels(records), strict=True))
    paths = []
    for task in sorted({r["task"] for r in records}):
        runs = [r for r in records if r["task"] == task]
        d = len(runs[0]["metrics"]["front"][0])
        names = OBJECTIVES.get(task, tuple(f"objective {i + 1}" for i in range(d)))
        pairs = [(0, 1)] if d == 2 else [(i, j) for i in range(d) for j in range(i + 1, d)]
        fig, axes = plt.subplots(1, len(pairs), figsize=(4.8 * len(pairs), 4.2), squeeze=False)
        algos = sorted({labels[id(r)] for r in runs}, key=row_order)
        colours = dict(zip(algos, plt.get_cmap("tab10").colors * (1 + len(algos) // 10), strict=False))
        floor = np.asarray(FLOOR_POINTS.get(task, ()), dtype=np.float64).reshape(-1, d)
        union = pareto.pareto_front(np.concatenate([floor, *[np.asarray(r["metrics"]["front"]) for r in runs]]))
        for ax, (i, j) in zip(axes.flat, pairs):
            for algo in algos:
                pts = np.concatenate([np.asarray(r["metrics"]["front"], dtype=np.float64) for r in runs
                                      if labels[id(r)] == algo])
                ax.scatter(pts[:, i], pts[:, j], s=18, alpha=0.7, color=colours[algo], label=algo)
            if d == 2:
                order = np.argsort(union[:, 0])
                ax.step(union[order, 0], union[order, 1], where="pre", color="grey", lw=1, ls="--",
                        label="reference front")
            if len(floor):
                ax.scatter(floor[:, i], floor[:, j], marker="x", s=40, color="black", label="zero / random")
            ax.set_xlabel(names[i])
            ax.set_ylabel(names[j])
            ax.grid(alpha=0.3)
        axes.flat[0].set_title(task)
        axes.flat[0].legend(fontsize=8)
        fig.tight_layout()
        paths.append(_save_png(fig, out / f"fronts_{task}.png"))
    return paths


def mo_report(records: list[dict], out_dir: str | Path, plots: bool = True) -> tuple[str, list[Path]]:
    """The multi-objective part of `ctrlbench leaderboard`: its markdown ("" without MO runs) and the files written
    under out_dir: mo_runs.csv, mo_per_task.csv, mo_aggregate.csv and, with `plots`, the fronts_<task>.png."""
    runs = mo_runs_frame(records)
    if runs.empty:
        return "", []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, frame in (("mo_runs", runs), ("mo_per_task", mo_task_stats(runs)), ("mo_aggregate", mo_aggregate(runs))):
        atomic_write_text(out / f"{name}.csv", frame.to_csv(index=False))
        files.append(out / f"{name}.csv")
    if plots:
        files += plot_fronts(records, out)
    return mo_markdown(runs), files
