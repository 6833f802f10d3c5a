"""CLI -> record -> leaderboard, end to end, and bad input handled as one line with no record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from algorithms.core.contract import Algorithm
from algorithms.core.registry import available
from tests.conftest import TINY, run_cli

RECORD_FIELDS = {
    "schema_version", "algorithm", "task", "seed", "config", "config_hash", "protocol", "dataset_id",
    "dataset_metadata_hash", "packages", "git_commit", "device", "wall_time_s", "updates_per_s", "curve",
    "final", "best", "ref_min_score", "ref_max_score", "run_id", "status", "env_steps", "metrics",
}
SMOKE_TASKS = {"offline": "smoke-v0", "sim-to-real": "smoke-sim-to-real-v0", "safe": "smoke-safe-v0",
               "offline-safe": "smoke-offline-safe-v0", "offline-to-online": "smoke-finetune-v0",
               "multi-objective": "smoke-mo-v0"}
PROBE = Path(__file__).parent / "fixtures" / "probe_algo.py"


def smoke_task(algo: str) -> str:
    """A smoke task of the first kind the algorithm supports that has one."""
    return next(SMOKE_TASKS[k] for k in available()[algo].kinds if k in SMOKE_TASKS)


def records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))]


EXTRA = {"spot": ("--vae-steps", "10"),  # reach the TD3 phase inside the tiny budget
         "sac": ("--learning-starts", "10", "--batch-size", "8"),  # reach gradient steps inside it
         **dict.fromkeys(("sac_lag", "sac_lag_epcost"), ("--learning-starts", "10", "--batch-size", "8")),
         "cal": ("--learning-starts", "10", "--batch-size", "8", "--utd-ratio", "1"),
         "h2o": ("--initial-sim-steps", "20"), "h2o_naive_mix": ("--initial-sim-steps", "20"),
         "bcq_lag": ("--batch-size", "64"), "cpq": ("--batch-size", "64"),  # OSRL's 512 x 10 samples: slow here
         # c_morl: two weights and init_fraction 0.5 put its Pareto-initialization milestone at update 20
         "c_morl": ("--n-envs", "2", "--n-steps", "16", "--num-minibatches", "4", "--update-epochs", "1",
                    "--delta-weight", "1.0", "--init-fraction", "0.5", "--estimate-episodes", "1",
                    "--estimate-max-steps", "20", "--num-select", "2", "--update-iter", "2"),
         "ls_ppo": ("--n-envs", "2", "--n-steps", "16", "--num-minibatches", "4", "--update-epochs", "1",
                    "--delta-weight", "0.5"),
         **dict.fromkeys(("dppo", "gaussian_ppo"), ("--pretrain-steps", "20", "--n-envs", "2", "--n-steps", "8",
                                                   "--batch-size", "64", "--update-epochs", "1"))}
# spot: its VAE then TD3 phases break a fixed replay period (README); methods without graph_period (the online,
# hybrid and fine-tuning ones, which step environments inside update()) are never capture-safe
GRAPHS_REFUSED = {"spot"} | {name for name, cls in available().items() if cls.graph_period is Algorithm.graph_period}
ON_GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DEVICES = [pytest.param(("--device", "cpu"), id="cpu"),
           pytest.param(("--device", "cuda"), id="cuda", marks=ON_GPU),
           pytest.param(("--device", "cuda", "--cuda-graphs"), id="cuda-graphs", marks=ON_GPU)]


@pytest.mark.parametrize("algo", sorted(available()))
@pytest.mark.parametrize("device", DEVICES)
def test_tiny_run_writes_one_complete_record(algo: str, device: tuple[str, ...], minari_root: Path,
                                             tmp_path: Path) -> None:
    """Every registered algorithm runs from the same file on CPU, on a GPU, and (where it opts in) from replayed
    CUDA graphs; the record names the device it ran on."""
    if "--cuda-graphs" in device and algo in GRAPHS_REFUSED:
        pytest.skip(f"{algo} refuses --cuda-graphs by design")
    res = run_cli("run", "--algo", algo, "--task", smoke_task(algo), "--seed", "1", *TINY, *EXTRA.get(algo, ()),
                  *device, "--results", str(tmp_path), minari=minari_root)
    assert res.returncode == 0, res.stderr
    (record,) = records(tmp_path)
    assert set(record) >= RECORD_FIELDS
    assert record["device"].split(":")[0] == device[1]
    assert record["algorithm"] == algo and record["seed"] == 1 and record["protocol"]["steps"] == 40
    assert [p["step"] for p in record["curve"]] == [20]
    assert len(record["final"]["returns"]) == 3
    ref_min, ref_max = record["ref_min_score"], record["ref_max_score"]
    expected = 100 * (record["final"]["return_mean"] - ref_min) / (ref_max - ref_min)
    assert record["final"]["score_mean"] == pytest.approx(expected)
    assert record["best"]["score_mean"] >= record["final"]["score_mean"]
    assert not list((tmp_path / "checkpoints").glob("*")), "a finished run leaves no checkpoint"


@pytest.mark.parametrize("task", ["smoke-v0", "smoke-sim-to-real-v0", "smoke-safe-v0", "smoke-offline-safe-v0",
                                  "smoke-finetune-v0"])
def test_every_kind_hands_the_algorithm_its_training_env_and_records_its_metrics(task: str, minari_root: Path,
                                                                                 tmp_path: Path) -> None:
    """The runner, not the algorithm, knows the kinds: env steps taken in update() are counted, a sim-to-real
    algorithm steps the simulator while it is scored on the real env, and each kind adds its metrics block."""
    res = run_cli("run", "--algo-module", str(PROBE), "--algo", "probe", "--task", task, *TINY,
                  "--results", str(tmp_path), minari=minari_root)
    assert res.returncode == 0, res.stderr
    (record,) = records(tmp_path)
    assert record["env_steps"] == 40 * 2 and record["final"]["env_steps"] == 80
    assert [p["env_steps"] for p in record["curve"]] == [40]
    assert record["metrics"]["kind"] == record["task_kind"]
    gravity = record["last_metrics"]["train_env_gravity"]
    if task == "smoke-sim-to-real-v0":
        assert gravity == 20.0 and record["metrics"]["gap"] == "gravity x2 (g = 20)"
    else:
        assert gravity == 10.0
    assert "milestones" not in record["metrics"]  # the probe names none
    if task in ("smoke-safe-v0", "smoke-offline-safe-v0"):
        costs = record["metrics"]["costs"]
        assert len(costs) == 3 and record["metrics"]["cost_mean"] == pytest.approx(np.mean(costs))
        assert record["final"]["cost_norm"] == pytest.approx(np.mean(costs) / 20.0)
        assert "cost_mean" in record["curve"][0]


@pytest.mark.parametrize("algo", ["dppo", "gaussian_ppo"])
def test_fine_tuning_records_the_score_after_pretraining(algo: str, minari_root: Path, tmp_path: Path) -> None:
    """The end of pretraining is a milestone: evaluated although it is no multiple of --eval-every, recorded apart,
    before any environment step; fine-tuning's env steps come after it."""
    res = run_cli("run", "--algo", algo, "--task", "smoke-finetune-v0", *TINY, *EXTRA[algo][:1], "13",
                  *EXTRA[algo][2:], "--results", str(tmp_path), minari=minari_root)
    assert res.returncode == 0, res.stderr
    (record,) = records(tmp_path)
    pretrained = record["metrics"]["milestones"]["pretrained"]
    assert pretrained["step"] == 13 and pretrained["env_steps"] == 0
    assert [p["step"] for p in record["curve"]] == [13, 20]
    assert pretrained["score_mean"] == record["curve"][0]["score_mean"]
    assert record["env_steps"] > record["curve"][1]["env_steps"] > 0


