"""Cost-labelled velocity datasets for offline safe RL, built offline from the committed behavior policies.

DSRL (../shared/reference/safe_and_morl.md A2-A3) logs episodes from a Lagrangian learner whose budget is swept, so
that the data spans the whole reward-cost trade-off, and stores `costs` beside the D4RL arrays. Here the trade-off
comes from the policies the repo already ships (tasks/policies/<robot>/), run in the Safety-Gymnasium velocity-v1
env (gymnasium MuJoCo v4 + the cost rule, tasks/velocity_cost.py), so a fresh clone rebuilds the data in minutes
without training:
  replay-k    the SAC snapshots of the learner's history (tasks/policies/<robot>/replay) after its first third,
              actions sampled: gaits from a slow trot to the medium speed, mostly over HalfCheetah's threshold
  expert-c    the expert SAC policy with its sampled actions scaled by c (RECIPES[version].action_scales): weaker
              torques, a slower gait. HalfCheetah's expert runs at cost 0 at c = 0.5 (return ~2,100), ~30 at
              c = 0.53, ~175 at c = 0.56, ~735 at c = 0.7 and ~980 at c = 1 (return ~6,000): the scales are dense
              where the cost crosses the budgets (10-80), so the data has a band across the trade-off as DSRL's
              budget sweep does.
              A scaled policy is still a policy (a function of the state, plus its own sampling noise), so the safe
              episodes are clonable behavior, as DSRL's safe policies are.
Why this recipe, measured on HalfCheetah with OSRL's BC (algorithms/bc.py, batch 256, 20k updates, 3 evaluation
episodes per policy; docs/safe.md has the numbers): BC on a mix of gaits lands near the slowest gait that holds a steady
share of the data, because the slow states are visited by the slow sources alone (the fast ones only pass through
them while they accelerate). Scales 0.3 and 0.4, or the first third of the snapshots (standing still, returns
-330 and -170), in the data made BC-All as slow and safe as them (returns 500-1,750, cost 0, any weighting of the
fast sources, seeds 0-2); without them BC-All ran at returns 1,600-3,250 and paid 190-380 per episode (unsafe at
kappa 40, DSRL's BC-All picture) while BC-Safe cloned the expert at c = 0.5 (returns 1,900-2,200, cost <= 25).
Without c = 0.5 BC-Safe paid cost 70-90: the safe episodes of c = 0.53 and of the slowest snapshot averaged into an
unsafe gait. Earlier recipes slowed the robots with uniform-random or Gaussian action noise: BC on that data stood
still (the mean action of noisy data at the standing-still states is about 0), so no uniform-random source either;
DSRL's data has none.
Each source rolls its recipe's `source_steps` transitions (`SOURCE_STEPS`; v3 twice that): whole episodes, the last
one cut to fit and marked truncated; v1 on drops the episodes over its cost cap and a cut last one;
seeded per (seed, source, episode) as the locomotion factory's episodes. The policies were trained on the v5 env;
v4 has the same observations and dynamics up to v5's changed defaults, which is why speeds, not returns, are what
the recipe relies on. Deviation from DSRL: a few fixed policies and their scaled versions instead of a budget-swept
TRPO-Lagrangian learner (~2M transitions from thousands of checkpoints).

Versions. v0 (the recipe above; records in results/safe/) keeps every episode, costs 0-981 on HalfCheetah: 41% of
its states are faster than the threshold, and from many of them no action avoids paying cost for a while, so the
offline Q-learning methods' constraint over dataset states spends ~2.5 of the 4.0 discounted budget before the policy
chooses anything (scripts/safe_cost_to_go.py; docs/safe.md). v1 follows DSRL's cost range: its velocity datasets
hold episodes of cost 0 to 250 (HalfCheetah, Hopper, Ant), 300 (Walker2d) or 200 (Swimmer) (dsrl/infos.py, DSRL
Table 7; reference A2), so v1 drops every episode costing more than the robot's DSRL maximum, and adds expert scales
where HalfCheetah's cost crosses that range (c = 0.52 .. 0.58) so that the kept data spreads over it as DSRL's
annealed budget sweep does (its learner's budget moves from 250 down to 10). A source whose episodes all cost more
contributes none (recorded with 0 episodes). On v0's own episodes the cap leaves 8.7% costly states and a floor of
0.04 (`--max-episode-cost 250`). v2 adds DSRL's own recipe to v1's sources, under the same cap: the snapshots of a
Lagrangian learner whose budget was swept from 250 down to 10 (`lag-<env steps>`, committed under
tasks/policies/<robot>/lagrangian/ by runners/swept_lagrangian.py), rolled with sampled actions as the replay
sources are. v1's safe episodes are the expert's with weaker torques (returns up to ~2,300 on HalfCheetah); the
learner's run steadily under the threshold (up to ~2,800), as DSRL's safe episodes do. v3 is DSRL's recipe alone:
the learner's snapshots without v1's fixed sources, 20k transitions each, under the same cap. On Hopper the fixed
sources (short, fast episodes: 75-92% of their states over the threshold) made 57.8% of v2's states costly and the
offline Q-learning methods' dataset-state constraint infeasible (a floor of 9.87 against d = 4.0; docs/safe.md),
where DSRL's data is the swept learner's episodes only (reference A3). v4 is v3's recipe on a second learner
whose budget sweep has DSRL's shape (reference A3: the start budget held for the first 27% of the epochs, annealed
to the end budget by 83%): 250 held for 160k of 600k env steps, annealed to 10 by 500k, held there (`ctrlbench
datasets train-lagrangian --env hopper --steps 600000 --anneal-start 160000 --anneal-end 500000 --folder
lagrangian-dsrl --snapshot-every 20000 --first-snapshot 100000`; the schedule is in its manifest). v3's learner
(150k steps, its budget falling from the first update) never ran fast, so v3 lacks the fast, costly gaits of DSRL's
data, and BC-All was safe on it (docs/safe.md). v5 weighs v4's learner as DSRL weighs its own: a fixed number of
whole episodes per snapshot (40; DSRL logs 2 test episodes per epoch, reference A3) where v4 rolled a fixed number of
transitions, which gave a snapshot whose hopper falls ~150 short episodes and one that runs ~20, so falling starts
filled v4's states. v6 is v5's episodes (the same seeds) without the cap: DSRL's learner held its own cost within
250, but this one's fast snapshots did not (returns up to ~2,400 at costs up to ~980), so the cap dropped exactly the
fast, costly gaits; v6's episodes within a budget are v5's.

Metadata, as DSRL's `dsrl/infos.py`: `ref_min_score` / `ref_max_score` are the minimum and maximum episode reward
of the data (MIN/MAX_EPISODE_REWARD; the offline safe tasks normalize rewards with them), `cost_min_score` /
`cost_max_score` the episode cost range, and the recipe with every policy's hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from algorithms.core.errors import CtrlbenchError
from algorithms.core.nets import TanhGaussianActor
from tasks.behavior import POLICIES_DIR, file_sha256, load_actor
from tasks.datasets import Episode, dataset_exists, write_minari_dataset
from tasks.envs import VELOCITY_ID, suite_env_id
from tasks.factory import BatchPolicy, BehaviorPolicies, collect, noise_driven, sampled_policy

KIND = "velocity"
SOURCE_STEPS = 10_000  # transitions per source policy
SKIPPED_SNAPSHOTS = 1 / 3  # the first third of the learner's snapshots (standing still) is left out: see above
LAGRANGIAN_DIR = "lagrangian"  # under tasks/policies/<robot>/: runners/swept_lagrangian.py writes it by default
# the largest episode cost in DSRL's velocity datasets (dsrl/infos.py; reference A2): v1 keeps the episodes within it
DSRL_MAX_EPISODE_COST = {"hopper": 250.0, "halfcheetah": 250.0, "walker2d": 300.0, "ant": 250.0, "swimmer": 200.0}


@dataclass(frozen=True)
class LearnerSchedule:
    """A `ctrlbench datasets train-lagrangian` run (the command's defaults are these): the build checks the learner's
    manifest against its update count and budget schedule (`budget()`), so a learner retrained under another one
    cannot pass for the version's, and a missing learner's hint retrains the same one. The snapshot spacing is not
    checked: the manifest lists the snapshots the build rolls, whatever their spacing."""

    steps: int = 150_000
    kappa_start: float = 250.0
    kappa_end: float = 10.0
    anneal_start: int = 0
    anneal_end: int | None = None  # None: the last update
    snapshot_every: int = 10_000
    first_snapshot: int = 30_000

    def __post_init__(self) -> None:
        if self.steps < 1 or self.snapshot_every < 1 or self.first_snapshot < 0:
            raise CtrlbenchError("steps and snapshot_every must be >= 1 and first_snapshot >= 0")
        if self.kappa_start < 0 or self.kappa_end < 0:
            raise CtrlbenchError(f"budgets must be >= 0, got {self.kappa_start:g} -> {self.kappa_end:g}")
        if not 0 <= self.anneal_start <= self.last_anneal <= self.steps:
            raise CtrlbenchError(f"the anneal must lie within the updates: 0 <= start <= end <= {self.steps}, got "
                                 f"{self.anneal_start} .. {self.last_anneal}")

    @property
    def last_anneal(self) -> int:
        return self.steps if self.anneal_end is None else self.anneal_end

    def kappa_at(self, step: int) -> float:
        """The budget of update `step`: the start budget until `anneal_start`, linear to the end budget at
        `anneal_end`, then held (DSRL's shape; the anneal spans the run by default)."""
        span = self.last_anneal - self.anneal_start
        return self.kappa_start + (self.kappa_end - self.kappa_start) * min(max(step - self.anneal_start, 0),
                                                                            span) / max(span, 1)

    def flags(self) -> str:
        """The command-line flags that differ from the command's defaults."""
        default = LearnerSchedule()
        return " ".join(f"--{f.name.replace('_', '-')} {getattr(self, f.name)}" for f in fields(self)
                        if getattr(self, f.name) != getattr(default, f.name))

    def budget(self) -> dict[str, float]:
        return {"updates": self.steps, "start": self.kappa_start, "end": self.kappa_end,
                "anneal_start": self.anneal_start, "anneal_end": self.last_anneal}


def manifest_budget(manifest: dict) -> dict[str, float]:
    """The schedule a learner's manifest records (its writer omits the anneal when the anneal spans the run)."""
    schedule, updates = manifest.get("budget_schedule", {}), manifest.get("updates")
    return {"updates": updates, "start": schedule.get("start"), "end": schedule.get("end"),
            "anneal_start": schedule.get("anneal_start", 0), "anneal_end": schedule.get("anneal_end", updates)}


@dataclass(frozen=True)
class VelocityRecipe:
    action_scales: tuple[float, ...]  # c of expert-c: the factor on the expert's actions
    stream: int  # the seed stream of the version's episodes (the locomotion kinds use 11-14)
    dsrl_cost_cap: bool  # drop the episodes costing more than DSRL_MAX_EPISODE_COST[robot]
    lagrangian: bool = False  # add the budget-swept Lagrangian learner's snapshots (under learner_dir)
    fixed_sources: bool = True  # roll the replay snapshots and the scaled expert (v3: the learner's snapshots alone)
    source_steps: int = SOURCE_STEPS  # transitions per source, before the cost cap
    learner_dir: str = LAGRANGIAN_DIR  # the learner's folder under tasks/policies/<robot>/ (v4: "lagrangian-dsrl")
    learner: LearnerSchedule = LearnerSchedule()  # the run its snapshots come from (checked against its manifest)
    source_episodes: int = 0  # > 0: each source rolls this many whole episodes instead of `source_steps` transitions
    keep_costly: bool = False  # v6: v1-on's whole-episode layout, but no episode dropped for its cost


# the DSRL-shaped learner's schedule (tasks/policies/hopper/lagrangian-dsrl/manifest.json), v4's to v6's
DSRL_SHAPED = LearnerSchedule(steps=600_000, anneal_start=160_000, anneal_end=500_000, snapshot_every=20_000,
                              first_snapshot=100_000)
# v5: the DSRL-shaped learner's snapshots, 40 whole episodes each (DSRL's per-epoch test episodes), under the cap
V5 = VelocityRecipe((), stream=36, dsrl_cost_cap=True, lagrangian=True, fixed_sources=False,
                    learner_dir="lagrangian-dsrl", learner=DSRL_SHAPED, source_episodes=40)
V1_SCALES = (0.5, 0.52, 0.53, 0.54, 0.55, 0.56, 0.57, 0.58, 0.6, 0.7, 0.85, 1.0)
RECIPES = {0: VelocityRecipe((0.5, 0.53, 0.56, 0.6, 0.7, 0.85, 1.0), stream=31, dsrl_cost_cap=False),
           1: VelocityRecipe(V1_SCALES, stream=32, dsrl_cost_cap=True),
           2: VelocityRecipe(V1_SCALES, stream=33, dsrl_cost_cap=True, lagrangian=True),
           3: VelocityRecipe((), stream=34, dsrl_cost_cap=True, lagrangian=True, fixed_sources=False,
                             source_steps=2 * SOURCE_STEPS),
           4: VelocityRecipe((), stream=35, dsrl_cost_cap=True, lagrangian=True, fixed_sources=False,
                             source_steps=2 * SOURCE_STEPS, learner_dir="lagrangian-dsrl",
                             learner=DSRL_SHAPED),
           5: V5,
           6: replace(V5, keep_costly=True)}  # v5's episodes (the same stream), none dropped for its cost
LATEST = 1


def recipe_of(version: int) -> VelocityRecipe:
    if version not in RECIPES:
        raise CtrlbenchError(f"unknown velocity dataset version {version}; known: "
                             f"{', '.join(f'v{v}' for v in RECIPES)}")
    return RECIPES[version]


def velocity_dataset_id(robot: str, version: int = LATEST) -> str:
    recipe_of(version)  # a one-line error on an unknown version
    return f"ctrlbench/{robot}/{KIND}-v{version}"


def velocity_build_kind(version: int) -> str:
    """The `ctrlbench datasets build <robot> --kinds ...` value of a version: `velocity` builds the latest."""
    recipe_of(version)
    return KIND if version == LATEST else f"{KIND}-v{version}"


def version_of_kind(kind: str) -> int:
    """The version a `--kinds` value names (`velocity`: the latest; `velocity-v<n>`: v<n>), or a one-line error."""
    for version in RECIPES:
        if kind in (velocity_build_kind(version), f"{KIND}-v{version}"):
            return version
    raise CtrlbenchError(f"unknown velocity dataset kind {kind!r}; known: "
                         f"{', '.join(velocity_build_kind(v) for v in RECIPES)}")


def make_velocity_env(robot: str):
    import gymnasium as gym

    return lambda: gym.make(suite_env_id(VELOCITY_ID), robot=robot)


def scaled(policy: BatchPolicy, c: float) -> BatchPolicy:
    """The policy's (sampled) action times c: the same gait with weaker torques."""
    return lambda obs, rngs: (c * policy(obs, rngs)).astype(np.float32)


def sac_core_sampled_policy(state: dict[str, torch.Tensor], max_action: float) -> BatchPolicy:
    """Actions sampled from a snapshot of the suite's SAC actor (algorithms/core/nets.py TanhGaussianActor:
    max_action tanh(mean + std noise)), the noise drawn from each episode's RNG as `sampled_policy` draws it."""
    act_dim = state[f"net.{last_layer(state)}.bias"].shape[0] // 2
    hidden = [state[f"net.{i}.weight"].shape[0] for i in range(0, last_layer(state), 2)]
    actor = TanhGaussianActor(state["net.0.weight"].shape[1], act_dim, max_action, hidden)
    actor.load_state_dict(state)
    actor.eval()

    @torch.no_grad()
    def act(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        mean, log_std = actor.gaussian(actor.net(torch.as_tensor(np.asarray(obs, dtype=np.float32))))
        return (max_action * torch.tanh(mean + log_std.exp() * torch.as_tensor(noise))).numpy()

    return noise_driven(act_dim, act)


def last_layer(state: dict[str, torch.Tensor]) -> int:
    """The index of the last Linear of an `mlp` state dict (net.0, net.2, ...: Linear and ReLU alternate)."""
    return max(int(k.split(".")[1]) for k in state if k.startswith("net.") and k.endswith(".weight"))


def lagrangian_sources(robot: str, policies: BehaviorPolicies, max_action: float, recipe: VelocityRecipe
                       ) -> list[tuple[str, BatchPolicy, dict]]:
    """The budget-swept learner's snapshots, checked against their manifest, each rolled with sampled actions."""
    learner_dir = recipe.learner_dir
    folder = policies.folder / learner_dir
    manifest_path = folder / "manifest.json"
    flags = "".join(f" {f}" for f in (recipe.learner.flags(), f"--folder {learner_dir}"
                                      if learner_dir != LAGRANGIAN_DIR else "") if f)
    command = f"`ctrlbench datasets train-lagrangian --env {robot}{flags}`"
    if not manifest_path.exists():
        raise CtrlbenchError(f"no budget-swept Lagrangian learner for {robot} under {folder}; train it with {command}")
    manifest = json.loads(manifest_path.read_text())
    if manifest_budget(manifest) != recipe.learner.budget():
        raise CtrlbenchError(f"{manifest_path} records the schedule {manifest_budget(manifest)}, not this version's "
                             f"{recipe.learner.budget()}; move that learner away and retrain it with {command}")
    out = []
    for entry in manifest["snapshots"]:
        path = folder / entry["file"]
        if not path.exists() or file_sha256(path) != entry["sha256"]:
            raise CtrlbenchError(f"{path} is missing or does not match its manifest's hash")
        state = torch.load(path, map_location="cpu", weights_only=True)
        out.append((f"lag-{entry['env_steps']}", sac_core_sampled_policy(state, max_action),
                    {"policy": f"tasks/policies/{robot}/{learner_dir}/{entry['file']}",
                     "policy_sha256": entry["sha256"], "learner_budget": entry["kappa"]}))
    return out


def sources(robot: str, policies: BehaviorPolicies, action_scales: tuple[float, ...]
            ) -> list[tuple[str, BatchPolicy, dict]]:
    """(name, policy, recipe entry) of every source, in the order the dataset holds them."""

    out: list[tuple[str, BatchPolicy, dict]] = []
    snapshots = sorted(policies.manifest["replay_snapshots"], key=lambda e: e["env_steps"])
    for entry in snapshots[int(len(snapshots) * SKIPPED_SNAPSHOTS):]:
        out.append((f"replay-{entry['env_steps']}", sampled_policy(load_actor(policies.folder / entry["file"])),
                    {"policy": f"tasks/policies/{robot}/{entry['file']}", "policy_sha256": entry["sha256"]}))
    expert = sampled_policy(policies.actor("expert"))
    for c in action_scales:
        out.append((f"expert-{c:g}", scaled(expert, c), {**policies.recipe("expert"), "action_scale": c}))
    return out


def episode_stats(episodes: list[Episode]) -> dict[str, float]:
    """A source's entry in the metadata: its episodes, their reward mean and cost range."""
    if not episodes:
        return {"episodes": 0}
    rewards = np.array([ep.rewards.sum() for ep in episodes])
    costs = np.array([ep.costs.sum() for ep in episodes])
    return {"episodes": len(episodes), "reward_mean": float(rewards.mean()), "cost_mean": float(costs.mean()),
            "cost_min": float(costs.min()), "cost_max": float(costs.max())}


def whole(episode: Episode, horizon: int) -> bool:
    """Whether an episode ended by itself or at the time limit: `collect` cuts a source's last episode to fit its
    transition count, and a cost cap must judge whole episodes (a cut piece of a costly gait could pass it)."""
    return bool(episode.terminations[-1]) or len(episode.rewards) >= horizon


def build(robot: str, seed: int = 0, overwrite: bool = False, source_steps: int | None = None,
          policies_dir: Path = POLICIES_DIR, version: int = LATEST, source_episodes: int | None = None) -> str:
    """Roll every source of the version's recipe and write the dataset; `source_steps` (`source_episodes`, for a
    recipe that counts episodes) overrides the recipe's transitions (episodes) per source (the tests' tiny builds)."""
    recipe_spec = recipe_of(version)
    source_steps = recipe_spec.source_steps if source_steps is None else source_steps
    source_episodes = recipe_spec.source_episodes if source_episodes is None else source_episodes
    if recipe_spec.source_episodes and source_episodes < 1:
        raise CtrlbenchError(f"source_episodes must be >= 1, got {source_episodes}")
    did = velocity_dataset_id(robot, version)
    if dataset_exists(did) and not overwrite:
        raise CtrlbenchError(f"dataset {did} already exists; pass --overwrite to rebuild it")
    if source_steps < 1:
        raise CtrlbenchError(f"source_steps must be >= 1, got {source_steps}")
    policies = BehaviorPolicies.load(robot, policies_dir)  # a one-line error for a robot without policies
    if recipe_spec.dsrl_cost_cap and robot not in DSRL_MAX_EPISODE_COST:
        raise CtrlbenchError(f"no DSRL cost range for {robot!r}; known: {', '.join(DSRL_MAX_EPISODE_COST)}")
    cap = DSRL_MAX_EPISODE_COST[robot] if recipe_spec.dsrl_cost_cap and not recipe_spec.keep_costly else float("inf")
    make = make_velocity_env(robot)
    env = make()  # the dataset's env (written into it below); its time limit tells a whole episode from a cut one
    horizon = env.spec.max_episode_steps
    episodes: list[Episode] = []
    recipe: dict[str, dict] = {}
    every = sources(robot, policies, recipe_spec.action_scales) if recipe_spec.fixed_sources else []
    if recipe_spec.lagrangian:
        every += lagrangian_sources(robot, policies, float(env.action_space.high.flat[0]), recipe_spec)
    for k, (name, policy, entry) in enumerate(every):
        rolled = collect(robot, policy, source_steps, seed, recipe_spec.stream * 1000 + k, make_env=make,
                         episodes=source_episodes if recipe_spec.source_episodes else None)
        eps = [ep for ep in rolled if ep.costs.sum() <= cap and (not recipe_spec.dsrl_cost_cap or whole(ep, horizon))]
        episodes += eps
        recipe[name] = {**entry, **episode_stats(eps)}
        if recipe_spec.dsrl_cost_cap:  # (v0's metadata, and so its records' ids, stay as they were)
            recipe[name]["episodes_rolled"] = len(rolled)
        stats = (f"reward {recipe[name]['reward_mean']:8.1f}  cost {recipe[name]['cost_mean']:6.1f} "
                 f"(min {recipe[name]['cost_min']:.0f}, max {recipe[name]['cost_max']:.0f})" if eps else "")
        print(f"  {name:14s} {len(eps):4d} of {len(rolled):3d} episodes  {stats}", flush=True)
    if not episodes:
        raise CtrlbenchError(f"no episode of {robot}'s sources costs at most {cap:g}: nothing to write")
    rewards = np.array([ep.rewards.sum() for ep in episodes])
    costs = np.array([ep.costs.sum() for ep in episodes])
    write_minari_dataset(
        did, episodes, env, eval_env=make(), ref_min_score=float(rewards.min()), ref_max_score=float(rewards.max()),
        algorithm_name=("committed SAC snapshots, and the expert with scaled actions, in the velocity-v1 env"
                        + (", and a budget-swept SAC-Lagrangian learner's snapshots" if recipe_spec.lagrangian else "")
                        if recipe_spec.fixed_sources  # (v0-v2's words kept: the metadata is part of the records' ids)
                        else "a budget-swept SAC-Lagrangian learner's snapshots in the velocity-v1 env"),
        description=f"ctrlbench cost-labelled {robot} velocity dataset: {len(episodes)} episodes across the "
                    "reward-cost trade-off (DSRL-style)"
                    + (f", each costing at most {cap:g} (DSRL's range)" if cap < float("inf") else ""),
        extra_metadata={"cost_min_score": float(costs.min()), "cost_max_score": float(costs.max()),
                        "ctrlbench_recipe": {"builder": "tasks.safe_datasets", "robot": robot, "seed": seed,
                                             **({"source_episodes": source_episodes} if recipe_spec.source_episodes
                                                else {"source_steps": source_steps}),
                                             **({"version": version,
                                                 "max_episode_cost": cap if cap < float("inf") else None}
                                                if recipe_spec.dsrl_cost_cap else {}),
                                             "sources": recipe}},
        overwrite=overwrite,
    )
    return did
