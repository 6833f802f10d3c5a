"""benchmarks/throughput.py runs end to end on tiny inputs (its numbers are measured by hand, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import throughput  # noqa: E402


def test_episode_ends_marks_truncated_episode_ends_only() -> None:
    data = throughput.synthetic(3000)
    np.testing.assert_array_equal(throughput.episode_ends(data),
                                  (throughput.timeouts(3000) & (data.terminals == 0)).astype(np.float32))
    data.terminals[999] = 1.0  # an episode that ends in a termination is not a timeout
    assert throughput.episode_ends(data)[999] == 0.0 and throughput.episode_ends(data)[1999] == 1.0


def test_benchmark_prints_rates_and_the_prdc_ratio() -> None:
    res = subprocess.run([sys.executable, "benchmarks/throughput.py", "--algos", "td3_bc,prdc", "--updates", "4",
                          "--warmup", "2", "--size", "3000", "--eval-episodes", "0", "--threads", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "synthetic: 3000 transitions" in res.stdout
    assert "td3_bc   ctrlbench" in res.stdout and "prdc     one update costs" in res.stdout


def test_a_peer_that_cannot_be_imported_is_named_with_its_reason(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "d3rlpy", None)  # import of d3rlpy now raises ImportError
    assert "d3rlpy" in throughput.d3rlpy_missing()
    assert throughput.d3rlpy_step("td3_bc", throughput.synthetic(3000), "cpu") is None


def test_the_matmul_recorder_sees_every_matmul_flop_of_an_update_backward_included() -> None:
    """The matmul-only ceiling replays what the recorder saw: if it missed the backward pass's matmuls (or any
    other), its FLOPs would fall short of torch's own count for the same two updates."""
    counted, calls = throughput.update_profile("td3_bc", "cpu")
    flops = 0
    for _, args, _ in calls:
        (a_shape, _), (b_shape, _) = [a for a in args if isinstance(a, tuple)][-2:]
        flops += 2 * a_shape.numel() * b_shape[-1]
    assert counted > 0 and flops / 2 == counted
    transposed = [shape for _, args, _ in calls for shape, stride in [a for a in args if isinstance(a, tuple)]
                  if shape[-1] > 1 and stride[-1] != 1]
    assert transposed  # the backward pass's x^T g and g W^T, kept as the strided views the kernels get


def test_strided_randn_has_the_exact_layout_asked_for() -> None:
    x = throughput.strided_randn((2, 23, 256), (0, 1, 23), "cpu")  # a broadcast, transposed view
    assert x.shape == (2, 23, 256) and x.stride() == (0, 1, 23)
    assert throughput.matmul_only_rate(throughput.update_profile("bc", "cpu")[1], 2, 1, "cpu") > 0


def test_side_by_side_runs_both_pieces_at_once_on_one_thread_each_and_restores_the_thread_count() -> None:
    import threading

    import torch

    threads = torch.get_num_threads()
    seen: list[tuple[int, int]] = []
    both_started = threading.Barrier(2, timeout=10)  # raises unless the two pieces run at the same time

    def piece() -> None:
        both_started.wait()
        seen.append((threading.get_ident(), torch.get_num_threads()))

    pair = throughput.SideBySide(piece, piece)
    pair()
    pair()
    pair.close()
    assert len(seen) == 4 and {n for _, n in seen} == {1}
    assert len({ident for ident, _ in seen}) == 2 and threading.get_ident() not in {ident for ident, _ in seen}
    gain, each = throughput.side_by_side_gain(throughput.update_profile("bc", "cpu")[1], updates=4, warmup=2,
                                              rounds=2)
    assert gain > 0 and len(each) == 2 and torch.get_num_threads() == threads

    def fails() -> None:
        raise RuntimeError("a piece failed")

    broken = throughput.SideBySide(fails, lambda: None)
    with pytest.raises(RuntimeError, match="a piece failed"):  # the caller learns of it instead of waiting forever
        broken()
    broken.close()


def test_interleaved_rates_take_turns_and_rotate_who_goes_first() -> None:
    calls: list[str] = []
    steps = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    rates = throughput.interleaved_rates(steps, updates=6, warmup=1, device="cpu", rounds=3)
    assert calls == ["a", "b"] + ["a"] * 2 + ["b"] * 2 + ["b"] * 2 + ["a"] * 2 + ["a"] * 2 + ["b"] * 2
    assert {k: len(v) for k, v in rates.items()} == {"a": 3, "b": 3} and all(r > 0 for v in rates.values() for r in v)
    assert throughput.harmonic_mean([100.0, 50.0]) == 2 / (1 / 100 + 1 / 50)  # total updates over total time


def test_compare_revisions_runs_both_trees_in_turns_and_rejects_an_unknown_revision() -> None:
    run = [sys.executable, "benchmarks/compare_revisions.py", "--size", "3000", "--rounds", "2", "--updates", "2",
           "--warmup", "1"]
    res = subprocess.run([*run, "--base", "HEAD", "--threads", "1"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "1 threads a side" in res.stdout
    assert "td3_bc   working tree" in res.stdout and "speed-up" in res.stdout
    bad = subprocess.run([*run, "--base", "no-such-revision"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error: cannot archive revision 'no-such-revision'")
