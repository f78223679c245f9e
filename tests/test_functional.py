"""kdna.nn.functional against plain per-sample loops."""

import pytest
import torch
import torch.nn.functional as F

from kdna.nn.functional import gated_kernels, modulated_weight, per_sample_conv2d


@pytest.mark.parametrize("groups,c_in,c_out", [(1, 6, 4), (2, 6, 4), (6, 6, 6)])
def test_gated_kernels_equal_gating_the_input(groups, c_in, c_out):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, c_in, 7, 7, generator=gen)
    weight = torch.randn(c_out, c_in // groups, 3, 3, generator=gen)
    gate = torch.rand(3, c_in, generator=gen) * 2
    kernels = gated_kernels(weight, gate, groups)
    assert kernels.shape == (3, c_out, c_in // groups, 3, 3)
    for b in range(3):
        expected = F.conv2d(x[b:b + 1] * gate[b, :, None, None], weight, padding=1, groups=groups)
        got = F.conv2d(x[b:b + 1], kernels[b], padding=1, groups=groups)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 3])
def test_per_sample_conv2d_equals_a_loop(groups):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 9, 9, generator=gen)
    weights = torch.randn(4, 3, 6 // groups, 3, 3, generator=gen)
    bias = torch.randn(4, 3, generator=gen)
    out = per_sample_conv2d(x, weights, bias, stride=2, padding=1, groups=groups)
    for b in range(4):
        expected = F.conv2d(x[b:b + 1], weights[b], bias[b], stride=2, padding=1, groups=groups)
        torch.testing.assert_close(out[b:b + 1], expected, rtol=1e-5, atol=1e-5)


def test_modulated_weight_is_the_paper_formula():
    gen = torch.Generator().manual_seed(2)
    parent = torch.randn(4, 2, 3, 3, generator=gen)
    f = torch.randn(4, 1, 1, 1, generator=gen)
    s = torch.randn(1, 1, 3, 3, generator=gen)
    w = modulated_weight(parent, f, s)
    assert w[2, 1, 0, 2] == pytest.approx(
        (parent[2, 1, 0, 2] * (1 + f[2, 0, 0, 0]) * (1 + s[0, 0, 0, 2])).item(), rel=1e-6)
    assert torch.equal(modulated_weight(parent), parent)
