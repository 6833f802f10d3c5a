"""Training and evaluation throughput, each measured side by side with a peer in the same run.

  python benchmarks/throughput.py                      # CPU: ctrlbench vs d3rlpy, TD3+BC and IQL
  python benchmarks/throughput.py --algos bc,td3_bc,iql --eval-episodes 0   # + BC (every algorithm d3rlpy also has)
  python benchmarks/throughput.py --algos cql --updates 50 --warmup 5 --eval-episodes 0   # CQL (slow on CPU)
  python benchmarks/throughput.py --device cuda        # the same on a GPU
  python benchmarks/throughput.py --algos td3_bc --updates 2000 --threads 2
  python benchmarks/throughput.py --device cuda --cuda-graphs --parallel 8   # + graphs, + 8 runs sharing the GPU

Both libraries train on the same synthetic 1M-transition dataset (HalfCheetah shapes: 17-d states,
6-d actions), batch 256, state normalization on, sampling included in every update, each algorithm with
ctrlbench's default networks on both sides: 2x256 MLPs (BC's peer: d3rlpy's deterministic BC, Adam at 3e-4, as
ctrlbench's), 3x256 for CQL (CORL's), whose peer is d3rlpy's CQL with
the same 10 sampled actions per proposal and a fixed conservative weight. The two loops take turns, --rounds
times (default 10), so that both see the same machine; the ratio line gives the overall ratio and its spread
over the rounds. The peer is
d3rlpy 2.8.1. It pins gymnasium 1.0, so install it beside ctrlbench without its pins and add the rest of its needs:
  pip install --no-deps d3rlpy==2.8.1 && pip install gym click colorama dataclasses-json h5py scikit-learn structlog
When it cannot be imported, the ratio column says why (e.g. `No module named 'gym'`). The evaluation part
compares the batched, seeded evaluator with a plain one-environment loop on HalfCheetah-v5.
With prdc in --algos it also prints the cost of a PRDC update relative to a TD3+BC update. `--dataset ID` trains
on a built Minari dataset (e.g. ctrlbench/hopper/medium-v0) instead: PRDC's k-d tree search costs far less on real
data, whose points lie near a low-dimensional set, than on the synthetic Gaussian cloud, and less once `--warmup`
updates have brought pi(s) near the data. `--cuda-graphs`
adds ctrlbench's CUDA-graph replay (algorithms/core/graphs.py) next to its eager loop. `--parallel K` also starts K
TD3+BC runs at once, each in its own process on the same device, and prints their summed updates/s.
`--roofline` sets each rate beside two limits measured in the same run: the machine's large dense matmul rate,
and the rate of the update's own matmuls alone (recorded from real updates, replayed with nothing between them).
`--side-by-side` (CPU) times two copies of those matmuls run at once, one torch thread each, against the same two
one after the other on all threads: the most that running an update's independent pieces side by side could gain.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator

import gymnasium as gym
import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from algorithms.core.contract import AlgoContext
from algorithms.core.data import TransitionData
from algorithms.core.graphs import updater
from algorithms.core.registry import get_algorithm
from leaderboard.provenance import cpu_model
from tasks.datasets import load_transitions
from tasks.protocol import episode_seeds, evaluate

OBS_DIM, ACT_DIM, BATCH = 17, 6, 256


def timeouts(n: int) -> np.ndarray:
    return np.arange(n) % 1000 == 999


def synthetic(n: int, seed: int = 0) -> TransitionData:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
    return TransitionData(observations=obs, actions=rng.uniform(-1, 1, (n, ACT_DIM)).astype(np.float32),
                          rewards=rng.normal(size=n).astype(np.float32),
                          next_observations=obs + 0.01 * rng.normal(size=obs.shape).astype(np.float32),
                          terminals=((rng.random(n) < 0.001) & ~timeouts(n)).astype(np.float32),
                          episode_ids=np.arange(n) // 1000)


def time_loop(step, updates: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(updates):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return updates / (time.perf_counter() - t0)


def harmonic_mean(rates: list[float]) -> float:
    """Updates/s over rounds of equal update counts: total updates over total time."""
    return len(rates) / sum(1.0 / r for r in rates)


def context(data: TransitionData, device: str) -> AlgoContext:
    return AlgoContext(observation_space=gym.spaces.Box(-np.inf, np.inf, (data.obs_dim,), np.float32),
                       action_space=gym.spaces.Box(-1.0, 1.0, (data.act_dim,), np.float32),
                       device=torch.device(device), seed=0, total_updates=1_000_000, dataset=data)


def turns(names: list[str], rounds: int) -> Iterator[str]:
    """The names in turn, `rounds` times, the order rotating by one from round to round."""
    for r in range(rounds):
        k = r % len(names)
        yield from names[k:] + names[:k]


def interleaved_rates(steps: dict[str, Callable[[], object]], updates: int, warmup: int, device: str,
                      rounds: int) -> dict[str, list[float]]:
    """Each step's updates/s in each of `rounds` rounds, the steps taking turns within a round (the order rotates
    from round to round). On a shared or virtual machine the speed of the whole machine drifts by tens of percent
    within a minute; timed one after the other, two loops would see different machines. Taking turns, each round's
    ratio compares the two on nearly the same one."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    names = list(steps)
    per_round = max(1, updates // rounds)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for name in turns(names, rounds):
        rates[name].append(time_loop(steps[name], per_round, 0, device))
    return rates


def ctrlbench_step(name: str, data: TransitionData, device: str) -> Callable[[], object]:
    """One update of ctrlbench's `name` with its default config on `data`."""
    cls = get_algorithm(name)
    return cls(cls.Config(), context(data, device)).update


def ctrlbench_rate(name: str, data: TransitionData, updates: int, warmup: int, device: str,
                   cuda_graphs: bool = False) -> float:
    if not cuda_graphs:
        return time_loop(ctrlbench_step(name, data, device), updates, warmup, device)
    cls = get_algorithm(name)
    algo = cls(cls.Config(), context(data, device))
    runner, chunk = updater(algo, cuda_graphs=True), 100  # the runner's host calls: 100 updates each at least
    runner.run(warmup + chunk)  # warm-up and capture, outside the timing
    return chunk * time_loop(lambda: runner.run(chunk), max(1, updates // chunk), 1, device)


MATMULS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
           torch.ops.aten.baddbmm.default)


class MatmulRecorder(TorchDispatchMode):
    """Records every matmul kernel call that reaches the dispatcher, backward ones included: (op, argument
    layouts as (shape, stride), or the value itself for non-tensors, keyword arguments)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:
            self.calls.append((func, [(a.shape, a.stride()) if isinstance(a, torch.Tensor) else a for a in args],
                               kwargs or {}))
        return func(*args, **(kwargs or {}))


def update_profile(name: str, device: str, data: TransitionData | None = None) -> tuple[float, list[tuple]]:
    """(FLOPs of one update, the matmul calls of two), both from the same two updates of `name` with its defaults
    (two: TD3's actor steps every other one) on `data` (default: 10k synthetic transitions; only PRDC's device
    search grows with the dataset)."""
    from torch.utils.flop_counter import FlopCounterMode

    cls = get_algorithm(name)
    algo = cls(cls.Config(), context(synthetic(10_000) if data is None else data, device))
    algo.update()  # warm-up: first-call work (lazy state, allocator) stays out of the recording
    algo.update()
    with FlopCounterMode(display=False) as counter, MatmulRecorder() as recorder:
        algo.update()
        algo.update()
    return counter.get_total_flops() / 2, recorder.calls


def strided_randn(shape: torch.Size, stride: tuple[int, ...], device: str) -> torch.Tensor:
    """A tensor of this exact layout (transposed and broadcast views included) over random storage."""
    storage = 1 + sum((n - 1) * st for n, st in zip(shape, stride, strict=True))
    return torch.randn(storage, device=device).as_strided(shape, stride)


def matmul_replay(calls: list[tuple], device: str) -> Callable[[], None]:
    """The recorded matmul calls (`update_profile`: same kernels, shapes and strides) on random operands of their
    own, as one callable that runs them back to back with nothing else."""
    replay = [(op, [strided_randn(*a, device) if isinstance(a, tuple) else a for a in args], kw)
              for op, args, kw in calls]

    def run() -> None:
        for op, args, kw in replay:
            op(*args, **kw)

    return run


def matmul_only_rate(calls: list[tuple], updates: int, warmup: int, device: str) -> float:
    """Updates/s of an update reduced to its matmuls: the very calls two real updates made, replayed back to back
    with nothing else. No loop that keeps fp32 and these kernels can run faster, whatever it does about everything
    else (Python, autograd, elementwise ops, Adam)."""
    return 2 * time_loop(matmul_replay(calls, device), max(1, updates // 2), max(1, warmup // 2), device)


class SideBySide:
    """Runs two callables at once, each on a Python thread of its own with one torch thread (torch's ops release
    the GIL), and returns when both are done: a task-parallel step at its most favourable, two equal pieces."""

    def __init__(self, first: Callable[[], None], second: Callable[[], None]) -> None:
        self._go, self._done, self._closing = threading.Barrier(3), threading.Barrier(3), False
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._serve, args=(f,), daemon=True) for f in (first, second)]
        for t in self._threads:
            t.start()

    def _serve(self, fn: Callable[[], None]) -> None:
        torch.set_num_threads(1)  # this thread's OpenMP and MKL thread counts
        try:
            while True:
                self._go.wait()
                if self._closing:
                    return
                fn()
                self._done.wait()
        except threading.BrokenBarrierError:
            return  # the other piece failed; its error reaches the caller
        except BaseException as e:  # handed to the caller, whose wait would otherwise never end
            self._error = e
            self._go.abort()
            self._done.abort()

    def __call__(self) -> None:
        try:
            self._go.wait()
            self._done.wait()
        except threading.BrokenBarrierError:
            raise RuntimeError(f"a side-by-side piece failed: {self._error!r}") from self._error

    def close(self) -> None:
        self._closing = True
        if not self._go.broken:
            self._go.wait()
        for t in self._threads:
            t.join()


def side_by_side_gain(calls: list[tuple], updates: int, warmup: int, rounds: int) -> tuple[float, list[float]]:
    """How much faster two copies of the recorded matmul calls run at once, one torch thread each, than one after
    the other on the current thread count: overall and per round (the two ways take turns, `interleaved_rates`).
    It bounds what running an update's independent pieces side by side (say, the twin critics' members) could
    gain over today's op-parallel loop on CPU: no real split is as balanced, and none is free of synchronization."""
    threads = torch.get_num_threads()
    first, second = matmul_replay(calls, "cpu"), matmul_replay(calls, "cpu")
    pair = SideBySide(first, second)
    try:
        rates = interleaved_rates({"after": lambda: (first(), second()), "side": pair}, max(1, updates // 2),
                                  max(1, warmup // 2), "cpu", rounds)
    finally:
        pair.close()
        torch.set_num_threads(threads)  # the workers' call set torch's process-wide default to 1
    overall = harmonic_mean(rates["side"]) / harmonic_mean(rates["after"])
    return overall, [side / after for side, after in zip(rates["side"], rates["after"], strict=True)]


def gemm_flops_per_s(device: str, n: int = 2048, reps: int = 20) -> float:
    """The machine's dense fp32 matmul rate at the current thread count: what 'near the limit' is measured against."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 * time_loop(lambda: torch.mm(a, b), reps, 3, device)


def _parallel_worker(args: tuple[int, int, int, str, int | None, bool], barrier, out) -> None:
    size, updates, warmup, device, threads, graphs = args
    if threads:
        torch.set_num_threads(threads)
    data = synthetic(size)
    barrier.wait()  # every run starts its timing together
    out.put(ctrlbench_rate("td3_bc", data, updates, warmup, device, graphs))


def parallel_rate(k: int, size: int, updates: int, warmup: int, device: str, threads: int | None,
                  graphs: bool) -> list[float]:
    """Updates/s of each of k TD3+BC runs sharing the device, each in its own process."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_parallel_worker, args=((size, updates, warmup, device, threads, graphs), barrier,
                                                        out)) for _ in range(k)]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return rates


def episode_ends(data: TransitionData) -> np.ndarray:
    """1.0 at each episode's last transition that is not a termination (d3rlpy's `timeouts`)."""
    last = np.append(data.episode_ids[1:] != data.episode_ids[:-1], True)
    return (last & (data.terminals == 0)).astype(np.float32)


def d3rlpy_missing() -> str | None:
    """Why the peer cannot be imported (e.g. d3rlpy installed with --no-deps lacks `gym`), or None."""
    try:
        import d3rlpy  # noqa: F401
    except ImportError as err:
        return str(err)
    return None


def d3rlpy_step(name: str, data: TransitionData, device: str) -> Callable[[], object] | None:
    """One update of the peer's `name` (its batch sampled from the same data, as in its fit loop), or None where
    d3rlpy is not installed or has no counterpart of `name`."""
    if d3rlpy_missing():
        return None
    import d3rlpy
    dataset = d3rlpy.dataset.MDPDataset(observations=data.observations, actions=data.actions,
                                        rewards=data.rewards, terminals=data.terminals,
                                        timeouts=episode_ends(data))
    scaler = d3rlpy.preprocessing.StandardObservationScaler()
    gpu = device if device.startswith("cuda") else False
    if name == "bc":  # ctrlbench's BC: a deterministic tanh policy regressed with MSE, Adam at 3e-4
        algo = d3rlpy.algos.BCConfig(batch_size=BATCH, learning_rate=3e-4, policy_type="deterministic",
                                     observation_scaler=scaler).create(device=gpu)
    elif name == "td3_bc":
        algo = d3rlpy.algos.TD3PlusBCConfig(batch_size=BATCH, observation_scaler=scaler).create(device=gpu)
    elif name == "iql":
        algo = d3rlpy.algos.IQLConfig(batch_size=BATCH, observation_scaler=scaler).create(device=gpu)
    elif name == "cql":  # ctrlbench's CQL defaults: 3x256 networks, 10 actions per proposal, fixed weight 10
        nets = d3rlpy.models.VectorEncoderFactory(hidden_units=[256, 256, 256])
        algo = d3rlpy.algos.CQLConfig(batch_size=BATCH, observation_scaler=scaler, actor_encoder_factory=nets,
                                      critic_encoder_factory=nets, n_action_samples=10, conservative_weight=10.0,
                                      alpha_learning_rate=0.0).create(device=gpu)
    else:
        return None
    # fit() would fit the scaler and build the networks; done here once, outside the timing
    scaler.fit_with_transition_picker(dataset.episodes, dataset.transition_picker)
    algo.build_with_dataset(dataset)

    def step() -> None:
        algo.update(dataset.sample_transition_batch(BATCH))

    return step


EVAL_ENV = "HalfCheetah-v5"  # never terminates early: every episode is 1000 steps, as a trained policy's


def eval_rates(episodes: int) -> tuple[float, float]:
    """(batched evaluator env-steps/s, plain loop env-steps/s) with a 2x256 random-init actor."""
    actor = torch.nn.Sequential(torch.nn.Linear(17, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 6), torch.nn.Tanh())

    @torch.no_grad()
    def policy(obs: np.ndarray) -> np.ndarray:
        return actor(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    seeds = episode_seeds(0, 0, episodes)
    t0 = time.perf_counter()
    batched = evaluate(policy, lambda: gym.make(EVAL_ENV), seeds)
    batched_rate = batched.lengths.sum() / (time.perf_counter() - t0)
    env = gym.make(EVAL_ENV)
    t0, steps = time.perf_counter(), 0
    for s in seeds:
        obs, _ = env.reset(seed=s)
        done = False
        while not done:
            obs, _, term, trunc, _ = env.step(policy(obs[None])[0])
            steps += 1
            done = term or trunc
    return batched_rate, steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--algos", default="td3_bc,iql")
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10,
                        help="ctrlbench and its peer take turns this many times, --updates/rounds updates a turn")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--dataset", default=None, help="train on this built Minari dataset, not synthetic data")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--cuda-graphs", action="store_true", help="also time ctrlbench with CUDA-graph replay")
    parser.add_argument("--parallel", type=int, default=0, help="also time this many TD3+BC runs at once")
    parser.add_argument("--roofline", action="store_true",
                        help="also print each rate as GFLOP/s next to the machine's dense matmul GFLOP/s, and the "
                             "rate of each update's matmuls alone (the ceiling of any loop using these kernels)")
    parser.add_argument("--side-by-side", action="store_true",
                        help="also time two copies of each update's matmuls side by side, one thread each, against "
                             "the two one after the other on all threads (CPU only)")
    args = parser.parse_args()
    if args.side_by_side and args.device != "cpu":
        raise SystemExit("error: --side-by-side measures CPU threads; it takes --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_transitions(args.dataset).transitions if args.dataset else synthetic(args.size)
    print(f"# {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, device {args.device}, {args.dataset or 'synthetic'}: {len(data)} transitions, batch {BATCH}")
    rates: dict[str, float] = {}
    peers: dict[str, float | None] = {}
    missing = d3rlpy_missing()
    for name in args.algos.split(","):
        steps = {"ctrlbench": ctrlbench_step(name, data, args.device)}
        peer_step = d3rlpy_step(name, data, args.device)
        if peer_step is not None:
            steps["d3rlpy"] = peer_step
        by_round = interleaved_rates(steps, args.updates, args.warmup, args.device, args.rounds)
        ours = rates[name] = harmonic_mean(by_round["ctrlbench"])
        peer = peers[name] = harmonic_mean(by_round["d3rlpy"]) if peer_step else None
        peer_text = f"{peer:.1f}" if peer else "-"
        if peer:
            each = sorted(a / b for a, b in zip(by_round["ctrlbench"], by_round["d3rlpy"], strict=True))
            ratio = f"{ours / peer:.2f}x (rounds {each[0]:.2f}-{each[-1]:.2f}, median {np.median(each):.2f})"
        else:
            ratio = f"n/a (no d3rlpy peer: {missing or 'no counterpart'})"
        print(f"{name:8s} ctrlbench {ours:8.1f} updates/s   d3rlpy {peer_text:>8s} updates/s   ratio {ratio}")
    # each algorithm built and its two updates recorded once, for both reports (PRDC builds a k-d tree on `data`)
    profiles = {name: update_profile(name, args.device, data) for name in rates} if (
        args.roofline or args.side_by_side) else {}
    if args.roofline:
        peak = gemm_flops_per_s(args.device)
        print(f"roofline dense fp32 matmul (2048^3) {peak / 1e9:8.1f} GFLOP/s on this device and thread count")
        for name, ours in rates.items():
            flops, calls = profiles[name]
            print(f"{name:8s} {flops / 1e6:6.1f} MFLOP/update: ctrlbench {ours * flops / 1e9:6.1f} GFLOP/s "
                  f"({ours * flops / peak:.0%} of the matmul rate)")
            ceiling = matmul_only_rate(calls, args.updates, args.warmup, args.device)
            vs_peer = f", {ceiling / peers[name]:.2f}x d3rlpy" if peers.get(name) else ""
            print(f"{name:8s} its matmuls alone {ceiling:8.1f} updates/s{vs_peer}: ctrlbench runs at "
                  f"{ours / ceiling:.0%} of that")
    if args.side_by_side:
        for name in rates:
            gain, each = side_by_side_gain(profiles[name][1], args.updates, args.warmup, args.rounds)
            print(f"{name:8s} its matmuls twice: side by side, one thread each, {gain:.2f}x one after the other on "
                  f"{torch.get_num_threads()} threads (rounds {min(each):.2f}-{max(each):.2f})")
    if args.cuda_graphs:
        for name in ("bc", "td3_bc", "iql"):
            graphed = ctrlbench_rate(name, data, args.updates, args.warmup, args.device, cuda_graphs=True)
            eager = rates.get(name) or ctrlbench_rate(name, data, args.updates, args.warmup, args.device)
            print(f"{name:8s} ctrlbench CUDA graphs {graphed:8.1f} updates/s   eager {eager:8.1f}   "
                  f"ratio {graphed / eager:.2f}x")
    if args.parallel:
        each = parallel_rate(args.parallel, args.size, args.updates, args.warmup, args.device, args.threads,
                             args.cuda_graphs)
        single = rates.get("td3_bc") or ctrlbench_rate("td3_bc", data, args.updates, args.warmup, args.device)
        print(f"td3_bc   {args.parallel} runs at once: {sum(each):8.1f} updates/s in all "
              f"({', '.join(f'{r:.0f}' for r in each)}), {sum(each) / single:.2f}x one eager run")
    if "prdc" in rates:  # the dataset-constraint search must not dominate an update
        td3 = rates.get("td3_bc") or ctrlbench_rate("td3_bc", data, args.updates, args.warmup, args.device)
        print(f"prdc     one update costs {td3 / rates['prdc']:.2f}x a TD3+BC update (target: at most 3x)")
    if args.eval_episodes:
        batched, plain = eval_rates(args.eval_episodes)
        print(f"eval     batched {batched:8.0f} env-steps/s   plain loop {plain:8.0f} env-steps/s   "
              f"ratio {batched / plain:.2f}x")


if __name__ == "__main__":
    main()
