"""Deployment form and ONNX export: same outputs as eager, at batch 1 and 3."""

import pytest
import torch
from conftest import TinyNet, randomize
from torch import nn

import kdna
from kdna.deploy import check_onnx, deploy, export_onnx


def _converted_resnet():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    kdna.convert(model, fit_scales=False, example_inputs=torch.zeros(1, 3, 32, 32))
    return randomize(model).eval()


def _paper_resnet():
    torch.manual_seed(0)
    return randomize(kdna.create_model("resnet18", num_classes=10)).eval()


@pytest.mark.parametrize("build", [_converted_resnet, _paper_resnet, lambda: randomize(TinyNet())])
def test_deploy_folds_every_norm_and_keeps_the_function(build):
    model = build().eval()
    x = torch.randn(3, 3, 32, 32)
    expected = model(x)
    deployed = deploy(model)
    kept = {id(f.norm) for f in deployed.modules() if isinstance(f, kdna.FoldedNorm)}
    assert not [m for m in deployed.modules()  # no BatchNorm2d runs any more
                if isinstance(m, nn.BatchNorm2d) and id(m) not in kept]
    torch.testing.assert_close(deployed(x), expected, rtol=1e-4, atol=1e-4)
    assert not any(getattr(m, "is_folded", False) for m in model.modules())  # a copy


def test_children_keep_the_unfused_parent_so_unfold_is_exact():
    model = _paper_resnet()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    deploy(model, inplace=True)
    kdna.unfold(model)  # children are trainable again; plain convolutions stay fused
    children = [m for m in model.modules() if isinstance(m, kdna.ChildConv2d)]
    assert children and all(isinstance(c.parent, nn.Conv2d) for c in children)
    # the shared kernels are still the trained ones, not BatchNorm-scaled copies
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_folded_gate_equals_the_trainable_gate_and_refuses_training():
    gate = kdna.ChannelGate(16, 4, form="identity")
    randomize(nn.Sequential(gate))
    with torch.no_grad():
        gate.fc2.weight.normal_()
    gate.eval()
    x = torch.randn(5, 16, 4, 4)
    expected = gate(x)
    gate.fold()
    torch.testing.assert_close(gate(x), expected)
    with pytest.raises(RuntimeError, match="folded for inference"):
        gate.train()(x)
    gate.unfold()
    gate.train()(x)


def test_one_image_scales_the_kernel_instead_of_the_input():
    torch.manual_seed(0)
    child = randomize(nn.Sequential(kdna.ParentKernel(4, 6, 3).child(padding=1))).eval()
    x = torch.randn(3, 4, 16, 16)
    together = child(x)
    one_by_one = torch.cat([child(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(one_by_one, together, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build", [_converted_resnet, _paper_resnet])
def test_onnx_export_matches_eager_at_batch_1_and_3(build, tmp_path):
    model = build()
    result = export_onnx(model, tmp_path / "net.onnx", torch.randn(2, 3, 32, 32))
    assert result.ok and set(result.max_abs_error) == {1, 3}
    assert max(result.max_abs_error.values()) < 1e-4
    assert (tmp_path / "net.onnx").stat().st_size > 1e6
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]  # no temporary left over


def test_check_onnx_catches_a_model_that_differs(tmp_path):
    model = randomize(TinyNet()).eval()
    export_onnx(model, tmp_path / "tiny.onnx", torch.randn(1, 3, 12, 12))
    with torch.no_grad():
        model.head.bias.add_(1.0)
    result = check_onnx(model, tmp_path / "tiny.onnx", torch.randn(1, 3, 12, 12))
    assert not result.ok and "MISMATCH" in str(result)


def test_export_rejects_a_bad_example(tmp_path):
    with pytest.raises(ValueError, match=r"example_inputs must be an input batch \[B, C, H, W\]"):
        export_onnx(TinyNet(), tmp_path / "x.onnx", torch.randn(3, 12, 12))
    with pytest.raises(TypeError, match="example_inputs"):
        export_onnx(TinyNet(), tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_the_model_comes_first_then_the_path(tmp_path):
    model = randomize(TinyNet()).eval()
    x, path = torch.randn(1, 3, 12, 12), tmp_path / "tiny.onnx"
    exported = export_onnx(model, path, x)
    checked = check_onnx(model, path, example_inputs=x)
    assert exported.ok and checked.ok and checked.max_abs_error.keys() == {1, 3}
    with pytest.raises(TypeError, match="model"):
        check_onnx(path, model, x)
    with pytest.raises(TypeError, match="unexpected keyword argument 'example'"):
        check_onnx(model, path, example=x)