def test_run_then_leaderboard_then_rerun_skips(minari_root: Path, tmp_path: Path) -> None:
    for algo, seed in [("bc", "0"), ("bc", "1"), ("td3_bc", "0")]:
        res = run_cli("run", "--algo", algo, "--task", "smoke-v0", "--seed", seed, *TINY, "--results", str(tmp_path),
                      minari=minari_root)
        assert res.returncode == 0, res.stderr
    board = run_cli("leaderboard", "--results", str(tmp_path))
    assert board.returncode == 0, board.stderr
    rows = {line.split("|")[1].strip(): line for line in board.stdout.splitlines() if line.startswith("| ")}
    scores = [r["final"]["score_mean"] for r in records(tmp_path) if r["algorithm"] == "bc"]
    assert f"{np.mean(scores):.1f} ± {np.std(scores):.1f} (2)" in rows["bc"]
    assert "(1)" in rows["td3_bc"]
    assert (tmp_path / "leaderboard" / "leaderboard.md").read_text().startswith("| algorithm | smoke-v0 |")

    again = run_cli("run", "--algo", "bc", "--task", "smoke-v0", "--seed", "0", *TINY, "--results", str(tmp_path),
                    minari=minari_root)
    assert again.returncode == 0 and "skipped" in again.stdout
    assert len(records(tmp_path)) == 3
    changed = run_cli("run", "--algo", "bc", "--task", "smoke-v0", "--seed", "0", "--lr", "1e-3", *TINY,
                      "--results", str(tmp_path), minari=minari_root)
    assert changed.returncode == 0, changed.stderr
    assert len(records(tmp_path)) == 4, "a changed config is a new run, never a reuse"


