"""The `ctrlbench` command line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from pathlib import Path
from typing import NoReturn

from algorithms.core.errors import CtrlbenchError
from runners.run_lock import checkpoints_from_env

DEMO_TASK = "hopper-medium-v0"  # built on the fly (50k transitions) from the committed behavior policies


class _Parser(argparse.ArgumentParser):
    """Bad usage is one line on stderr and exit code 2, never a traceback or a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ctrlbench: error: {message} (see `{self.prog} --help`)\n")


CHECKPOINTS_HELP = ("folder for resumable checkpoints and run locks, e.g. scratch space that outlives the results "
                    "folder's checkout (default: $CTRLBENCH_CHECKPOINTS, else <results>/checkpoints)")


def _add_run_protocol(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=1_000_000, help="gradient updates (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=5_000, help="updates between curve evaluations")
    p.add_argument("--eval-every-env-steps", type=int, default=0,
                   help="also evaluate when the env steps pass each multiple of this (online phases; 0: never)")
    p.add_argument("--eval-episodes", type=int, default=50, help="episodes of the final evaluation")
    p.add_argument("--curve-episodes", type=int, default=10, help="episodes of each evaluation during training")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results directory (default: results)")
    p.add_argument("--checkpoint-every", type=int, default=10_000, help="updates between resumable checkpoints")
    p.add_argument("--checkpoints", type=Path, help=CHECKPOINTS_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing record of the same run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores; use 1 per run when runs share a machine)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay whole updates from captured CUDA graphs (GPU; algorithms that support it)")


def _add_algo_fields(parser: argparse.ArgumentParser, algo_cls: type) -> None:
    from algorithms.core.config import _base_type, field_help

    cfg = algo_cls.Config
    helps = field_help(cfg)
    hints = typing.get_type_hints(cfg)
    group = parser.add_argument_group(f"{algo_cls.name} config (defaults are the paper's)")
    for f in dataclasses.fields(cfg):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = f"{helps.get(f.name, '')} (default: {shown})".replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        if _base_type(hints[f.name]) is bool:
            group.add_argument(flag, dest=f"cfg.{f.name}", action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(flag, dest=f"cfg.{f.name}", default=argparse.SUPPRESS, metavar="V", help=text)


def cmd_run(argv: list[str]) -> int:
    from algorithms.core.config import load_yaml_config
    from algorithms.core.registry import get_algorithm, load_algo_module
    from runners.run import RunRequest, execute

    pre = _Parser(prog="ctrlbench run", add_help=False)
    pre.add_argument("--algo")
    pre.add_argument("--algo-module", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    for path in known.algo_module:
        load_algo_module(path)
    algo_cls = get_algorithm(known.algo) if known.algo else None

    parser = _Parser(prog="ctrlbench run", description="Train one algorithm on one task with one seed.")
    parser.add_argument("--algo", required=True, help="algorithm name (`ctrlbench list algorithms`)")
    parser.add_argument("--task", required=True, help="task id (`ctrlbench list tasks`)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, help="YAML file of algorithm config values")
    parser.add_argument("--algo-module", action="append", default=[], help="a .py file that registers an algorithm")
    _add_run_protocol(parser)
    if algo_cls is not None:
        _add_algo_fields(parser, algo_cls)
    args = parser.parse_args(argv)
    cli_cfg = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg.")}
    req = RunRequest(
        algo=args.algo, task=args.task, seed=args.seed, steps=args.steps, eval_every=args.eval_every,
        eval_every_env_steps=args.eval_every_env_steps, eval_episodes=args.eval_episodes,
        curve_episodes=args.curve_episodes, device=args.device,
        results=args.results, checkpoint_every=args.checkpoint_every,
        checkpoints=checkpoints_from_env(args.checkpoints),
        overwrite=args.overwrite,
        progress=False if args.no_progress else None, threads=args.threads, cuda_graphs=args.cuda_graphs,
        config_file=load_yaml_config(args.config) if args.config else {}, config_cli=cli_cfg,
    )
    record = execute(req)
    final = record["final"]
    print(f"{record['run_id']}: final score {final['score_mean']:.1f} +- {final['score_std']:.1f} "
          f"(return {final['return_mean']:.1f}, {len(final['returns'])} episodes) -> "
          f"{req.results / 'runs' / (record['run_id'] + '.json')}")
    return 0


def cmd_list(argv: list[str]) -> int:
    parser = _Parser(prog="ctrlbench list", description="List registered algorithms or tasks.")
    parser.add_argument("what", choices=["algorithms", "tasks"])
    parser.add_argument("--algo-module", action="append", default=[])
    args = parser.parse_args(argv)
    if args.what == "algorithms":
        from algorithms.core.registry import available, load_algo_module

        for path in args.algo_module:
            load_algo_module(path)
        for name, cls in available().items():
            doc = ((cls.__module__ and sys.modules[cls.__module__].__doc__) or "").strip().splitlines()
            print(f"{name:12s} kinds={','.join(cls.kinds):20s} {doc[0] if doc else ''}")
    else:
        from tasks.datasets import dataset_exists
        from tasks.registry import available_tasks

        for tid, t in available_tasks().items():
            built = "built" if t.dataset_id is None or dataset_exists(t.dataset_id) else "not built"
            extra = {"sim-to-real": f"  sim: {t.gap}", "safe": f"  cost budget {t.cost_limit}",
                     "offline-safe": f"  cost budget {t.cost_limit}",
                     "multi-objective": f"  {t.reward_dim} objectives, {len(t.preference_weights)} weights"}
            print(f"{tid:28s} kind={t.kind:17s} dataset={t.dataset_id} ({built}){extra.get(t.kind, '')}")
    return 0


def _csv(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def cmd_leaderboard(argv: list[str]) -> int:
    from leaderboard.report import update_readme, write_leaderboard

    parser = _Parser(prog="ctrlbench leaderboard", description="Tables, figures and a page from the records alone.")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, help="output directory (default: <results>/leaderboard)")
    parser.add_argument("--algos", help="only these algorithms (comma-separated)")
    parser.add_argument("--tasks", help="only these tasks (comma-separated)")
    parser.add_argument("--kinds", help="only these task kinds (offline, safe, multi-objective, ...)")
    parser.add_argument("--no-plots", action="store_true", help="skip the figures")
    parser.add_argument("--readme", type=Path, help="also replace the leaderboard section of this README")
    args = parser.parse_args(argv)
    if not any(args.results.glob("**/runs/*.json")):
        raise CtrlbenchError(f"no records under {args.results}; run `ctrlbench run` or `ctrlbench sweep`")
    report = write_leaderboard(args.results, args.out or args.results / "leaderboard", _csv(args.algos),
                               _csv(args.tasks), _csv(args.kinds), plots=not args.no_plots)
    if args.readme:
        try:
            update_readme(args.readme, report.markdown)
        except ValueError as e:
            raise CtrlbenchError(str(e)) from None
    print(report.markdown)
    _note_failures(args.results)
    print(f"\nwrote {len(report.files)} files to {(args.out or args.results / 'leaderboard')}")
    return 0


def _note_failures(results: Path) -> None:
    """One line naming the failed runs below `results`: never a score, but a reader of the table should know."""
    from leaderboard.records import load_failures

    failed = load_failures(results)
    if failed:
        names = ", ".join(r["run_id"] for r in failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        print(f"\nnot scored: {len(failed)} failed run(s), recorded under failed/: {names}")


def cmd_datasets(argv: list[str]) -> int:
    from runners import datasets_cli

    parser = _Parser(prog="ctrlbench datasets", description="Build and inspect Minari datasets.")
    datasets_cli.add_parser(parser.add_subparsers(dest="action", required=True, parser_class=_Parser))
    return datasets_cli.run(parser.parse_args(argv))


def cmd_demo(argv: list[str]) -> int:
    """The README's first command: build the default task's dataset, train BC and TD3+BC briefly, rank them."""
    from leaderboard.report import write_leaderboard
    from runners.run import RunRequest, execute
    from tasks.datasets import dataset_exists
    from tasks.registry import get_task

    parser = _Parser(prog="ctrlbench demo", description="Build the default task, train BC and TD3+BC, rank.")
    parser.add_argument("--task", default=DEMO_TASK)
    parser.add_argument("--size", type=int, default=50_000, help="transitions of the demo dataset")
    parser.add_argument("--algos", default="bc,td3_bc")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--results", type=Path, default=Path("results/demo"))
    args = parser.parse_args(argv)
    task = get_task(args.task)
    if task.dataset_id and not dataset_exists(task.dataset_id):
        if task.family == "locomotion":
            from tasks.factory import build

            env, kind = task.dataset_id.split("/")[1], task.dataset_id.split("/")[2].rsplit("-", 1)[0]
            print(f"building {task.dataset_id} ({args.size} transitions) from the committed behavior policies")
            build(env, [kind], size=args.size)
        else:
            cmd_datasets(task.build_command.split()[2:] if task.build_command else [])
    for algo in args.algos.split(","):
        for seed in range(args.seeds):
            record = execute(RunRequest(algo=algo, task=args.task, seed=seed, steps=args.steps,
                                        eval_every=max(1, args.steps // 2), eval_episodes=args.eval_episodes,
                                        curve_episodes=5, results=args.results, checkpoint_every=args.steps))
            print(f"{algo} seed {seed}: final score {record['final']['score_mean']:.1f}")
    report = write_leaderboard(args.results, args.results / "leaderboard", reps=500)
    print("\n" + report.markdown + f"\n\nleaderboard, figures and page written to {args.results / 'leaderboard'}")
    return 0


def cmd_sweep(argv: list[str]) -> int:
    from runners.sweep import SweepSpec, load_sweep_file, parse_seeds, print_states, run_states, run_sweep, summarize

    parser = _Parser(prog="ctrlbench sweep", description="Algorithms x tasks x seeds, resumable and fault-isolated.")
    parser.add_argument("--file", type=Path, help="YAML sweep file (algos, tasks, seeds, steps, overrides, ...)")
    parser.add_argument("--algos", help="comma-separated algorithm names")
    parser.add_argument("--tasks", help="comma-separated task ids")
    parser.add_argument("--seeds", help="e.g. 0-4 or 0,1,2 (default: 0-2)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--eval-every-env-steps", type=int)
    parser.add_argument("--eval-episodes", type=int)
    parser.add_argument("--curve-episodes", type=int)
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--checkpoints", type=Path, help=CHECKPOINTS_HELP)
    parser.add_argument("--device", help="cpu | cuda (default: cpu)")
    parser.add_argument("--results", type=Path)
    parser.add_argument("--workers", type=int, help="parallel runs (default: one per core; 4 per GPU)")
    parser.add_argument("--backend", default="local", choices=["local", "ray"])
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--gpus-per-run", type=float, help="Ray GPU share per run (default: 0.25 with cuda)")
    parser.add_argument("--algo-module", action="append", default=[])
    parser.add_argument("--cuda-graphs", action="store_true", default=None,
                        help="replay whole updates from captured CUDA graphs (GPU; algorithms that support it)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: the cores split between the "
                        "workers; use 1 on a machine busy with other jobs)")
    parser.add_argument("--status", action="store_true",
                        help="list each run as recorded, running, failed (with its error), partial (its checkpoint's "
                        "update) or pending; train nothing")
    args = parser.parse_args(argv)
    values = load_sweep_file(args.file) if args.file else {}
    for key in ("steps", "eval_every", "eval_every_env_steps", "eval_episodes", "curve_episodes", "checkpoint_every",
                "device", "results", "checkpoints", "cuda_graphs"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    values["checkpoints"] = checkpoints_from_env(values.get("checkpoints"))
    if args.algos:
        values["algos"] = [a.strip() for a in args.algos.split(",") if a.strip()]
    if args.tasks:
        values["tasks"] = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.seeds:
        values["seeds"] = parse_seeds(args.seeds)
    values.setdefault("seeds", [0, 1, 2])
    values["algo_modules"] = values.get("algo_modules", []) + args.algo_module
    if not values.get("algos") or not values.get("tasks"):
        raise CtrlbenchError("a sweep needs --algos and --tasks (or a --file that names them)")
    if args.workers is not None and args.workers < 1:
        raise CtrlbenchError("--workers must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise CtrlbenchError("--threads must be >= 1")
    spec = SweepSpec(**values)
    if args.status:
        print_states(run_states(spec), out=sys.stdout)
        return 0
    results = run_sweep(spec, workers=args.workers, backend=args.backend, address=args.address,
                        gpus_per_run=args.gpus_per_run, threads=args.threads, out=sys.stdout)
    return summarize(results, out=sys.stdout)  # today's stdout, not the one bound when sweep.py was imported


def cmd_check(argv: list[str]) -> int:
    from leaderboard.check import DEFAULT_MARGIN, check, load_bands, write_bands
    from leaderboard.records import load_failures, load_records

    parser = _Parser(prog="ctrlbench check", description="Fail when a score drops below its reference band.")
    parser.add_argument("--results", type=Path, default=Path("results/regression"),
                        help="records to check (default: the committed regression records)")
    parser.add_argument("--bands", type=Path, default=Path("results/regression/bands.json"),
                        help="versioned bands file (default: the committed regression bands)")
    parser.add_argument("--update-bands", action="store_true",
                        help="derive the bands from the records under --results and write --bands")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="band half-width beyond 2 std, in normalized-score points (default: %(default)s)")
    parser.add_argument("--allow-unbanded", action="store_true", help="records without a band do not fail")
    args = parser.parse_args(argv)
    if args.update_bands:
        bands = write_bands(args.results, args.bands, args.margin)
        print(f"wrote {len(bands['bands'])} bands to {args.bands}")
        return 0
    records = load_records(args.results) + load_failures(args.results)  # a failed run in a covered cell fails
    if not records:
        raise CtrlbenchError(f"no records under {args.results / 'runs'} to check")
    result = check(records, load_bands(args.bands))
    print(result.report())
    return 1 if result.failures or (result.unbanded and not args.allow_unbanded) else 0


def cmd_beats(argv: list[str]) -> int:
    from leaderboard.compare import DEFAULT_MIN_SEEDS, compare, report, verdicts
    from leaderboard.records import load_records

    parser = _Parser(prog="ctrlbench beats",
                     description="Does each algorithm beat a baseline by more than the seed spread? "
                                 "(mean difference > sum of the seed stds, per task)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="records to compare")
    parser.add_argument("--baseline", default="bc", help="the algorithm to beat (default: %(default)s)")
    parser.add_argument("--min-tasks", type=int, default=1,
                        help="tasks an algorithm must win to pass (default: %(default)s)")
    parser.add_argument("--min-seeds", type=int, default=DEFAULT_MIN_SEEDS,
                        help="seeds each side needs for a task to count (default: %(default)s)")
    parser.add_argument("--algos", help="only these algorithms (comma-separated)")
    parser.add_argument("--tasks", help="only these tasks (comma-separated)")
    args = parser.parse_args(argv)
    if args.min_seeds < 1 or args.min_tasks < 1:
        raise CtrlbenchError("--min-seeds and --min-tasks must be at least 1")
    records = load_records(args.results)
    if args.algos:
        keep = {a.strip() for a in args.algos.split(",")} | {args.baseline}
        records = [r for r in records if r["algorithm"] in keep]
    if args.tasks:
        keep = {t.strip() for t in args.tasks.split(",")}
        records = [r for r in records if r["task"] in keep]
    comparisons = compare(records, args.baseline)
    if not comparisons:
        raise CtrlbenchError(f"no algorithm under {args.results} shares a task and budget with {args.baseline}")
    print(report(comparisons, args.baseline, args.min_tasks, args.min_seeds))
    _note_failures(args.results)
    return 0 if all(verdicts(comparisons, args.min_tasks, args.min_seeds).values()) else 1


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "check": cmd_check, "beats": cmd_beats, "list": cmd_list,
            "leaderboard": cmd_leaderboard, "datasets": cmd_datasets, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        usage = ("usage: ctrlbench {run,sweep,check,beats,list,leaderboard,datasets,demo} ...\n"
                 "  run          train one algorithm on one task (`ctrlbench run --algo td3_bc --help`)\n"
                 "  sweep        algorithms x tasks x seeds on a process pool or Ray, resumable\n"
                 "  check        score-regression check of records against reference bands\n"
                 "  beats        does each algorithm beat a baseline by more than the seed spread?\n"
                 "  list         list algorithms or tasks\n"
                 "  leaderboard  tables from the result records\n"
                 "  datasets     build and list datasets\n"
                 "  demo         build the default task, train BC and TD3+BC briefly, print the leaderboard\n")
        if argv and argv[0] not in ("-h", "--help"):
            sys.stderr.write(f"ctrlbench: error: unknown command '{argv[0]}'; commands: {', '.join(COMMANDS)}\n")
            return 2
        sys.stdout.write(usage)
        return 0 if argv else 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except CtrlbenchError as e:
        sys.stderr.write(f"ctrlbench: error: {e}\n")
        return 1
    except OSError as e:  # a file system fault no command foresaw (a full disk, a read-only folder): still one line
        from algorithms.core.io import os_error_message

        sys.stderr.write(f"ctrlbench: error: {os_error_message(e)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("ctrlbench: interrupted; finished records are kept, a restarted run resumes "
                         "from its last checkpoint\n")
        return 130


def _entry() -> None:  # pragma: no cover
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
