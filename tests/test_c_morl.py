"""C-MORL (algorithms/c_morl.py) and its linear-scalarization baseline (algorithms/morl_ls_ppo.py): the Pareto archive
on hand-made fronts, selection, the two stages end to end on a tiny two-objective env, checkpoints."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from algorithms.c_morl import CMORL, CMORLConfig
from algorithms.core.errors import CtrlbenchError
from algorithms.core.mo_ppo import Member, ParetoArchive, crowding_distance, new_learner, pareto_indices
from algorithms.morl_ls_ppo import LSPPO, LSPPOConfig
from tests.test_mo_ppo import TINY, mo_context

TINY_CMORL = dict(**TINY, delta_weight=0.5, estimate_episodes=1, estimate_max_steps=10, eval_interval=2, num_select=2,
                  update_iter=2, reference_point=(-2000.0, -100.0))


def archive_of(points: list[tuple[float, float]], reference=(-10.0, -10.0), capacity: int = 200) -> ParetoArchive:
    ctx = mo_context()
    learner = new_learner(CMORLConfig(**TINY), ctx, np.array([0.5, 0.5]))
    archive = ParetoArchive(np.asarray(reference), capacity)
    archive.update([Member(learner, np.asarray(p, np.float64)) for p in points])
    return archive


def test_crowding_distance_on_a_hand_made_front() -> None:
    front = np.array([[0.0, 5.0], [1.0, 4.0], [4.0, 2.0], [5.0, 0.0]])
    cd = crowding_distance(front)
    assert cd[0] == cd[3] == math.inf
    assert cd[1] == pytest.approx(4 / 5 + 3 / 5)  # objective 0: (4 - 0) / 5; objective 1: (5 - 2) / 5
    assert cd[2] == pytest.approx(4 / 5 + 4 / 5)
    assert np.all(crowding_distance(front[:2]) == math.inf)  # two points: both boundaries
    assert crowding_distance(np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]]))[1] == pytest.approx(1.0)  # zero range


def test_pareto_filter_drops_dominated_and_below_reference_points_and_keeps_duplicates() -> None:
    points = np.array([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0], [1.0, 1.0], [2.0, 2.0], [5.0, -20.0]])
    keep = pareto_indices(points, np.array([-10.0, -10.0]))
    assert keep == [1, 2, 4, 0]  # sorted by the first objective; (1, 1) is dominated, (5, -20) below the reference
    assert pareto_indices(points, np.array([1.5, -10.0])) == [2, 4, 0]


def test_archive_prunes_to_its_capacity_by_crowding_distance() -> None:
    front = [(0.0, 10.0), (1.0, 9.0), (2.0, 8.5), (6.0, 5.0), (10.0, 0.0), (0.5, 0.5)]  # the last is dominated
    archive = archive_of(front, capacity=3)
    kept = {tuple(p) for p in archive.points.tolist()}
    # the extremes (infinite distance) and the most isolated interior point (6, 5); (1, 9) and (2, 8.5) are crowded
    assert kept == {(0.0, 10.0), (10.0, 0.0), (6.0, 5.0)}


def test_selection_takes_the_largest_crowding_distance_and_never_the_same_point_twice() -> None:
    archive = archive_of([(0.0, 10.0), (1.0, 9.0), (6.0, 5.0), (10.0, 0.0)])
    first = {tuple(m.objs) for m in archive.select(2)}
    assert first == {(0.0, 10.0), (10.0, 0.0)}
    second = [tuple(m.objs) for m in archive.select(2)]
    assert second == [(6.0, 5.0), (1.0, 9.0)]  # (6, 5) is the more isolated one
    assert archive.select(2) == []
    archive.update([Member(archive.members[0].learner, np.array([3.0, 8.0]))])  # a new point is selectable
    assert [tuple(m.objs) for m in archive.select(2)] == [(3.0, 8.0)]


def test_act_uses_the_archive_policy_that_maximizes_the_weighted_estimate() -> None:
    ctx = mo_context(total_updates=12)
    algo = CMORL(CMORLConfig(**TINY_CMORL), ctx)
    obs = np.array([[1.0, 0.0, 0.5]], np.float32)
    # before the archive has any policy: the Stage-1 policy nearest in weight
    assert algo.policy_for(np.array([0.9, 0.1])) is algo.learners[2]  # grid (0, 1), (0.5, 0.5), (1, 0)
    a, b = algo.learners[0].clone(), algo.learners[1].clone()
    with torch.no_grad():
        a.net.actor[-1].bias.fill_(0.3)
        b.net.actor[-1].bias.fill_(-0.7)
    algo.archive.update([Member(a, np.array([10.0, -5.0])), Member(b, np.array([0.0, 0.0]))])
    assert algo.act(obs, np.array([1.0, 0.0]))[0, 0] == pytest.approx(a.mean_action(obs)[0, 0])
    assert algo.act(obs, np.array([0.0, 1.0]))[0, 0] == pytest.approx(b.mean_action(obs)[0, 0])
    assert algo.act(obs, np.array([0.2, 0.8])).dtype == np.float32


def test_c_morl_runs_both_stages_and_counts_every_env_step() -> None:
    torch.manual_seed(0)
    ctx = mo_context(total_updates=12)
    algo = CMORL(CMORLConfig(**TINY_CMORL), ctx)
    assert len(algo.weights) == 3 and algo.init_iterations == 2 and algo.stage1 == 6
    assert algo.milestones() == {"pareto_init": 6}
    stages, evaluated = [], 0
    for _ in range(12):
        m = algo.update()
        stages.append(m["stage"])
        evaluated += "eval_objective_0" in m
        assert all(math.isfinite(v) for v in m.values())
        if algo.step == 6:
            assert len(algo.archive) > 0 and algo.pending == []
    assert stages == [1.0] * 6 + [2.0] * 6
    assert evaluated == 3 + 6  # Stage 1: each policy after its 2nd (last) iteration; Stage 2: every iteration
    assert algo.eval_env_steps == evaluated * 10  # one 10-step evaluation episode each
    assert ctx.env_steps == 12 * 32 + algo.eval_env_steps
    assert algo.pending == [] and len(algo.archive) >= 1  # the last round's children joined the archive
    # Stage 2: two rounds (2 selected x 2 objectives x n), n = min(2, 6 // 4) = 1, then 2 left -> n = 1
    assert algo.rounds == 2


def test_c_morl_refuses_a_budget_below_one_iteration_per_policy() -> None:
    with pytest.raises(CtrlbenchError, match="below one Stage-1 iteration per policy"):
        CMORL(CMORLConfig(**TINY_CMORL), mo_context(total_updates=2))


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_c_morl_save_load_resumes_identically() -> None:
    torch.manual_seed(0)
    cfg = CMORLConfig(**TINY_CMORL)
    algo = CMORL(cfg, mo_context(total_updates=12))
    for _ in range(7):  # into Stage 2, mid-round
        algo.update()
    state = roundtrip(algo.state_dict())
    resumed = [CMORL(cfg, mo_context(total_updates=12, seed=0)) for _ in range(2)]
    for r in resumed:
        r.load_state_dict(state)
    obs = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -1.0]], np.float32)
    w = np.array([0.5, 0.5])
    np.testing.assert_array_equal(resumed[0].act(obs, w), algo.act(obs, w))
    assert resumed[0].step == 7 and len(resumed[0].archive) == len(algo.archive)
    assert [j.remaining for j in resumed[0].jobs] == [j.remaining for j in algo.jobs]
    runs = [[r.update() for _ in range(2)] for r in resumed]  # two resumes continue the same way
    assert runs[0] == runs[1]
    np.testing.assert_array_equal(resumed[0].archive.points, resumed[1].archive.points)
    np.testing.assert_array_equal(resumed[0].act(obs, w), resumed[1].act(obs, w))


def test_ls_ppo_trains_round_robin_and_acts_with_the_nearest_weight() -> None:
    torch.manual_seed(0)
    ctx = mo_context(total_updates=7)
    cfg = LSPPOConfig(**TINY, delta_weight=0.5)
    algo = LSPPO(cfg, ctx)
    assert algo.iterations == [3, 2, 2]
    policies = [algo.update()["policy"] for _ in range(7)]
    assert policies == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]
    assert [learner.iterations for learner in algo.learners] == [3, 2, 2]
    assert ctx.env_steps == 7 * 32  # no evaluation episodes
    obs = np.array([[1.0, 0.0, 0.5]], np.float32)
    np.testing.assert_array_equal(algo.act(obs, np.array([0.7, 0.3])),
                                  np.clip(algo.learners[1].mean_action(obs), -2, 2))  # (0.5, 0.5) is nearest
    np.testing.assert_array_equal(algo.act(obs, np.array([0.1, 0.9])),
                                  np.clip(algo.learners[0].mean_action(obs), -2, 2))
    state = roundtrip(algo.state_dict())
    resumed = [LSPPO(cfg, mo_context(total_updates=7)) for _ in range(2)]
    for r in resumed:
        r.load_state_dict(state)
    np.testing.assert_array_equal(resumed[0].act(obs, np.array([0.7, 0.3])), algo.act(obs, np.array([0.7, 0.3])))
    assert resumed[0].update() == resumed[1].update()
