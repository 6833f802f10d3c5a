"""The online replay buffer: a fixed-capacity FIFO ring of transitions held on the training device.

What online and hybrid methods (plain SAC, H2O's simulator part, SAC-Lagrangian, CAL) write their own experience
into. It has the columns of `TransitionData` (core/data.py) and hands out the same `Batch`: `terminals` is 1 only
for a true termination, never for a time-limit truncation (its next state is bootstrapped); rewards are (N,) or
(N, k) for vector rewards; costs are kept when the buffer is built with `costs=True`.

Batches are drawn uniformly from the rows held, with the buffer's own seeded generator on the device; its
state_dict keeps the rows, the write position, the size and the generator, so a resumed run samples the same
stream as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from algorithms.core.data import Batch

Rows = np.ndarray | torch.Tensor


class ReplayBuffer:
    """FIFO ring of `capacity` transitions: once full, each new row overwrites the oldest one."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device | str, seed: int,
                 reward_dim: int = 1, costs: bool = False) -> None:
        if capacity <= 0:
            raise ValueError("ReplayBuffer capacity must be positive")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.reward_shape: tuple[int, ...] = () if reward_dim == 1 else (int(reward_dim),)

        # uninitialized: rows past `size` are never read, and on CPU a 1M-row ring costs memory only as it fills
        def column(*shape: int) -> torch.Tensor:
            return torch.empty(self.capacity, *shape, dtype=torch.float32, device=self.device)

        self.observations = column(obs_dim)
        self.actions = column(act_dim)
        self.rewards = column(*self.reward_shape)
        self.next_observations = column(obs_dim)
        self.terminals = column()
        self.costs = column() if costs else None
        self.pos = 0  # the row the next transition goes to
        self.size = 0  # rows held, <= capacity
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def _columns(self) -> dict[str, torch.Tensor]:
        cols = {"observations": self.observations, "actions": self.actions, "rewards": self.rewards,
                "next_observations": self.next_observations, "terminals": self.terminals}
        if self.costs is not None:
            cols["costs"] = self.costs
        return cols

    def _rows(self, x: Rows, n: int, column: torch.Tensor, name: str) -> torch.Tensor:
        rows = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))
        rows = rows.to(device=self.device, dtype=torch.float32)
        shape = (n, *column.shape[1:])
        if rows.numel() != int(np.prod(shape)):
            raise ValueError(f"ReplayBuffer.add: {name} has shape {tuple(rows.shape)}, expected {shape}")
        return rows.reshape(shape)

    def add(self, obs: Rows, act: Rows, rew: Rows, next_obs: Rows, terminated: Rows, cost: Rows | None = None) -> None:
        """Append a batch of rows (e.g. one step of a vector env): obs (n, obs_dim), act (n, act_dim), rew (n,) or
        (n, k), next_obs (n, obs_dim), terminated (n,) (true terminations only), cost (n,) when the buffer keeps
        costs. Numpy arrays or tensors; they are copied to the device as float32."""
        if (cost is None) != (self.costs is None):
            raise ValueError("ReplayBuffer.add: pass cost exactly when the buffer was built with costs=True")
        n = len(obs)
        if n == 0:
            return
        values = {"observations": obs, "actions": act, "rewards": rew, "next_observations": next_obs,
                  "terminals": terminated, "costs": cost}
        idx = (self.pos + torch.arange(n, device=self.device)) % self.capacity
        keep = slice(max(0, n - self.capacity), n)  # more rows than the capacity: only the newest ones stay
        for name, column in self._columns().items():
            column.index_copy_(0, idx[keep], self._rows(values[name], n, column, name)[keep])
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """`batch_size` rows drawn uniformly, with replacement, from the rows held."""
        if self.size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        idx = torch.randint(self.size, (batch_size,), device=self.device, generator=self.generator)
        return Batch(
            observations=self.observations.index_select(0, idx),
            actions=self.actions.index_select(0, idx),
            rewards=self.rewards.index_select(0, idx),
            next_observations=self.next_observations.index_select(0, idx),
            dones=self.terminals.index_select(0, idx),
            costs=None if self.costs is None else self.costs.index_select(0, idx),
        )

    def state_dict(self) -> dict[str, Any]:
        """The rows held (copies of the filled part only: a view would save the whole ring's storage), the write
        position, the size and the sampling generator."""
        state: dict[str, Any] = {k: v[:self.size].clone() for k, v in self._columns().items()}
        state.update(pos=self.pos, size=self.size, capacity=self.capacity, generator=self.generator.get_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"replay buffer checkpoint has capacity {state['capacity']}, this buffer "
                             f"{self.capacity}")
        if ("costs" in state) != (self.costs is not None):
            raise ValueError("replay buffer checkpoint and this buffer disagree on keeping costs")
        size = int(state["size"])
        for name, column in self._columns().items():
            column[:size].copy_(state[name].to(column.device))
        self.pos, self.size = int(state["pos"]), size
        self.generator.set_state(state["generator"])
