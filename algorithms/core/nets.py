"""Network builders shared by every algorithm: MLPs, the pre-activation residual MLP, Q ensembles, actors, Polyak
averaging."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.optim.optimizer as _optim
from torch import nn

from algorithms.core.mlp_backward import MLPTape, ensemble_affine, mlp_apply, mse_backward, reduce_members


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
    return MLP(*layers)


class MLP(nn.Sequential):
    """nn.Sequential that runs Linear-ReLU-...-Linear(-Tanh) stacks as one autograd node
    (algorithms/core/mlp_backward.py); any other stack (dropout, other activations) runs layer by layer."""

    def plain(self) -> tuple[list[torch.Tensor], bool] | None:
        """(weight, bias, weight, bias, ..., tanh after the last?) when this is a Linear-ReLU-...-Linear(-Tanh)
        stack, the kind mlp_backward.py runs by hand; None for any other. The layer check is redone only when
        the layers change (on the 2-core CPU, redoing it every call cost a few percent of an update)."""
        layers = tuple(self._modules.values())
        if getattr(self, "_plain_layers", None) != layers:
            tanh_out = bool(layers) and type(layers[-1]) is nn.Tanh
            body = layers[:-1] if tanh_out else layers
            is_plain = (len(body) % 2 == 1 and all(type(m) is nn.Linear for m in body[0::2])
                        and all(type(m) is nn.ReLU for m in body[1::2]))
            self._plain_layers = layers
            self._plain_plan = (body[0::2], tanh_out) if is_plain else None
        if self._plain_plan is None:
            return None
        linears, tanh_out = self._plain_plan
        return [t for m in linears for t in (m.weight, m.bias)], tanh_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = self.plain()
        if plain is None:
            return super().forward(x)
        out = mlp_apply("linear", x.reshape(-1, x.shape[-1]), *plain)
        return out.reshape(*x.shape[:-1], out.shape[-1])


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
        return ensemble_affine(x, self.weight, self.bias)


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
        self.relu = activation is nn.ReLU  # then the whole ensemble is one autograd node (mlp_backward.py)
        # (weight, bias) of every layer, listed once: the layers are fixed here, and walking the modules each
        # call cost a few percent of an update on the 2-core CPU
        self._param_list = [t for m in layers if isinstance(m, VectorizedLinear) for t in (m.weight, m.bias)]
        self._views: dict[tuple[int, tuple[int, ...]], list[torch.Tensor]] = {}

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n, -1, -1)
        if not self.relu:
            return self.net(x).squeeze(-1)
        return mlp_apply("ensemble", x, self._param_list).squeeze(-1)

    def member(self, i: int, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Q_i(s, a) alone, (B,): what an actor loss on Q1 needs, at 1/n of the cost of `forward`."""
        x = torch.cat([obs, act], dim=-1)
        if not self.relu:
            for layer in self.net:
                x = torch.addmm(layer.bias[i], x, layer.weight[i]) if isinstance(layer, VectorizedLinear) else layer(x)
            return x.squeeze(-1)
        return mlp_apply("in_out", x, self._member_of(self._param_list, i)).squeeze(-1)

    def member_tape(self, i: int, obs: torch.Tensor, act: torch.Tensor) -> MLPTape | None:
        """Q_i(s, a) as an MLPTape, for a backward pass by hand (None unless the activation is ReLU): what a
        TD3-family actor step needs, dQ_i/da, without autograd."""
        if not self.relu:
            return None
        return MLPTape("in_out", torch.cat([obs, act], dim=-1), self._member_views(i))

    @staticmethod
    def _member_of(params: Sequence[torch.Tensor], i: int) -> list[torch.Tensor]:
        return [p[i] if k % 2 == 0 else p[i, 0] for k, p in enumerate(params)]  # (in, out) and (out,)

    def _member_views(self, i: int) -> list[torch.Tensor]:
        """Member i's parameters as views outside autograd, for tapes: built once per storage (an optimizer
        step or load_state_dict writes in place; `.to(device)` gives new storage, and new views)."""
        key = (i, tuple(p.data_ptr() for p in self._param_list))
        views = self._views.get(key)
        if views is None:
            self._views = {k: v for k, v in self._views.items() if k[1] == key[1]}  # drop views of old storage
            views = self._views[key] = self._member_of([p.detach() for p in self._param_list], i)
        return views

    def mse(self, obs: torch.Tensor, act: torch.Tensor, target: torch.Tensor, members: str = "sum") -> torch.Tensor:
        """sum_i (TD3's twin critics) or mean_i (`members="mean"`, IQL's) of mean_B (Q_i(s, a) - target)^2: each
        member regressed on the shared target."""
        return reduce_members(((self(obs, act) - target.unsqueeze(0)) ** 2).mean(dim=1), members)

    def mse_backward(self, obs: torch.Tensor, act: torch.Tensor, target: torch.Tensor,
                     members: str = "sum") -> torch.Tensor:
        """`mse`, with its parameter gradients written into `.grad` (replacing what was there) without autograd:
        the same values as `.backward()` of `mse` (algorithms/core/mlp_backward.py)."""
        if not self.relu:
            loss = self.mse(obs, act, target, members)
            self.zero_grad(set_to_none=True)
            loss.backward()
            return loss.detach()
        x = torch.cat([obs, act], dim=-1).unsqueeze(0).expand(self.n, -1, -1)
        return mse_backward("ensemble", x, self._param_list, target, members)


