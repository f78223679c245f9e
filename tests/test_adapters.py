"""Adapters in place (share=False) and adapter files: the function kept exactly at the start,
the report's counts, the gate budget, the save/load round trip and the refusal of a wrong base."""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch
import torchvision
from torch import nn

import kdna
from kdna import ChildConv2d, ConvertConfig, adapter_only, convert, load_adapters, save_adapters
from kdna.conversion.adapters import CONFIG_FILE, TENSORS_FILE
from kdna.conversion.record import conversion_record


def _randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
    return model.eval()


@functools.cache
def _built_resnet18(seed: int, num_classes: int) -> nn.Module:
    torch.manual_seed(seed)
    return _randomize_norms(torchvision.models.resnet18(num_classes=num_classes), seed)


def _resnet18(seed: int = 0, num_classes: int = 1000) -> nn.Module:
    """A fresh copy of one seeded ResNet-18 with random BatchNorm statistics."""
    return copy.deepcopy(_built_resnet18(seed, num_classes))


def _timm_model() -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return _randomize_norms(timm.create_model("mobilenetv3_small_050", pretrained=False))


BUILDERS = {
    "resnet18": _resnet18,
    "mobilenet_v3_small": lambda: _randomize_norms(torchvision.models.mobilenet_v3_small()),
    "timm": _timm_model,
    "efficientnet_lite0": lambda: kdna.create_model("efficientnet_lite0", kernel_dna=False,
                                                    weights="imagenet").eval(),
    # versioned modules: MNASNet reads its state format version when loading a state dict
    "mnasnet0_5": lambda: _randomize_norms(torchvision.models.mnasnet0_5()),
}


@pytest.fixture
def batch():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# ---- adapters in place ------------------------------------------------------------------------

@pytest.mark.parametrize("arch", list(BUILDERS))
def test_adapters_in_place_keep_the_function_exactly(arch, batch):
    torch.manual_seed(0)
    model = BUILDERS[arch]()
    convs = sum(type(m) is nn.Conv2d for m in model.modules())
    with torch.no_grad():
        before = model(batch)
    report = convert(model, ConvertConfig.adapters(), example_inputs=batch)
    with torch.no_grad():
        after = model(batch)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    assert report.agreement.top1 == 1.0
    children = kdna.nn.children_of(model)
    assert len(children) == len(report.adapters) >= convs // 2
    for row in report.adapters:
        child = children[row.name]
        assert child.parent.weight.requires_grad is not None  # the original layer, kept inside
        assert torch.count_nonzero(child.filter_scale) == 0
        assert (row.gate_hidden is None) == (child.gate is None)
        if row.kind == "depthwise":
            assert child.gate is None  # static scales only
    assert report.adapter_params == sum(a.params for a in report.adapters) > 0
    assert report.adapter_fraction == pytest.approx(report.adapter_params / report.params_before)


def test_the_report_lists_each_adapter(batch):
    model = _resnet18()
    report = convert(model, share=False, gate_reduction=16, example_inputs=batch)
    text = str(report)
    assert "Adapters in place: 20 layers" in text and "| layer1.0.conv1 | conv 64x64x3x3 |" in text
    row = next(a for a in report.adapters if a.name == "layer1.0.conv1")
    child = model.layer1[0].conv1
    assert isinstance(child, ChildConv2d) and child.parent.weight.shape == (64, 64, 3, 3)
    assert row.params == sum(p.numel() for p in child.adapter_parameters())
    assert row.gate_hidden == 4 and row.kernel_params == 64 * 64 * 9
    assert not any(type(m) is nn.Linear and n == "fc" for n, m in model.named_modules()
                   if isinstance(m, ChildConv2d))
    assert type(model.fc) is nn.Linear  # the head (one position) stays dense


def test_gate_budget_controls():
    batch = torch.randn(1, 3, 32, 32)
    base = torchvision.models.mobilenet_v3_small()

    def adapters(**settings):
        return convert(copy.deepcopy(base), ConvertConfig.adapters(**settings),
                       example_inputs=batch)

    capped = adapters(gate_max_hidden=2)
    assert max(a.gate_hidden or 0 for a in capped.adapters) == 2
    static = adapters(gate_reduction=None)
    assert all(a.gate_hidden is None for a in static.adapters)
    wide = adapters(gate_reduction=4, gate_max_hidden=None)
    assert static.adapter_params < capped.adapter_params
    assert max(a.gate_hidden or 0 for a in wide.adapters) > 8  # the preset's cap is 8
    # a gate that would not be smaller than its kernel is left out (static scales only)
    assert any(a.gate_hidden is None and a.kind == "conv" for a in wide.adapters)


