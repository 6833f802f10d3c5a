"""Minari datasets: where they live, loading them into the shared batch format, writing them.

Layout (Minari's): `<root>/<dataset_id>/data/{metadata.json, main_data.hdf5}`, with `<root>` =
`$MINARI_DATASETS_PATH` or `~/.minari/datasets`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from algorithms.core.config import stable_hash
from algorithms.core.data import TransitionData
from algorithms.core.errors import CtrlbenchError


def datasets_root() -> Path:
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def dataset_dir(dataset_id: str) -> Path:
    return datasets_root() / dataset_id


def dataset_exists(dataset_id: str) -> bool:
    return (dataset_dir(dataset_id) / "data" / "metadata.json").is_file()


def read_metadata(dataset_id: str) -> dict[str, Any]:
    return json.loads((dataset_dir(dataset_id) / "data" / "metadata.json").read_text())


def dataset_metadata(dataset_id: str, build_command: str | None = None) -> tuple[dict[str, Any], str]:
    """(metadata, its hash) without reading the data: enough to name a run and score it."""
    if not dataset_exists(dataset_id):
        raise _missing(dataset_id, build_command)
    try:
        metadata = read_metadata(dataset_id)
        if not isinstance(metadata, dict):
            raise TypeError(f"a JSON {type(metadata).__name__}, not an object")
    except (OSError, ValueError, TypeError) as e:  # ValueError: not JSON, or not UTF-8 text
        how = f"`{build_command} --overwrite`" if build_command else "the command that built it"
        raise CtrlbenchError(f"dataset {dataset_id}: {dataset_dir(dataset_id) / 'data' / 'metadata.json'} cannot be "
                             f"read ({type(e).__name__}); rebuild the dataset with {how}") from None
    return metadata, stable_hash(metadata, 16)


@dataclass
class LoadedDataset:
    dataset_id: str
    transitions: TransitionData
    metadata: dict[str, Any]
    metadata_hash: str


def _missing(dataset_id: str, build_command: str | None) -> CtrlbenchError:
    how = f"build it with `{build_command}`" if build_command else "download or build it first"
    return CtrlbenchError(f"dataset {dataset_id} not found under {datasets_root()}; {how}")


def _rebuild_hint(build_command: str | None, metadata: dict[str, Any]) -> str:
    """How to rebuild a dataset in place, with the size and seed it was built with (the same recipe gives the same
    metadata, so runs keep their ids)."""
    if not build_command:
        return "delete and rebuild it"
    recipe = metadata.get("ctrlbench_recipe") or {}
    extra = "".join(f" --{flag} {recipe[key]}" for key, flag, default in (("requested_size", "size", 1_000_000),
                                                                          ("seed", "seed", 0))
                    if recipe.get(key) not in (None, default) and f"--{flag}" not in build_command)
    return f"rebuild it with `{build_command}{extra} --overwrite`"


def load_transitions(dataset_id: str, build_command: str | None = None) -> LoadedDataset:
    """Flatten every episode into transitions; `terminals` = terminations only (not truncations)."""
    import minari

    metadata, metadata_hash = dataset_metadata(dataset_id, build_command)
    fix = _rebuild_hint(build_command, metadata)
    try:
        ds = minari.load_dataset(dataset_id)
        columns: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "rew", "next", "term", "ep", "cost")}
        for i, ep in enumerate(ds.iterate_episodes()):
            obs = np.asarray(ep.observations, dtype=np.float32)
            n = len(ep.rewards)
            columns["obs"].append(obs[:-1])
            columns["next"].append(obs[1:])
            columns["act"].append(np.asarray(ep.actions, dtype=np.float32).reshape(n, -1))
            columns["rew"].append(np.asarray(ep.rewards, dtype=np.float32))
            columns["term"].append(np.asarray(ep.terminations, dtype=np.float32))
            columns["ep"].append(np.full(n, i, dtype=np.int64))
            cost = (ep.infos or {}).get("cost") if isinstance(ep.infos, dict) else None
            if cost is not None:
                columns["cost"].append(np.asarray(cost, dtype=np.float32)[-n:])
    except Exception as e:  # h5py/minari raise many types (OSError, KeyError, AssertionError...) on bad files
        raise CtrlbenchError(f"dataset {dataset_id} at {dataset_dir(dataset_id)} cannot be read "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); {fix}") from None
    if not columns["obs"]:
        raise CtrlbenchError(f"dataset {dataset_id} has no episodes; {fix}")
    costs = np.concatenate(columns["cost"]) if len(columns["cost"]) == len(columns["obs"]) else None
    data = TransitionData(
        observations=np.concatenate(columns["obs"]),
        actions=np.concatenate(columns["act"]),
        rewards=np.concatenate(columns["rew"]),
        next_observations=np.concatenate(columns["next"]),
        terminals=np.concatenate(columns["term"]),
        episode_ids=np.concatenate(columns["ep"]),
        costs=costs,
    )
    return LoadedDataset(dataset_id, data, metadata, metadata_hash)


@dataclass
class Episode:
    """One recorded episode: T+1 observations, T actions/rewards/flags (Minari's layout)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None = None
    costs: np.ndarray | None = None  # T per-step costs (safe datasets), stored as Minari infos["cost"]


@contextmanager
def _staging_root(root: Path):
    """A private Minari root on the same filesystem, so the finished dataset can be renamed in."""
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(staging)
    try:
        yield staging
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
        shutil.rmtree(staging, ignore_errors=True)


def write_minari_dataset(dataset_id: str, episodes: list[Episode], env: gym.Env, *, eval_env: gym.Env | str | None,
                         ref_min_score: float, ref_max_score: float, algorithm_name: str, description: str,
                         extra_metadata: dict[str, Any], overwrite: bool = False) -> Path:
    """Write a Minari dataset atomically: built in a staging root, then renamed into place."""
    import minari
    from minari.data_collector import EpisodeBuffer

    root = datasets_root()
    final = root / dataset_id
    if final.exists() and not overwrite:
        raise CtrlbenchError(f"dataset {dataset_id} already exists at {final}; pass --overwrite to rebuild it")
    # Minari keeps T + 1 infos (the reset's, then one per step): a cost column gets a 0 for the reset
    buffers = [EpisodeBuffer(id=i, seed=ep.seed, observations=ep.observations, actions=ep.actions,
                             rewards=ep.rewards, terminations=ep.terminations, truncations=ep.truncations,
                             infos=None if ep.costs is None else
                             {"cost": np.concatenate([[0.0], np.asarray(ep.costs, np.float32)]).astype(np.float32)})
               for i, ep in enumerate(episodes)]
    with _staging_root(root) as staging, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about unset author/permalink fields
        minari.create_dataset_from_buffers(
            dataset_id, buffers, env=env, eval_env=eval_env, algorithm_name=algorithm_name,
            author="ctrlbench", author_email="ctrlbench@users.noreply.local",
            code_permalink="ctrlbench (local build)", ref_min_score=ref_min_score,
            ref_max_score=ref_max_score, num_episodes_average_score=100, description=description,
            requirements=[f"minari=={minari.__version__}", f"gymnasium=={gym.__version__}"],
        )
        meta_path = staging / dataset_id / "data" / "metadata.json"
        metadata = json.loads(meta_path.read_text())
        metadata.update(extra_metadata)
        meta_path.write_text(json.dumps(metadata))
        if final.exists():
            trash = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / dataset_id, final)
    return final
