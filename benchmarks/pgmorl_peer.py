"""morl-baselines' PGMORL as a peer on a suite MO task, scored by the suite's own metric code (tasks/pareto.py).

  python benchmarks/pgmorl_peer.py --task mo-hopper-2obj-v5 --steps 5000 --steps-per-iteration 128 --num-envs 1
                                                            # a 5k-step smoke (about a minute on 2 busy cores)
  python benchmarks/pgmorl_peer.py --task mo-halfcheetah-v5 --steps 3000000 --out pgmorl.json   # a real budget

morl-baselines is a benchmark-only dependency (never a core one): it pins pillow < 12 through moviepy and pulls
wandb, cvxpy and pycddlib, so install it in its own environment that sees the suite's packages:
  python -m venv --system-site-packages .venv-morl && .venv-morl/bin/pip install morl-baselines==1.3.0
(checked: morl-baselines 1.3.0 installs and imports there next to gymnasium 1.4, mo-gymnasium 1.3.2 and torch 2.13).

PGMORL (Xu et al. 2020) is run with morl-baselines' defaults (B4: 4 envs, population 6, 2048 steps per iteration,
gamma 0.995, [64, 64] nets, PPO clip 0.2, 10 epochs, 32 minibatches), `log=False` (no wandb), on the task's own
environment id and with its reference point as PGMORL's HV reference. Its warm-up and evolutionary iterations are
scaled to the env-step budget `--steps` (morl-baselines' 80 warm-up + 20 per generation assume millions of
steps): iterations = steps // (steps per iteration x envs x population), 80% of them warm-up (at least 1), the
rest one evolutionary generation (at least 1 iteration, so a budget below one iteration overshoots it: the
printed env-step count is what PGMORL took).

Scoring is the suite's, not PGMORL's: every policy of the final Pareto archive is evaluated like a run's final
evaluation (tasks/protocol.py): the task's environment, its reset seeds (run seed --seed, `--episodes` episodes),
the deterministic action (the mean of PGMORL's Gaussian, clipped to the action box as its ClipAction wrapper
does), discounted with the task's gamma_eval 0.99 (PGMORL trains and archives with 0.995). The policies were
trained on observations normalized by running statistics (morl-baselines' `make_env`: NormalizeObservation, then
clip to [-10, 10]); the evaluation applies the training env's final statistics, frozen. The front is the
non-dominated set of the policies' mean vector returns; HV (task reference point), EUM (task weight grid) and
cardinality come from tasks/pareto.py, as for the suite's own MO algorithms. `--out` writes them as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import atomic_write_json, check_writable_dir
from tasks import pareto
from tasks.mo_tasks import mo_tasks
from tasks.protocol import FINAL_STREAM, episode_seeds, evaluate

INSTALL = ("morl-baselines is not installed here: it is a benchmark-only dependency; install it in its own venv: "
           "python -m venv --system-site-packages .venv-morl && .venv-morl/bin/pip install morl-baselines==1.3.0 "
           "(docs/morl.md)")


def import_pgmorl():
    """PGMORL and morl-baselines' env maker, or a one-line reason why not."""
    try:
        from morl_baselines.multi_policy.pgmorl.pgmorl import PGMORL
        from morl_baselines.single_policy.ser.mo_ppo import make_env
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        raise CtrlbenchError(f"{INSTALL} (import failed: {missing})") from None
    return PGMORL, make_env


def find_task(task_id: str):
    tasks = {t.id: t for t in mo_tasks()}
    if task_id not in tasks:
        raise CtrlbenchError(f"unknown MO task {task_id!r}; known: {', '.join(tasks)}")
    return tasks[task_id]


