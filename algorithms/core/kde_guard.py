"""A Gaussian-kernel density guard over normalized (state, action) pairs: OGSRL's "guardian" (Runz96/SafeRL-OGSRL
01a3168, `guardian.py`, used by `models/ddpg_cql_guard.py`, `ddpg_cql_guard_ts.py`, `cpo_guard.py`, `trpo_guard.py`).

  normalize: per feature j of the concatenated x = (s, a):  x_j <- 2 (x_j - min_j) / (max_j - min_j) - 1, with min/max
             over the training pairs, and range 1 for a constant feature (ddpg_cql_guard.py:130-135, applied to
             state + action columns at :235; guardian.py:51-70 leaves a constant column raw instead, which gives the
             same distances)
  density:   p(x) = (1/K) sum_j exp(-||x - y_j||^2 / (2 sigma^2)) / (sigma sqrt(2 pi)) over K reference pairs y_j
             (guardian.py:72-86; the same formula on torch in ddpg_cql_guard.py:257-260). The normalizing constant is
             the one-dimensional one whatever the dimension, as in the code; it cancels in the test below.
             sigma = 0.535 (guardian.py:127).
  threshold: thr = the 5th percentile (numpy's default linear interpolation) of the training pairs' densities, each
             computed against all training pairs *including itself*: not leave-one-out (guardian.py:126 alpha_true =
             0.05, :135 `compute_kernel_density(train_data, train_data, sigma)`, :140 `np.percentile`)
  test:      out of support iff p(x) < thr (guardian.py:88-92: inlier iff density >= thr; ddpg_cql_guard.py:261)
  penalty:   KDE_PENALTY * 1[p(x) < thr], KDE_PENALTY = -25 (ddpg_cql_guard.py:24, :261-262); what it is added to is
             the algorithm's business (algorithms/ogsrl.py).

Deviations, and why:
- Reference subset (`reference_size` K): the official code scores every pair against all N training pairs. A batch
  of B pairs costs B x N x dim; at N = 1e6 that is ~1 GFLOP and 32M exponentials per update at the official batch
  of 32: nothing on a GPU, but tens of milliseconds on 2 CPU cores, several times the rest of the update. With
  K < N the guard keeps a fixed uniform random subset of K training pairs (drawn once from `seed`) and plays the
  official procedure with that subset as "the training set": the threshold is fitted on the subset's own densities
  (self term included), so the same estimator defines the threshold and scores the pairs and about 5% of the
  reference pairs sit below it by construction. The mean over a uniform subset is an unbiased estimate of the full
  density; a training pair outside the subset is scored without its own self term, as the official code scores its
  validation and test pairs. K = 0 (or K >= N) is the official guard. min/max always come from all N pairs.
- Threshold queries (`fit_queries` M): the official threshold needs the densities of all N training pairs against
  all N, O(N^2) kernels (1e12 at N = 1e6, hours on a CPU). With M < K the percentile is taken over the densities of
  M reference pairs drawn uniformly without replacement (each still scored against all K, itself included): a
  Monte-Carlo estimate of the same percentile (for M = 1e4 the percentile level's standard error is ~0.2%).
  M = 0 (or M >= K) uses every reference pair, as the official code.
- Computed in log space (a running logsumexp over chunks of reference pairs), not as a sum of exponentials:
  exp(-r^2 / (2 sigma^2)) underflows float32 once r^2 > ~60 in normalized units, reachable for a pair far from the
  data in 20-35 dimensions, where the official float32 sum would give density 0 for every candidate. The test
  log p(x) < log thr is the official p(x) < thr wherever the official sum does not underflow. The percentile itself
  is taken on the densities (in float64, relative to the largest), as numpy does in guardian.py:140.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

SIGMA = 0.535  # guardian.py:127
PERCENTILE = 5.0  # guardian.py:126 alpha_true = 0.05, :140
PENALTY = -25.0  # ddpg_cql_guard.py:24 KDE_PENALTY
CHUNK_ELEMENTS = 1 << 22  # query x reference kernel values held at once (16 MiB of float32)
QUERY_BLOCK = 1024  # queries per block when scoring many pairs (the threshold fit)


class KDEGuard:
    """The fitted guard: min-max normalization constants, K reference pairs (normalized), log thr, sigma, penalty."""

    def __init__(self, low: torch.Tensor, scale: torch.Tensor, reference: torch.Tensor, log_threshold: float,
                 sigma: float = SIGMA, penalty_value: float = PENALTY) -> None:
        if sigma <= 0:
            raise ValueError("the kernel width sigma must be positive")
        self.low = low
        self.scale = scale
        self.reference = reference
        self.log_threshold = float(log_threshold)
        self.sigma = float(sigma)
        self.penalty_value = float(penalty_value)
        self._cache()

    def _cache(self) -> None:
        # the kernel's exponent -||x - y||^2 / (2 sigma^2) = -||x' - y'||^2 with x' = x / (sigma sqrt 2), and
        # -||x' - y'||^2 = (2 x'.y' - ||y'||^2) - ||x'||^2: the last term is constant per query and leaves the
        # logsumexp, so a chunk costs one addmm and one logsumexp
        self._ref_scaled = self.reference / (self.sigma * math.sqrt(2.0))
        self._ref_scaled_sq = (self._ref_scaled ** 2).sum(dim=1)
        # log of the 1 / (K sigma sqrt(2 pi)) in front of the sum (guardian.py:84-85)
        self._log_norm = math.log(self.reference.shape[0]) + math.log(self.sigma * math.sqrt(2.0 * math.pi))

    @classmethod
    def fit(cls, observations: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor, *,
            sigma: float = SIGMA, percentile: float = PERCENTILE, penalty_value: float = PENALTY,
            reference_size: int = 0, fit_queries: int = 0, seed: int = 0,
            device: torch.device | str = "cpu") -> KDEGuard:
        """Fit on the N training pairs (s_i, a_i): min/max of every feature over all N, a reference set of K pairs
        (all when `reference_size` is 0 or >= N), and thr = the `percentile`-th percentile of the densities of M
        reference pairs (all K when `fit_queries` is 0 or >= K) against the K, self included (guardian.py:135,140)."""
        if not 0.0 <= percentile <= 100.0:
            raise ValueError("the threshold percentile must be in [0, 100]")
        if reference_size < 0 or fit_queries < 0:
            raise ValueError("reference_size and fit_queries must be >= 0 (0 means all)")
        pairs = torch.cat([torch.as_tensor(observations, dtype=torch.float32),
                           torch.as_tensor(actions, dtype=torch.float32)], dim=1).to(device)
        if pairs.shape[0] == 0:
            raise ValueError("cannot fit the density guard on an empty dataset")
        low = pairs.min(dim=0).values
        spread = pairs.max(dim=0).values - low
        scale = torch.where(spread > 0, spread, torch.ones_like(spread))  # ddpg_cql_guard.py:132 replace(0, 1)
        rng = np.random.default_rng(seed)
        n = pairs.shape[0]
        if 0 < reference_size < n:
            keep = torch.as_tensor(np.sort(rng.choice(n, reference_size, replace=False)), device=pairs.device)
            pairs = pairs.index_select(0, keep)
        guard = cls(low, scale, 2.0 * (pairs - low) / scale - 1.0, log_threshold=-math.inf, sigma=sigma,
                    penalty_value=penalty_value)
        k = guard.reference.shape[0]
        queries = guard.reference
        if 0 < fit_queries < k:
            pick = torch.as_tensor(np.sort(rng.choice(k, fit_queries, replace=False)), device=pairs.device)
            queries = queries.index_select(0, pick)
        log_p = guard._log_density_normalized(queries).double().cpu().numpy()
        top = float(log_p.max())
        # the percentile of the densities themselves (linear interpolation), relative to the largest for range
        rel = float(np.percentile(np.exp(log_p - top), percentile))
        guard.log_threshold = top + math.log(rel) if rel > 0 else -math.inf
        return guard

    @property
    def threshold(self) -> float:
        """thr as a density (0.0 if it underflows a float64)."""
        return math.exp(self.log_threshold)

    @property
    def device(self) -> torch.device:
        return self.reference.device

    def normalize(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """(B, obs_dim), (B, act_dim) -> the (B, dim) pairs in the guard's [-1, 1] training box."""
        return 2.0 * (torch.cat([obs, act], dim=-1) - self.low) / self.scale - 1.0

    def _log_density_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for normalized pairs x (B, dim): a running logsumexp over reference chunks, per query block."""
        x = x / (self.sigma * math.sqrt(2.0))
        out = []
        for q0 in range(0, x.shape[0], QUERY_BLOCK):
            q = x[q0:q0 + QUERY_BLOCK]
            step = max(1, CHUNK_ELEMENTS // q.shape[0])
            acc = None
            for r0 in range(0, self.reference.shape[0], step):
                # 2 q'.y' - ||y'||^2 for the chunk's y'
                logits = torch.addmm(self._ref_scaled_sq[r0:r0 + step], q, self._ref_scaled[r0:r0 + step].T,
                                     beta=-1.0, alpha=2.0)
                lse = torch.logsumexp(logits, dim=1)
                acc = lse if acc is None else torch.logaddexp(acc, lse)
            out.append(acc - (q ** 2).sum(dim=1) - self._log_norm)
        return torch.cat(out)

    @torch.no_grad()
    def log_density(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log p(s, a) of each pair: (B,)."""
        return self._log_density_normalized(self.normalize(obs, act))

    @torch.no_grad()
    def density(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """p(s, a) of each pair, guardian.py's `compute_kernel_density`: (B,)."""
        return self.log_density(obs, act).exp()

    @torch.no_grad()
    def out_of_support(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """1[p(s, a) < thr] as float: (B,) (guardian.py:92, ddpg_cql_guard.py:261)."""
        return (self.log_density(obs, act) < self.log_threshold).float()

    @torch.no_grad()
    def penalty(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """KDE_PENALTY * 1[p(s, a) < thr]: (B,) (ddpg_cql_guard.py:262)."""
        return self.penalty_value * self.out_of_support(obs, act)

    def state_dict(self) -> dict[str, Any]:
        """Everything the guard is, reference pairs included (K x dim float32: 5.6 MB for K = 1e5 at dim 14)."""
        return {"low": self.low.clone(), "scale": self.scale.clone(), "reference": self.reference.clone(),
                "log_threshold": self.log_threshold, "sigma": self.sigma, "penalty_value": self.penalty_value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.device
        self.low = state["low"].to(device)
        self.scale = state["scale"].to(device)
        self.reference = state["reference"].to(device)
        self.log_threshold = float(state["log_threshold"])
        self.sigma = float(state["sigma"])
        self.penalty_value = float(state["penalty_value"])
        self._cache()
