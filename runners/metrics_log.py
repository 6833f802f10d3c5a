"""Per-run training metrics: a CSV under `<results>/logs/`, plus TensorBoard when it is installed."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from algorithms.core.io import atomic_write_text


class MetricsLog:
    """CSV of (step, metric...) rows, appended as training goes; on resume, rows past the checkpoint are dropped.

    Columns start from the first row (train metrics, then `score`/`eval_return`, empty where not evaluated). A
    metric first seen later (SPOT's actor and critic losses after its VAE phase) adds a column: the file is
    rewritten once, atomically, with that column empty in the earlier rows.
    """

    def __init__(self, path: Path, resume_step: int = 0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] | None = None
        fields, rows = self._read() if path.exists() and resume_step > 0 else (None, [])
        if fields:
            self._write(fields, [r for r in rows if int(r["step"]) <= resume_step])
        else:
            path.write_text("")
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(path.with_suffix("")) + "_tb", purge_step=resume_step or None)
        except Exception:  # tensorboard is optional
            self._tb = None

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.fields is None:
            self._write(["step", *values, *(k for k in ("score", "eval_return") if k not in values)], [])
        elif new := [k for k in values if k not in self.fields]:
            self._write([*self.fields, *new], self._read()[1])
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow({"step": step, **values})
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)

    def _read(self) -> tuple[list[str] | None, list[dict[str, Any]]]:
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []) or None, list(reader)

    def _write(self, fields: list[str], rows: list[dict[str, Any]]) -> None:
        """Replace the file atomically with `rows` under the header `fields` (a failed write leaves no temp file)."""
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, text.getvalue())
        self.fields = fields

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
