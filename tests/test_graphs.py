"""CUDA-graph replay of whole updates: the bookkeeping on CPU with a stand-in backend, the equality on a GPU."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from algorithms.a2pr import A2PR, A2PRConfig
from algorithms.bc import BC, BCConfig
from algorithms.core.errors import CtrlbenchError
from algorithms.core.graphs import EagerUpdates, GraphedUpdates
from algorithms.cql import CQL, CQLConfig
from algorithms.iql import IQL, IQLConfig
from algorithms.prdc import PRDC, PRDCConfig
from algorithms.spot import SPOT, SPOTConfig
from algorithms.td3_bc import TD3BC, TD3BCConfig
from tests.algo_helpers import params, same, tiny_context
from tests.conftest import run_cli


class StandIn:
    """What a CUDA graph does, on CPU: capture records without running; each replay reruns the recorded work,
    with the Python-side decisions (e.g. whether the actor steps) frozen as they were at capture."""

    def __init__(self, algo) -> None:
        self.algo = algo
        self.captures = self.replays = self.warmups = 0

    def warmup(self, fn: Callable) -> dict:
        self.warmups += 1
        return fn()

    def capture(self, fn: Callable, generators: list[torch.Generator]) -> Callable:
        self.captures += 1
        self.generators = generators
        self.frozen_step = frozen_step = self.algo.step
        self.replay_starts: list[int] = []

        def replay() -> dict:
            self.replays += 1
            self.replay_starts.append(self.algo.step)
            real_step, self.algo.step = self.algo.step, frozen_step
            out = fn()
            self.algo.step = real_step
            return out

        return replay


def td3_bc(policy_freq: int = 2, device: str = "cpu") -> TD3BC:
    torch.manual_seed(0)  # the same initial networks every time
    ctx = dataclasses.replace(tiny_context(), device=torch.device(device))
    return TD3BC(TD3BCConfig(batch_size=16, policy_freq=policy_freq), ctx)


@pytest.mark.parametrize("policy_freq", [1, 2, 3])
def test_replayed_updates_equal_eager_ones_for_any_split(policy_freq: int) -> None:
    """Calls of any length, starting off the period, still give exactly the eager updates' parameters."""
    eager, graphed = td3_bc(policy_freq), td3_bc(policy_freq)
    backend = StandIn(graphed)
    runner = GraphedUpdates(graphed, warmup=2, backend=backend)
    torch.manual_seed(1)  # the target-policy noise
    EagerUpdates(eager).run(40)
    torch.manual_seed(1)
    done = 0
    for n in (1, 5, 2, 7, 3, 1, 10, 11):  # 40 in all
        metrics = runner.run(n)
        done += n
        assert graphed.step == done
    assert eager.step == 40
    assert same(params(graphed.actor), params(eager.actor)) and same(params(graphed.critic), params(eager.critic))
    assert backend.captures == 1 and backend.replays > 0 and "critic_loss" in metrics
    assert backend.generators == [graphed.sampler.generator]


def test_replays_start_on_the_period() -> None:
    """A replay covers one period from a multiple of it, so the captured actor step stays on its beat."""
    algo = td3_bc(policy_freq=2)
    backend = StandIn(algo)
    runner = GraphedUpdates(algo, warmup=1, backend=backend)
    runner.run(3)
    runner.run(10)
    assert backend.frozen_step % 2 == 0 and backend.replay_starts == [4, 6, 8, 10] and algo.step == 13


def test_bc_replays_with_period_one() -> None:
    algo = BC(BCConfig(batch_size=8), tiny_context())
    backend = StandIn(algo)
    GraphedUpdates(algo, warmup=3, backend=backend).run(10)
    assert algo.step == 10 and backend.warmups == 3 and backend.replays == 7


def iql() -> IQL:
    torch.manual_seed(0)
    ctx = tiny_context()
    ctx.total_updates = 20
    return IQL(IQLConfig(batch_size=16), ctx)


def test_iql_replays_equal_eager_updates_schedule_included() -> None:
    """IQL's cosine learning rate lives on the device, so replayed updates keep annealing it."""
    eager, graphed = iql(), iql()
    backend = StandIn(graphed)
    EagerUpdates(eager).run(20)
    GraphedUpdates(graphed, warmup=2, backend=backend).run(20)
    assert backend.replays == 18 and graphed.step == 20
    assert same(params(graphed.actor), params(eager.actor)) and same(params(graphed.value), params(eager.value))
    assert float(graphed.actor_schedule.lr) == float(eager.actor_schedule.lr) < 3e-4 * 0.01


