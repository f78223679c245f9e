"""Shared fixtures: small deterministic networks built from kdna's parent/child modules.

Tests that take the ``device`` fixture (directly, or through ``tiny_net`` / ``images``) run on
the CPU and, where a GPU is present, on CUDA as well; TF32 is off so tolerances hold there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from kdna import ParentKernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from docs_site import EXECUTED, nbval_outputs, save_notebook, with_outputs


class TinyNet(nn.Module):
    """A stem, one parent shared by three children (in the two layouts fold must recognise:
    an ``nn.Sequential`` and ``convN``/``bnN`` siblings), and a linear head."""

    def __init__(self, gate_form: str = "paper", width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.parent = ParentKernel(width, width, 3)
        self.block1 = nn.Sequential(self.parent.child(padding=1, gate_form=gate_form),
                                    nn.BatchNorm2d(width), nn.ReLU())
        self.conv2 = self.parent.child(padding=1, gate_form=gate_form, bias=True)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = self.parent.child(stride=2, padding=1, gate_reduction=None)
        self.bn3 = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, 5)

    def children_convs(self):
        return [self.block1[0], self.conv2, self.conv3]

    def forward(self, x):
        x = self.block1(self.stem(x))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.head(x.mean(dim=(2, 3)))


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Move every adapter, gate and BatchNorm away from its initial value (in place)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "filter_scale" in name or "spatial_scale" in name or "fc2" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=gen))
    return net


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def tiny_net(device):
    torch.manual_seed(0)
    return randomize(TinyNet()).to(device)


@pytest.fixture
def images(device):
    return torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1)).to(device)


def pytest_collection_modifyitems(session, config, items):
    """Tests marked ``after_notebooks`` run last (the sort is stable): they use what the
    notebooks left behind, notebook 06's cached fine-tuning and the executed notebooks."""
    items.sort(key=lambda item: item.get_closest_marker("after_notebooks") is not None)


def pytest_sessionfinish(session):
    """Keep every notebook nbval executed without an error, with its outputs, in
    build/executed/: ``make docs`` (tools/docs_site.py) builds the site from them."""
    for source, outputs in nbval_outputs(session.items).items():
        save_notebook(with_outputs(source, outputs), EXECUTED / source.name)
