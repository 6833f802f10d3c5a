"""ReLU MLPs as one autograd node each, with the backward pass written out layer by layer.

Why: at the suite's sizes (256-wide layers, batch 256), autograd on CPU records and replays one node per op, and
each bias add and ReLU is its own pass with its own allocation. Measured on the 2-core development machine, that
bookkeeping cost about as much as the matmuls of a TD3+BC update (`benchmarks/throughput.py --roofline`). Here
the matmuls are the ones autograd would run, on the same operands, so the gradients are autograd's
(tests/test_mlp_backward.py compares every parameter's); only the bookkeeping goes.

A network is a list of (weight, bias) layers with ReLU between them and an optional tanh after the last. Three
weight layouts cover the suite's networks:
  "linear":   nn.Linear's (out, in) weight, bias (out,);   y = b + x W^T
  "in_out":   one ensemble member's (in, out) weight, bias (out,);   y = b + x W
  "ensemble": a VectorizedLinear's (n, in, out) weight, bias (n, 1, out), x (n, B, in);   y = b + x W (batched)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_threshold_backward_out = torch.ops.aten.threshold_backward.grad_input
_tanh_backward = torch.ops.aten.tanh_backward


def _relu_backward_(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """g * (h > 0) in place on g (a fresh matmul output): autograd's ReLU backward kernel, without a new tensor."""
    return _threshold_backward_out(g, h, 0, grad_input=g)


def _by_member(t: torch.Tensor) -> bool:
    """Whether an ensemble layer runs member by member rather than as one batched matmul, judged from its weight or
    its output's gradient (both end in the layer's output size). On CPU, torch's bmm/baddbmm take a slow path for a
    layer with one output (a Q head): 2x256x256x1 took 150 us one-threaded, two 2-D addmm 33 us (Zen 4, MKL). A
    TD3+BC update on one thread, the sweep's default when runs fill the cores, gains 8%; on two, about 3%."""
    return t.shape[-1] == 1 and not t.is_cuda


def ensemble_affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """b + x W for an ensemble layer: x (n, B, in), W (n, in, out), b (n, 1, out). The one forward of every ensemble
    layer, VectorizedLinear's included, so that autograd's backward and the hand-written one below see the same ops."""
    if _by_member(w):
        return torch.stack([torch.addmm(b[i], x[i], w[i]) for i in range(w.shape[0])])
    return torch.baddbmm(b, x, w)


