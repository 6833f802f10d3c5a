"""The dataset factory on tiny sizes, with stand-in behavior policies (random-init SAC actors)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from algorithms.core.errors import CtrlbenchError
from algorithms.core.threads import torch_threads
from tasks.behavior import SquashedGaussianActor, file_sha256
from tasks.datasets import dataset_dir, load_transitions, read_metadata
from tasks.factory import BehaviorPolicies, build, collect
from tasks.locomotion import dataset_id
from tasks.registry import get_task


def fake_policies(root: Path, env: str = "hopper", obs_dim: int = 11, act_dim: int = 3) -> Path:
    """A policies folder shaped like `select()` writes it, with random-init actors."""
    folder = root / env
    (folder / "replay").mkdir(parents=True)
    entries = {}
    for name, step in (("expert", 300), ("medium", 200)):
        torch.manual_seed(step)
        actor = SquashedGaussianActor(obs_dim, act_dim)
        torch.save(actor.state_dict(), folder / f"{name}.pt")
        entries[name] = {"file": f"{name}.pt", "env_steps": step, "return_mean": 0.0, "sha256": ""}
    replay = []
    for step in (100, 150, 200):
        torch.manual_seed(step)
        torch.save(SquashedGaussianActor(obs_dim, act_dim).state_dict(), folder / "replay" / f"step_{step:08d}.pt")
        replay.append({"file": f"replay/step_{step:08d}.pt", "env_steps": step})
    for e in [*entries.values(), *replay]:
        e["sha256"] = file_sha256(folder / e["file"])
    manifest = {"env": env, **entries, "replay_snapshots": replay, "learning_starts": 100, "snapshot_every": 50}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, minari_root) -> Path:
    policies = fake_policies(tmp_path_factory.mktemp("policies"))
    build("hopper", ["random", "medium", "expert", "medium-replay", "medium-expert"], size=600,
          policies_dir=policies, log=lambda _: None)
    return policies


def test_sizes_and_truncation(built) -> None:
    for kind in ("random", "medium", "expert"):
        data = load_transitions(dataset_id("hopper", kind)).transitions
        assert len(data) == 600
        with h5py.File(dataset_dir(dataset_id("hopper", kind)) / "data" / "main_data.hdf5") as f:
            last = f[f"episode_{len(f) - 1}"]
            assert bool(last["terminations"][-1]) or bool(last["truncations"][-1])
    replay = load_transitions(dataset_id("hopper", "medium-replay")).transitions
    assert len(replay) == 200  # learning_starts (100) + two 50-step snapshot segments up to the medium point


def test_metadata_reference_scores_and_recipe(built) -> None:
    metas = {k: read_metadata(dataset_id("hopper", k)) for k in ("random", "medium", "expert")}
    refs = {(m["ref_min_score"], m["ref_max_score"]) for m in metas.values()}
    assert len(refs) == 1, "every kind of one env shares the reference scores"
    recipe = metas["medium"]["ctrlbench_recipe"]
    assert recipe["kind"] == "medium" and recipe["seed"] == 0 and recipe["size"] == 600
    expected_hash = file_sha256(built / "hopper" / "medium.pt")
    assert recipe["policies"]["medium"]["policy_sha256"] == expected_hash
    assert json.loads(metas["expert"]["eval_env_spec"])["id"] == "Hopper-v5"


def test_medium_expert_is_medium_plus_expert(built) -> None:
    me = load_transitions(dataset_id("hopper", "medium-expert")).transitions
    m = load_transitions(dataset_id("hopper", "medium")).transitions
    e = load_transitions(dataset_id("hopper", "expert")).transitions
    assert len(me) == len(m) + len(e)
    np.testing.assert_array_equal(me.observations, np.concatenate([m.observations, e.observations]))
    np.testing.assert_array_equal(me.actions, np.concatenate([m.actions, e.actions]))


def test_kinds_differ(built) -> None:
    r = load_transitions(dataset_id("hopper", "random")).transitions
    m = load_transitions(dataset_id("hopper", "medium")).transitions
    assert not np.array_equal(r.actions[:50], m.actions[:50])


def test_building_twice_gives_identical_data(built, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    build("hopper", ["medium", "medium-replay"], size=600, policies_dir=built, log=lambda _: None)
    for kind in ("medium", "medium-replay"):
        again = load_transitions(dataset_id("hopper", kind)).transitions
        monkeypatch.undo()
        first = load_transitions(dataset_id("hopper", kind)).transitions
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
        for name in ("observations", "actions", "rewards", "terminals"):
            assert np.array_equal(getattr(again, name), getattr(first, name)), (kind, name)


def test_registered_task_reads_built_dataset(built) -> None:
    task = get_task("hopper-medium-v0")
    assert task.dataset_id == dataset_id("hopper", "medium") and task.env_id == "Hopper-v5"


def test_hosted_minari_layout_is_a_task(built, minari_root) -> None:
    """A dataset under a hosted-style id (mujoco/hopper/medium-v0) works as a task when present locally."""
    import shutil

    src = dataset_dir(dataset_id("hopper", "medium"))
    dst = minari_root / "mujoco" / "hopper" / "medium-v0"
    shutil.copytree(src, dst)
    task = get_task("mujoco/hopper/medium-v0")
    assert task.env_id == "Hopper-v5" and task.dataset_id == "mujoco/hopper/medium-v0"
    assert len(load_transitions("mujoco/hopper/medium-v0").transitions) == 600


def test_errors_for_unknown_env_kind_and_missing_policies(tmp_path) -> None:
    with pytest.raises(CtrlbenchError, match="unknown environment 'ant'"):
        build("ant", ["medium"])
    with pytest.raises(CtrlbenchError, match="unknown dataset kind"):
        build("hopper", ["mediocre"])
    with pytest.raises(CtrlbenchError, match="train-policies --env walker2d"):
        BehaviorPolicies.load("walker2d", tmp_path)


def test_tampered_policy_is_refused(built, tmp_path) -> None:
    import shutil

    shutil.copytree(built / "hopper", tmp_path / "hopper")
    (tmp_path / "hopper" / "medium.pt").write_bytes(b"tampered")
    with pytest.raises(CtrlbenchError, match="does not match its manifest hash"):
        BehaviorPolicies.load("hopper", tmp_path)


def test_cli_run_on_a_locomotion_task(built, minari_root, tmp_path) -> None:
    """A factory-built MuJoCo task runs end to end through the CLI (Hopper-v5 evaluation, record, score)."""
    from tests.conftest import TINY, run_cli

    res = run_cli("run", "--algo", "td3_bc", "--task", "hopper-medium-v0", *TINY, "--results", str(tmp_path),
                  minari=minari_root)
    assert res.returncode == 0, res.stderr
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    meta = read_metadata(dataset_id("hopper", "medium"))
    assert record["ref_min_score"] == meta["ref_min_score"] and record["task_family"] == "locomotion"
    info = run_cli("datasets", "info", dataset_id("hopper", "medium"), minari=minari_root)
    assert info.returncode == 0 and "ref_max_score" in info.stdout and "transitions    600" in info.stdout


def test_resumed_training_drops_curve_rows_past_the_checkpoint(tmp_path) -> None:
    from tasks.behavior import _truncate_curve

    path = tmp_path / "training.csv"
    path.write_text("env_steps,return_mean,return_std,wall_s\n10000,1,0,1\n20000,2,0,2\n30000,3,0,3\n")
    _truncate_curve(path, 20000)
    assert path.read_text().splitlines() == ["env_steps,return_mean,return_std,wall_s", "10000,1,0,1",
                                             "20000,2,0,2"]


def test_select_confirms_the_medium_inside_the_band(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot closest to a third on the training curve is rejected when more episodes put it outside
    0.25-0.45 of the expert; the next closest that stays inside is taken, and the replay ends there."""
    import tasks.behavior as behavior

    work, out = tmp_path / "work", tmp_path / "policies"
    (work / "hopper" / "snapshots").mkdir(parents=True)
    (out / "hopper").mkdir(parents=True)
    curve = {10: 100.0, 20: 1000.0, 30: 1200.0, 40: 3000.0}  # training-time returns
    confirmed = {10: 100.0, 20: 700.0, 30: 1250.0, 40: 3000.0}  # on many episodes: step 20 falls to 0.23
    rows = ["env_steps,return_mean,return_std,wall_s"] + [f"{k},{v},0,0" for k, v in curve.items()]
    (out / "hopper" / "training.csv").write_text("\n".join(rows) + "\n")
    for step in curve:
        (work / "hopper" / "snapshots" / f"step_{step:08d}.pt").write_bytes(str(step).encode())
    monkeypatch.setattr(behavior, "load_actor", lambda p: behavior._snapshot_step(p))
    monkeypatch.setattr(behavior, "evaluate_actor", lambda step, env, n: np.array([confirmed[step]]))
    manifest = behavior.select("hopper", policies_dir=out, work_dir=work, log=lambda m: None)
    assert manifest["expert"]["env_steps"] == 40 and manifest["medium"]["env_steps"] == 30
    assert [e["env_steps"] for e in manifest["replay_snapshots"]] == [10, 20, 30]
    confirmed[30] = 500.0  # now nothing confirms inside the band
    with pytest.raises(CtrlbenchError, match="no snapshot confirmed"):
        behavior.select("hopper", policies_dir=out, work_dir=work, log=lambda m: None)


