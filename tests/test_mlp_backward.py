"""The hand-written MLP backward passes give autograd's gradients, bit for bit, and the fast Adam step is Adam's."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from algorithms.core.data import Batch
from algorithms.core.nets import MLP, DeterministicActor, EnsembleQ, FusedAdam, adam, frozen, mlp
from algorithms.core.td3 import critic_loss


def grads_of(fn, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Output, then the gradient of a fixed random projection of it in every parameter and input that has one."""
    for p in params:
        p.grad = None
    xs = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    out = fn(*xs)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    return [out.detach()] + [p.grad for p in params if p.grad is not None] + [x.grad for x in xs if x.requires_grad]


def assert_identical(fast: list[torch.Tensor], reference: list[torch.Tensor]) -> None:
    assert len(fast) == len(reference)
    for a, b in zip(fast, reference, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)


def layer_by_layer_q(q: EnsembleQ):
    def reference(obs, act):
        return nn.Sequential.forward(q.net, torch.cat([obs, act], -1).unsqueeze(0).expand(q.n, -1, -1)).squeeze(-1)
    return reference


@pytest.mark.parametrize("hidden", [(256, 256), (64, 32, 16)])
def test_ensemble_forward_gradients_match_autograd(hidden) -> None:
    torch.manual_seed(0)
    q = EnsembleQ(17, 6, hidden, n=3)
    obs, act = torch.randn(64, 17), torch.randn(64, 6, requires_grad=True)
    params = list(q.parameters())
    assert_identical(grads_of(q, params, [obs, act]), grads_of(layer_by_layer_q(q), params, [obs, act]))


def test_member_gradients_match_autograd_with_and_without_frozen_parameters() -> None:
    torch.manual_seed(0)
    q = EnsembleQ(11, 3, (32, 32), n=2)
    obs, act = torch.randn(50, 11), torch.randn(50, 3, requires_grad=True)
    params = list(q.parameters())

    def reference(o, a):
        x = torch.cat([o, a], -1)
        for layer in q.net:
            x = torch.addmm(layer.bias[1], x, layer.weight[1]) if hasattr(layer, "weight") else layer(x)
        return x.squeeze(-1)

    member = lambda o, a: q.member(1, o, a)  # noqa: E731
    assert_identical(grads_of(member, params, [obs, act]), grads_of(reference, params, [obs, act]))
    with frozen(q):  # the actor-loss case: the gradient reaches the action only
        fast, ref = grads_of(member, params, [obs, act]), grads_of(reference, params, [obs, act])
    assert len(fast) == 2  # output and d/d action: no parameter gradients were made
    assert_identical(fast, ref)


@pytest.mark.parametrize("max_action", [1.0, 2.5])
def test_actor_gradients_match_autograd(max_action) -> None:
    torch.manual_seed(0)
    actor = DeterministicActor(17, 6, max_action)
    obs = torch.randn(40, 17, requires_grad=True)
    params = list(actor.parameters())
    reference = lambda o: max_action * nn.Sequential.forward(actor.net, o)  # noqa: E731
    assert_identical(grads_of(actor, params, [obs]), grads_of(reference, params, [obs]))


def test_mlp_partial_freezing_and_leading_dims() -> None:
    """Only the last layer trainable, inputs with two leading dims: the gradients stop where nothing needs them."""
    torch.manual_seed(0)
    net = mlp(5, 4, (16, 16))
    assert isinstance(net, MLP)
    for p in list(net.parameters())[:4]:
        p.requires_grad_(False)
    x = torch.randn(3, 7, 5)
    params = [p for p in net.parameters() if p.requires_grad]
    fast = grads_of(net, params, [x])
    assert len(fast) == 3
    assert_identical(fast, grads_of(lambda v: nn.Sequential.forward(net, v), params, [x]))


def test_mlp_with_dropout_takes_the_layer_by_layer_path() -> None:
    torch.manual_seed(0)
    net = mlp(5, 4, (16,), dropout=0.5)
    x = torch.randn(8, 5)
    torch.manual_seed(3)
    fast = net(x)
    torch.manual_seed(3)
    assert torch.equal(fast, nn.Sequential.forward(net, x))


def test_saved_activation_modified_in_place_is_an_error() -> None:
    """The output is saved for tanh's backward; autograd's version check still guards it."""
    actor = DeterministicActor(4, 2, 1.0)
    out = actor(torch.randn(3, 4))
    out.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_mse_backward_is_the_critic_loss_and_its_gradient() -> None:
    torch.manual_seed(0)
    q = EnsembleQ(17, 6)
    batch = Batch(observations=torch.randn(256, 17), actions=torch.randn(256, 6), rewards=torch.zeros(256),
                  next_observations=torch.zeros(256, 17), dones=torch.zeros(256))
    target = torch.randn(256)
    loss = critic_loss(q, batch, target)
    q.zero_grad(set_to_none=True)
    loss.backward()
    expected = [p.grad.clone() for p in q.parameters()]
    for p in q.parameters():
        p.grad = torch.full_like(p, 7.0)  # stale gradients are replaced, not added to
    fast = q.mse_backward(batch.observations, batch.actions, target)
    assert torch.equal(fast, loss.detach())
    assert_identical([p.grad for p in q.parameters()], expected)


