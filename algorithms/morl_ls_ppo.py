"""Linear-scalarization PPO: the baseline of C-MORL's Stage 1 run for the whole budget. Registered as `ls_ppo`.

One MOPPO policy (algorithms/core/mo_ppo.py, C-MORL's learner: vector critic, per-objective GAE, observation and
objective normalization, PPO-clip on the weighted-sum advantage w . A) per weight of the same simplex grid as
`c_morl`'s Stage 1 (6 weights for 2 objectives at step 0.2), trained round-robin: one `update()` is one PPO
iteration (n_envs x n_steps env steps) of the next policy, so `--steps` counts PPO iterations and policy i gets
steps // n_weights of them (one more for the first steps mod n_weights), on its own environments whose episodes
continue across its iterations. The learning rate decays linearly from lr to 0 over each policy's iterations, as in
C-MORL's Stage 1 (morl/mopg.py:117-121).

`act(obs, w)`: the deterministic (mean, clipped) action of the policy whose training weight is nearest to w
(Euclidean; the first on ties). A linear-scalarization policy is trained to be the answer for its own weight, and this
rule needs no evaluation episodes: every env step this method takes is a training step. (Picking the best w . R
estimate, as c_morl does, would need those evaluations.)

Same defaults as c_morl's MOPPO (C-MORL's morl/run.py:56-69): lr 3e-4 with linear decay, gamma 0.995, GAE 0.95,
8 envs x 512 steps, 10 epochs, 32 minibatches, clip 0.2, entropy 0, value-loss weight 0.5, grad-norm 0.5,
observation and objective normalization; with c_morl's deviations from the reference where they apply (full episodes,
clipped actions, float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from algorithms.core.contract import AlgoContext, Algorithm
from algorithms.core.mo_ppo import EnvPool, MOPPOConfig, linear_lr, new_learner, ppo_iteration, training_weights
from algorithms.core.ppo import RandomStream
from algorithms.core.registry import register
from algorithms.core.seeding import derive_seed


@dataclass
class LSPPOConfig(MOPPOConfig):
    pass


@register("ls_ppo", kinds=("multi-objective",))
class LSPPO(Algorithm):
    Config = LSPPOConfig

    def __init__(self, config: LSPPOConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        cfg = config
        self.weights = training_weights(cfg, ctx, "ls_ppo")
        n = len(self.weights)
        self.iterations = [ctx.total_updates // n + (i < ctx.total_updates % n) for i in range(n)]  # per policy
        self.low, self.high = ctx.action_space.low, ctx.action_space.high
        self.learners = [new_learner(cfg, ctx, w) for w in self.weights]
        self.noise = RandomStream(self.device, derive_seed(ctx.seed, 1))  # exploration and minibatches
        self.envs = EnvPool(ctx, cfg.n_envs, "ls_ppo")  # per policy

    def update(self) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        self.step += 1
        i = (self.step - 1) % len(self.learners)
        learner = self.learners[i]
        if cfg.lr_decay:
            learner.set_lr(linear_lr(cfg.lr, learner.iterations, self.iterations[i]))
        envs = self.envs(i)
        metrics = ppo_iteration(learner, envs.collect(learner, cfg.n_steps, self.noise.generator),
                                self.noise.generator)
        return {**metrics, "policy": float(i), **envs.metrics()}

    @torch.no_grad()
    def act(self, obs: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        w = np.full(self.ctx.reward_dim, 1.0 / self.ctx.reward_dim) if weight is None else np.asarray(weight)
        learner = self.learners[int(np.argmin(np.linalg.norm(self.weights - w, axis=1)))]
        return np.clip(learner.mean_action(obs), self.low, self.high).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "learners": [learner.state_dict() for learner in self.learners],
                "noise": self.noise.state_dict(), "envs": self.envs.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        for learner, s in zip(self.learners, state["learners"], strict=True):
            learner.load_state_dict(s)
        self.noise.load_state_dict(state["noise"])
        self.envs.load_state_dict(state["envs"])
