"""scripts/cost_critic_probe.py on the offline safe methods: the reading their actors use, in unscaled cost units."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import cost_critic_probe

from runners.run import RunRequest, build_algorithm, prepare
from tests.conftest import cli_env


@pytest.mark.parametrize("algo_name", cost_critic_probe.OFFLINE)
def test_offline_reading_is_the_min_over_cost_networks_unscaled(minari_root: Path, one_thread, algo_name: str) -> None:
    req = RunRequest(algo=algo_name, task="smoke-offline-safe-v0", seed=0, steps=10, device="cpu",
                     config_cli={"cost_scale": 2.0} if algo_name != "ogsrl" else {})
    prepared = prepare(req)
    algo, _ = build_algorithm(req, prepared)
    env = prepared.task.make_env()
    states, actions, costs = cost_critic_probe.rollout(algo, env, seed=0, deterministic=True)
    env.close()
    assert states.shape[0] == actions.shape[0] == costs.shape[0] > 0
    assert set(np.unique(costs)) <= {0.0, 1.0}

    reading = cost_critic_probe.offline_cost_reading(algo, states, actions)
    with torch.no_grad():
        members = algo.cost_critic(torch.as_tensor(algo.normalizer(states)), torch.as_tensor(actions))
    scale = getattr(algo.config, "cost_scale", 1.0)
    assert reading.shape == (len(states),)
    np.testing.assert_allclose(reading * scale, members.min(dim=0).values.numpy(), rtol=1e-6)
    if algo.cost_critic.n > 1:  # the minimum, not the first member or the mean
        assert np.all(reading * scale <= members.mean(dim=0).numpy() + 1e-6)


def test_an_offline_method_on_an_online_task_is_a_one_line_error(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "cost_critic_probe.py"
    out = subprocess.run([sys.executable, str(script), "--algo", "bcq_lag", "--task", "smoke-safe-v0", "--steps", "10",
                          "--checkpoint", str(tmp_path / "none.pt")], capture_output=True, text=True, env=cli_env(),
                         timeout=300)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "supports task kinds" in out.stderr
