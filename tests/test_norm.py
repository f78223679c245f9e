"""kdna.nn.norm: the one frozen BatchNorm. Its statistics never move, whatever mode it is put
in, it computes the documented formula at any batch size, and freezing a model keeps its
tensors and its state dict."""

import pytest
import torch
from torch import nn

from kdna.nn import (
    NORM_LAYERS,
    FrozenBatchNorm1d,
    FrozenBatchNorm2d,
    freeze_batchnorm,
)
from kdna.nn.norm import BATCH_NORMS, is_frozen_batchnorm


def _with_statistics(norm: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    c = norm.num_features
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(c, generator=generator))
        norm.running_var.copy_(torch.rand(c, generator=generator) * 3 + 0.25)
        norm.weight.copy_(torch.randn(c, generator=generator))
        norm.bias.copy_(torch.randn(c, generator=generator))
    return norm


def _formula(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, var = norm.running_mean.view(shape), norm.running_var.view(shape)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.view(shape) \
        + norm.bias.view(shape)


@pytest.mark.parametrize(("frozen", "shape"), [(FrozenBatchNorm2d, (3, 4, 5, 5)),
                                                (FrozenBatchNorm2d, (1, 4, 1, 1)),
                                                (FrozenBatchNorm1d, (3, 4)),
                                                (FrozenBatchNorm1d, (1, 4))])
def test_statistics_never_move_and_the_output_is_the_formula(frozen, shape):
    norm = _with_statistics(frozen(4))
    stats = {k: v.clone() for k, v in norm.state_dict().items() if "running" in k
             or "tracked" in k}
    weight = norm.weight.detach().clone()
    optimizer = torch.optim.SGD(norm.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    for step in range(3):
        x = torch.randn(*shape, generator=generator) * 3 + 1
        norm.train()
        assert not norm.training
        if step == 2:
            norm.training = True  # even a flag set by hand does not re-estimate them
        y = norm(x)
        torch.testing.assert_close(y, _formula(norm, x), rtol=1e-5, atol=1e-5)  # float32
        optimizer.zero_grad()
        y.square().sum().backward()
        optimizer.step()
    assert all(torch.equal(norm.state_dict()[k], v) for k, v in stats.items())
    assert not torch.equal(norm.weight.detach(), weight)  # the scale and shift still train


def test_freezing_a_model_keeps_its_tensors_and_state_dict():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _with_statistics(nn.BatchNorm2d(4)), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 5), _with_statistics(
                              nn.BatchNorm1d(5), seed=1))
    weight, keys = model[1].weight, list(model.state_dict())
    x = torch.randn(2, 3, 8, 8)
    expected = model.eval()(x)
    assert freeze_batchnorm(model) is model
    assert type(model[1]) is FrozenBatchNorm2d and type(model[5]) is FrozenBatchNorm1d
    assert model[1].weight is weight and is_frozen_batchnorm(model[5])
    assert list(model.state_dict()) == keys  # loads into the plain network as it is
    torch.testing.assert_close(model.train()(x), expected)
    plain = nn.BatchNorm2d(4)
    plain.load_state_dict(model[1].state_dict())
    assert isinstance(model[1], BATCH_NORMS) and isinstance(model[1], NORM_LAYERS)
    alone = freeze_batchnorm(nn.BatchNorm2d(4))  # a BatchNorm itself: its frozen form
    assert type(alone) is FrozenBatchNorm2d


def test_a_batchnorm_without_statistics_is_refused():
    with pytest.raises(ValueError, match="no running statistics"):
        freeze_batchnorm(nn.Sequential(nn.BatchNorm2d(4, track_running_stats=False)))
    with pytest.raises(TypeError, match="model"):
        freeze_batchnorm("resnet18")
