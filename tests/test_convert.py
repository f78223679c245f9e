"""kdna.convert: grouping, parent choice, fitted adapters, the report, and clear errors.

The conversion policy (ConvertConfig, its presets, overrides) and the
plan/apply split are tested in test_conversion_config.py."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kdna
from kdna import ChildConv2d, ChildLinear, ConvertConfig, convert
from kdna.conversion.layers import default_inputs


def _cbr(cin, cout, **kw):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU()]


class SmallCNN(nn.Module):
    """A strided stem, three same-shaped 8->8 convs, a strided transition, two 16->16 convs
    (one with a bias), two depthwise convs (too small to be worth a gate) and a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*_cbr(3, 8, stride=2))
        self.body = nn.Sequential(*_cbr(8, 8), *_cbr(8, 8), *_cbr(8, 8))
        self.down = nn.Sequential(*_cbr(8, 16, stride=2))
        self.tail = nn.Sequential(*_cbr(16, 16), nn.Conv2d(16, 16, 3, padding=1),
                                  nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(*_cbr(16, 16, groups=16), *_cbr(16, 16, groups=16))
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.dw(self.tail(self.down(self.body(self.stem(x)))))
        return self.head(x.mean(dim=(2, 3)))


class ChannelsLastNet(nn.Module):
    """ConvNeXt-style: pointwise nn.Linear layers on channels-last activations."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8)) for _ in range(3))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x.mean(dim=(1, 2)))


def _randomize_norms(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
    return model.eval()


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return _randomize_norms(SmallCNN())


@pytest.fixture
def batch():
    return torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(5))


def test_default_rule_shares_same_shaped_stride_1_convs_per_resolution(cnn, batch):
    report = convert(cnn, example_inputs=batch)
    members = {p: {p, *c} for p, c in report.layout.items()}
    assert sorted(map(sorted, members.values())) == [
        ["body.0", "body.3", "body.6"], ["tail.0", "tail.3"]]
    assert isinstance(cnn.stem[0], nn.Conv2d) and isinstance(cnn.down[0], nn.Conv2d)
    assert all(type(cnn.dw[i]) is nn.Conv2d for i in (0, 3))
    assert [names for names, _ in report.skipped] == [("dw.0", "dw.3")]
    assert "would not be smaller than the kernel" in report.skipped[0][1]
    assert report.params_after == kdna.count_parameters(cnn) < report.params_before


def test_scaled_copies_of_one_parent_convert_exactly(cnn, batch, device):
    cnn, batch = cnn.to(device), batch.to(device)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i in (3, 6):
            a = (torch.rand(8, 1, 1, 1, generator=gen) + 0.5).to(device)
            b = (torch.rand(1, 1, 3, 3, generator=gen) + 0.5).to(device)
            cnn.body[i].weight.copy_(cnn.body[0].weight * a * b)
    expected = cnn(batch)
    report = convert(cnn, include=["body.*"], example_inputs=batch)
    assert len(report.children) == 2
    assert max(report.fit_errors.values()) < 1e-5
    assert report.agreement.top1 == 1.0 and report.agreement.logit_error < 1e-5
    torch.testing.assert_close(cnn(batch), expected, rtol=1e-4, atol=1e-5)


def test_children_start_from_their_fitted_static_kernel_with_gate_one(cnn, batch, device):
    cnn, batch = cnn.to(device), batch.to(device)
    originals = {n: m.weight.detach().clone() for n, m in cnn.named_modules()
                 if isinstance(m, nn.Conv2d)}
    report = convert(cnn, example_inputs=batch)
    for name in report.children:
        child = cnn.get_submodule(name)
        assert isinstance(child, ChildConv2d) and child.gate.form == "identity"
        x = torch.randn(2, child.in_channels, 5, 5, device=device)
        for mode in (True, False):
            child.train(mode)
            torch.testing.assert_close(child(x), F.conv2d(x, child.static_weight(),
                                                          child.bias, padding=1))
        error = (child.static_weight() - originals[name]).norm() / originals[name].norm()
        assert error.item() == pytest.approx(report.fit_errors[name], rel=1e-4)
    assert cnn.tail[3].bias is not None and cnn.tail[3].parent is not cnn.tail[3]


def test_parent_rules_and_explicit_groups(cnn):
    report = convert(copy.deepcopy(cnn), include=["body.*"], parent_rule="last")
    assert report.layout == {"body.6": ["body.0", "body.3"]}
    report = convert(copy.deepcopy(cnn), include=["body.*"], parent_rule="first")
    assert report.layout == {"body.0": ["body.3", "body.6"]}
    model = copy.deepcopy(cnn)
    report = convert(model, groups={"body.3": ["body.6"]})
    assert report.layout == {"body.3": ["body.6"]} and model.body[6].parent is model.body[3]
    # the most similar member: two near-copies and an outlier; the outlier is never the parent
    with torch.no_grad():
        cnn.body[3].weight.copy_(cnn.body[0].weight * 1.1)
    assert list(convert(cnn, groups=[["body.6", "body.3", "body.0"]]).layout) in (
        ["body.0"], ["body.3"])


def test_pointwise_linears_share_and_the_classifier_stays_dense():
    torch.manual_seed(0)
    net = ChannelsLastNet().eval()
    x = torch.randn(2, 3, 6, 6)
    report = convert(net, example_inputs=x)
    kinds = {g.kind for g in report.groups}
    assert kinds == {"linear"} and len(report.children) == 4
    assert type(net.head) is nn.Linear and type(net.stem) is nn.Conv2d
    assert sum(isinstance(m, ChildLinear) for m in net.modules()) == 4
    gates = {c: net.get_submodule(c).gate.reduction for c in report.children}
    assert sorted(set(gates.values())) == [4, 16]  # r = 4, times 4 for the 32 -> 8 project
    assert net(x).shape == (2, 4)


def test_state_dict_loads_into_a_fresh_conversion_with_equal_outputs(cnn, batch):
    trained = copy.deepcopy(cnn)
    report = convert(trained, example_inputs=batch)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fresh = SmallCNN()
    convert(fresh, groups=report.layout)
    fresh.load_state_dict(trained.state_dict())
    fresh.eval()
    torch.testing.assert_close(fresh(batch), trained(batch))
    for parent, children in report.layout.items():
        assert all(fresh.get_submodule(c).parent is fresh.get_submodule(parent) for c in children)


def test_shape_hooks_are_removed_also_when_the_forward_fails(cnn):
    with pytest.raises(ValueError, match="pass example_inputs"):
        convert(cnn, example_inputs=torch.randn(1, 5, 8, 8))
    assert not any(m._forward_pre_hooks for m in cnn.modules())
    convert(cnn)
    assert not any(m._forward_pre_hooks for m in cnn.modules())


def test_converting_twice_or_nothing_to_share_is_an_error(cnn):
    convert(cnn)
    with pytest.raises(ValueError, match=r"already converted \(3 KernelDNA children"):
        convert(cnn)
    lonely = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    state = copy.deepcopy(lonely.state_dict())
    with pytest.raises(ValueError, match="nothing to share in Sequential"):
        convert(lonely)
    assert all(torch.equal(v, lonely.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize(("rules", "message"), [
    ({"include": ["layr*"]}, r"include pattern 'layr\*' matches no convolution"),
    ({"exclude": ["nope"]}, "exclude pattern 'nope' matches no"),
    ({"parent_rule": "biggest"}, "parent_rule must be one of"),
    ({"gate_reduction": "big"}, "gate_reduction must be 'auto'"),
    ({"groups": [["body.0", "tail.0"]]}, "a group needs two or more layers with one kernel shape"),
    ({"groups": [["body.0"]]}, "a group needs two or more layers"),
    ({"groups": [["body.0", "body.3"], ["body.3", "body.6"]]}, "'body.3' appears in more than"),
    ({"groups": {"body.9": ["body.0"]}}, "group member 'body.9' is not an nn.Conv2d"),
    ({"groups": [["body.0", "body.3"]], "include": ["body.*"]}, "not both"),
])
def test_bad_rules_raise_and_leave_the_model_unchanged(cnn, rules, message):
    with pytest.raises(ValueError, match=message):
        convert(cnn, **rules)
    assert not any(isinstance(m, kdna.KernelChild) for m in cnn.modules())


def test_report_prints_as_a_markdown_table(cnn, batch):
    report = convert(cnn, example_inputs=batch)
    text = str(report)
    assert "| parent | kernel | children |" in text and "top-1 agreement" in text
    assert "dw.0, dw.3" in text and report._repr_markdown_() == text
    assert 0 < report.saved_fraction < 1


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "convnext_tiny"])
def test_torchvision_classifiers_convert(arch, device):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)().to(device).eval()
    x = torch.randn(1, 3, 64, 64, device=device)
    report = convert(model, example_inputs=x)
    assert report.groups and report.params_after < report.params_before
    assert model(x).shape == (1, 1000)


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto", "efficientnet_b0"])
def test_timm_models_convert(arch):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    report = convert(model, example_inputs=x)
    assert report.groups and report.params_after < report.params_before
    assert model(x).shape == (1, 1000)


def test_without_example_inputs_the_batch_has_the_first_convolutions_channels():
    class SamePadded(nn.Conv2d):  # a stem of a subclass (timm's Conv2dSame): no candidate
        pass

    net = nn.Sequential(SamePadded(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                        nn.Conv2d(8, 8, 3, padding=1))
    assert default_inputs(net).shape == (1, 3, 224, 224)  # not the first candidate's 8
    report = convert(net, gate_reduction=None)
    assert len(report.children) == 1 and type(net[0]) is SamePadded
    with pytest.raises(ValueError, match=r"has no nn\.Conv2d to tell its input shape"):
        default_inputs(nn.Sequential(nn.Linear(4, 4)))


@pytest.mark.parametrize("config", [ConvertConfig.adapters(), ConvertConfig.pretrained()])
def test_timm_tf_efficientnet_converts_without_example_inputs(config):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_b0", pretrained=False).eval()
    assert type(model.conv_stem).__name__ == "Conv2dSame"
    report = convert(model, config)
    assert report.children and "conv_stem" not in report.children
    assert model(torch.randn(2, 3, 96, 96)).shape == (2, 1000)
