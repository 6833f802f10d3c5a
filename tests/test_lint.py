"""The code base stays ruff clean (the project's style gate, run with the tests)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install -e '.[dev]')")
def test_ruff_clean() -> None:
    res = subprocess.run(["ruff", "check", "--quiet", str(REPO)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