def test_cql_replays_equal_eager_updates() -> None:
    def build() -> CQL:
        torch.manual_seed(0)
        return CQL(CQLConfig(batch_size=16, cql_n_actions=3), tiny_context())

    eager, graphed = build(), build()
    backend = StandIn(graphed)
    torch.manual_seed(1)  # the policy samples and the random actions of the penalty
    EagerUpdates(eager).run(12)
    torch.manual_seed(1)
    GraphedUpdates(graphed, warmup=2, backend=backend).run(12)
    assert backend.replays == 10 and graphed.step == 12
    assert same(params(graphed.critic), params(eager.critic)) and same(params(graphed.actor), params(eager.actor))
    assert torch.equal(graphed.log_alpha, eager.log_alpha)


def test_a2pr_replays_equal_eager_updates() -> None:
    def build() -> A2PR:
        torch.manual_seed(0)
        return A2PR(A2PRConfig(batch_size=16), tiny_context())

    eager, graphed = build(), build()
    backend = StandIn(graphed)
    torch.manual_seed(1)
    EagerUpdates(eager).run(14)
    torch.manual_seed(1)
    GraphedUpdates(graphed, warmup=2, backend=backend).run(14)
    assert backend.replays == 5
    for name in ("actor", "critic", "value", "vae"):
        assert same(params(getattr(graphed, name)), params(getattr(eager, name))), name


def test_prdc_replays_with_the_device_search_and_refuses_the_kdtree() -> None:
    def build(search: str) -> PRDC:
        torch.manual_seed(0)
        return PRDC(PRDCConfig(batch_size=16, search=search), tiny_context())

    eager, graphed = build("torch"), build("torch")
    backend = StandIn(graphed)
    torch.manual_seed(1)
    EagerUpdates(eager).run(14)
    torch.manual_seed(1)
    GraphedUpdates(graphed, warmup=2, backend=backend).run(14)
    assert backend.replays == 5 and same(params(graphed.actor), params(eager.actor))
    with pytest.raises(CtrlbenchError, match="prdc does not support --cuda-graphs"):
        GraphedUpdates(build("kdtree"), backend=StandIn(None))


def test_refuses_algorithms_that_are_not_capture_safe_and_cpu_devices() -> None:
    with pytest.raises(CtrlbenchError, match="spot does not support --cuda-graphs"):
        GraphedUpdates(SPOT(SPOTConfig(batch_size=8, vae_steps=2), tiny_context()))
    with pytest.raises(CtrlbenchError, match="needs a CUDA device"):
        GraphedUpdates(td3_bc())


def test_cli_cuda_graphs_on_cpu_is_one_line(minari_root: Path, tmp_path: Path) -> None:
    res = run_cli("run", "--algo", "td3_bc", "--task", "smoke-v0", "--steps", "10", "--device", "cpu", "--cuda-graphs",
                  "--results", str(tmp_path), minari=minari_root)
    assert res.returncode == 1 and "needs a CUDA device" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not list(tmp_path.glob("runs/*.json"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("make", ["td3_bc", "iql", "cql", "prdc", "a2pr"])
def test_cuda_graph_updates_match_eager_on_gpu(make: str) -> None:
    def build():
        torch.manual_seed(0)
        ctx = dataclasses.replace(tiny_context(), device=torch.device("cuda"), total_updates=50)
        algo, config = {"td3_bc": (TD3BC, TD3BCConfig), "iql": (IQL, IQLConfig), "cql": (CQL, CQLConfig),
                        "prdc": (PRDC, PRDCConfig), "a2pr": (A2PR, A2PRConfig)}[make]
        return algo(config(batch_size=16), ctx)

    eager, graphed = build(), build()
    torch.manual_seed(1)
    EagerUpdates(eager).run(50)
    torch.manual_seed(1)
    metrics = GraphedUpdates(graphed, warmup=2).run(50)
    torch.cuda.synchronize()
    assert graphed.step == eager.step == 50 and all(torch.isfinite(torch.as_tensor(v)) for v in metrics.values())
    for a, b in zip(params(graphed.actor), params(eager.actor)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
