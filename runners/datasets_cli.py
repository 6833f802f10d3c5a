"""`ctrlbench datasets ...`: build, list, inspect, download and train behavior policies."""

from __future__ import annotations

import argparse
from pathlib import Path

from algorithms.core.errors import CtrlbenchError


def add_parser(sub: argparse._SubParsersAction) -> None:
    build = sub.add_parser("build", help="build datasets offline: `smoke`, or an env with --kinds")
    build.add_argument("env", help="smoke | hopper | halfcheetah | walker2d")
    build.add_argument("--kinds", default="random,medium,expert,medium-replay,medium-expert",
                       help="comma-separated kinds (default: all five), or `velocity`: the cost-labelled dataset of "
                       "the offline safe tasks (tasks/safe_datasets.py; `velocity-v0` its first version)")
    build.add_argument("--size", type=int, default=1_000_000,
                       help="transitions for random/medium/expert (default: 1M, as D4RL)")
    build.add_argument("--replay-size", type=int, default=None,
                       help="cap medium-replay at this many transitions (default: everything up to the medium point)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--overwrite", action="store_true")
    sub.add_parser("list", help="registered datasets, whether they are built, their size")
    info = sub.add_parser("info", help="episodes, steps, return statistics and reference scores of a dataset")
    info.add_argument("dataset_id")
    table = sub.add_parser("table", help="Markdown table of the built datasets (for docs/datasets.md)")
    table.add_argument("--env", help="only this environment")
    download = sub.add_parser("download", help="download a hosted Minari dataset (needs network access)")
    download.add_argument("dataset_id")
    train = sub.add_parser("train-policies", help="train SAC behavior policies (hours of CPU; resumable)")
    train.add_argument("--env", required=True, help="hopper | halfcheetah | walker2d")
    train.add_argument("--steps", type=int, default=1_000_000, help="total SAC env steps (default: %(default)s)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--snapshot-every", type=int, default=10_000)
    train.add_argument("--threads", type=int, default=1, help="torch threads for this training process")
    train.add_argument("--select", action="store_true",
                       help="after training, pick expert/medium snapshots and write the policies folder")
    train.add_argument("--select-only", action="store_true", help="only pick expert/medium from existing snapshots")
    lag = sub.add_parser("train-lagrangian",
                         help="train the budget-swept SAC-Lagrangian learner whose snapshots velocity-v2 to v6 roll "
                              "(DSRL's recipe; about an hour of one core; resumable)")
    lag.add_argument("--env", required=True,
                     help="a velocity robot with committed behavior policies (learners committed: halfcheetah, hopper)")
    lag.add_argument("--steps", type=int, default=150_000, help="env steps = updates (default: %(default)s)")
    lag.add_argument("--kappa-start", type=float, default=250.0, help="budget at the first update (DSRL: 250)")
    lag.add_argument("--kappa-end", type=float, default=10.0, help="budget at the last update (DSRL: 10)")
    lag.add_argument("--anneal-start", type=int, default=0,
                     help="update at which the budget starts to move (default: 0; DSRL: 27%% of its epochs)")
    lag.add_argument("--anneal-end", type=int, default=None,
                     help="update at which it reaches --kappa-end (default: the last; DSRL: 83%% of its epochs)")
    lag.add_argument("--folder", default=None,
                     help="folder under tasks/policies/<env>/ for the snapshots (default: lagrangian, the learner "
                          "velocity-v2 and v3 roll; v4 to v6 roll lagrangian-dsrl)")
    lag.add_argument("--snapshot-every", type=int, default=10_000)
    lag.add_argument("--first-snapshot", type=int, default=30_000, help="no snapshot before this many env steps")
    lag.add_argument("--seed", type=int, default=0)
    lag.add_argument("--threads", type=int, default=1, help="torch threads for this training process")
    lag.add_argument("--checkpoints", type=Path, default=None,
                     help="folder of the resumable checkpoint (default: $CTRLBENCH_CHECKPOINTS, else "
                          "~/.cache/ctrlbench/checkpoints)")


def run(args: argparse.Namespace) -> int:
    return {"build": _build, "list": _list, "info": _info, "download": _download, "table": _table,
            "train-policies": _train, "train-lagrangian": _train_lagrangian}[args.action](args)


def _build(args: argparse.Namespace) -> int:
    from tasks.datasets import dataset_dir, dataset_exists

    if args.env == "smoke":
        from tasks import smoke

        ids = (smoke.DATASET_ID, smoke.COST_DATASET_ID)
        if all(dataset_exists(d) for d in ids) and not args.overwrite:
            print(f"{' and '.join(ids)} already built under {dataset_dir('')}")
            return 0
        smoke.build(overwrite=args.overwrite)
        print(f"built {' and '.join(ids)} under {dataset_dir('')}")
        return 0
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if any(k == "velocity" or k.startswith("velocity-") for k in kinds):
        from tasks import safe_datasets

        if len(kinds) != 1:
            raise CtrlbenchError("build a cost-labelled dataset on its own: --kinds velocity (or velocity-v0)")
        version = safe_datasets.version_of_kind(kinds[0])
        print(f"built {safe_datasets.build(args.env, seed=args.seed, overwrite=args.overwrite, version=version)}")
        return 0
    from tasks.factory import build

    build(args.env, kinds, size=args.size, seed=args.seed, overwrite=args.overwrite, replay_size=args.replay_size)
    return 0


