"""The least-squares fit of a child's static scales to a given kernel."""

from __future__ import annotations

import pytest
import torch

from kdna.nn import fit_scales
from kdna.nn.functional import modulated_weight


def _scaled_copy(parent, gen):
    a = torch.rand(parent.shape[0], generator=gen) + 0.5
    b = torch.rand(parent.shape[2:], generator=gen) + 0.5
    return parent * a.view(-1, 1, 1, 1) * b


def test_an_exact_scaled_copy_is_recovered():
    gen = torch.Generator().manual_seed(0)
    parent = torch.randn(6, 4, 3, 3, generator=gen)
    target = _scaled_copy(parent, gen)
    f, s, error = fit_scales(target, parent)
    rebuilt = modulated_weight(parent, f.view(-1, 1, 1, 1), s.view(1, 1, 3, 3))
    assert error < 1e-6
    torch.testing.assert_close(rebuilt, target, rtol=1e-5, atol=1e-6)
    assert s.mean().abs() < 1e-6  # the common factor lives in f: mean(1 + s) == 1


def test_linear_weights_get_a_filter_scale_only():
    gen = torch.Generator().manual_seed(1)
    parent = torch.randn(5, 7, generator=gen)
    a = torch.rand(5, 1, generator=gen) + 0.5
    f, s, error = fit_scales(parent * a, parent)
    assert s is None and error < 1e-6
    torch.testing.assert_close(1 + f, a.flatten())


def test_unrelated_kernels_fit_no_worse_than_zero_and_improve_with_steps():
    gen = torch.Generator().manual_seed(2)
    parent, target = torch.randn(2, 8, 4, 3, 3, generator=gen)
    errors = [fit_scales(target, parent, steps=n)[2] for n in (1, 3, 10)]
    assert all(0 < e <= 1 for e in errors)
    assert errors[0] >= errors[1] >= errors[2]


def test_the_reported_error_is_the_true_residual():
    gen = torch.Generator().manual_seed(3)
    parent, target = torch.randn(2, 4, 2, 3, 3, generator=gen)
    f, s, error = fit_scales(target, parent)
    fitted = modulated_weight(parent, f.view(-1, 1, 1, 1), s.view(1, 1, 3, 3))
    assert error == pytest.approx(((target - fitted).norm() / target.norm()).item(), rel=1e-5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="target shape"):
        fit_scales(torch.zeros(2, 2, 3, 3), torch.zeros(2, 2, 1, 1))
    with pytest.raises(ValueError, match="steps must be at least 1"):
        fit_scales(torch.ones(2, 2), torch.ones(2, 2), steps=0)