class DeterministicActor(nn.Module):
    """s -> max_action * tanh(MLP(s)), the TD3-family actor."""

    def __init__(self, obs_dim: int, act_dim: int, max_action: float, hidden: Sequence[int] = (256, 256),
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden, output_activation=nn.Tanh, dropout=dropout)
        self.max_action = max_action

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        action = self.net(obs)
        return action if self.max_action == 1.0 else self.max_action * action  # x * 1.0 == x: skip the op

    def tape(self, obs: torch.Tensor) -> MLPTape | None:
        """The actor's MLP on `obs` as an MLPTape (its output is tanh, before the max_action scale), for a
        backward pass by hand; None when the MLP is not a plain ReLU stack (e.g. with dropout)."""
        plain = self.net.plain()
        return None if plain is None else MLPTape("linear", obs, *plain)


class PreActivationBlock(nn.Module):
    """x + W2 act(W1 act(x)) (model/common/mlp.py:128-154, without layer norm or dropout)."""

    def __init__(self, width: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(width, width), nn.Linear(width, width)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.l2(self.act(self.l1(self.act(x))))


class ResidualMLP(nn.Module):
    """Linear(in, h) -> (len(hidden) - 1) / 2 pre-activation residual blocks -> Linear(h, out), no activation on
    the output (model/common/mlp.py:84-125). The reference's [512, 512, 512] is Linear -> one block -> Linear."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int,
                 activation: type[nn.Module] = nn.Mish) -> None:
        super().__init__()
        width = hidden[0]
        if any(h != width for h in hidden) or (len(hidden) - 1) % 2 != 0:
            raise ValueError(f"a residual MLP needs an odd number of equal hidden widths, got {tuple(hidden)}")
        blocks = [PreActivationBlock(width, activation) for _ in range((len(hidden) - 1) // 2)]
        self.layers = nn.Sequential(nn.Linear(in_dim, width), *blocks, nn.Linear(width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Polyak:
    """target <- (1 - tau) * target + tau * source for every (target, source) pair, in one fused op. The parameter
    lists are built once: at batch 256 on CPU, walking the modules each update cost more than the lerp itself."""

    def __init__(self, pairs: Sequence[tuple[nn.Module, nn.Module]], tau: float) -> None:
        self.targets = [p for target, _ in pairs for p in target.parameters()]
        self.sources = [p for _, source in pairs for p in source.parameters()]
        self.tau = tau

    @torch.no_grad()
    def __call__(self) -> None:
        torch._foreach_lerp_(self.targets, self.sources, self.tau)


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

    def gaussian(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log std) of the pre-tanh Gaussian from the MLP's output `net(obs)`."""
        mean, raw_log_std = out.split(self.act_dim, dim=-1)
        return mean, (self.log_std_multiplier * raw_log_std + self.log_std_offset).clamp(-20.0, 2.0)

    def forward(self, obs: torch.Tensor, deterministic: bool = False, repeat: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(obs)
        if repeat is not None:  # the MLP runs once per state; only the samples differ: (B, 2A) -> (B, repeat, 2A)
            out = out.unsqueeze(-2).expand(*out.shape[:-1], repeat, out.shape[-1])
        mean, log_std = self.gaussian(out)
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
        return FusedAdam(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, **kwargs)


# torch's Adam step without the profiler/hook wrapper torch puts around it once a plain Adam exists (the wrapper runs
# in FusedAdam.step, once, so that hooks do not run twice)
_TORCH_ADAM_STEP = (torch.optim.Adam.step.__wrapped__ if getattr(torch.optim.Adam.step, "hooked", False)
                    else torch.optim.Adam.step)


class FusedAdam(torch.optim.Adam):
    """torch's fused Adam, with the same kernel, update rule and state (its state_dict is Adam's), minus the
    per-step Python around it. A plain step (one param group of same-device parameters, all with gradients, no
    amsgrad, no grad scaler) calls the kernel on lists built once and counts all parameters' steps in one op (their
    step tensors are views of one tensor). torch's step wrapper (a profiler range and the step hooks) runs only
    when a profiler or a hook could see it. Measured on the 2-core CPU, the twin critics' step: 270-330
    microseconds with torch's step, 210 with the cached lists alone, 143 with this. Anything else takes torch's
    own step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lists: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor] | None = None

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._lists = None  # the loaded state is new tensors

    def __setstate__(self, state) -> None:  # copy.deepcopy and pickle keep only torch's own fields
        super().__setstate__(state)
        self._lists = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none or len(self.param_groups) != 1:
            return super().zero_grad(set_to_none)
        for p in self.param_groups[0]["params"]:
            p.grad = None

    def _state_lists(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor] | None:
        """(exp_avgs, exp_avg_sqs, steps, all steps as one tensor), the steps made views of that tensor first;
        None until the first step has created the state."""
        if self._lists is None:
            params = self.param_groups[0]["params"]
            states = [self.state.get(p) for p in params]
            if not all(states) or len({p.device for p in params}) != 1:
                return None  # the first step creates the state; the kernel takes one device per call
            all_steps = torch.stack([s["step"] for s in states])
            for i, s in enumerate(states):
                s["step"] = all_steps[i]  # 0-d views: torch's own step still counts each one on its own
            self._lists = ([s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                           [s["step"] for s in states], all_steps)
        return self._lists

    def _plain(self) -> bool:
        if len(self.param_groups) != 1 or getattr(self, "grad_scale", None) is not None:
            return False
        group = self.param_groups[0]
        params = group["params"]
        return (group["fused"] and not group["amsgrad"] and not group["maximize"] and not group["differentiable"]
                and not group.get("decoupled_weight_decay", False) and all(p.grad is not None for p in params))

    def _observed(self) -> bool:
        """Whether a profiler or an optimizer hook would see this step: then torch's wrapper must run."""
        return bool(torch.autograd._profiler_enabled() or self._optimizer_step_pre_hooks
                    or self._optimizer_step_post_hooks or _optim._global_optimizer_pre_hooks
                    or _optim._global_optimizer_post_hooks)

    def _unwrapped_step(self, closure=None):
        lists = self._state_lists() if closure is None and self._plain() else None
        if lists is None:
            return _TORCH_ADAM_STEP(self, closure)
        group = self.param_groups[0]
        exp_avgs, exp_avg_sqs, steps, all_steps = lists
        params = group["params"]
        beta1, beta2 = group["betas"]
        all_steps.add_(1)
        torch._fused_adam_(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps,
                           amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                           weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
        return None

    _wrapped_step = torch.optim.Optimizer.profile_hook_step(_unwrapped_step)

    def step(self, closure=None):
        return self._wrapped_step(closure) if self._observed() else self._unwrapped_step(closure)

    step.hooked = True  # tells torch not to wrap `step` again: the wrapper runs above, when something observes


class frozen:
    """Context manager: no parameter gradients for `module` (or these parameters) inside (e.g. the critic during
    an actor loss, where only the gradient with respect to the action is needed)."""

    def __init__(self, module: nn.Module | Sequence[torch.Tensor]) -> None:
        params = module.parameters() if isinstance(module, nn.Module) else module
        self.params = [p for p in params if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc) -> None:
        for p in self.params:
            p.requires_grad_(True)
