"""Learning-rate schedules computed on the device.

torch's LR schedulers write a Python float into the optimizer every step. A CUDA graph replays kernels, not
Python, so such a step would be frozen at its captured value. Here the learning rate is a tensor in the
optimizer's param group (fused and capturable Adam take one) that each step rewrites in place.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class CosineLR:
    """lr_t = base * (1 + cos(pi t / total)) / 2 after t steps: torch's CosineAnnealingLR with eta_min 0, in its
    closed form (past `total` it rises again, as torch's does)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total: int) -> None:
        self.optimizer = optimizer
        group = optimizer.param_groups[0]
        device = group["params"][0].device
        self.base = float(group["lr"])
        self.total = max(1, total)
        self.t = torch.zeros((), dtype=torch.float64, device=device)
        self.lr = torch.tensor(self.base, device=device)
        self._attach()

    def _attach(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def _refresh(self) -> None:
        self.lr.copy_(torch.cos(self.t * (math.pi / self.total)).add_(1.0).mul_(0.5 * self.base))

    def step(self) -> None:
        self.t.add_(1.0)
        self._refresh()

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t.clone(), "base": self.base, "total": self.total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base, self.total = float(state["base"]), int(state["total"])
        self.t.copy_(state["t"])
        self._refresh()
        self._attach()  # the optimizer's own load_state_dict put a copy of the saved tensor there
