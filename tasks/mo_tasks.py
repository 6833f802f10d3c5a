"""The multi-objective tasks: MO-Gymnasium's continuous MuJoCo v5 envs and a smoke task (safe_and_morl.md C3, C4).

Tasks (id = MO-Gymnasium's env id; kind "multi-objective", family "mo-mujoco", no dataset: online):
- 2 objectives: mo-halfcheetah-v5 [speed, energy], mo-hopper-2obj-v5 [speed, height], mo-walker2d-v5 [speed,
  energy], mo-ant-2obj-v5 [x velocity, y velocity], mo-swimmer-v5 [speed, energy];
- 3 objectives: mo-hopper-v5 [speed, height, energy];
- smoke-mo-v0: a 2-objective Pendulum [upright, energy] (tasks/mo_envs.py), 200 steps: runs in seconds.
Energy is MO-Gymnasium's unscaled control cost -sum(a^2); on the "+healthy" envs (hopper, walker2d, ant) the
healthy reward is added to every objective (B1).

Environments are named "mo_gymnasium.envs.mujoco:<id>" (gymnasium's "module:id" form: `gym.make` imports the
module that registers MO-Gymnasium's MuJoCo ids first, in any process) and made with the passive env checker off
(`env_kwargs`), as MO-Gymnasium's own `make` does: the checker wants scalar rewards.

What the task fixes (identical for every algorithm):
- gamma_eval = 0.99: evaluation returns are discounted vector returns (morl-baselines' convention), over full
  1000-step episodes (C-MORL truncates at 500: not comparable);
- the weight grid: pymoo's Riesz s-energy directions, seed 42 (`tasks.pareto.weight_grid`, morl-baselines'
  `equally_spaced_weights`), 11 weights for 2 objectives, 21 for 3, stored below as computed by pymoo 0.6.2 (the
  optimization takes seconds, too long for listing tasks; tests/test_mo_tasks.py checks them against pymoo).
  morl-baselines evaluates 100 weights x 5 episodes x 1000 steps = 500k env steps per evaluation, minutes of a CPU
  core per evaluation point and algorithm; 11 (every 0.1 of the 2-simplex) and 21 (every 0.2 of the 3-simplex:
  PGMORL's own weight step) cost 55k and 105k steps at 5 episodes per weight, and still put a weight in every
  tenth (fifth) of the simplex, so the front's shape is resolved. The expected utility (EUM) is over the same
  grid, so it is not numerically the morl-baselines value (50 weights): compare algorithms on this protocol;
- the reference point: -100 per objective (morl-baselines' and C-MORL's), except the energy objective of
  mo-halfcheetah-v5, mo-swimmer-v5 and mo-walker2d-v5, -1000: v5 reports energy unscaled (-sum(a^2); 10x v4's
  half-cheetah), a uniform-random half-cheetah already spends -199.8 discounted, and the suite's Walker2d SAC
  expert -186.1 (docs/morl.md): at -100 the fast end of a front would add nothing to the hypervolume. -1000 is
  below the analytic bound of any policy there (-sum(a^2) >= -6 (cheetah), -2 (swimmer) a step; walker2d
  -6 + 1 healthy: >= -600 / -200 / -500 discounted). Each task's reason is in its description. On mo-hopper-v5
  the -100 energy reference could still be undercut by a hopper surviving 1000 steps at near-full torque
  (bound -200; the expert spends +20.3 net of the healthy reward): such points add nothing to the hypervolume
  and are counted in the record (`points_below_reference`);
- the scalar score (the suite's normalized score): the protocol's utility, the mean over the grid of w.R of the
  policy evaluated at w (tasks/protocol.py), normalized with
  ref_min = the trivial-policy floor, max over the zero-action and uniform-random policies of that utility;
  ref_max = the expected utility over the grid of the anchor front {zero, random, the suite's single-objective SAC
  expert of the robot} (per weight, the best of standing still and running like the expert), for the tasks whose
  robot has a committed expert (tasks/policies: hopper, halfcheetah, walker2d) and the smoke task (its swing-up
  controller). mo-ant-2obj-v5 and mo-swimmer-v5 have no committed expert: their ref_max is provisionally
  ref_min + 100 (a score of 100 = 100 units of discounted utility above the floor, about 1 m/s more speed held
  over the discounted horizon) until experts of Ant-v5 and Swimmer-v5 are committed.
  All anchors: 5 episodes, reset seeds 0-4, measured by `python benchmarks/mo_floors.py` (tasks/mo_floors.py),
  numbers in docs/morl.md. The leaderboard's HV_norm/EUM_norm (leaderboard/morl.py) use the floors too.
What the run protocol fixes (the runner, not the task): a deterministic policy (`act(obs, weight)`, the mean
action), the seeded episodes (the same for every weight and algorithm) and the number of episodes per weight:
`--eval-episodes` (final) and `--curve-episodes`; 5 per weight is this suite's MO protocol (morl-baselines'),
so run MO tasks with `--eval-episodes 5` (the default 50 is 50 per weight: 550k steps on a 2-objective task).
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.mo_envs import TWO_OBJECTIVE_PENDULUM_ID, suite_mo_env_id
from tasks.spec import TaskSpec

EVAL_DISCOUNT = 0.99
MO_MODULE = "mo_gymnasium.envs.mujoco"  # importing it registers MO-Gymnasium's MuJoCo ids
ENV_KWARGS = {"disable_env_checker": True}

# tasks.pareto.weight_grid(2, 11) and weight_grid(3, 21) (pymoo 0.6.2 Riesz s-energy, seed 42)
WEIGHTS_2 = ((0.0, 1.0), (0.09932304892289184, 0.9006769510771082), (0.19939350152803456, 0.8006064984719654),
             (0.29953140767175895, 0.7004685923282411), (0.39980410508598646, 0.6001958949140136),
             (0.5000065107390209, 0.4999934892609792), (0.6001912939585097, 0.39980870604149027),
             (0.700385071564751, 0.2996149284352489), (0.8006226786707634, 0.19937732132923666),
             (0.9006791334855867, 0.09932086651441331), (1.0, 0.0))
WEIGHTS_3 = ((0.0, 0.0, 1.0), (0.0, 0.20020689255602284, 0.7997931074439771),
             (0.0, 0.40018741297789845, 0.5998125870221016), (0.0, 0.5998147262278819, 0.40018527377211804),
             (0.0, 0.7996469537255185, 0.20035304627448147), (0.0, 1.0, 0.0),
             (0.1998065333663145, 0.19978984406529943, 0.6004036225683862),
             (0.1998773472213832, 0.3999872363812551, 0.4001354163973617),
             (0.19996674849068757, 0.6002095779670451, 0.1998236735422674),
             (0.20005381336178832, 0.0, 0.7999461866382117), (0.20014084651273195, 0.7998591534872681, 0.0),
             (0.39997477139888704, 0.0, 0.600025228601113), (0.4002123591312799, 0.5997876408687202, 0.0),
             (0.40023917184833296, 0.19960240214267969, 0.4001584260089874),
             (0.40041215644697076, 0.3998281862146473, 0.19975965733838202),
             (0.6000345607904994, 0.0, 0.3999654392095006), (0.6000407634814079, 0.39995923651859205, 0.0),
             (0.6007094691574452, 0.19951720388500688, 0.199773326957548),
             (0.7999809317602256, 0.0, 0.20001906823977447), (0.800001512299399, 0.19999848770060108, 0.0),
             (1.0, 0.0, 0.0))
WEIGHTS = {2: WEIGHTS_2, 3: WEIGHTS_3}
N_WEIGHTS = {2: 11, 3: 21}


@dataclass(frozen=True)
class MOTask:
    id: str  # the task id = MO-Gymnasium's env id (smoke: the suite's)
    objectives: tuple[str, ...]
    reference_point: tuple[float, ...]
    reference_reason: str
    ref_min: float  # measured: the trivial-policy utility floor (module docstring)
    ref_max: float  # measured: the anchor front's expected utility, or ref_min + 100 (no expert)
    description: str
    env_id: str = ""  # default: MO_MODULE:<id>


_V4_REF = "-100 per objective (morl-baselines and C-MORL)"
_ENERGY_REF = ("-100 for speed, -1000 for energy: v5 energy is unscaled -sum(a^2) (10x v4's cheetah), which a "
               "fast policy drives below -100; any policy >= -{bound} discounted")
_NO_EXPERT = "ref_max provisional (no committed expert): ref_min + 100"

# ref_min / ref_max: `python benchmarks/mo_floors.py` (5 episodes, reset seeds 0-4; docs/morl.md)
MO_TASKS = (
    MOTask("mo-halfcheetah-v5", ("speed", "energy"), (-100.0, -1000.0), _ENERGY_REF.format(bound=600),
           ref_min=-0.0982, ref_max=157.5131, description="HalfCheetah-v5, [x velocity, -sum(a^2)]"),
    MOTask("mo-hopper-2obj-v5", ("speed", "height"), (-100.0, -100.0), _V4_REF,
           ref_min=60.8109, ref_max=188.9239, description="Hopper-v5, [x velocity, 10 z], +healthy in each"),
    MOTask("mo-walker2d-v5", ("speed", "energy"), (-100.0, -1000.0),
           _ENERGY_REF.format(bound=500) + "; the suite's Walker2d SAC expert spends -186.1 (docs/morl.md)",
           ref_min=65.8813, ref_max=103.0004, description="Walker2d-v5, [x velocity, -sum(a^2)], +healthy in each"),
    MOTask("mo-ant-2obj-v5", ("x velocity", "y velocity"), (-100.0, -100.0), _V4_REF,
           ref_min=101.1023, ref_max=201.1023, description=f"Ant-v5, [x velocity, y velocity], +healthy, contact and "
                                                  f"control cost in each; {_NO_EXPERT}"),
    MOTask("mo-swimmer-v5", ("speed", "energy"), (-100.0, -1000.0), _ENERGY_REF.format(bound=200),
           ref_min=0.4393, ref_max=100.4393, description=f"Swimmer-v5, [x velocity, -sum(a^2)]; {_NO_EXPERT}"),
    MOTask("mo-hopper-v5", ("speed", "height", "energy"), (-100.0, -100.0, -100.0), _V4_REF,
           ref_min=66.1598, ref_max=137.6228, description="Hopper-v5, [x velocity, 10 z, -sum(a^2)], +healthy in each"),
    MOTask("smoke-mo-v0", ("upright", "energy"), (-1500.0, -400.0),
           "below the analytic bounds (-1409 upright, -347 energy discounted over 200 steps)",
           ref_min=-267.6204, ref_max=-93.9428,
           description="Pendulum-v1 with reward [upright, -u^2] (200 steps); seconds",
           env_id=suite_mo_env_id(TWO_OBJECTIVE_PENDULUM_ID)),
)


# (zero-action, uniform-random) mean discounted vector returns, 5 episodes on reset seeds 0-4
# (`python benchmarks/mo_floors.py`): the leaderboard's hypervolume and expected-utility floors (leaderboard/morl.py)
FLOOR_POINTS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mo-halfcheetah-v5": ((-0.1965, 0.0), (-9.5466, -199.8423)),
    "mo-hopper-2obj-v5": ((76.1365, 45.4856), (17.4475, 13.8908)),
    "mo-walker2d-v5": ((61.1601, 70.6024), (5.8903, -21.9041)),
    "mo-ant-2obj-v5": ((99.798, 102.4066), (-25.3667, -22.317)),
    "mo-swimmer-v5": ((0.8786, 0.0), (1.999, -65.9531)),
    "mo-hopper-v5": ((76.1365, 45.4856, 76.8502), (17.4649, 13.9082, 0.3453)),
    "smoke-mo-v0": ((-535.2469, 0.0), (-535.1911, -112.8815)),
}


def mo_task(t: MOTask) -> TaskSpec:
    d = len(t.objectives)
    return TaskSpec(
        id=t.id, dataset_id=None, env_id=t.env_id or f"{MO_MODULE}:{t.id}", kind="multi-objective",
        family="smoke" if t.id.startswith("smoke") else "mo-mujoco", env_kwargs=dict(ENV_KWARGS),
        reward_dim=d, preference_weights=WEIGHTS[d], reference_point=t.reference_point, eval_discount=EVAL_DISCOUNT,
        ref_min_score=t.ref_min, ref_max_score=t.ref_max,
        description=f"{t.description}; objectives {', '.join(t.objectives)}; {N_WEIGHTS[d]} weights, gamma 0.99; "
                    f"reference point {list(t.reference_point)}: {t.reference_reason}",
    )


def mo_tasks() -> list[TaskSpec]:
    return [mo_task(t) for t in MO_TASKS]


OBJECTIVES = {t.id: t.objectives for t in MO_TASKS}  # axis labels of the front plots