def test_adapter_only_trains_adapters_norms_and_head_not_the_kernels(batch):
    model = _resnet18()
    convert(model, ConvertConfig.adapters(), example_inputs=batch)
    adapter_only(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "layer1.0.conv1.filter_scale" in trainable and "fc.weight" in trainable
    assert "layer1.0.conv1.parent.weight" not in trainable


@pytest.mark.parametrize(("settings", "error", "match"), [
    ({"share": "no"}, TypeError, "share must be True"),
    ({"gate_max_hidden": 0}, ValueError, "gate_max_hidden must be a positive integer"),
    ({"gate_max_hidden": 2.5}, ValueError, "gate_max_hidden must be a positive integer"),
    ({"share": False, "groups": [["a", "b"]]}, ValueError, "with share=False"),
])
def test_new_settings_are_checked(settings, error, match):
    with pytest.raises(error, match=match):
        ConvertConfig(**settings)


def test_nothing_eligible_is_a_clear_error():
    with pytest.raises(ValueError, match="can take an adapter in place"):
        convert(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten()), ConvertConfig.adapters(),
                example_inputs=torch.randn(1, 3, 1, 1))  # one position: a head, not a layer


# ---- adapter files ----------------------------------------------------------------------------

def _fine_tuned(num_classes: int = 1000, seed: int = 0) -> nn.Module:
    model = _resnet18(seed, num_classes)
    convert(model, ConvertConfig.adapters(), example_inputs=torch.randn(1, 3, 32, 32))
    adapter_only(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(2):  # the identity gate's fc1 gets its first gradient on step two
        optimizer.zero_grad()
        model(torch.randn(2, 3, 32, 32)).logsumexp(1).mean().backward()
        optimizer.step()
    return model.eval()


def test_save_and_load_round_trip(tmp_path, batch):
    model = _fine_tuned()
    folder = save_adapters(model, tmp_path / "adapters")
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, TENSORS_FILE])
    meta = json.loads((folder / CONFIG_FILE).read_text())
    saved = meta["replaces"]
    assert "layer1.0.conv1.filter_scale" in saved and "fc.weight" in saved and "bn1.weight" in saved
    assert not any(k.endswith("parent.weight") or k == "conv1.weight" for k in saved)  # frozen
    full = sum(v.numel() for v in model.state_dict().values() if isinstance(v, torch.Tensor))
    assert meta["tensors"]["numel"] < 0.2 * full
    loaded = load_adapters(_resnet18(), folder)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model(batch), atol=0, rtol=0)
    save_adapters(loaded, folder)  # a loaded model saves again, atomically, over the old files
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, TENSORS_FILE])


def _perturbed(model: nn.Module) -> nn.Module:
    """``model`` with every trainable tensor moved, as a fine-tuning would, so that a round
    trip that silently dropped a saved tensor would show."""
    adapter_only(model)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=gen))
    return model.eval()


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_round_trip_on_each_network(arch, tmp_path, batch):
    torch.manual_seed(0)
    model = BUILDERS[arch]()
    with torch.no_grad():
        before = model(batch)
    convert(model, ConvertConfig.adapters(), example_inputs=batch)
    _perturbed(model)
    with torch.no_grad():
        expected = model(batch)
    assert not torch.allclose(expected, before, atol=1e-3)  # the adapters changed the function
    save_adapters(model, tmp_path)
    torch.manual_seed(0)
    loaded = load_adapters(BUILDERS[arch](), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), expected, atol=0, rtol=0)


def test_a_new_head_travels_with_the_adapters(tmp_path, batch):
    model = _fine_tuned(num_classes=5)
    save_adapters(model, tmp_path)
    fresh = _resnet18(num_classes=5)
    with torch.no_grad():
        fresh.fc.weight.normal_()  # another random head: replaced by the file's
    loaded = load_adapters(fresh, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model(batch), atol=0, rtol=0)


