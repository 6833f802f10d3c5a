"""A self-contained static HTML page: sortable tables, the figures inlined as SVG, the protocol, the data."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

PROTOCOL = """Normalized score = 100 (R - ref_min) / (ref_max - ref_min), with ref_min the seeded random policy and
ref_max the expert, both from the dataset metadata. Evaluation is deterministic (the policy's mean action) and
seeded: episode i of run seed k resets with SeedSequence([k, stream, i]), so every algorithm faces the same
episodes. A run's score is its final evaluation (50 episodes after the last update); the best point of the
learning curve is shown as a secondary column. Per-task CIs are Student-t over seeds; aggregate CIs are
stratified-bootstrap percentile intervals (rliable)."""

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const table = th.closest('table'), body = table.tBodies[0];
  const asc = th.dataset.order !== 'asc'; th.dataset.order = asc ? 'asc' : 'desc';
  const key = r => { const t = r.cells[col].dataset.v ?? r.cells[col].textContent; const n = parseFloat(t);
                     return isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (asc ? 1 : -1))
    .forEach(r => body.appendChild(r));
}));
"""

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{cursor:pointer;background:#f3f3f3}
td:first-child,th:first-child{text-align:left}figure{margin:1em 0}svg{max-width:100%;height:auto}"""


def _table(df: pd.DataFrame, floats: int = 1, table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, row in df.iterrows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(f'<td data-v="{v}">{v:.{floats}f}</td>')
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _inline_svg(path: Path) -> str:
    text = path.read_text()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype


def render(per_task: pd.DataFrame, aggregate: pd.DataFrame, improvement: pd.DataFrame, runs: pd.DataFrame,
           figures: list[Path]) -> str:
    datasets = (runs[["task", "dataset_id", "dataset_metadata_hash"]].drop_duplicates().sort_values("task")
                if not runs.empty else runs)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>ctrlbench leaderboard</title>",
             f"<style>{STYLE}</style></head><body><h1>ctrlbench leaderboard</h1>",
             f"<p>{len(runs)} runs, {runs['algorithm'].nunique()} rows (algorithm, budget), "
             f"{runs['task'].nunique()} tasks.</p>",
             "<h2>Per task</h2><p>Click a column to sort.</p>",
             _table(per_task, table_id="per-task")]
    if not aggregate.empty:
        parts += ["<h2>Aggregate over tasks</h2>", _table(aggregate, table_id="aggregate")]
    if not improvement.empty:
        imp = improvement.reset_index().rename(columns={"index": "P(row > column)"})
        parts += ["<h2>Probability of improvement</h2>", _table(imp, floats=2, table_id="improvement")]
    for fig in figures:
        if fig.suffix == ".svg":
            parts.append(f"<figure>{_inline_svg(fig)}<figcaption>{html.escape(fig.stem.replace('_', ' '))}"
                         "</figcaption></figure>")
    parts += ["<h2>Protocol</h2>", f"<p>{html.escape(PROTOCOL)}</p>",
              "<h2>Datasets</h2>", _table(datasets, table_id="datasets"),
              f"<script>{SORT_JS}</script></body></html>"]
    return "\n".join(parts)
