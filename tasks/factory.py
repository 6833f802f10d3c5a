"""The dataset factory: D4RL-style locomotion datasets built offline from the committed behavior policies.

Kinds (D4RL recipe, on Gymnasium MuJoCo v5):
  random         uniform random actions
  medium         the SAC snapshot at about one third of the expert's return, actions sampled from the policy
  expert         the best SAC snapshot, actions sampled from the policy
  medium-replay  what the SAC learner saw up to the medium point, regenerated segment by segment: the first
                 `learning_starts` steps uniform random, then each `snapshot_every` segment from the snapshot
                 taken at its start (sampled actions)
  medium-expert  medium + expert episodes (the two datasets concatenated, as Minari's combine_datasets)

Episodes reset with seeds derived from (seed, kind, episode index) and draw their action noise from an
RNG seeded the same way, and episodes enter the dataset in index order, so the same policies + seed give
byte-identical data. Collection is batched: `N_ENVS` environments step together and the policy runs once per
step on all of them. The last episode is cut to reach exactly `size` transitions (marked truncated).
Reference scores: `ref_min_score` = seeded uniform-random policy, `ref_max_score` = deterministic expert, both
over 100 seeded episodes.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from algorithms.core.errors import CtrlbenchError
from algorithms.core.seeding import derive_seed
from algorithms.core.threads import torch_threads
from tasks.behavior import POLICIES_DIR, SquashedGaussianActor, file_sha256, load_actor
from tasks.datasets import Episode, dataset_exists, write_minari_dataset
from tasks.locomotion import KINDS, dataset_id, env_id
from tasks.protocol import episode_seeds, evaluate

N_ENVS = 10  # environments stepped together during collection (fixed: part of the recipe)
REF_EPISODES = 100
KIND_STREAM = {"random": 11, "medium": 12, "expert": 13, "medium-replay": 14}
REF_STREAM = {"random": 21, "expert": 22}

# policy(obs_batch, rngs) -> actions; each row gets its own episode's RNG
BatchPolicy = Callable[[np.ndarray, list[np.random.Generator]], np.ndarray]


def uniform_policy(space: gym.spaces.Box) -> BatchPolicy:
    return lambda obs, rngs: np.stack([r.uniform(space.low, space.high) for r in rngs]).astype(np.float32)


def sampled_policy(actor: SquashedGaussianActor) -> BatchPolicy:
    """Actions sampled from the SAC policy (tanh of a Gaussian), noise drawn from each episode's RNG."""
    return noise_driven(actor.mu.out_features, actor.act)