def test_a_wrong_base_is_refused_unchanged(tmp_path):
    save_adapters(_fine_tuned(num_classes=5), tmp_path)
    other_weights = _resnet18(seed=1, num_classes=5)
    with pytest.raises(ValueError, match=r"made for a torchvision.models.resnet.ResNet with "
                                         r"other weights: \d+ of the \d+ base tensors"):
        load_adapters(other_weights, tmp_path)
    assert not any(isinstance(m, ChildConv2d) for m in other_weights.modules())
    with pytest.raises(ValueError, match="another architecture"):
        load_adapters(torchvision.models.resnet34(num_classes=5), tmp_path)
    other_head = _resnet18(num_classes=5)
    other_head.fc = nn.Linear(512, 7)
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \[5, 512\]"):
        load_adapters(other_head, tmp_path)
    converted = _resnet18(num_classes=5)
    convert(converted, share=False, example_inputs=torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="already converted"):
        load_adapters(converted, tmp_path)


def test_adapter_file_errors(tmp_path):
    with pytest.raises(ValueError, match="no record of the base"):
        save_adapters(_resnet18(), tmp_path)
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        save_adapters("model", tmp_path)
    with pytest.raises(TypeError, match="path must be a path"):
        save_adapters(_fine_tuned(), 3)
    with pytest.raises(TypeError, match=r"base must be an nn\.Module"):
        load_adapters(None, tmp_path)
    with pytest.raises(FileNotFoundError, match="expected a folder written by"):
        load_adapters(_resnet18(), tmp_path / "missing")
    model = _fine_tuned()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="path must be a folder"):
        save_adapters(model, tmp_path / "file")
    save_adapters(model, tmp_path / "a")
    tensors = tmp_path / "a" / TENSORS_FILE
    tensors.write_bytes(tensors.read_bytes()[:-1] + b" ")
    with pytest.raises(ValueError, match="does not match"):
        load_adapters(_resnet18(), tmp_path / "a")
    kdna.fold(model)
    with pytest.raises(ValueError, match="unfold"):
        save_adapters(model, tmp_path / "b")


def test_the_plan_is_the_record_and_another_record_is_refused(tmp_path):
    model = _fine_tuned()
    folder = save_adapters(model, tmp_path / "a")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    record = kdna.conversion.ConversionPlan.from_json(meta["plan"])
    assert record.in_place == conversion_record(model).plan.in_place  # every layer's settings
    assert all("gate_reduction" in layer for layer in meta["plan"]["in_place"])
    base = _resnet18()
    for edit, message in ((lambda m: {**m, "version": 1}, r"version 1; this kdna reads version 2 "
                           r"\(version 1 files, whose plan held groups"),
                          (lambda m: {**m, "format": "x"}, "is not a kdna adapter file"),
                          (lambda m: "{", "is not valid JSON")):
        changed = edit(meta)
        (folder / CONFIG_FILE).write_text(changed if isinstance(changed, str)
                                          else json.dumps(changed))
        with pytest.raises(ValueError, match=message):
            load_adapters(base, folder)
    assert not any(isinstance(m, kdna.KernelChild) for m in base.modules())


def test_trainable_norms_and_head_are_saved_even_before_they_move(tmp_path, batch):
    model = _resnet18(num_classes=5)
    convert(model, ConvertConfig.adapters(), example_inputs=batch)
    adapter_only(model)  # nothing trained yet: the head is still the base's random one
    save_adapters(model, tmp_path)
    replaces = json.loads((tmp_path / CONFIG_FILE).read_text())["replaces"]
    assert replaces["fc.weight"] == "fc.weight" and "layer1.0.conv1.parent.weight" not in replaces
    fresh = _resnet18(num_classes=5)
    with torch.no_grad():
        fresh.fc.weight.normal_()
    with torch.no_grad():
        torch.testing.assert_close(load_adapters(fresh, tmp_path)(batch), model(batch),
                                   atol=0, rtol=0)


def test_peft_still_refuses_a_method_from_outside_its_own_enum():
    """Why KernelDNA is not a peft method (the README says so): peft's register_peft_method
    accepts only names already in its closed PeftType enum. When this fails, peft has opened
    registration, and KernelDNA adapters can become a peft method."""
    peft_types = pytest.importorskip("peft.utils")
    with pytest.raises(ValueError, match="Unknown PEFT type KERNELDNA"):
        peft_types.register_peft_method(name="kerneldna", config_cls=object, model_cls=object)
