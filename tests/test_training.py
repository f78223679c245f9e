"""The frozen-parent training form of a child (kdna.nn.training) against the plain form.

Every test builds a child with adapters away from their starting values, copies it, switches
the copy to the plain form (``fast_training = False``: the whole kernel built and
differentiated) and checks that outputs and every gradient agree.
"""

import copy

import pytest
import torch
from torch import nn

from kdna.nn import ChildConv2d, ChildLinear, KernelChild, ParentKernel, relax
from kdna.nn.training import conv_padding, frozen_parent_conv2d


def _randomize_adapter(child: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in child.named_parameters():
            if not name.startswith("parent."):
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))


def _frozen(child: nn.Module) -> nn.Module:
    child.parent.requires_grad_(False)
    return child


def _grads(module: nn.Module, x: torch.Tensor, probe: torch.Tensor, *, fast: bool,
           channels_last: bool = False):
    module = copy.deepcopy(module)
    for m in module.modules():
        if isinstance(m, KernelChild):
            m.fast_training = fast
    x = x.clone()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = module(x)
    assert _uses_fast_form(y) == fast
    (y * probe).sum().backward()
    grads = {n: p.grad for n, p in module.named_parameters() if p.requires_grad}
    return y, x.grad, grads, module


def _uses_fast_form(y: torch.Tensor) -> bool:
    """Whether the autograd graph that made ``y`` holds a frozen-parent node."""
    seen, stack = set(), [y.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "FrozenParent" in type(node).__name__:
            return True
        stack += [n for n, _ in node.next_functions]
    return False


def _assert_same(child: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """Outputs and gradients (input and every trainable parameter) of both forms agree."""
    with torch.no_grad():
        shape = copy.deepcopy(child)(x).shape
    probe = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(x.device)
    plain = _grads(child, x, probe, fast=False, **kwargs)
    fast = _grads(child, x, probe, fast=True, **kwargs)
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast[1], plain[1], rtol=1e-4, atol=1e-5)
    assert fast[2].keys() == plain[2].keys() and fast[2]
    for name in plain[2]:
        torch.testing.assert_close(fast[2][name], plain[2][name], rtol=1e-4, atol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")
    return fast[0]


CONVS = {
    "regular": (6, 8, 3, {"padding": 1}),
    "strided": (6, 8, 3, {"stride": 2, "padding": 1}),
    "padded-same": (6, 8, 3, {"padding": "same"}),
    "valid": (6, 8, 3, {"padding": "valid"}),
    "dilated": (6, 8, 3, {"dilation": 2, "padding": 2}),
    "rectangular": (6, 8, (3, 1), {"padding": (1, 0), "stride": (2, 1)}),
    "grouped": (6, 8, 3, {"groups": 2, "padding": 1}),
    "depthwise": (8, 8, 3, {"groups": 8, "padding": 1, "stride": 2}),
    "depthwise-5x5": (8, 8, 5, {"groups": 8, "padding": 2}),
    "depthwise-5x5-strided-dilated": (8, 8, 5, {"groups": 8, "padding": 4, "stride": 2,
                                                "dilation": 2}),
    "pointwise": (6, 8, 1, {}),
    "pointwise-strided": (6, 8, 1, {"stride": 2}),
    "no-spatial": (6, 8, 3, {"padding": 1, "spatial": False}),
    "bias": (6, 8, 3, {"padding": 1, "bias": True}),
    "pointwise-bias": (6, 8, 1, {"bias": True}),
}


def _child(name: str, gate: bool, *, seed: int = 0) -> ChildConv2d:
    torch.manual_seed(seed)
    c_in, c_out, k, kwargs = CONVS[name]
    kwargs = dict(kwargs)
    parent = ParentKernel(c_in, c_out, k, kwargs.pop("groups", 1))
    child = parent.child(gate_reduction=2 if gate else None, **kwargs)
    _randomize_adapter(child, seed)
    return _frozen(child)


@pytest.mark.parametrize("gate", [False, True], ids=["static", "gated"])
@pytest.mark.parametrize("name", list(CONVS))
def test_conv_child_outputs_and_gradients_equal_the_plain_form(name, gate, device):
    child = _child(name, gate).to(device)
    _assert_same(child, torch.randn(3, child.in_channels, 11, 10, device=device))


@pytest.mark.parametrize("name", ["regular", "depthwise-5x5", "pointwise", "grouped"])
def test_channels_last_inputs_too(name):
    child = _child(name, gate=True)
    y = _assert_same(child, torch.randn(3, child.in_channels, 9, 9), channels_last=True)
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", ["regular", "pointwise", "depthwise"])
def test_one_image_with_a_gate(name):
    # The gate's BatchNorm cannot train on one sample: it is in eval mode, the child trains.
    child = _child(name, gate=True)
    child.gate.eval()
    _assert_same(child, torch.randn(1, child.in_channels, 12, 12))


@pytest.mark.parametrize("name", ["regular", "grouped", "depthwise-5x5", "pointwise", "strided"])
@pytest.mark.parametrize("gate", [False, True], ids=["static", "gated"])
def test_relaxed_children_with_a_low_rank_residual(name, gate):
    child = _child(name, gate)
    relax(child, rank=2)
    _randomize_adapter(child, seed=3)
    _frozen(child)
    _assert_same(child, torch.randn(3, child.in_channels, 10, 10))


@pytest.mark.parametrize("name", ["regular", "pointwise", "pointwise-bias", "depthwise"])
def test_a_filter_switched_off_still_gets_its_gradient(name, device):
    child = _child(name, gate=True).to(device)
    with torch.no_grad():
        child.filter_scale[1] = -1.0
        child.filter_scale[4] = -1.0
    _assert_same(child, torch.randn(3, child.in_channels, 8, 8, device=device))


def test_the_fast_form_runs_only_while_training_a_frozen_parent():
    child = _child("regular", gate=True)
    x = torch.randn(3, 6, 8, 8)
    assert _uses_fast_form(child(x))
    assert not _uses_fast_form(child.eval()(x))
    child.train().parent.requires_grad_(True)
    assert not _uses_fast_form(child(x))
    child.parent.requires_grad_(False)
    with torch.no_grad():
        assert child(x).grad_fn is None


def test_eval_mode_and_the_folded_form_are_unchanged():
    child = _child("regular", gate=True)
    x = torch.randn(3, 6, 8, 8)
    child(x)  # one training step's forward moves the gate's running statistics
    child.eval()
    plain = copy.deepcopy(child)
    plain.fast_training = False
    assert torch.equal(child(x), plain(x))
    child.fold()
    torch.testing.assert_close(child(x), plain(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="unfold"):
        child.train()(x)


def test_only_the_parameters_that_train_get_gradients():
    child = _child("regular", gate=True)
    child.spatial_scale.requires_grad_(False)
    child.gate.requires_grad_(False)
    _assert_same(child, torch.randn(3, 6, 8, 8))
    x = torch.randn(3, 6, 8, 8)  # an input without a gradient (a network's stem)
    child(x).sum().backward()
    assert child.filter_scale.grad is not None and child.parent.weight.grad is None


def test_a_parent_shared_by_three_children_gets_the_sum_of_their_gradients():
    torch.manual_seed(0)
    parent = ParentKernel(6, 6, 3)
    children = [parent.child(padding=1, stride=s, gate_reduction=2) for s in (1, 2, 1)]
    for i, c in enumerate(children):
        _randomize_adapter(c, seed=i)
    x = torch.randn(2, 6, 9, 9)

    def loss(nets):
        return sum((net(x) * (i + 1)).sum() for i, net in enumerate(nets))

    loss(children).backward()
    total = parent.weight.grad.clone()
    expected = torch.zeros_like(total)
    for i, c in enumerate(children):
        alone = copy.deepcopy(c)  # its own copy of the parent
        alone.parent.weight.grad = None
        (alone(x) * (i + 1)).sum().backward()
        expected += alone.parent.weight.grad
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-5)
    # Frozen, the parent gets nothing and the children train through the fast form exactly.
    parent.requires_grad_(False)
    for c in children:
        _assert_same(c, x)


def test_conv_padding_turns_strings_into_integers():
    assert conv_padding("valid", (3, 3), (1, 1)) == (0, 0)
    assert conv_padding("same", (5, 3), (1, 2)) == (2, 2)
    assert conv_padding("same", (4, 4), (1, 1)) is None  # uneven: the plain form pads it
    assert conv_padding((1, 0), (3, 1), (1, 1)) == (1, 0)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_an_uneven_same_padding_falls_back_to_the_plain_form():
    torch.manual_seed(0)
    child = _frozen(ParentKernel(4, 4, 4).child(padding="same", gate_reduction=None))
    _randomize_adapter(child)
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    assert not _uses_fast_form(child(x))


def test_the_function_takes_no_gradient_for_the_parent():
    parent = torch.randn(4, 3, 3, 3, requires_grad=True)
    f = torch.zeros(4, 1, 1, 1, requires_grad=True)
    y = frozen_parent_conv2d(torch.randn(2, 3, 6, 6), None, parent, f, None, None,
                             (1, 1), (1, 1), (1, 1), 1)
    y.sum().backward()
    assert parent.grad is None and f.grad is not None


def _linear_child(gate: bool, bias: bool, seed: int = 0) -> ChildLinear:
    torch.manual_seed(seed)
    child = ChildLinear(nn.Linear(6, 10), 6, 10, bias=bias, gate_reduction=2 if gate else None)
    _randomize_adapter(child, seed)
    return _frozen(child)


@pytest.mark.parametrize("shape", [(4, 6), (3, 5, 5, 6), (2, 7, 6)])
@pytest.mark.parametrize("gate", [False, True], ids=["static", "gated"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_linear_child_outputs_and_gradients_equal_the_plain_form(shape, gate, bias, device):
    _assert_same(_linear_child(gate, bias).to(device), torch.randn(shape, device=device))


def test_linear_child_relaxed_and_with_a_filter_switched_off():
    child = _linear_child(gate=True, bias=True)
    relax(child, rank=2)
    _randomize_adapter(child, seed=5)
    _frozen(child)
    _assert_same(child, torch.randn(3, 4, 4, 6))
    child = _linear_child(gate=True, bias=True)
    with torch.no_grad():
        child.filter_scale[2] = -1.0
    _assert_same(child, torch.randn(3, 4, 4, 6))


def test_autocast_bf16_matches_the_plain_form_loosely(device):
    child = _child("regular", gate=True).to(device)
    x = torch.randn(3, 6, 10, 10, device=device)
    results = []
    for fast in (False, True):
        c = copy.deepcopy(child)
        c.fast_training = fast
        with torch.autocast(device.type, dtype=torch.bfloat16):
            y = c(x)
        y.float().square().sum().backward()
        results.append((y.float(), {n: p.grad for n, p in c.named_parameters()
                                    if p.requires_grad}))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=2e-2, atol=2e-2)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=5e-2, atol=5e-2 * (
            grad.abs().max().item() + 1e-3), msg=lambda m, name=name: f"{name}: {m}")


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = _child("pointwise", gate=True)
        self.b = _child("depthwise-5x5", gate=False)
        self.c = _frozen(ChildLinear(nn.Linear(8, 4), 8, 4, gate_reduction=2))
        _randomize_adapter(self.c)

    def forward(self, x):
        return self.c(self.b(self.a(x)).permute(0, 2, 3, 1))


def test_under_torch_compile_outputs_and_gradients_equal_eager():
    torch.manual_seed(0)
    block = _Block()
    x = torch.randn(3, 6, 8, 8)
    probe = torch.randn(3, 8, 8, 4)
    eager = _grads(block, x, probe, fast=True)
    plain = _grads(block, x, probe, fast=False)
    model = copy.deepcopy(block)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=False)
    xc = x.clone().requires_grad_(True)
    y = compiled(xc)
    (y * probe).sum().backward()
    torch.testing.assert_close(y, eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xc.grad, plain[1], rtol=1e-4, atol=1e-5)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, plain[2][name], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size,k,stride,padding,dilation", [
    (2, 5, 1, 2, 1), (2, 3, 1, 1, 1), (3, 5, 2, 2, 1), (4, 7, 1, 3, 1), (5, 5, 1, 4, 2),
    (9, 3, 2, 0, 1), (7, 5, 1, 2, 1), (6, 3, 1, 2, 2), (1, 3, 1, 1, 1)])
