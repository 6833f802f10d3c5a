"""The budget-swept Lagrangian learner behind velocity-v2 (runners/swept_lagrangian.py): the schedule, that the
swept budget is the one the dual reads, a tiny resumable run's snapshots and manifest, and the dataset version
that rolls them (tasks/safe_datasets.py)."""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from algorithms.core.errors import CtrlbenchError
from algorithms.core.nets import TanhGaussianActor
from runners import datasets_cli
from runners.run import RunRequest, build_algorithm, prepare
from runners.swept_lagrangian import restore_snapshots, train
from tasks import safe_datasets, velocity_cost
from tasks.behavior import POLICIES_DIR, file_sha256
from tasks.datasets import load_transitions
from tasks.safe_datasets import LearnerSchedule
from tests.test_factory import fake_policies

TINY = {"learning_starts": 10, "batch_size": 8, "hidden": (16, 16)}


def test_the_budget_moves_linearly_from_start_to_end() -> None:
    linear = LearnerSchedule(steps=100)
    assert [linear.kappa_at(s) for s in (0, 50, 100, 500)] == pytest.approx([250.0, 130.0, 10.0, 10.0])  # then held
    # DSRL's shape: held at the start budget, annealed over a middle stretch, held at the end budget
    shaped = LearnerSchedule(steps=100, anneal_start=20, anneal_end=80)
    assert [shaped.kappa_at(s) for s in (0, 20, 50, 80, 100)] == pytest.approx([250.0, 250.0, 130.0, 10.0, 10.0])
    for bad, match in (({"kappa_start": -1.0}, "budgets must be >= 0"), ({"anneal_end": 101}, "within the updates"),
                       ({"anneal_start": 90, "anneal_end": 80}, "within the updates"), ({"steps": 0}, ">= 1")):
        with pytest.raises(CtrlbenchError, match=match):
            LearnerSchedule(**{"steps": 100, **bad})


def test_the_dual_reads_the_budget_the_sweep_sets(monkeypatch) -> None:
    req = RunRequest(algo="sac_lag_epcost", task="halfcheetah-velocity-k10-v0", steps=10, device="cpu",
                     config_cli=TINY)
    algo, ctx = build_algorithm(req, prepare(req))
    monkeypatch.setattr(algo.stepper, "recent_episode_cost", lambda: 37.0)
    for kappa in (250.0, 61.5):
        ctx.cost_limit = kappa
        estimate, budget = algo.dual_signal(None)
        assert float(estimate) == 37.0 and budget == kappa


def test_a_tiny_sweep_writes_hashed_snapshots_and_resumes(tmp_path: Path) -> None:
    out, work = tmp_path / "lagrangian", tmp_path / "work"
    schedule = LearnerSchedule(steps=60, snapshot_every=20, first_snapshot=40)
    kw = dict(overrides=TINY, log=lambda _: None)
    manifest = train("halfcheetah", out, work, schedule, **kw)
    snaps = manifest["snapshots"]
    assert [s["env_steps"] for s in snaps] == [40, 60]
    assert [s["kappa"] for s in snaps] == pytest.approx([schedule.kappa_at(39), schedule.kappa_at(59)])
    for s in snaps:
        assert file_sha256(out / s["file"]) == s["sha256"]
        TanhGaussianActor(17, 6, 1.0, (16, 16)).load_state_dict(torch.load(out / s["file"], weights_only=True))
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert safe_datasets.manifest_budget(manifest) == schedule.budget()  # what a build checks a learner against
    with open(out / "training.csv") as f:
        assert [int(r["env_steps"]) for r in csv.DictReader(f)] == [40, 60]
    (out / "manifest.json").unlink()
    (out / snaps[0]["file"]).unlink()  # a fresh work tree: the checkpoint's copy comes back, byte for byte
    again = train("halfcheetah", out, work, schedule, **kw)  # resumes from the checkpoint at the end: nothing to train
    assert again["snapshots"] == snaps
    with pytest.raises(CtrlbenchError, match="holds no copy"):  # an older checkpoint, without the copies
        restore_snapshots(out, [{"file": "step_00000020.pt"}], {}, work / "old.pt")
    shaped = replace(schedule, anneal_start=20, anneal_end=40)
    with pytest.raises(CtrlbenchError, match="trained under the budget schedule"):  # the checkpoint holds it
        train("halfcheetah", out, work, shaped, **kw)
    written = train("halfcheetah", tmp_path / "shaped", work, shaped, **kw)
    assert safe_datasets.manifest_budget(written) == shaped.budget()


