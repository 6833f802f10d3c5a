"""The PID Lagrangian multiplier (algorithms/core/pid_lagrangian.py) against OSRL's and FSRL's rules on hand values."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from algorithms.core.pid_lagrangian import OSRL_PID, PIDLagrangian


def osrl_control(errors: list[float], kp: float, ki: float, kd: float, clip_p: bool = True) -> list[float]:
    """OSRL net.py:380-387 (clip_p=True) / FSRL optim_util.py:34-41 (clip_p=False), written out on floats."""
    old, integral, out = 0.0, 0.0, []
    for e in errors:
        diff = max(0.0, e - old)
        integral = max(0.0, integral + e)
        old = e
        p = max(0.0, e) if clip_p else e
        out.append(max(0.0, kp * p + ki * integral + kd * diff))
    return out


def test_osrl_defaults() -> None:
    assert OSRL_PID == (0.1, 0.003, 0.001)
    pid = PIDLagrangian()
    assert (pid.kp, pid.ki, pid.kd) == OSRL_PID and pid.clip_proportional
    assert pid.value.item() == 0.0


def test_step_by_hand() -> None:
    pid = PIDLagrangian(kp=0.1, ki=0.01, kd=1.0, threshold=2.0)
    # batch mean 4 -> e = 2: P 0.2, I 2 -> 0.02, D max(0, 2 - 0) = 2 -> 2.0
    assert pid.step(torch.tensor([3.0, 5.0])).item() == pytest.approx(0.2 + 0.02 + 2.0)
    # e = 1: P 0.1, I 3 -> 0.03, D max(0, 1 - 2) = 0
    assert pid.step(torch.tensor([3.0])).item() == pytest.approx(0.1 + 0.03)
    # e = -5: P clipped to 0, I max(0, 3 - 5) = 0, D 0 -> lambda 0
    assert pid.step(torch.tensor([-3.0])).item() == 0.0
    assert pid.error_integral.item() == 0.0, "the integral is projected onto >= 0"
    # e = 0.5: P 0.05, I 0.5 -> 0.005, D 0.5 - (-5) = 5.5 -> 5.5
    assert pid.step(torch.tensor([2.5])).item() == pytest.approx(0.05 + 0.005 + 5.5)


def test_matches_osrl_and_fsrl_on_a_random_error_sequence() -> None:
    errors = np.random.default_rng(0).normal(0.0, 2.0, 200).tolist()
    for clip_p in (True, False):
        pid = PIDLagrangian(0.5, 0.01, 0.2, threshold=0.0, clip_proportional=clip_p)
        ours = [pid.step(torch.tensor(e)).item() for e in errors]
        assert min(ours) >= 0.0
        np.testing.assert_allclose(ours, osrl_control(errors, 0.5, 0.01, 0.2, clip_p), rtol=1e-5, atol=1e-6)
    # the two rules differ where a negative error outweighs the integral and derivative terms
    pid_osrl, pid_fsrl = PIDLagrangian(1.0, 0.1, 0.0), PIDLagrangian(1.0, 0.1, 0.0, clip_proportional=False)
    for e in (3.0, -1.0):
        lo, lf = pid_osrl.step(torch.tensor(e)), pid_fsrl.step(torch.tensor(e))
    assert lo.item() == pytest.approx(0.1 * 2.0) and lf.item() == pytest.approx(max(0.0, -1.0 + 0.1 * 2.0))


def test_never_negative_and_no_upper_bound() -> None:
    pid = PIDLagrangian(threshold=1.0)
    for v in (0.5, 0.0, -1.0, -100.0):  # errors -0.5, -1, -2, -101: below the budget and falling
        assert pid.step(torch.tensor([v])).item() == 0.0
    e = 1e6 - 1.0
    big = pid.step(torch.tensor([1e6])).item()
    assert big == pytest.approx(0.1 * e + 0.003 * e + 0.001 * (e + 101.0), rel=1e-5)


def test_integral_keeps_lambda_up_while_violated() -> None:
    pid = PIDLagrangian(kp=0.0, ki=0.5, kd=0.0, threshold=0.0)
    values = [pid.step(torch.tensor(1.0)).item() for _ in range(4)]
    assert values == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_returns_a_constant_copy_and_ignores_gradients() -> None:
    pid = PIDLagrangian(threshold=0.0)
    q = torch.tensor([2.0, 4.0], requires_grad=True)
    lam = pid.step(q)
    assert not lam.requires_grad
    before = lam.item()
    pid.step(torch.tensor([100.0]))
    assert lam.item() == before, "a returned multiplier does not change with later steps"


def test_state_dict_round_trip_continues_identically() -> None:
    errors = np.random.default_rng(1).normal(0.5, 1.0, 20)
    a = PIDLagrangian(threshold=0.2)
    for e in errors[:10]:
        a.step(torch.tensor(e))
    f = io.BytesIO()
    torch.save(a.state_dict(), f)
    f.seek(0)
    b = PIDLagrangian(threshold=0.2)
    b.load_state_dict(torch.load(f))
    assert b.value.item() == a.value.item()
    for e in errors[10:]:
        assert b.step(torch.tensor(e)).item() == a.step(torch.tensor(e)).item()


def test_rejects_negative_gains() -> None:
    with pytest.raises(ValueError):
        PIDLagrangian(kp=-0.1)