def test_the_depthwise_kernel_gradient_equals_the_backward_kernels(size, k, stride, padding,
                                                                   dilation):
    torch.manual_seed(0)
    child = _frozen(ParentKernel(6, 6, k, 6).child(stride=stride, padding=padding,
                                                    dilation=dilation, gate_reduction=None))
    _randomize_adapter(child)
    _assert_same(child, torch.randn(4, 6, size, size + 1))


@pytest.mark.parametrize("k,bias,gate", [(1, False, True), (1, True, False), (3, True, True)])
def test_maps_smaller_than_the_kernel_scale_the_output_instead(k, bias, gate):
    # 2 images of 2x2 give 8 output values per filter: fewer than the 48 x k x k weights each.
    torch.manual_seed(0)
    parent = ParentKernel(48, 40, k)
    child = _frozen(parent.child(padding=k // 2, bias=bias, spatial=False,
                                 gate_reduction=4 if gate else None))
    _randomize_adapter(child)
    _assert_same(child, torch.randn(2, 48, 2, 2))
    _assert_same(child, torch.randn(2, 48, 2, 2), channels_last=True)
    with torch.no_grad():
        child.filter_scale[3] = -1.0
    _assert_same(child, torch.randn(2, 48, 2, 2))


def test_an_in_place_change_of_the_output_is_refused_not_miscomputed():
    # The fast form reads dL/df off the child's output; autograd refuses a backward pass once
    # that output was changed in place (the plain form does not need it).
    child = _child("pointwise", gate=False)
    x = torch.randn(2, 6, 5, 5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.relu_(child(x)).sum().backward()
    child.fast_training = False
    torch.relu_(child(x)).sum().backward()
    assert child.filter_scale.grad is not None


def test_second_derivatives_are_refused_in_the_fast_form():
    child = _child("regular", gate=True)
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    (grad,) = torch.autograd.grad(child(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


def _saved_storages(module: nn.Module, x: torch.Tensor) -> set[int]:
    held = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved = set()

    def pack(t):
        if t.untyped_storage().data_ptr() not in held:
            saved.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return saved


@pytest.mark.parametrize("child", [
    lambda: _child("pointwise", gate=False),
    lambda: _frozen(ChildLinear(nn.Linear(6, 10), 6, 10, gate_reduction=None))])
def test_without_a_gate_the_input_is_not_kept_for_backward(child):
    child = child()
    x = torch.randn(3, 5, 5, 6) if isinstance(child, ChildLinear) else torch.randn(3, 6, 5, 5)
    x.requires_grad_(True)
    assert x.untyped_storage().data_ptr() not in _saved_storages(child, x)
    with torch.no_grad():
        child.filter_scale[0] = -1.0  # a switched-off filter needs it for its gradient
    assert x.untyped_storage().data_ptr() in _saved_storages(child, x)