@pytest.mark.parametrize("batch_size", [256, 100])
def test_mse_backward_averaged_over_members_is_iqls_critic_loss_and_its_gradient(batch_size: int) -> None:
    """IQL's critic loss averages its twin critics: the hand gradient is autograd's on `iql.q_loss`, bit for bit,
    for a batch size that is not a power of two too."""
    from algorithms.iql import q_loss, q_target

    torch.manual_seed(1)
    q = EnsembleQ(17, 6)
    batch = Batch(observations=torch.randn(batch_size, 17), actions=torch.randn(batch_size, 6),
                  rewards=torch.randn(batch_size), next_observations=torch.zeros(batch_size, 17),
                  dones=(torch.rand(batch_size) < 0.2).float())
    next_v = torch.randn(batch_size)
    loss = q_loss(q, batch, next_v, 0.99)
    q.zero_grad(set_to_none=True)
    loss.backward()
    expected = [p.grad.clone() for p in q.parameters()]
    fast = q.mse_backward(batch.observations, batch.actions, q_target(batch, next_v, 0.99), members="mean")
    assert torch.equal(fast, loss.detach())
    assert_identical([p.grad for p in q.parameters()], expected)
    with pytest.raises(ValueError, match="members must be 'sum' or 'mean'"):
        q.mse_backward(batch.observations, batch.actions, q_target(batch, next_v, 0.99), members="avg")


def test_fused_adam_matches_torch_adam_bit_for_bit_and_through_a_checkpoint() -> None:
    torch.manual_seed(0)
    shapes = [(3, 4), (4,), (2, 1, 5)]
    ref_params = [nn.Parameter(torch.randn(s)) for s in shapes]
    fast_params = [nn.Parameter(p.detach().clone()) for p in ref_params]
    ref = torch.optim.Adam(ref_params, lr=1e-2, fused=True, weight_decay=0.1)
    fast = adam(fast_params, lr=1e-2, weight_decay=0.1)
    assert isinstance(fast, FusedAdam)
    for step in range(6):
        for a, b in zip(ref_params, fast_params, strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        ref.step()
        fast.step()
        if step == 2:  # a resumed run: new optimizer, state loaded from the old one's state_dict
            state = fast.state_dict()
            fast = adam(fast_params, lr=1e-2, weight_decay=0.1)
            fast.load_state_dict(state)
    assert_identical(fast_params, ref_params)
    assert torch.equal(fast.state_dict()["state"][0]["step"], ref.state_dict()["state"][0]["step"])


def test_fused_adam_skips_parameters_without_gradients_as_torch_does() -> None:
    torch.manual_seed(0)
    ref_params = [nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(2))]
    fast_params = [nn.Parameter(p.detach().clone()) for p in ref_params]
    ref, fast = torch.optim.Adam(ref_params, lr=0.1, fused=True), adam(fast_params, lr=0.1)
    for step in range(4):
        for i, (a, b) in enumerate(zip(ref_params, fast_params, strict=True)):
            a.grad = torch.randn_like(a) if step != 2 or i == 0 else None  # step 2: the second has no gradient
            b.grad = None if a.grad is None else a.grad.clone()
        ref.step()
        fast.step()
    assert_identical(fast_params, ref_params)


def test_fused_adam_runs_step_hooks_once_and_shows_in_the_profiler() -> None:
    """Its step skips torch's wrapper only while nothing observes it: hooks, global or not, run once per step on
    both of its paths (the kernel, and torch's own step when a gradient is missing), and a profiler sees the
    step under torch's name."""
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(2))]
    torch.optim.Adam([nn.Parameter(torch.randn(1))])  # a plain Adam: torch wraps Adam.step, FusedAdam calls it
    opt = adam(params, lr=0.1)
    calls: list[str] = []
    pre = opt.register_step_pre_hook(lambda *_: calls.append("pre"))
    post = register_optimizer_step_post_hook(lambda *_: calls.append("post"))
    try:
        for missing in (False, False, True):
            params[0].grad, params[1].grad = torch.randn(3), None if missing else torch.randn(2)
            opt.step()
    finally:
        pre.remove()
        post.remove()
    assert calls == ["pre", "post"] * 3
    params[1].grad = torch.randn(2)
    with torch.profiler.profile() as prof:
        opt.step()
    assert "Optimizer.step#FusedAdam.step" in {e.key for e in prof.key_averages()}


def test_member_tape_follows_the_parameters_through_steps_and_new_storage() -> None:
    """The tape's cached member views see in-place updates, and are rebuilt when a parameter gets new storage."""
    torch.manual_seed(0)
    q = EnsembleQ(5, 2, (8, 8), n=2)
    obs, act = torch.randn(4, 5), torch.randn(4, 2)
    with torch.no_grad():
        assert torch.equal(q.member_tape(1, obs, act).out.squeeze(-1), q.member(1, obs, act))
        q.net[2].weight.add_(1.0)  # as an optimizer step: in place
        assert torch.equal(q.member_tape(1, obs, act).out.squeeze(-1), q.member(1, obs, act))
        q.net[4].bias.data = q.net[4].bias.data + 1.0  # as .to(device): new storage
        assert torch.equal(q.member_tape(1, obs, act).out.squeeze(-1), q.member(1, obs, act))


def test_a_non_relu_ensemble_takes_autograd_and_the_same_loss() -> None:
    torch.manual_seed(0)
    q = EnsembleQ(5, 2, (8,), n=2, activation=nn.Tanh)
    obs, act, target = torch.randn(6, 5), torch.randn(6, 2), torch.randn(6)
    reference = layer_by_layer_q(q)(obs, act)
    expected = ((reference - target) ** 2).mean(dim=1).sum()
    q.zero_grad(set_to_none=True)
    expected.backward()
    grads = [p.grad.clone() for p in q.parameters()]
    assert torch.equal(q.mse_backward(obs, act, target), expected.detach())
    assert_identical([p.grad for p in q.parameters()], grads)
    assert q.member_tape(0, obs, act) is None  # no hand-run backward for other activations
