"""Shared fixtures: one smoke dataset built per test session in a private Minari root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def minari_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Minari root holding the smoke dataset; MINARI_DATASETS_PATH points at it for the session."""
    root = tmp_path_factory.mktemp("minari")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    from tasks import smoke

    smoke.build()
    yield root
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old


CLI = (sys.executable, "-m", "runners.cli")


def cli_env(minari: Path | None = None, env_vars: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `ctrlbench` subprocess: this repo importable, a developer's own checkpoint folder unset."""
    env = dict(os.environ)
    env.pop("CTRLBENCH_CHECKPOINTS", None)
    env.update(env_vars or {})
    if minari is not None:
        env["MINARI_DATASETS_PATH"] = str(minari)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*args: str, minari: Path | None = None, cwd: Path | None = None,
            env_vars: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `ctrlbench ...` in a fresh interpreter, as a user would."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=cli_env(minari, env_vars),
                          cwd=cwd or REPO, timeout=600)


TINY = ("--steps", "40", "--eval-every", "20", "--eval-episodes", "3", "--curve-episodes", "2", "--no-progress")


@pytest.fixture
def one_thread():
    """torch on one thread for the test, the count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
