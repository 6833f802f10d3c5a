"""Network builders shared by every algorithm: MLPs, Q ensembles, actors, Polyak averaging."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256),
        activation: type[nn.Module] = nn.ReLU, output_activation: type[nn.Module] | None = None,
        dropout: float = 0.0) -> nn.Sequential:
    """in -> hidden... -> out, with `activation` (and optional dropout) after each hidden layer."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), activation()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(dims[-1], out_dim))
    if output_activation is not None:
        layers.append(output_activation())
    return nn.Sequential(*layers)


class VectorizedLinear(nn.Module):
    """`n` independent linear layers applied as one batched matmul: x (n, B, in) -> (n, B, out).

    Initialized exactly like `n` separate `nn.Linear` layers (uniform +-1/sqrt(in)).
    """

    def __init__(self, in_dim: int, out_dim: int, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleQ(nn.Module):
    """`n` independent Q(s, a) MLPs evaluated in one pass; returns (n, B).

    Numerically these are `n` separate critics (as TD3's twin critics); they share no parameters.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256), n: int = 2,
                 activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.n = n
        dims = [obs_dim + act_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            layers += [VectorizedLinear(a, b, n), activation()]
        layers.append(VectorizedLinear(dims[-1], 1, n))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n, -1, -1)
        return self.net(x).squeeze(-1)

    def member(self, i: int, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Q_i(s, a) alone, (B,): what an actor loss on Q1 needs, at 1/n of the cost of `forward`."""
        x = torch.cat([obs, act], dim=-1)
        for layer in self.net:
            x = torch.addmm(layer.bias[i], x, layer.weight[i]) if isinstance(layer, VectorizedLinear) else layer(x)
        return x.squeeze(-1)


class DeterministicActor(nn.Module):
    """s -> max_action * tanh(MLP(s)), the TD3-family actor."""

    def __init__(self, obs_dim: int, act_dim: int, max_action: float, hidden: Sequence[int] = (256, 256),
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden, output_activation=nn.Tanh, dropout=dropout)
        self.max_action = max_action

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.max_action * self.net(obs)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * source, in one fused op per parameter list."""
    t_params = list(target.parameters())
    s_params = list(source.parameters())
    torch._foreach_lerp_(t_params, s_params, tau)


def orthogonal_init_(q: EnsembleQ, hidden_gain: float = math.sqrt(2), last_gain: float = 1e-2) -> EnsembleQ:
    """Orthogonal weights and zero biases per member (CQL/SAC practice): `hidden_gain` inside, `last_gain` last."""
    layers = [m for m in q.net if isinstance(m, VectorizedLinear)]
    with torch.no_grad():
        for i, layer in enumerate(layers):
            gain = last_gain if i == len(layers) - 1 else hidden_gain
            for member in range(layer.weight.shape[0]):
                w = torch.empty(layer.weight.shape[2], layer.weight.shape[1])  # (out, in) as nn.Linear
                nn.init.orthogonal_(w, gain=gain)
                layer.weight[member].copy_(w.T)
            layer.bias.zero_()
    return q


class TanhGaussianActor(nn.Module):
    """SAC's tanh-squashed Gaussian: MLP(s) -> (mean, raw log std); log_std = m * raw + o with learnable scalars
    m, o (CORL/young-geng CQL), clamped to [-20, 2]; action = max_action * tanh(z).

    Returns (action, log pi(action|s)) with the tanh Jacobian, summed over action dimensions.
    """

    def __init__(self, obs_dim: int, act_dim: int, max_action: float, hidden: Sequence[int] = (256, 256, 256),
                 log_std_multiplier: float = 1.0, log_std_offset: float = -1.0) -> None:
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, hidden)
        last = self.net[-1]
        nn.init.xavier_uniform_(last.weight, gain=1e-2)
        nn.init.zeros_(last.bias)
        self.log_std_multiplier = nn.Parameter(torch.tensor(float(log_std_multiplier)))
        self.log_std_offset = nn.Parameter(torch.tensor(float(log_std_offset)))
        self.act_dim = act_dim
        self.max_action = max_action

    def forward(self, obs: torch.Tensor, deterministic: bool = False, repeat: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(obs)
        if repeat is not None:  # the MLP runs once per state; only the samples differ: (B, 2A) -> (B, repeat, 2A)
            out = out.unsqueeze(-2).expand(*out.shape[:-1], repeat, out.shape[-1])
        mean, raw_log_std = out.split(self.act_dim, dim=-1)
        log_std = (self.log_std_multiplier * raw_log_std + self.log_std_offset).clamp(-20.0, 2.0)
        std = log_std.exp()
        z = mean if deterministic else mean + std * torch.randn_like(mean)
        normal_log_prob = -0.5 * ((z - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        # log(1 - tanh(z)^2) = 2 (log 2 - z - softplus(-2z)), the stable form torch's TanhTransform uses
        log_det = 2.0 * (math.log(2.0) - z - nn.functional.softplus(-2.0 * z))
        log_prob = (normal_log_prob - log_det).sum(-1)
        return self.max_action * torch.tanh(z), log_prob


def adam(params, lr: float, **kwargs) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one for the device (CPU and CUDA in torch >= 2.4): one pass
    over all parameters per step instead of several; the update rule is Adam's. On CUDA it is capturable (its step
    count lives on the device), so a CUDA graph can replay it (algorithms/core/graphs.py)."""
    params = list(params)
    if params and params[0].is_cuda:
        kwargs.setdefault("capturable", True)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, **kwargs)


class frozen:
    """Context manager: no parameter gradients for `module` inside (e.g. the critic during an actor loss,
    where only the gradient with respect to the action is needed)."""

    def __init__(self, module: nn.Module) -> None:
        self.params = [p for p in module.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc) -> None:
        for p in self.params:
            p.requires_grad_(True)