def test_config_file_and_flags_reach_the_algorithm(minari_root: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("alpha: 5.0\nhidden: [64, 64]\nnormalize: false\n")
    res = run_cli("run", "--algo", "td3_bc", "--task", "smoke-v0", "--config", str(cfg), "--alpha", "7.5", *TINY,
                  "--results", str(tmp_path / "r"), minari=minari_root)
    assert res.returncode == 0, res.stderr
    (record,) = records(tmp_path / "r")
    assert record["config"]["alpha"] == 7.5 and record["config"]["hidden"] == [64, 64]
    assert record["config"]["normalize"] is False


def test_algo_help_lists_fields_with_comments() -> None:
    res = run_cli("run", "--algo", "td3_bc", "--help")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())  # argparse wraps lines
    assert "--policy-freq" in text and "the actor and all targets update once every policy_freq critic steps" in text
    assert "--no-normalize" in text and "(default: 2.5)" in text


def test_list_commands(minari_root: Path) -> None:
    algos = run_cli("list", "algorithms")
    assert algos.returncode == 0 and "bc" in algos.stdout and "td3_bc" in algos.stdout
    tasks = run_cli("list", "tasks", minari=minari_root)
    assert tasks.returncode == 0 and "smoke-v0" in tasks.stdout and "(built)" in tasks.stdout


def test_third_party_algorithm_module(minari_root: Path, tmp_path: Path) -> None:
    module = tmp_path / "my_algo.py"
    module.write_text(
        "from dataclasses import dataclass\n"
        "import numpy as np\n"
        "from algorithms.core.contract import Algorithm\n"
        "from algorithms.core.registry import register\n\n"
        "@dataclass\nclass ZeroConfig:\n    scale: float = 0.0  # action scale\n\n"
        "@register('zero', kinds=('offline',))\n"
        "class Zero(Algorithm):\n"
        "    Config = ZeroConfig\n"
        "    def update(self):\n        self.step += 1\n        return {}\n"
        "    def act(self, obs, weight=None):\n"
        "        return np.zeros((len(obs), self.ctx.act_dim), np.float32) + self.config.scale\n"
    )
    res = run_cli("run", "--algo-module", str(module), "--algo", "zero", "--task", "smoke-v0", *TINY,
                  "--results", str(tmp_path / "r"), minari=minari_root)
    assert res.returncode == 0, res.stderr
    (record,) = records(tmp_path / "r")
    assert record["algorithm"] == "zero"


BAD_INPUTS = {
    "unknown algorithm": (["run", "--algo", "does_not_exist", "--task", "smoke-v0"],
                          "known algorithms: a2pr, bc, bc_all"),
    "unknown task": (["run", "--algo", "bc", "--task", "nope-v0"], "unknown task 'nope-v0'; known tasks: "),
    "negative steps": (["run", "--algo", "bc", "--task", "smoke-v0", "--steps", "-5"], "--steps must be"),
    "bad config value": (["run", "--algo", "bc", "--task", "smoke-v0", "--lr", "fast"], "cannot read 'fast'"),
    "invalid config value": (["run", "--algo", "td3_bc", "--task", "smoke-v0", "--tau", "0"], "tau must be"),
    "missing flag": (["run", "--algo", "bc"], "--task"),
    "unknown command": (["frobnicate"], "unknown command"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_nonzero_no_record(case: str, minari_root: Path, tmp_path: Path) -> None:
    argv, expected = BAD_INPUTS[case]
    res = run_cli(*argv, "--results", str(tmp_path), minari=minari_root) if argv[0] == "run" else run_cli(*argv)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], res.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_missing_dataset_is_one_line(tmp_path: Path) -> None:
    res = run_cli("run", "--algo", "bc", "--task", "smoke-v0", "--results", str(tmp_path), minari=tmp_path / "none")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "ctrlbench datasets build smoke" in res.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on a machine without a GPU")
def test_cuda_without_gpu_is_one_line(minari_root: Path, tmp_path: Path) -> None:
    res = run_cli("run", "--algo", "bc", "--task", "smoke-v0", "--device", "cuda", "--results", str(tmp_path),
                  minari=minari_root)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "no CUDA GPU" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_evaluations_by_env_steps_join_those_by_updates(minari_root: Path, tmp_path: Path) -> None:
    """--eval-every-env-steps evaluates after the update that passes each multiple (the probe takes 2 env steps an
    update), besides --eval-every's updates; the protocol records it, so it is part of the run's id."""
    res = run_cli("run", "--algo-module", str(PROBE), "--algo", "probe", "--task", "smoke-finetune-v0", *TINY,
                  "--eval-every-env-steps", "30", "--results", str(tmp_path), minari=minari_root)
    assert res.returncode == 0, res.stderr
    (record,) = records(tmp_path)
    assert [(p["step"], p["env_steps"]) for p in record["curve"]] == [(15, 30), (20, 40), (30, 60)]
    assert record["protocol"]["eval_every_env_steps"] == 30
    bad = run_cli("run", "--algo", "bc", "--task", "smoke-v0", *TINY, "--eval-every-env-steps", "-1",
                  "--results", str(tmp_path / "bad"), minari=minari_root)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].endswith("must be an integer >= 0, got -1")
