"""The parent/child convolution: equivalences, sharing, and errors on bad input."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet, randomize
from torch import nn

from kdna import ChannelGate, ChildConv2d, ParentKernel


@pytest.mark.parametrize(
    "c_in,c_out,k,kwargs",
    [
        (4, 6, 3, {"padding": 1}),
        (4, 6, 3, {"stride": 2, "padding": 1}),
        (4, 6, 3, {"dilation": 2, "padding": 2}),
        (4, 6, (3, 1), {"padding": (1, 0)}),
        (4, 6, 1, {}),  # pointwise
        (6, 6, 3, {"groups": 6, "padding": 1}),  # depthwise
        (4, 6, 3, {"groups": 2, "padding": "same", "bias": True}),
    ],
)
def test_fresh_child_with_identity_gate_equals_its_parent(c_in, c_out, k, kwargs):
    torch.manual_seed(0)
    groups = kwargs.get("groups", 1)
    parent = ParentKernel(c_in, c_out, k, groups)
    geometry = {key: value for key, value in kwargs.items() if key != "groups"}
    child = parent.child(gate_form="identity", **geometry)
    x = torch.randn(3, c_in, 9, 9)
    expected = F.conv2d(x, parent.weight, None, child.stride, child.padding, child.dilation, groups)
    for mode in (child.train, child.eval):
        mode()
        assert torch.equal(child.gate(x), torch.ones(3, c_in))
        torch.testing.assert_close(child(x), expected, rtol=0, atol=1e-6)


def test_paper_gate_starts_near_one_half_not_one():
    torch.manual_seed(0)
    gate = ChannelGate(16, 4, form="paper").eval()
    g = gate(torch.randn(8, 16, 5, 5))
    assert g.shape == (8, 16)
    assert ((g > 0) & (g < 1)).all()
    assert abs(g.mean().item() - 0.5) < 0.15


def test_static_modulation_is_parent_times_one_plus_scales():
    torch.manual_seed(0)
    parent = ParentKernel(4, 6, 3)
    child = parent.child(padding=1, gate_reduction=None)
    with torch.no_grad():
        child.filter_scale.normal_()
        child.spatial_scale.normal_()
    x = torch.randn(2, 4, 8, 8)
    f, s = child.filter_scale.view(6, 1, 1, 1), child.spatial_scale.view(1, 1, 3, 3)
    w = parent.weight * (1 + f) * (1 + s)
    torch.testing.assert_close(child(x), F.conv2d(x, w, padding=1), rtol=1e-5, atol=1e-5)
    assert ParentKernel(4, 6, 1).child().spatial_scale is None  # 1x1: the filter scale covers it


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_gating_the_input_equals_a_per_sample_kernel(groups):
    """conv2d(x * g, W) == conv2d(x[b], W * g[b] on input columns), checked sample by sample."""
    torch.manual_seed(0)
    parent = ParentKernel(4, 8, 3, groups)
    child = randomize(parent.child(stride=2, padding=1)).eval()
    x = torch.randn(5, 4, 9, 9)
    out = child(x)
    gate = child.gate(x)
    weight = child.static_weight()
    per_group = 4 // groups
    for b in range(5):
        kernel = weight.clone()
        for o in range(8):  # column j of filter o reads input channel group(o) * C_in/g + j
            first = (o // (8 // groups)) * per_group
            kernel[o] = kernel[o] * gate[b, first:first + per_group, None, None]
        expected = F.conv2d(x[b:b + 1], kernel, stride=2, padding=1, groups=groups)
        torch.testing.assert_close(out[b:b + 1], expected, rtol=1e-5, atol=1e-5)


def test_child_is_one_conv2d_call_on_the_whole_batch(monkeypatch):
    torch.manual_seed(0)
    child = ParentKernel(4, 6, 3).child(padding=1)
    batch_sizes = []
    real = F.conv2d

    def spy(x, *args, **kwargs):
        batch_sizes.append(x.shape[0])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(F, "conv2d", spy)
    child(torch.randn(7, 4, 8, 8))
    assert batch_sizes == [7]


def test_parent_is_counted_once_and_trained_by_every_child(tiny_net, images):
    parent = tiny_net.parent
    params = list(tiny_net.parameters())
    assert sum(p is parent.weight for p in params) == 1
    dense = sum(p.numel() for m in (tiny_net.stem, tiny_net.head) for p in m.parameters())
    norms = sum(p.numel() for m in (tiny_net.block1[1], tiny_net.bn2, tiny_net.bn3)
                for p in m.parameters())
    adapters = sum(p.numel() for c in tiny_net.children_convs() for p in c.adapter_parameters())
    biases = tiny_net.conv2.bias.numel()
    total = dense + norms + parent.weight.numel() + adapters + biases
    assert sum(p.numel() for p in params) == total

    # Each child alone sends a gradient into the parent, and the total is their sum.
    x = torch.relu(tiny_net.stem(images)).detach()
    grads = []
    for child in tiny_net.children_convs():
        tiny_net.zero_grad()
        child(x).square().mean().backward()
        assert parent.weight.grad is not None and parent.weight.grad.abs().sum() > 0
        grads.append(parent.weight.grad.clone())
    tiny_net.zero_grad()
    sum(c(x).square().mean() for c in tiny_net.children_convs()).backward()
    torch.testing.assert_close(parent.weight.grad, sum(grads))


def _assert_shared(net):
    assert all(c.parent.weight is net.parent.weight for c in net.children_convs())


def test_sharing_survives_to_dtype(tiny_net, images):
    tiny_net.eval()
    expected = tiny_net(images).double()
    tiny_net.to(torch.float64)
    _assert_shared(tiny_net)
    assert tiny_net.parent.weight.dtype == torch.float64
    torch.testing.assert_close(tiny_net(images.double()), expected, rtol=1e-5, atol=1e-6)


def test_sharing_survives_deepcopy(tiny_net):
    clone = copy.deepcopy(tiny_net)
    _assert_shared(clone)
    assert clone.parent.weight is not tiny_net.parent.weight
    with torch.no_grad():
        clone.parent.weight.add_(1.0)  # an update through the parent reaches every child
    assert all(torch.equal(c.parent.weight, clone.parent.weight) for c in clone.children_convs())
    assert not torch.equal(clone.parent.weight, tiny_net.parent.weight)


def test_sharing_survives_state_dict_save_and_load(tiny_net, images, tmp_path):
    tiny_net.eval()
    path = tmp_path / "tiny.pt"
    torch.save(tiny_net.state_dict(), path)
    fresh = TinyNet().to(images.device).eval()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    _assert_shared(fresh)
    assert torch.equal(fresh(images), tiny_net(images))
    # torch.save writes the shared tensor once, however many children name it.
    loaded = torch.load(path, weights_only=True)
    keys = [k for k in loaded if k.endswith("parent.weight")]
    assert len(keys) == 4  # the stage's own name and one per child
    assert len({loaded[k].untyped_storage().data_ptr() for k in keys}) == 1


def test_sharing_survives_torch_compile(tiny_net, images):
    tiny_net.train()
    compiled = torch.compile(tiny_net, backend="aot_eager")
    eager_out = copy.deepcopy(tiny_net)(images)
    out = compiled(images)
    torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-5)
    out.square().mean().backward()
    grad = tiny_net.parent.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    before = tiny_net.parent.weight.detach().clone()
    torch.optim.SGD(compiled.parameters(), lr=0.1).step()
    _assert_shared(tiny_net)
    assert not torch.equal(tiny_net.parent.weight, before)
    shared = tiny_net.parent.weight
    assert all(torch.equal(c.parent.weight, shared) for c in tiny_net.children_convs())


def test_torch_compile_inductor_matches_eager(tiny_net, images):
    tiny_net.eval()
    expected = tiny_net(images)
    torch.testing.assert_close(torch.compile(tiny_net)(images), expected, rtol=1e-4, atol=1e-5)


def test_a_dense_conv_can_be_the_parent():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    child = ChildConv2d(conv, 4, 4, 3, padding=1, gate_form="identity")
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(child(x), conv(x))
    assert child.parent.weight is conv.weight


# --- bad input ----------------------------------------------------------------------------------

def test_wrong_number_of_input_channels_names_both():
    child = ParentKernel(4, 6, 3).child()
    with pytest.raises(ValueError, match=r"\[batch, 4, height, width\].*\[2, 5, 8, 8\]"):
        child(torch.randn(2, 5, 8, 8))


def test_non_4d_input_is_refused():
    child = ParentKernel(4, 6, 3).child()
    with pytest.raises(ValueError, match=r"4-D input.*\[4, 8, 8\]"):
        child(torch.randn(4, 8, 8))


def test_kernel_shape_that_does_not_match_the_parent():
    parent = ParentKernel(4, 6, 3)
    with pytest.raises(ValueError, match=r"\[6, 4, 5, 5\].*parent's kernel shape \[6, 4, 3, 3\]"):
        ChildConv2d(parent, 4, 6, 5)
    with pytest.raises(ValueError, match=r"\[8, 4, 3, 3\]"):
        ChildConv2d(parent, 4, 8, 3)
    with pytest.raises(ValueError, match=r"\[6, 2, 3, 3\]"):
        ChildConv2d(parent, 4, 6, 3, groups=2)


@pytest.mark.parametrize("reduction", [0, -2, 1.5])
def test_non_positive_reduction_is_refused(reduction):
    with pytest.raises(ValueError, match=rf"reduction must be a positive integer, got {reduction}"):
        ParentKernel(4, 6, 3).child(gate_reduction=reduction)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match=r"gate form must be one of .*'sigmoid'"):
        ChannelGate(8, form="sigmoid")
    with pytest.raises(TypeError, match=r"ParentKernel or an nn.Conv2d.*Linear"):
        ChildConv2d(nn.Linear(3, 3), 3, 3, 1)
    with pytest.raises(ValueError, match=r"divisible by groups \(4\)"):
        ParentKernel(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match=r"in_channels must be a positive integer, got 0"):
        ParentKernel(0, 8, 3)
    with pytest.raises(ValueError, match=r"padding 'same' .* stride 1 \(got stride 2\)"):
        ParentKernel(4, 4, 3).child(stride=2, padding="same")
    with pytest.raises(ValueError, match=r"padding 'full' must be"):
        ParentKernel(4, 4, 3).child(padding="full")


def test_the_gate_form_travels_in_the_state_dict():
    trained = ChannelGate(8, form="identity")
    fresh = ChannelGate(8, form="paper")
    fresh.load_state_dict(trained.state_dict())
    assert fresh.form == "identity"
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(fresh.eval()(x), trained.eval()(x))
    with pytest.raises(ValueError, match="gate form in the state_dict must be one of"):
        fresh.set_extra_state({"form": "tanh"})