def test_the_committed_learners_match_their_recipes_and_the_command_defaults_a_schedule() -> None:
    parser = argparse.ArgumentParser()
    datasets_cli.add_parser(parser.add_subparsers())
    args = vars(parser.parse_args(["train-lagrangian", "--env", "hopper"]))
    assert {f.name: args[f.name] for f in fields(LearnerSchedule)} == vars(
        LearnerSchedule())
    assert LearnerSchedule().flags() == ""
    for robot, folder in (("hopper", "lagrangian"), ("halfcheetah", "lagrangian"), ("hopper", "lagrangian-dsrl")):
        manifest = json.loads((POLICIES_DIR / robot / folder / "manifest.json").read_text())
        recipes = [r for r in safe_datasets.RECIPES.values() if r.lagrangian and r.learner_dir == folder]
        assert recipes and all(safe_datasets.manifest_budget(manifest) == r.learner.budget() for r in recipes)


def test_the_sac_core_snapshot_samples_as_the_learner_does() -> None:
    torch.manual_seed(0)
    actor = TanhGaussianActor(5, 2, 1.0, (8, 8))
    policy = safe_datasets.sac_core_sampled_policy(actor.state_dict(), 1.0)
    obs = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    rngs = [np.random.default_rng(i) for i in range(4)]
    noise = np.stack([np.random.default_rng(i).standard_normal(2) for i in range(4)]).astype(np.float32)
    with torch.no_grad():
        out = actor.net(torch.as_tensor(obs))
        mean, raw = out.split(2, dim=-1)
        std = (actor.log_std_multiplier * raw + actor.log_std_offset).clamp(-20, 2).exp()
        expected = torch.tanh(mean + std * torch.as_tensor(noise)).numpy()
    np.testing.assert_allclose(policy(obs, rngs), expected, rtol=1e-6)


def fake_lagrangian(policies: Path, robot: str = "hopper", obs_dim: int = 11, act_dim: int = 3,
                    learner_dir: str = safe_datasets.LAGRANGIAN_DIR,
                    schedule: LearnerSchedule | None = None) -> None:
    folder = policies / robot / learner_dir
    folder.mkdir(parents=True, exist_ok=True)
    snaps = []
    for step, kappa in ((30, 200.0), (60, 20.0)):
        torch.manual_seed(step)
        torch.save(TanhGaussianActor(obs_dim, act_dim, 1.0, (16, 16)).state_dict(), folder / f"step_{step:08d}.pt")
        snaps.append({"env_steps": step, "kappa": kappa, "file": f"step_{step:08d}.pt",
                      "sha256": file_sha256(folder / f"step_{step:08d}.pt")})
    budget = (schedule or LearnerSchedule()).budget()
    (folder / "manifest.json").write_text(json.dumps({"updates": budget.pop("updates"), "budget_schedule": budget,
                                                      "snapshots": snaps}))