def _list(args: argparse.Namespace) -> int:
    from tasks.datasets import dataset_dir, dataset_exists, read_metadata
    from tasks.registry import available_tasks

    for t in available_tasks().values():
        if not t.dataset_id:
            continue
        if dataset_exists(t.dataset_id):
            try:
                meta = read_metadata(t.dataset_id)
                state = f"built: {meta['total_episodes']} episodes, {meta['total_steps']} steps"
            except (OSError, ValueError, KeyError, TypeError) as e:  # one bad dataset never hides the list
                state = (f"corrupt: metadata.json cannot be read ({type(e).__name__}); "
                         f"rebuild it with `{t.build_command} --overwrite`")
        else:
            state = f"not built ({t.build_command})"
        print(f"{t.dataset_id:36s} task {t.id:28s} {state}")
    print(f"datasets root: {dataset_dir('')}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from tasks.datasets import load_transitions

    loaded = load_transitions(args.dataset_id)
    data, meta = loaded.transitions, loaded.metadata
    returns = data.episode_returns()
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    print(f"dataset        {args.dataset_id}")
    print(f"episodes       {len(returns)}")
    print(f"transitions    {len(data)} (terminal: {int(data.terminals.sum())})")
    print(f"return         mean {returns.mean():.1f} +- {returns.std():.1f}, min {returns.min():.1f}, "
          f"max {returns.max():.1f}")
    print(f"ref_min_score  {lo}")
    print(f"ref_max_score  {hi}")
    if lo is not None and hi is not None:
        norm = 100 * (returns - lo) / (hi - lo)
        print(f"normalized     {norm.mean():.1f} +- {norm.std():.1f}")
    if "ctrlbench_recipe" in meta:
        recipe = meta["ctrlbench_recipe"]
        print("recipe         " + ", ".join(f"{k}={v}" for k, v in recipe.items() if not isinstance(v, dict)))
    print(f"metadata hash  {loaded.metadata_hash}")
    return 0


def _table(args: argparse.Namespace) -> int:
    """Per built dataset: episodes, transitions, return mean +- std, normalized mean +- std, provenance."""
    from tasks.datasets import dataset_exists, load_transitions
    from tasks.locomotion import ENVS, KINDS, dataset_id

    print("| dataset | episodes | transitions | return | normalized | behavior |")
    print("|---|---|---|---|---|---|")
    for env in [args.env] if args.env else list(ENVS):
        for kind in KINDS:
            did = dataset_id(env, kind)
            if not dataset_exists(did):
                continue
            loaded = load_transitions(did)
            returns = loaded.transitions.episode_returns()
            lo, hi = loaded.metadata["ref_min_score"], loaded.metadata["ref_max_score"]
            norm = 100 * (returns - lo) / (hi - lo)
            recipe = loaded.metadata.get("ctrlbench_recipe", {})
            steps = {w: p["policy_env_steps"] for w, p in recipe.get("policies", {}).items()}
            how = {"random": "uniform random actions",
                   "medium": f"SAC snapshot at {steps.get('medium', '?')} env steps, sampled actions",
                   "expert": f"SAC snapshot at {steps.get('expert', '?')} env steps, sampled actions",
                   "medium-replay": f"SAC learner's experience up to {steps.get('medium', '?')} env steps",
                   "medium-expert": "medium + expert"}[kind]
            print(f"| {did} | {len(returns)} | {len(loaded.transitions)} | {returns.mean():.1f} ± "
                  f"{returns.std():.1f} | {norm.mean():.1f} ± {norm.std():.1f} | {how} |")
    return 0


def _download(args: argparse.Namespace) -> int:
    import minari

    try:
        minari.download_dataset(args.dataset_id)
    except Exception as e:  # network errors come in many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CtrlbenchError(f"could not download {args.dataset_id} ({first[:200]}); this machine may be "
                             "offline: build datasets locally with `ctrlbench datasets build ENV`") from None
    print(f"downloaded {args.dataset_id}")
    return 0


def _train_lagrangian(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from runners.run_lock import checkpoints_from_env
    from runners.swept_lagrangian import train
    from tasks.behavior import POLICIES_DIR
    from tasks.safe_datasets import LAGRANGIAN_DIR, LearnerSchedule

    work = checkpoints_from_env(args.checkpoints) or Path.home() / ".cache" / "ctrlbench" / "checkpoints"
    folder = args.folder or LAGRANGIAN_DIR
    if Path(folder).name != folder or folder in (".", ".."):
        raise CtrlbenchError(f"--folder must be a plain folder name, got {folder!r}")
    schedule = LearnerSchedule(**{f.name: getattr(args, f.name) for f in fields(LearnerSchedule)})
    train(args.env, POLICIES_DIR / args.env / folder, work, schedule, seed=args.seed, threads=args.threads)
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from tasks.behavior import TrainSettings, select, train
    from tasks.locomotion import env_id

    env_id(args.env)
    if args.steps < 1 or args.snapshot_every < 1:
        raise CtrlbenchError("--steps and --snapshot-every must be positive")
    torch.set_num_threads(args.threads)
    if not args.select_only:
        train(TrainSettings(env=args.env, total_steps=args.steps, seed=args.seed, snapshot_every=args.snapshot_every))
    if args.select or args.select_only:
        select(args.env)
    return 0


