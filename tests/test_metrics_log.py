"""The per-run metrics CSV: metrics first seen mid-run get a column; a resume drops rows past the checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

from runners.metrics_log import MetricsLog


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_a_metric_first_seen_later_gets_a_column(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    log = MetricsLog(path)
    log.log(1000, {"vae_loss": 0.5})  # a pre-training phase (SPOT's VAE) ...
    log.log(2000, {"critic_loss": 1.5, "actor_loss": -2.0, "score": 30.0})  # ... then other metrics
    log.log(3000, {"critic_loss": 1.25, "actor_loss": -2.5})
    log.close()
    fields, rows = read(path)
    assert fields == ["step", "vae_loss", "score", "eval_return", "critic_loss", "actor_loss"]
    assert rows[0] == {"step": "1000", "vae_loss": "0.5", "score": "", "eval_return": "", "critic_loss": "",
                       "actor_loss": ""}
    assert rows[1]["critic_loss"] == "1.5" and rows[1]["score"] == "30.0" and rows[1]["vae_loss"] == ""
    assert rows[2]["actor_loss"] == "-2.5"
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_keeps_rows_up_to_the_checkpoint_and_the_widened_header(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    log = MetricsLog(path)
    log.log(1, {"vae_loss": 0.5})
    log.log(2, {"critic_loss": 1.0})
    log.log(3, {"critic_loss": 0.5})
    log.close()
    resumed = MetricsLog(path, resume_step=2)
    resumed.log(3, {"critic_loss": 0.75})
    resumed.close()
    fields, rows = read(path)
    assert fields == ["step", "vae_loss", "score", "eval_return", "critic_loss"]
    assert [(r["step"], r["critic_loss"]) for r in rows] == [("1", ""), ("2", "1.0"), ("3", "0.75")]