def noise_driven(act_dim: int, act: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> BatchPolicy:
    """A batch policy whose `act(obs, noise)` takes one standard-normal draw of `act_dim` per env, each from that
    episode's RNG, so an episode's actions depend on its own seed alone."""

    def policy(obs: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        return act(obs, np.stack([r.standard_normal(act_dim) for r in rngs]).astype(np.float32))

    return policy


def collect(env_name: str, policy: BatchPolicy, size: int, seed: int, stream: int,
            make_env: Callable[[], gym.Env] | None = None, episodes: int | None = None) -> list[Episode]:
    """Episodes 0, 1, ... (in index order) until they hold `size` transitions; the last one is cut to fit. With
    `episodes`, exactly episodes 0 .. episodes-1, whole, whatever their length (`size` is then ignored).
    `make_env` replaces the env's v5 gymnasium env (e.g. a velocity-cost env); a step's info["cost"], when the env
    gives one, is recorded as the episode's costs. The policy runs on one torch thread: the rollouts are chaotic, so
    a matmul summed in another order (another thread count) would change every later state and the data with it."""
    with torch_threads(1):
        return _collect(env_name, policy, size, seed, stream, make_env, episodes)


def _collect(env_name: str, policy: BatchPolicy, size: int, seed: int, stream: int,
             make_env: Callable[[], gym.Env] | None, episodes: int | None) -> list[Episode]:
    envs = [make_env() if make_env else gym.make(env_id(env_name)) for _ in range(N_ENVS)]
    done: dict[int, Episode] = {}
    slots: list[dict | None] = [None] * N_ENVS
    next_index = 0
    prefix = {"episodes": 0, "transitions": 0}  # the finished episodes 0..k-1, without gaps

    def prefix_transitions() -> int:
        while prefix["episodes"] in done:  # advance over episodes that finished since the last call
            prefix["transitions"] += len(done[prefix["episodes"]].rewards)
            prefix["episodes"] += 1
        return prefix["transitions"]

    def enough() -> bool:
        return next_index >= episodes if episodes is not None else prefix_transitions() >= size

    def launch(slot: int) -> None:
        nonlocal next_index
        if enough():
            slots[slot] = None
            return
        i = next_index
        next_index += 1
        ep_seed = derive_seed(seed, stream, i)
        obs, _ = envs[slot].reset(seed=ep_seed)
        slots[slot] = {"i": i, "seed": ep_seed, "rng": np.random.default_rng(derive_seed(seed, stream, i, 1)),
                       "obs": [obs], "act": [], "rew": [], "term": [], "trunc": [], "cost": []}

    for slot in range(N_ENVS):
        launch(slot)
    while any(s is not None for s in slots):
        live = [k for k, s in enumerate(slots) if s is not None]
        actions = policy(np.stack([slots[k]["obs"][-1] for k in live]).astype(np.float32),
                         [slots[k]["rng"] for k in live])
        for k, action in zip(live, actions):
            s = slots[k]
            obs, reward, terminated, truncated, info = envs[k].step(action)
            if "cost" in info:
                s["cost"].append(info["cost"])
            s["obs"].append(obs)
            s["act"].append(action)
            s["rew"].append(reward)
            s["term"].append(terminated)
            s["trunc"].append(truncated)
            if terminated or truncated:
                done[s["i"]] = Episode(np.asarray(s["obs"], np.float32), np.asarray(s["act"], np.float32),
                                       np.asarray(s["rew"], np.float32), np.asarray(s["term"]),
                                       np.asarray(s["trunc"]), s["seed"],
                                       np.asarray(s["cost"], np.float32) if s["cost"] else None)
                launch(k)
    for env in envs:
        env.close()
    if episodes is not None:
        return [done[i] for i in range(episodes)]
    kept, n = [], 0
    for i in range(len(done)):
        if i not in done or n >= size:
            break
        ep = done[i]
        if n + len(ep.rewards) > size:
            ep = _cut(ep, size - n)
        kept.append(ep)
        n += len(ep.rewards)
    return kept


def _cut(ep: Episode, length: int) -> Episode:
    trunc = ep.truncations[:length].copy()
    term = ep.terminations[:length].copy()
    if not term[-1]:
        trunc[-1] = True
    return Episode(ep.observations[: length + 1], ep.actions[:length], ep.rewards[:length], term, trunc, ep.seed,
                   None if ep.costs is None else ep.costs[:length])


@dataclass
class BehaviorPolicies:
    """What the committed `tasks/policies/<env>/` folder holds, checked against its manifest."""

    env: str
    folder: Path
    manifest: dict

    @classmethod
    def load(cls, env_name: str, policies_dir: Path = POLICIES_DIR) -> BehaviorPolicies:
        folder = policies_dir / env_name
        path = folder / "manifest.json"
        if not path.exists():
            raise CtrlbenchError(f"no behavior policies for {env_name} under {folder}; train them with "
                                 f"`ctrlbench datasets train-policies --env {env_name} --select`")
        manifest = json.loads(path.read_text())
        for entry in [manifest["expert"], manifest["medium"], *manifest["replay_snapshots"]]:
            f = folder / entry["file"]
            if not f.exists() or file_sha256(f) != entry["sha256"]:
                raise CtrlbenchError(f"behavior policy {f} is missing or does not match its manifest hash")
        return cls(env_name, folder, manifest)

    def actor(self, which: str) -> SquashedGaussianActor:
        return load_actor(self.folder / self.manifest[which]["file"])

    def recipe(self, which: str) -> dict:
        entry = self.manifest[which]
        return {"policy": f"tasks/policies/{self.env}/{entry['file']}", "policy_sha256": entry["sha256"],
                "policy_env_steps": entry["env_steps"]}


def reference_scores(env_name: str, policies: BehaviorPolicies) -> tuple[float, float]:
    """(random, expert) mean returns over 100 seeded episodes, deterministic expert."""
    make = lambda: gym.make(env_id(env_name))  # noqa: E731
    space = make().action_space
    rngs = {}

    def random_policy(obs: np.ndarray) -> np.ndarray:
        # one RNG for the whole evaluation, seeded: the batched evaluator calls it in a fixed order
        rng = rngs.setdefault("r", np.random.default_rng(derive_seed(0, REF_STREAM["random"])))
        return rng.uniform(space.low, space.high, (len(obs), *space.shape)).astype(np.float32)

    ref_min = evaluate(random_policy, make, episode_seeds(0, REF_STREAM["random"], REF_EPISODES)).returns.mean()
    expert = policies.actor("expert")
    ref_max = evaluate(expert.act, make, episode_seeds(0, REF_STREAM["expert"], REF_EPISODES)).returns.mean()
    return float(ref_min), float(ref_max)


def medium_replay_episodes(env_name: str, policies: BehaviorPolicies, seed: int, size: int | None) -> list[Episode]:
    """Segments [learning_starts random] + [one per snapshot up to the medium point], in training order."""
    m = policies.manifest
    space = gym.make(env_id(env_name)).action_space
    stream = KIND_STREAM["medium-replay"]
    segments: list[tuple[int, BatchPolicy]] = [(m["learning_starts"], uniform_policy(space))]
    snaps = sorted(m["replay_snapshots"], key=lambda e: e["env_steps"])
    for a, b in zip(snaps, [*snaps[1:], None]):
        if a["env_steps"] >= m["medium"]["env_steps"]:
            break
        length = (b["env_steps"] if b else m["medium"]["env_steps"]) - a["env_steps"]
        segments.append((length, sampled_policy(load_actor(policies.folder / a["file"]))))
    episodes: list[Episode] = []
    for k, (length, policy) in enumerate(segments):
        episodes += collect(env_name, policy, length, seed, stream * 1000 + k)
    if size is not None:
        total = 0
        for j, ep in enumerate(episodes):
            if total + len(ep.rewards) >= size:
                episodes = [*episodes[:j], _cut(ep, size - total)]
                break
            total += len(ep.rewards)
    return episodes


def build(env_name: str, kinds: list[str], size: int = 1_000_000, seed: int = 0, overwrite: bool = False,
          policies_dir: Path = POLICIES_DIR, replay_size: int | None = None, log=print) -> list[str]:
    """Build the requested kinds for one environment; returns the dataset ids written."""
    with torch_threads(1):  # its reference-score evaluations too (`collect` pins its own)
        return _build(env_name, kinds, size, seed, overwrite, policies_dir, replay_size, log)


def _build(env_name: str, kinds: list[str], size: int, seed: int, overwrite: bool, policies_dir: Path,
           replay_size: int | None, log) -> list[str]:
    env_id(env_name)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise CtrlbenchError(f"unknown dataset kind(s) {', '.join(bad)}; known: {', '.join(KINDS)}")
    if size < 1:
        raise CtrlbenchError(f"--size must be positive, got {size}")
    todo = [k for k in kinds if overwrite or not dataset_exists(dataset_id(env_name, k))]
    for k in sorted(set(kinds) - set(todo)):
        log(f"{dataset_id(env_name, k)} already built; skipped (--overwrite to rebuild)")
    if not todo:
        return []
    policies = BehaviorPolicies.load(env_name, policies_dir)
    ref_min, ref_max = reference_scores(env_name, policies)
    log(f"{env_name}: reference returns random {ref_min:.1f}, expert {ref_max:.1f}")
    env = gym.make(env_id(env_name))
    cache: dict[str, list[Episode]] = {}

    def episodes_of(kind: str) -> list[Episode]:
        if kind not in cache:
            stream = KIND_STREAM.get(kind, 0)
            if kind == "random":
                cache[kind] = collect(env_name, uniform_policy(env.action_space), size, seed, stream)
            elif kind in ("medium", "expert"):
                cache[kind] = collect(env_name, sampled_policy(policies.actor(kind)), size, seed, stream)
            elif kind == "medium-replay":
                cache[kind] = medium_replay_episodes(env_name, policies, seed, replay_size)
            else:  # medium-expert
                cache[kind] = episodes_of("medium") + episodes_of("expert")
        return cache[kind]

    written = []
    for kind in todo:
        eps = episodes_of(kind)
        recipe = {
            "builder": "tasks.factory", "kind": kind, "env_id": env_id(env_name), "seed": seed,
            "size": int(sum(len(e.rewards) for e in eps)), "requested_size": size, "n_envs": N_ENVS,
            "actions": {"random": "uniform"}.get(kind, "sampled from the SAC policy"),
            "policies": {w: policies.recipe(w) for w in ("medium", "expert")},
            "ref_episodes": REF_EPISODES, "python": platform.python_version(),
        }
        if kind == "medium-replay":
            recipe["replay_snapshots"] = len(policies.manifest["replay_snapshots"])
        did = dataset_id(env_name, kind)
        write_minari_dataset(
            did, eps, env, eval_env=env_id(env_name), ref_min_score=ref_min, ref_max_score=ref_max,
            algorithm_name="stable-baselines3 SAC behavior policies (ctrlbench factory)",
            description=f"D4RL-style {kind} dataset for {env_id(env_name)}, built offline by ctrlbench",
            extra_metadata={"ctrlbench_recipe": recipe}, overwrite=overwrite)
        log(f"built {did}: {len(eps)} episodes, {recipe['size']} transitions")
        written.append(did)
    return written