def test_collect_runs_the_policy_on_one_torch_thread() -> None:
    """Chaotic rollouts: another thread count sums matmuls in another order and changes every later state (measured on
    the HalfCheetah velocity dataset built with 2 threads: source reward means up to 250 apart), so `collect` pins one
    thread whatever its caller set."""
    seen: list[int] = []

    def policy(obs: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        seen.append(torch.get_num_threads())
        return np.zeros((len(obs), 3), np.float32)

    with torch_threads(2):
        episodes = collect("hopper", policy, 5, seed=0, stream=0)
        assert torch.get_num_threads() == 2  # the caller's setting is back
    assert sum(len(ep.rewards) for ep in episodes) == 5 and seen and set(seen) == {1}


def test_collect_by_episodes_keeps_whole_episodes_in_index_order() -> None:
    """The episode-count mode (velocity-v5's per-snapshot weighting): exactly episodes 0..n-1, none cut, the same
    episodes the transition-count mode starts with (same seeds, same order)."""
    def policy(obs: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        return np.stack([rng.uniform(-1, 1, 3) for rng in rngs]).astype(np.float32)

    by_episodes = collect("hopper", policy, 0, seed=0, stream=7, episodes=12)
    assert len(by_episodes) == 12 and all(ep.terminations[-1] or ep.truncations[-1] for ep in by_episodes)
    by_steps = collect("hopper", policy, sum(len(ep.rewards) for ep in by_episodes[:3]), seed=0, stream=7)
    assert [ep.seed for ep in by_steps] == [ep.seed for ep in by_episodes[:3]]
    for a, b in zip(by_steps, by_episodes):
        np.testing.assert_array_equal(a.actions, b.actions)