def test_v2_adds_the_learners_snapshots_to_v1s_and_v3_to_v6_hold_a_learner_alone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setitem(velocity_cost.ROBOTS, "hopper", velocity_cost.ROBOTS["hopper"]._replace(threshold=0.05))
    policies = fake_policies(tmp_path / "policies")
    with pytest.raises(CtrlbenchError, match="train-lagrangian --env hopper"):
        safe_datasets.build("hopper", source_steps=40, policies_dir=policies, version=2)
    fake_lagrangian(policies)
    did = safe_datasets.build("hopper", source_steps=40, policies_dir=policies, version=2)
    assert did == "ctrlbench/hopper/velocity-v2"
    sources = load_transitions(did).metadata["ctrlbench_recipe"]["sources"]
    assert list(sources)[-2:] == ["lag-30", "lag-60"]
    assert [sources[k]["learner_budget"] for k in ("lag-30", "lag-60")] == [200.0, 20.0]
    assert list(sources)[:-2] == ["replay-150", "replay-200", *(f"expert-{c:g}" for c in safe_datasets.V1_SCALES)]
    v3 = safe_datasets.build("hopper", source_steps=40, policies_dir=policies, version=3)  # the learner alone
    assert v3 == "ctrlbench/hopper/velocity-v3"
    assert list(load_transitions(v3).metadata["ctrlbench_recipe"]["sources"]) == ["lag-30", "lag-60"]
    assert safe_datasets.RECIPES[3].source_steps == 2 * safe_datasets.RECIPES[2].source_steps
    hint = r"train-lagrangian --env hopper --steps 600000 --anneal-start 160000 .* --folder lagrangian-dsrl`"
    with pytest.raises(CtrlbenchError, match=hint):
        safe_datasets.build("hopper", source_steps=40, policies_dir=policies, version=4)  # v4: the second learner
    fake_lagrangian(policies, learner_dir="lagrangian-dsrl")  # a learner trained under the default schedule
    with pytest.raises(CtrlbenchError, match=r"records the schedule .* retrain it with `.*--anneal-start 160000"):
        safe_datasets.build("hopper", source_steps=40, policies_dir=policies, version=4)
    fake_lagrangian(policies, learner_dir="lagrangian-dsrl", schedule=safe_datasets.DSRL_SHAPED)
    v4 = load_transitions(safe_datasets.build("hopper", source_steps=40, policies_dir=policies, version=4))
    assert {k: v["policy"] for k, v in v4.metadata["ctrlbench_recipe"]["sources"].items()} == {
        "lag-30": "tasks/policies/hopper/lagrangian-dsrl/step_00000030.pt",
        "lag-60": "tasks/policies/hopper/lagrangian-dsrl/step_00000060.pt"}
    monkeypatch.setitem(safe_datasets.DSRL_MAX_EPISODE_COST, "hopper", 5.0)  # a cap these tiny episodes cross
    v5 = load_transitions(safe_datasets.build("hopper", policies_dir=policies, version=5, source_episodes=3))
    recipe = v5.metadata["ctrlbench_recipe"]
    assert recipe["source_episodes"] == 3 and "source_steps" not in recipe  # v5 counts whole episodes per snapshot
    assert all(v["episodes_rolled"] == 3 for v in recipe["sources"].values())
    assert {v["policy"] for v in recipe["sources"].values()} == {
        v["policy"] for v in v4.metadata["ctrlbench_recipe"]["sources"].values()}  # v4's learner
    v6 = load_transitions(safe_datasets.build("hopper", policies_dir=policies, version=6, source_episodes=3))
    assert v6.metadata["ctrlbench_recipe"]["max_episode_cost"] is None  # v5's episodes, none dropped
    v5_kept = sum(v["episodes"] for v in recipe["sources"].values())
    assert v5_kept < len(v6.transitions.episode_costs()) == 3 * len(recipe["sources"])
    safe = v6.transitions.episode_costs() <= 5.0
    np.testing.assert_array_equal(v6.transitions.episode_costs()[safe], v5.transitions.episode_costs())
    with pytest.raises(CtrlbenchError, match="source_episodes must be >= 1"):
        safe_datasets.build("hopper", policies_dir=policies, version=5, source_episodes=0, overwrite=True)
    snapshot = policies / "hopper" / safe_datasets.LAGRANGIAN_DIR / "step_00000060.pt"
    snapshot.write_bytes(snapshot.read_bytes() + b"x")
    with pytest.raises(CtrlbenchError, match="does not match its manifest"):
        safe_datasets.build("hopper", source_steps=40, policies_dir=policies, version=2, overwrite=True)


def test_a_checkpoint_of_another_trainer_is_a_one_line_error(tmp_path: Path) -> None:
    from algorithms.core.checkpoint import save_checkpoint

    out, work = tmp_path / "lagrangian", tmp_path / "work"
    work.mkdir()
    save_checkpoint(work / f"swept_lagrangian_hopper_{out.name}_s0.pt", {"algorithm": {"not": "a sac_lag state"}})
    with pytest.raises(CtrlbenchError, match="does not hold this run's state") as e:
        train("hopper", out, work, LearnerSchedule(steps=20, snapshot_every=10, first_snapshot=10))
    assert "\n" not in str(e.value)
