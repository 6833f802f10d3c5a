"""Several updates per host call: a CUDA graph captures `period` consecutive updates once and replays them.

An eager update of a small-MLP algorithm launches a hundred or so tiny kernels, and on a GPU the host's launch
overhead, not the arithmetic, sets the pace. A CUDA graph records those kernels once; each replay launches all of
them with one host call, reading the batch indices, noise and parameters from the same device memory.

An algorithm opts in by returning its period from `Algorithm.graph_period()`. Its `update()` must then be
capture-safe:
  - no host syncs (`.item()`, Python branches on tensor values) and static shapes;
  - its Python-side behavior repeats with that period (TD3's delayed actor step: period `policy_freq`); the only
    other Python state it changes is `self.step`, which the replayer advances;
  - its randomness comes from the default CUDA generator or from the generators `graph_generators()` lists;
  - its optimizers are capturable (`nets.adam` makes them so on CUDA) and its learning-rate schedules run on the
    device (`schedules.CosineLR`), since a replay repeats kernels, not Python.
The replayer runs eagerly until `step` is a multiple of the period and a few warm-up updates are done (lazy CUDA
init, optimizer state), captures, and runs any remainder shorter than a period eagerly. A replayed update is the
same computation as an eager one on the same batch; tests/test_graphs.py checks the bookkeeping on CPU with a stand-in
backend and the equality on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from algorithms.core.contract import Algorithm
from algorithms.core.errors import CtrlbenchError

Metrics = dict[str, Any]


class GraphBackend(Protocol):
    def warmup(self, fn: Callable[[], Metrics]) -> Metrics: ...

    def capture(self, fn: Callable[[], Metrics], generators: list[torch.Generator]) -> Callable[[], Metrics]:
        """Record `fn` without running it; the returned replay runs the recorded work and returns its outputs."""
        ...


class CudaGraphBackend:
    def __init__(self) -> None:
        self.side_stream = torch.cuda.Stream()

    def warmup(self, fn: Callable[[], Metrics]) -> Metrics:
        # warm-up work runs on a side stream, as torch's graph-capture recipe asks
        self.side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side_stream):
            out = fn()
        torch.cuda.current_stream().wait_stream(self.side_stream)
        return out

    def capture(self, fn: Callable[[], Metrics], generators: list[torch.Generator]) -> Callable[[], Metrics]:
        graph = torch.cuda.CUDAGraph()
        for generator in generators:
            graph.register_generator_state(generator)
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            outputs = fn()

        def replay() -> Metrics:
            graph.replay()
            return outputs  # the same tensors each time, refilled by the replay

        return replay


class EagerUpdates:
    """`run(n, until)`: n calls of `algo.update()`, fewer when `until()` turns true after one; returns the last one's
    metrics."""

    def __init__(self, algo: Algorithm) -> None:
        self.algo = algo

    def run(self, n: int, until: Callable[[], bool] | None = None) -> Metrics:
        metrics: Metrics = {}
        for _ in range(n):
            metrics = self.algo.update()
            if until is not None and until():
                break
        return metrics


class GraphedUpdates(EagerUpdates):
    """`run(n)`: the same n updates, whole periods of them replayed from one captured CUDA graph."""

    def __init__(self, algo: Algorithm, warmup: int = 3, backend: GraphBackend | None = None) -> None:
        super().__init__(algo)
        period = algo.graph_period()
        if period is None:
            raise CtrlbenchError(f"{algo.name} does not support --cuda-graphs (its update is not capture-safe); "
                                 f"run it without the flag")
        if backend is None and algo.device.type != "cuda":
            raise CtrlbenchError("--cuda-graphs needs a CUDA device (--device cuda)")
        self.period = period
        self.warmup_left = warmup * period
        self.backend = backend or CudaGraphBackend()
        self.replay: Callable[[], Metrics] | None = None

    def _block(self) -> Metrics:
        """One period of updates as the graph sees them; `step` is left for the replayer to advance."""
        start = self.algo.step
        metrics: Metrics = {}
        for _ in range(self.period):
            metrics = self.algo.update()
        self.algo.step = start
        return metrics

    def run(self, n: int, until: Callable[[], bool] | None = None) -> Metrics:
        algo, metrics = self.algo, {}
        while n > 0 and not (until is not None and until()):
            aligned = algo.step % self.period == 0 and n >= self.period
            if aligned and self.replay is not None:
                metrics = self.replay()
                algo.step += self.period
                n -= self.period
            elif aligned and self.warmup_left <= 0:
                self.replay = self.backend.capture(self._block, algo.graph_generators())
            else:  # warm-up, alignment to the period, or a remainder shorter than it: eager
                metrics = self.backend.warmup(algo.update) if self.replay is None else algo.update()
                self.warmup_left -= 1
                n -= 1
        return metrics


def updater(algo: Algorithm, cuda_graphs: bool) -> EagerUpdates:
    return GraphedUpdates(algo) if cuda_graphs else EagerUpdates(algo)
