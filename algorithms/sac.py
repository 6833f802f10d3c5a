"""SAC (Haarnoja et al., 2018): online soft actor-critic with automatic temperature, the online baseline.

On a sim-to-real task it trains in the simulator alone (`ctx.make_envs` hands out the simulator) and is scored on
the real environment: H2O's "SAC (sim only)" baseline. On a safe task it is the unconstrained baseline: it ignores
the cost, which it only reports.

Each `update()` is one vectorized environment step and at most one gradient step:
  act:     uniform random actions for the first `learning_starts` environment steps (CleanRL
           `sac_continuous_action.py`: learning_starts 5e3, random actions before it), then a~ ~ pi(.|s)
  store:   (s, a, r, s', terminated) into a FIFO replay buffer; a time-limit truncation is not terminal, and s' is
           the true last state of an episode the vector env has already reset (algorithms/core/online.py)
  learn:   once `learning_starts` environment steps are stored (and at least a batch), one SAC step on a uniform
           batch: the SAC core (algorithms/core/sac.py): temperature, actor, critics, Polyak target critics.
States and rewards are used raw (no normalization). Evaluation acts with max_action tanh(mean).
"""

from __future__ import annotations

import torch

from algorithms.core.registry import register
from algorithms.core.sac import OnlineSAC, OnlineSACConfig


@register("sac", kinds=("sim-to-real", "safe"))
class SAC(OnlineSAC):
    Config = OnlineSACConfig  # batch, lrs, gamma, tau, widths, temperature, warm-up, replay: the core's defaults

    def train(self) -> dict[str, torch.Tensor]:
        return self.sac.step(self.buffer.sample(self.config.batch_size))
