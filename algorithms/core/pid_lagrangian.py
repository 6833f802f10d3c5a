"""The PID Lagrangian multiplier (Stooke, Achiam, Abbeel, ICML 2020, "Responsive Safety in RL by PID Lagrangian
Methods") as OSRL and FSRL implement it: the multiplier is not learned by a gradient step but set, at every call, by a
PID controller on the constraint violation  e_t = mean_B(J_c) - d  (J_c a cost estimate, d its threshold):

    e_t      = mean(J_c - d)
    D_t      = max(0, e_t - e_{t-1})                     derivative: only rises of the violation count; e_0 = 0
    I_t      = max(0, I_{t-1} + e_t)                     integral: a plain sum (no dt, no decay), projected onto >= 0
    P_t      = max(0, e_t)  (OSRL)   or   e_t  (FSRL)    proportional
    lambda_t = max(0, KP P_t + KI I_t + KD D_t)          no upper bound

OSRL 03a4586 `osrl/common/net.py:356-387` (`LagrangianPIDController.control`, used by BCQ-L and BEAR-L with
(KP, KI, KD) = (0.1, 0.003, 0.001), `examples/configs/bcql_configs.py:51`): the proportional term is clipped at 0
(net.py:385 `KP * F.relu(error_new)`); the integral, derivative and output projections are net.py:381-382,385.
FSRL e056fc9 `fsrl/utils/optim_util.py:28-41` (`LagrangianOptimizer.step`, used by its online PPO/SAC/DDPG/TRPO-Lag,
defaults (0.05, 0.0005, 0.1)): the same integral, derivative and output projection, an unclipped proportional term
(`clip_proportional=False` here). Neither bounds lambda from above.

The controller's state (e_{t-1}, I_t, lambda_t) lives in 0-d tensors on the training device, updated in place, so a
step needs no host sync; it is checkpointed by state_dict/load_state_dict (the gains and the threshold are config).
"""

from __future__ import annotations

from typing import Any

import torch

OSRL_PID = (0.1, 0.003, 0.001)  # (KP, KI, KD) of OSRL's BCQ-L and BEAR-L (bcql_configs.py:51, bearl_configs.py:55)


class PIDLagrangian:
    """lambda >= 0 from a PID controller on e = mean(J_c) - threshold; one `step` per gradient step."""

    def __init__(self, kp: float = OSRL_PID[0], ki: float = OSRL_PID[1], kd: float = OSRL_PID[2],
                 threshold: float = 0.0, clip_proportional: bool = True,
                 device: torch.device | str = "cpu") -> None:
        if min(kp, ki, kd) < 0:
            raise ValueError("the PID gains (KP, KI, KD) must be >= 0")
        self.kp, self.ki, self.kd = float(kp), float(ki), float(kd)
        self.threshold = float(threshold)
        self.clip_proportional = clip_proportional  # True: OSRL's max(0, e); False: FSRL's e
        self.error_old = torch.zeros((), device=device)  # e_{t-1}
        self.error_integral = torch.zeros((), device=device)  # I_t
        self.multiplier = torch.zeros((), device=device)  # lambda_t

    @torch.no_grad()
    def step(self, estimate: torch.Tensor) -> torch.Tensor:
        """Advance the controller with the cost estimates J_c (any shape; their mean is used) and return the new
        lambda as a constant 0-d tensor (a copy: later steps do not change it)."""
        error = (estimate.detach().float() - self.threshold).mean().to(self.error_old.device)
        derivative = (error - self.error_old).clamp(min=0.0)
        self.error_integral.add_(error).clamp_(min=0.0)
        self.error_old.copy_(error)
        proportional = error.clamp(min=0.0) if self.clip_proportional else error
        lam = self.kp * proportional + self.ki * self.error_integral + self.kd * derivative
        self.multiplier.copy_(lam.clamp(min=0.0))
        return self.multiplier.clone()

    @property
    def value(self) -> torch.Tensor:
        """lambda after the last step (0 before any), as a constant copy."""
        return self.multiplier.clone()

    def state_dict(self) -> dict[str, Any]:
        return {"error_old": self.error_old.clone(), "error_integral": self.error_integral.clone(),
                "multiplier": self.multiplier.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.error_old.copy_(state["error_old"])
        self.error_integral.copy_(state["error_integral"])
        self.multiplier.copy_(state["multiplier"])