def _affine(layout: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if layout == "linear":
        return torch.addmm(b, x, w.t())
    if layout == "in_out":
        return torch.addmm(b, x, w)
    return ensemble_affine(x, w, b)


def _grad_input(layout: str, g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if layout == "linear":
        return g.mm(w)
    if layout == "in_out":
        return g.mm(w.t())
    if _by_member(w):  # one output: each entry is a single product g_bi w_bj, exact whatever the kernel
        return g * w.transpose(1, 2)
    return g.bmm(w.transpose(1, 2))


def _grad_weight(layout: str, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    if layout == "linear":
        return g.t().mm(x)
    if layout == "in_out":
        return x.t().mm(g)
    if _by_member(g):  # as autograd's backward of the member's addmm runs it
        return torch.stack([x[i].t().mm(g[i]) for i in range(g.shape[0])])
    return x.transpose(1, 2).bmm(g)


def _grad_bias(layout: str, g: torch.Tensor) -> torch.Tensor:
    return g.sum(1, keepdim=True) if layout == "ensemble" else g.sum(0)


def _forward(layout: str, tanh_out: bool, x: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Every layer's output, after its activation: [h_1, ..., h_L]. ReLU and tanh run in place on the fresh
    matmul output (one pass, no extra tensor)."""
    n_layers = len(params) // 2
    outs, h = [], x
    for i in range(n_layers):
        h = _affine(layout, h, params[2 * i], params[2 * i + 1])
        if i < n_layers - 1:
            h = h.relu_()
        elif tanh_out:
            h = h.tanh_()
        outs.append(h)
    return outs


def _backward(layout: str, tanh_out: bool, x: torch.Tensor, outs: Sequence[torch.Tensor],
              weights: Sequence[torch.Tensor], grad_out: torch.Tensor, needs_x: bool, needs_w: Sequence[bool],
              needs_b: Sequence[bool]) -> tuple[torch.Tensor | None, list[torch.Tensor | None]]:
    """(d/dx, [d/dW_1, d/db_1, ...]) of <grad_out, f(x)>, from the forward's layer outputs `outs`. Only what is
    asked for is computed: with frozen weights, the loop stops at the lowest layer anything needs."""
    n_layers = len(weights)
    inputs = [x, *outs[:-1]]  # each layer's input
    first_param = next((i for i in range(n_layers) if needs_w[i] or needs_b[i]), n_layers)
    grads: list[torch.Tensor | None] = [None] * (2 * n_layers)
    g = _tanh_backward(grad_out, outs[-1]) if tanh_out else grad_out
    grad_x = None
    for i in reversed(range(n_layers)):
        if needs_w[i]:
            grads[2 * i] = _grad_weight(layout, inputs[i], g)
        if needs_b[i]:
            grads[2 * i + 1] = _grad_bias(layout, g)
        if not (needs_x or i > first_param):
            break  # nothing below this layer needs a gradient
        if i == 0:
            grad_x = _grad_input(layout, g, weights[0])
        else:
            g = _grad_input(layout, g, weights[i])
            g = _relu_backward_(g, inputs[i])
    return grad_x, grads


class _MLPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, layout: str, tanh_out: bool, *params: torch.Tensor) -> torch.Tensor:
        outs = _forward(layout, tanh_out, x, params)
        ctx.layout, ctx.tanh_out = layout, tanh_out
        ctx.save_for_backward(x, *outs, *params[0::2])
        return outs[-1]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        saved = ctx.saved_tensors
        n_layers = (len(saved) - 1) // 2
        x, outs, weights = saved[0], saved[1:n_layers + 1], saved[n_layers + 1:]
        needs = ctx.needs_input_grad
        grad_x, grads = _backward(ctx.layout, ctx.tanh_out, x, outs, weights, grad_out, needs[0], needs[3::2],
                                  needs[4::2])
        return (grad_x, None, None, *grads)


class MLPTape:
    """One forward pass of an MLP, kept for a backward pass run by hand, outside autograd: for a loss whose
    gradient in the output is known in closed form, this skips autograd's graph and its per-node cost. The
    parameters are used as they are, so take the backward before an optimizer step changes them."""

    def __init__(self, layout: str, x: torch.Tensor, params: Sequence[torch.Tensor], tanh_out: bool = False) -> None:
        self.layout, self.tanh_out, self.x, self.params = layout, tanh_out, x, params
        with torch.no_grad():
            self.outs = _forward(layout, tanh_out, x, params)

    @property
    def out(self) -> torch.Tensor:
        return self.outs[-1]

    def backward(self, grad_out: torch.Tensor, params: bool = True, input: bool | slice = False
                 ) -> torch.Tensor | None:
        """With `params`, writes d<grad_out, f(x)>/dparam into each parameter's `.grad`, replacing what was there
        (no zero_grad needed); with `input`, returns d<grad_out, f(x)>/dx, or, with `input` a slice of the input
        features, d/dx of those alone (e.g. the action part of a critic's [s, a]). That slice is taken from the
        whole d/dx, as autograd's backward of a `cat` takes it: a matmul over fewer columns need not give the same
        bits (on an AVX-512 Zen 4 with MKL, it did not)."""
        n_layers = len(self.params) // 2
        with torch.no_grad():
            grad_x, grads = _backward(self.layout, self.tanh_out, self.x, self.outs, self.params[0::2], grad_out,
                                      input is not False, [params] * n_layers, [params] * n_layers)
        if params:
            for p, g in zip(self.params, grads, strict=True):
                p.grad = g
        return grad_x[..., input] if isinstance(input, slice) else grad_x


def mlp_apply(layout: str, x: torch.Tensor, params: Sequence[torch.Tensor], tanh_out: bool = False) -> torch.Tensor:
    """The MLP with these (weight, bias, weight, bias, ...) layers on `x`: ReLU between layers, tanh after the
    last when `tanh_out`. Differentiable in `x` and every parameter; outside autograd it skips the node."""
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return _MLPFunction.apply(x, layout, tanh_out, *params)
    return _forward(layout, tanh_out, x, params)[-1]


def reduce_members(per_member: torch.Tensor, members: str) -> torch.Tensor:
    """An ensemble's loss from its members' losses: their "sum" (TD3's twin critics) or their "mean" (IQL's)."""
    if members == "sum":
        return per_member.sum()
    if members == "mean":
        return per_member.mean()
    raise ValueError(f"members must be 'sum' or 'mean', not {members!r}")


def mse_backward(layout: str, x: torch.Tensor, params: Sequence[torch.Tensor], target: torch.Tensor,
                 members: str = "sum") -> torch.Tensor:
    """Regression of an MLP's (scalar) outputs on `target` without autograd: returns the loss, the `members`
    ("sum" or "mean") over members of the mean over the batch of (f(x) - target)^2 (one member unless layout is
    "ensemble"), and writes its gradient into each parameter's `.grad`, replacing what was there (no zero_grad
    needed). The gradients are the ones `loss.backward()` gives (tests/test_mlp_backward.py): for TD3's summed
    and IQL's averaged twin critics the scale 2 / (B n) is a power of two times autograd's 1/n / B."""
    tape = MLPTape(layout, x, params)
    with torch.no_grad():
        err = tape.out.squeeze(-1) - target
        per_member = err.square().mean(-1)
        loss = reduce_members(per_member, members)
        n = 1 if members == "sum" else per_member.numel()
        grad_out = err.mul_(2.0 / err.shape[-1] / n).unsqueeze(-1)  # d loss / d f(x)
    tape.backward(grad_out)
    return loss
