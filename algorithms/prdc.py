"""PRDC: Policy Regularization with Dataset Constraint (Ran et al., ICML 2023; LAMDA-RL/PRDC).

TD3+BC with one change: the behavior-cloning target is not the action paired with s, but the action of the
(state, action) pair of the *whole dataset* nearest to (s, pi(s)), with states scaled by beta:
  critic:  the TD3 core (algorithms/core/td3.py).
  search:  points = [beta * s_norm, a] over every dataset transition (normalized states, raw actions),
           built once; key = sg([beta * s, pi(s)]); (s^, a^) = its exact nearest neighbor (Euclidean).
  actor (every `policy_freq` critic steps):
           lambda = alpha / sg(mean |Q1(s, pi(s))|)
           L_pi = -lambda mean Q1(s, pi(s)) + MSE(pi(s), a^)
beta -> infinity recovers TD3+BC (the nearest state is s itself); beta -> 0 means "the nearest action anywhere".
Defaults follow the paper's locomotion settings: beta 2.0 (the code's default 1.0 is not the paper's), alpha 2.5,
alpha 40 on halfcheetah (algorithms/configs/prdc.yaml). The reference code evaluates 50 episodes every 1000
steps; ctrlbench's shared protocol is used instead (DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from algorithms.core.config import require
from algorithms.core.contract import AlgoContext
from algorithms.core.data import Batch
from algorithms.core.neighbors import NearestNeighbor
from algorithms.core.registry import register
from algorithms.core.td3 import MSETerm, TD3Config, TD3Family


@dataclass
class PRDCConfig(TD3Config):  # batch, lrs, gamma, tau, noise and policy_freq: the TD3 core's defaults
    alpha: float = 2.5  # weight of the Q term, lambda = alpha / mean|Q1(s, pi(s))| (40 on halfcheetah)
    beta: float = 2.0  # state scale in the nearest-neighbor distance (paper: 2.0 locomotion, 7.5 antmaze)
    hidden: tuple[int, ...] = (256, 256)  # hidden layer widths of actor and critics (ReLU)
    normalize: bool = True  # normalize states with the dataset mean/std (also at evaluation and in the search)
    search: str = "auto"  # nearest-neighbor backend: auto (torch on CUDA, k-d tree on CPU), kdtree or torch

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.beta > 0, "beta must be positive")
        require(self.search in ("auto", "kdtree", "torch"), "search must be auto, kdtree or torch")


def dataset_constraint_target(nn: NearestNeighbor, actions: torch.Tensor, obs: torch.Tensor, pi: torch.Tensor,
                              beta: float) -> torch.Tensor:
    """a^: the action of the dataset pair nearest to sg([beta s, pi(s)])."""
    key = torch.cat([beta * obs, pi], dim=1).detach()
    return actions.index_select(0, nn.query(key))


def constraint_term(batch: Batch, nn: NearestNeighbor, actions: torch.Tensor, beta: float) -> MSETerm:
    """R(pi) = MSE(pi(s), a^): the actor loss's pull towards the nearest dataset action (the Q term is the TD3
    core's `actor_loss`)."""
    return MSETerm(lambda pi: dataset_constraint_target(nn, actions, batch.observations, pi, beta))


@register("prdc", kinds=("offline",))
class PRDC(TD3Family):
    Config = PRDCConfig

    def __init__(self, config: PRDCConfig, ctx: AlgoContext) -> None:
        super().__init__(config, ctx)
        self.setup_offline_td3(actor_hidden=config.hidden, critic_hidden=config.hidden)
        # The search space: every transition's [beta * normalized state, action], on the training device.
        states, self.dataset_actions = self.sampler.column(0), self.sampler.column(1)
        self.neighbors = NearestNeighbor(torch.cat([config.beta * states, self.dataset_actions], dim=1),
                                         backend=config.search)

    def update(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.step += 1
        batch = self.sampler.sample(cfg.batch_size)
        q_loss, *_ = self.td3.critic_step(batch)
        metrics = {"critic_loss": q_loss}
        if self.step % cfg.policy_freq == 0:
            metrics |= self.td3.actor_step(batch.observations, cfg.alpha, constraint_term(
                batch, self.neighbors, self.dataset_actions, cfg.beta))
        return metrics

    def graph_period(self) -> int | None:
        # the device search is capture-safe; the k-d tree copies every query to the host
        return self.config.policy_freq if self.neighbors.backend == "torch" else None
