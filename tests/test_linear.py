"""ChildLinear: a child of a pointwise (channels-last) Linear."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdna import ChildLinear, fold, unfold


@pytest.fixture
def parent():
    torch.manual_seed(0)
    return nn.Linear(8, 12)


def test_a_new_identity_child_computes_its_parents_function(parent):
    child = ChildLinear(parent, 8, 12, gate_form="identity")
    with torch.no_grad():
        child.bias.copy_(parent.bias)
    x = torch.randn(2, 5, 5, 8)
    torch.testing.assert_close(child(x), parent(x))


def test_the_gate_pools_every_position_and_scales_input_features(parent, device):
    parent = parent.to(device)
    child = ChildLinear(parent, 8, 12, bias=False).eval()
    with torch.no_grad():
        child.filter_scale.normal_(std=0.3)
    x = torch.randn(3, 4, 6, 8, device=device)
    gate = child.gate.excite(x.mean(dim=(1, 2)))
    expected = F.linear(x * gate[:, None, None, :], parent.weight * (1 + child.filter_scale))
    torch.testing.assert_close(child(x), expected)
    assert child(x[:, 0, 0]).shape == (3, 12)  # a plain [batch, features] input works too


def test_fold_and_unfold_keep_outputs_and_share_the_parent(parent):
    net = nn.Sequential(nn.Linear(8, 8), ChildLinear(parent, 8, 12)).eval()
    with torch.no_grad():
        net[1].filter_scale.normal_(std=0.3)
    x = torch.randn(2, 3, 3, 8)
    before = net(x)
    fold(net)
    torch.testing.assert_close(net(x), before)
    unfold(net)
    assert not net[1].is_folded


def test_a_square_parent_is_shared_once_also_after_deepcopy():
    parent = nn.Linear(6, 6)
    net = nn.Sequential(parent, nn.GELU(), ChildLinear(parent, 6, 6), ChildLinear(parent, 6, 6))
    clone = copy.deepcopy(net)
    assert clone[2].parent is clone[0] and clone[3].parent is clone[0]
    adapter = sum(p.numel() for p in net[2].parameters() if p is not parent.weight
                  and p is not parent.bias)
    assert sum(p.numel() for p in clone.parameters()) == 6 * 6 + 6 + 2 * adapter


def test_bad_shapes_raise(parent):
    with pytest.raises(ValueError, match=r"does not match its parent's weight shape \[12, 8\]"):
        ChildLinear(parent, 12, 8)
    with pytest.raises(TypeError, match=r"parent must be an nn\.Linear"):
        ChildLinear(nn.Conv2d(8, 12, 1), 8, 12)
    with pytest.raises(ValueError, match=r"expected an input \[batch, ..., 8\]"):
        ChildLinear(parent, 8, 12)(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="no following norm"):
        ChildLinear(parent, 8, 12).fold(nn.LayerNorm(12))
