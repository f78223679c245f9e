from __future__ import annotations

import pytest
import torch
from torch import nn

from kdna import ParentKernel
from kdna.analysis.attribution import METHODS, attribute_gate, attribute_prediction, gated_children

ROWS, COLS = slice(2, 5), slice(3, 7)


class RegionNet(nn.Module):
    """A classifier that only looks at rows 2-4, columns 3-6 of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 2)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x[:, :, ROWS, COLS])).mean(dim=(2, 3)))


def gated_net(seed: int = 0) -> nn.Sequential:
    """One randomised "paper" child and a pooling head."""
    torch.manual_seed(seed)
    child = ParentKernel(3, 8, 3).child(padding=1, gate_form="paper", gate_reduction=1)
    with torch.no_grad():
        for p in child.gate.parameters():
            p.copy_(torch.randn_like(p))
        child.gate.bn.bias.fill_(2.0)  # keep the hidden units alive, so gradients reach the input
    return nn.Sequential(child, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 5))


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


@pytest.fixture
def images():
    return torch.randn(3, 3, 9, 11, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", METHODS)
def test_prediction_shape_and_region(method, images, device):
    torch.manual_seed(0)
    model = RegionNet().to(device)
    maps = attribute_prediction(model, images, method=method, steps=8)
    assert maps.shape == (3, 9, 11) and maps.device.type == device.type
    inside = torch.zeros(9, 11, dtype=torch.bool)
    inside[ROWS, COLS] = True
    assert (maps[:, ~inside] == 0).all()
    assert (maps[:, inside].sum(dim=1) > 0).all()
    assert (maps >= 0).all()


def test_prediction_targets(images):
    model = gated_net()
    predicted = model.eval()(images).argmax(dim=1)
    auto = attribute_prediction(model, images, method="saliency")
    assert torch.equal(auto, attribute_prediction(model, images, predicted, method="saliency"))
    other = attribute_prediction(model, images, 0, method="saliency")
    assert other.shape == auto.shape
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        attribute_prediction(model, images, 5)
    with pytest.raises(ValueError, match="one class"):
        attribute_prediction(model, images, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="target"):
        attribute_prediction(model, images, "cat")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("channel", [None, 1])
def test_gate_attribution(method, channel, images, device):
    model = gated_net().to(device)
    maps = attribute_gate(model, images, "0", channel, method=method, steps=8)
    assert maps.shape == (3, 9, 11) and maps.device.type == device.type
    assert (maps.flatten(1).sum(dim=1) > 0).all()
    assert no_hooks(model)


def test_gate_attribution_is_of_the_gate(images):
    # A different head changes the prediction, not the routing of the child before it.
    model, other = gated_net(), gated_net()
    nn.init.normal_(other[-1].weight)
    assert torch.allclose(attribute_gate(model, images, "0"), attribute_gate(other, images, "0"))


def test_modes_restored(images):
    model = gated_net().train()
    model[0].gate.eval()
    attribute_gate(model, images, "0", steps=2)
    attribute_prediction(model, images, steps=2)
    assert model.training and model[0].training and not model[0].gate.training


def test_hooks_removed_on_error():
    model = gated_net()
    with pytest.raises(ValueError, match="4-D input"):
        attribute_gate(model, torch.randn(2, 4, 8, 8), "0")  # 4 channels, the child wants 3
    assert no_hooks(model) and model.training


def test_bad_arguments(images):
    model = gated_net()
    assert gated_children(model) == ["0"]
    with pytest.raises(ValueError, match=r"no child named 'nope'.*'0'"):
        attribute_gate(model, images, "nope")
    with pytest.raises(ValueError, match=r"'1' .*no input gate.*'0'"):
        attribute_gate(model, images, "1")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        attribute_gate(model, images, "0", channel=3)
    with pytest.raises(ValueError, match="integrated_gradients"):
        attribute_gate(model, images, "0", method="gradcam")
    with pytest.raises(ValueError, match="saliency"):
        attribute_prediction(model, images, method="gradcam")
    with pytest.raises(ValueError, match="steps"):
        attribute_prediction(model, images, steps=0)
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        attribute_prediction(model, images[0])
    ungated = nn.Sequential(ParentKernel(3, 4, 3).child(gate_reduction=None))
    with pytest.raises(ValueError, match="gated children: none"):
        attribute_gate(ungated, images, "0")
    assert no_hooks(model)
