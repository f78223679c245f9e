"""The registry and the architectures: counts, structure, names, weights and folding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kdna
from kdna import ChildConv2d, ChildLinear, count_parameters, create_model, list_models
from kdna.models import convnext


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_and_folds_with_equal_outputs(name, device):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).to(device).eval()
    x = torch.randn(2, 3, 224, 224, device=device)
    with torch.no_grad():
        expected = model(x)
        assert expected.shape == (2, 10)
        kdna.fold(model)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)
        kdna.unfold(model)
        torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize(("name", "reference"), [
    ("resnet18", 9.241e6), ("resnet50", 22.778e6),
    ("mobilenet_v2", 3.137e6), ("mobilenet_v2_1d2", 1.878e6)])
def test_paper_layouts_match_the_reference_parameter_counts(name, reference):
    assert count_parameters(create_model(name)) == pytest.approx(reference, rel=0.005)


@pytest.mark.parametrize(("name", "plain"), [
    ("resnet18", 11_689_512), ("resnet50", 25_557_032), ("mobilenet_v2", 3_504_872),
    ("convnext_tiny", 28_589_128)])
def test_kernel_dna_false_is_the_plain_network(name, plain):
    model = create_model(name, kernel_dna=False)
    assert count_parameters(model) == plain
    assert not any(isinstance(m, kdna.KernelChild) for m in model.modules())


def test_resnet18_layout_shares_three_dense_kernels_per_stage():
    model = create_model("resnet18")
    for stage in (model.layer3, model.layer4):
        assert len(stage) == 3 and isinstance(stage[0].conv1, nn.Conv2d)
        assert stage[0].conv2.parent is stage[1].conv2
        assert stage[1].conv1.parent is stage[1].conv2
        assert stage[2].conv1.parent is stage[2].conv2
        assert stage[2].conv1.gate.form == "paper" and stage[2].conv1.gate.reduction == 4
    assert len(model.layer2) == 2 and type(model.layer2[1].conv1) is nn.Conv2d


def test_mobilenet_v2_layout_gates_expand_and_project_like_the_paper():
    model = create_model("mobilenet_v2")
    child, parent = model.features[5].conv, model.features[6].conv
    assert child[0][0].parent is parent[0][0] and child[2].parent is parent[2]
    assert (child[0][0].gate.reduction, child[2].gate.reduction) == (4, 24)
    assert type(child[1][0]) is nn.Conv2d  # its own depthwise convolution
    assert [i for i, block in enumerate(model.features)
            if any(isinstance(m, ChildConv2d) for m in block.modules())] == [5, 8, 9, 12, 15]


def test_convnext_tiny_layout_matches_its_documentation():
    model = create_model("convnext_tiny")
    children = [n for n, m in model.named_modules() if isinstance(m, ChildLinear)]
    assert len(children) == 16  # 8 child blocks x (expand, project)
    assert model.features[5][0].block[3].parent is model.features[5][2].block[3]
    count = count_parameters(model)
    assert f"{count / 1e6:.2f}M" in convnext.__doc__
    assert "8 children" in convnext.__doc__


@pytest.mark.parametrize(("alias", "canonical"), [
    ("mobilenet+_v2_1d2", "mobilenet_v2_1d2"), ("convNeXt-tiny", "convnext_tiny"),
    ("ResNet-18", "resnet18"), ("MobileNet_V2_0.5", "mobilenet_v2_1d2")])
def test_reference_spellings_are_aliases(alias, canonical):
    assert count_parameters(create_model(alias, kernel_dna=False)) == count_parameters(
        create_model(canonical, kernel_dna=False))


def test_unknown_names_and_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown model 'resnt18' \(did you mean 'resnet18'"
                                         r"\?\); valid names: resnet18, resnet50"):
        create_model("resnt18")
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        create_model("resnet18", num_classes=0)
    with pytest.raises(ValueError, match="weights for resnet18 must be None or one of"):
        create_model("resnet18", kernel_dna=False, weights="imagenet")
    with pytest.raises(ValueError, match="no pretrained weights fit it"):
        create_model("resnet50", weights="DEFAULT")


def test_torchvision_weights_fail_fast_offline(monkeypatch, tmp_path):
    import socket

    def unreachable(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(ConnectionError, match=r"torchvision weights convnext_tiny/DEFAULT must "
                                              r"be downloaded .* Offline, use kdna.create_model"
                                              r"\('efficientnet_lite0', weights='imagenet'\)"):
        create_model("convnext_tiny", weights="DEFAULT")
