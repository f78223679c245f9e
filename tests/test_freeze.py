"""adapter_only: what trains after a conversion, and what stays frozen."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from kdna import ChildConv2d, adapter_only, convert


@pytest.fixture
def converted():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7)
    convert(model, example_inputs=torch.randn(1, 3, 64, 64))
    return model


def test_only_adapters_norms_and_head_train(converted):
    count = adapter_only(converted)
    trainable = {n for n, p in converted.named_parameters() if p.requires_grad}
    assert {"fc.weight", "fc.bias", "bn1.weight", "layer1.0.bn1.bias"} <= trainable
    assert "layer3.1.conv2.weight" not in trainable  # a shared parent is frozen
    assert "conv1.weight" not in trainable  # so is every dense layer
    assert any(n.endswith("filter_scale") for n in trainable)
    assert any(".gate." in n for n in trainable)
    assert all(n.endswith(("bias", "weight", "scale")) for n in trainable)
    assert count.trainable == sum(p.numel() for p in converted.parameters() if p.requires_grad)
    assert count.total == sum(p.numel() for p in converted.parameters())
    assert 0 < count.fraction < 0.2 and "trainable of" in str(count)


def test_a_training_step_moves_only_trainable_parameters(converted, device):
    converted.to(device)
    adapter_only(converted)
    before = {n: p.detach().clone() for n, p in converted.named_parameters()}
    optimizer = torch.optim.SGD([p for p in converted.parameters() if p.requires_grad], lr=0.1)
    loss = converted(torch.randn(2, 3, 32, 32, device=device)).logsumexp(1).mean()
    loss.backward()
    optimizer.step()
    moved = {n for n, p in converted.named_parameters() if not torch.equal(p, before[n])}
    assert all(converted.get_parameter(n).requires_grad for n in moved)
    child = next(n for n, m in converted.named_modules() if isinstance(m, ChildConv2d))
    assert {"fc.weight", f"{child}.filter_scale", f"{child}.gate.fc2.weight",
            "layer3.0.bn2.weight"} <= moved
    # with the identity gate's fc2 at zero, fc1 gets its first gradient only on step two
    assert all(p.grad is None for p in converted.parameters() if not p.requires_grad)


def test_head_choice_and_errors(converted):
    adapter_only(converted, head=None)
    assert not converted.fc.weight.requires_grad
    with pytest.raises(ValueError, match="head 'classifier' is not a module of ResNet"):
        adapter_only(converted, head="classifier")
    with pytest.raises(ValueError, match="has no KernelDNA children; convert it first"):
        adapter_only(nn.Sequential(nn.Conv2d(3, 3, 1)))
