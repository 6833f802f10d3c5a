"""A run interrupted after a checkpoint resumes and ends with the same record as an uninterrupted one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from algorithms.core.checkpoint import load_checkpoint
from algorithms.td3_bc import TD3BC
from runners.run import RunRequest, checkpoint_path, execute, prepare


def request(results: Path) -> RunRequest:
    return RunRequest(algo="td3_bc", task="smoke-v0", seed=3, steps=60, eval_every=20, eval_episodes=4,
                      curve_episodes=2, results=results, checkpoint_every=20, log_every=10, progress=False)


def crash_midway(req: RunRequest, monkeypatch) -> None:
    """Run `req` with TD3+BC's update raising at update 50 (after the checkpoint at 40), then restore the update."""
    original = TD3BC.update

    def crash_at_50(self):
        if self.step == 50:
            raise RuntimeError("simulated crash")
        return original(self)

    with monkeypatch.context() as patch:
        patch.setattr(TD3BC, "update", crash_at_50)
        with pytest.raises(RuntimeError, match="simulated crash"):
            execute(req, log=lambda _: None)


def test_interrupted_run_resumes_to_identical_scores(minari_root: Path, tmp_path: Path, monkeypatch) -> None:
    reference = execute(request(tmp_path / "a"), log=lambda _: None)
    crash_midway(request(tmp_path / "b"), monkeypatch)
    ckpt = checkpoint_path(tmp_path / "b" / "checkpoints", prepare(request(tmp_path / "b")).run_id)
    assert ckpt.exists() and not (tmp_path / "b" / "runs").exists()
    saved = load_checkpoint(ckpt)  # the rate `sweep --status` shows: the interval 20..40, not the whole run
    assert saved["recent"]["updates"] == 20 and 0 < saved["recent"]["train_seconds"] < saved["train_seconds"]

    messages: list[str] = []
    resumed = execute(request(tmp_path / "b"), log=messages.append)
    assert any("resuming from update 40" in m for m in messages)
    assert resumed["final"]["returns"] == reference["final"]["returns"]
    assert [p["score_mean"] for p in resumed["curve"]] == [p["score_mean"] for p in reference["curve"]]
    assert not ckpt.exists()


def test_checkpoints_in_their_own_folder_resume_into_a_fresh_results_folder(minari_root: Path, tmp_path: Path,
                                                                             monkeypatch) -> None:
    """A scratch checkpoint folder outlives the results folder's checkout: a killed run picks up from it there."""
    reference = execute(request(tmp_path / "a"), log=lambda _: None)
    scratch = tmp_path / "scratch"
    crash_midway(dataclasses.replace(request(tmp_path / "b"), checkpoints=scratch), monkeypatch)
    assert list(scratch.glob("*.pt")) and not (tmp_path / "b" / "checkpoints").exists()

    messages: list[str] = []
    resumed = execute(dataclasses.replace(request(tmp_path / "c"), checkpoints=scratch), log=messages.append)
    assert any("resuming from update 40" in m for m in messages)
    assert resumed["final"]["returns"] == reference["final"]["returns"]
    assert not list(scratch.glob("*.pt")) and not (tmp_path / "c" / "checkpoints").exists()