def schedule(steps: int, steps_per_iteration: int, num_envs: int, pop_size: int) -> tuple[int, int]:
    """(warm-up iterations, evolutionary iterations) that fit `steps` env steps (module docstring)."""
    iterations = max(2, steps // (steps_per_iteration * num_envs * pop_size))
    warmup = max(1, round(0.8 * iterations))
    return warmup, max(1, iterations - warmup)


def obs_normalizer(vector_env):
    """PGMORL's observation transform of its first training env (running mean/var frozen, clip +-10)."""
    from gymnasium.wrappers import NormalizeObservation

    env = vector_env.envs[0]
    while not isinstance(env, NormalizeObservation):
        env = env.env
    rms, eps = env.obs_rms, env.epsilon
    mean, std = np.asarray(rms.mean), np.sqrt(np.asarray(rms.var) + eps)
    return lambda obs: np.clip((obs - mean) / std, -10.0, 10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mo-hopper-2obj-v5", help="a suite MO task id (tasks/mo_tasks.py)")
    parser.add_argument("--steps", type=int, default=5000, help="env-step budget of PGMORL's training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=5, help="evaluation episodes per archived policy")
    parser.add_argument("--steps-per-iteration", type=int, default=2048, help="morl-baselines' default 2048")
    parser.add_argument("--num-envs", type=int, default=4, help="morl-baselines' default 4")
    parser.add_argument("--pop-size", type=int, default=6, help="morl-baselines' default 6")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, help="write the front and metrics as JSON")
    args = parser.parse_args()
    try:
        run(args)
    except CtrlbenchError as e:
        raise SystemExit(f"error: {e}") from None


def run(args: argparse.Namespace) -> None:
    task = find_task(args.task)
    if args.pop_size < 4:  # its performance predictor fits each candidate on >= 4 neighbouring samples
        raise CtrlbenchError(f"PGMORL needs --pop-size >= 4 (got {args.pop_size}): its predictor needs 4 samples")
    if args.out:  # fail before hours of training, not after
        check_writable_dir(args.out.resolve().parent, "--out's folder")
    PGMORL, make_env = import_pgmorl()
    import torch

    torch.set_num_threads(args.threads)
    ref = np.asarray(task.reference_point, dtype=np.float64)
    warmup, evolutionary = schedule(args.steps, args.steps_per_iteration, args.num_envs, args.pop_size)
    start = time.time()
    with contextlib.redirect_stdout(sys.stderr):  # PGMORL prints its progress: keep stdout for the result
        agent = PGMORL(env_id=task.env_id, origin=ref, num_envs=args.num_envs, pop_size=args.pop_size,
                       warmup_iterations=warmup, evolutionary_iterations=evolutionary,
                       steps_per_iteration=args.steps_per_iteration, seed=args.seed, log=False, device="cpu")
        eval_env = make_env(task.env_id, args.seed + 100, 1, "pgmorl_peer_eval", agent.gamma)()
        agent.train(total_timesteps=args.steps, eval_env=eval_env, ref_point=ref,
                    num_eval_weights_for_eval=len(task.preference_weights))
    train_s = time.time() - start
    normalize = obs_normalizer(agent.env)
    low, high = agent.action_space.low, agent.action_space.high
    seeds = episode_seeds(args.seed, FINAL_STREAM, args.episodes)
    points = []
    for member in agent.archive.individuals:
        actor = member.networks.actor_mean

        def policy(obs: np.ndarray, actor=actor) -> np.ndarray:
            with torch.no_grad():
                mean = actor(torch.as_tensor(normalize(obs), dtype=torch.float32)).numpy()
            return np.clip(mean, low, high)

        result = evaluate(policy, task.make_env, seeds, discount=task.eval_discount)
        points.append(result.returns.reshape(len(seeds), -1).mean(axis=0))
    front = pareto.pareto_front(np.asarray(points))
    inside = front[np.all(front > ref, axis=1)]
    metrics = {"task": task.id, "algorithm": "pgmorl (morl-baselines)", "seed": args.seed,
               "env_steps": int(agent.global_step), "budget": args.steps, "warmup_iterations": warmup,
               "evolutionary_iterations": evolutionary, "train_s": round(train_s, 1),
               "archive_size": len(points), "front": front.tolist(), "cardinality": len(front),
               "reference_point": ref.tolist(), "points_below_reference": len(front) - len(inside),
               "hypervolume": pareto.hypervolume(inside, ref) if len(inside) else 0.0,
               "expected_utility": pareto.expected_utility(front, np.asarray(task.preference_weights)),
               "weights": [list(w) for w in task.preference_weights], "eval_discount": task.eval_discount,
               "episodes": args.episodes}
    print(f"# {task.id}, PGMORL (morl-baselines), seed {args.seed}, {metrics['env_steps']} env steps "
          f"(budget {args.steps}), {train_s:.0f} s training")
    print(f"archive {len(points)} policies, front {len(front)} points (below the reference: "
          f"{metrics['points_below_reference']})")
    print(f"hypervolume {metrics['hypervolume']:,.1f}  expected utility {metrics['expected_utility']:.3f}  "
          f"cardinality {len(front)}")
    if args.out:
        atomic_write_json(args.out, metrics)


if __name__ == "__main__":
    main()
