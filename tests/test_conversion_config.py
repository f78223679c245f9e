"""One conversion policy: ConvertConfig, its presets and overrides,
and convert as plan_conversion then apply_plan."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from torch import nn

import kdna
from kdna import ChildConv2d, ConvertConfig, convert
from kdna.conversion import ConversionPlan, apply_plan, plan_conversion
from kdna.models.layout import apply_layout

FIELDS = ("groups", "include", "exclude", "parent_rule", "gate_reduction", "gate_form",
          "fit_scales", "fit_steps", "share", "gate_max_hidden", "parent_init", "residual_rank")


def _net(seed: int = 0) -> nn.Sequential:
    """A strided stem, three same-shaped 8->8 convs (one group), a widening conv, two
    depthwise convs (left dense: an adapter costs more than their kernels) and a head;
    random BatchNorm statistics."""
    torch.manual_seed(seed)

    def cbr(cin, cout, **kw):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(cout),
                nn.ReLU()]

    net = nn.Sequential(*cbr(3, 8, stride=2), *cbr(8, 8), *cbr(8, 8), *cbr(8, 8),
                        *cbr(8, 16), *cbr(16, 16, groups=16), *cbr(16, 16, groups=16),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


BODY = ["3", "6", "9"]  # the three 8->8 convolutions


@pytest.fixture
def batch():
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        torch.equal(sa[k], sb[k]) if isinstance(sa[k], torch.Tensor) else sa[k] == sb[k]
        for k in sa)  # children also keep a small extra_state dict


def _values(config: ConvertConfig) -> dict:
    return {f: getattr(config, f) for f in FIELDS}


# ---- the config and its presets ---------------------------------------------------------------

def test_presets_have_the_documented_values():
    common = {"groups": None, "include": None, "exclude": None, "gate_reduction": "auto",
              "fit_steps": 10, "share": True, "gate_max_hidden": None, "parent_init": "member",
              "residual_rank": 0}
    assert _values(ConvertConfig.pretrained()) == {
        **common, "parent_rule": "most_similar", "gate_form": "identity", "fit_scales": True}
    assert _values(ConvertConfig.from_scratch()) == {
        **common, "parent_rule": "last", "gate_form": "paper", "fit_scales": False}
    assert _values(ConvertConfig.pretrained_layout()) == {
        **common, "parent_rule": "last", "gate_form": "identity", "fit_scales": True}
    assert ConvertConfig() == ConvertConfig.pretrained()  # the defaults are convert's
    assert [f.name for f in dataclasses.fields(ConvertConfig)] == list(FIELDS)


def test_overrides_make_a_checked_copy_and_leave_the_preset_alone():
    scratch = ConvertConfig.from_scratch()
    identity = scratch.with_overrides(gate_form="identity", include=["layer3.*"])
    assert identity.gate_form == "identity" and identity.parent_rule == "last"
    assert identity.include == ("layer3.*",)  # stored as an immutable tuple
    assert scratch.gate_form == "paper" and scratch.include is None
    assert ConvertConfig.from_scratch(fit_steps=3).fit_steps == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        scratch.gate_form = "identity"
    with pytest.raises(ValueError, match="gate_form must be one of"):
        scratch.with_overrides(gate_form="tanh")
    groups = {"3": ["6"]}
    config = ConvertConfig(groups=groups)
    groups["3"].append("9")  # the config keeps its own copy
    assert config.groups == {"3": ("6",)}


@pytest.mark.parametrize(("settings", "error", "message"), [
    ({"parent_rule": "biggest"}, ValueError, r"parent_rule must be one of .*'biggest'"),
    ({"gate_reduction": "big"}, ValueError, r"gate_reduction must be 'auto'.*'big'"),
    ({"gate_reduction": 0}, ValueError, r"a positive int or None, got 0"),
    ({"gate_reduction": True}, ValueError, r"a positive int or None, got True"),
    ({"gate_reduction": 2.5}, ValueError, r"got 2\.5"),
    ({"gate_form": "sigmoid"}, ValueError, r"gate_form must be one of .*'sigmoid'"),
    ({"fit_scales": "yes"}, TypeError, r"fit_scales must be True or False, got 'yes'"),
    ({"fit_scales": 1}, TypeError, r"fit_scales must be True or False, got 1"),
    ({"fit_steps": 0}, ValueError, r"fit_steps must be a positive integer, got 0"),
    ({"fit_steps": 2.5}, ValueError, r"fit_steps must be a positive integer, got 2\.5"),
    ({"include": "layer3.*"}, TypeError, r"include must be a list of glob patterns.*'layer3"),
    ({"exclude": [3]}, TypeError, r"exclude must hold strings .*\[3\]"),
    ({"groups": "3,6"}, TypeError, r"groups must be a mapping .*'3,6'"),
    ({"groups": {"3": "6"}}, TypeError, r"groups\['3'\] must be a list of module names.*'6'"),
    ({"groups": [["3", "6"], None]}, TypeError, r"groups\[1\] must be a list .*None"),
    ({"groups": {3: ["6"]}}, TypeError, r"got the keys \[3\]"),
    ({"groups": [["3", "6"]], "exclude": ["9"]}, ValueError, r"not both .*exclude=\['9'\]"),
])
def test_bad_values_raise_naming_the_value(settings, error, message):
    with pytest.raises(error, match=message):
        ConvertConfig(**settings)
    model = _net()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=message):
        convert(model, **settings)
    assert not any(isinstance(m, kdna.KernelChild) for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("call", [
    lambda: convert(_net(), fit_step=3),
    lambda: plan_conversion(_net(), ConvertConfig.from_scratch(), fit_step=3),
    lambda: ConvertConfig.pretrained(fit_step=3),
    lambda: ConvertConfig().with_overrides(fit_step=3),
])
def test_an_unknown_override_is_a_type_error_listing_the_valid_ones(call):
    with pytest.raises(TypeError, match=r"unknown conversion setting\(s\) 'fit_step'") as info:
        call()
    assert all(name in str(info.value) for name in FIELDS)


def test_config_must_be_a_convert_config():
    with pytest.raises(TypeError, match=r"config must be a kdna.ConvertConfig or None, got dict"):
        convert(_net(), {"fit_scales": False})


# ---- plan, then apply ---------------------------------------------------------------------------

def test_plan_changes_nothing_and_lists_what_convert_will_do(batch):
    model = _net().train()  # a forward pass in train mode would move BatchNorm statistics
    state = copy.deepcopy(model.state_dict())
    structure = [(n, type(m)) for n, m in model.named_modules()]
    plan = plan_conversion(model, example_inputs=batch)
    assert isinstance(plan, ConversionPlan) and plan.config == ConvertConfig.pretrained()
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert [(n, type(m)) for n, m in model.named_modules()] == structure
    assert model.training and not any(m._forward_pre_hooks for m in model.modules())
    assert sorted([p, *c] for p, c in plan.layout.items()) == [sorted(BODY)]
    assert [names for names, _ in plan.skipped] == [("15", "18")]
    assert plan.example_inputs is batch and plan.original_output.shape == (4, 5)
    text = str(plan)
    assert "1 parents, 2 children" in text and "\n- 15, 18: an adapter" in text
    parent = plan.groups[0].parent
    rows = [line for line in text.splitlines() if line.startswith(("| 3 |", "| 6 |", "| 9 |"))]
    assert len(rows) == 2 and all(f"| shared | {parent} (kept) | conv 8x8x3x3 |" in r
                                  for r in rows)
    assert all("| identity, r=4, 2 | yes | fitted (10 steps) | 0 |" in r for r in rows)


def test_the_plan_holds_every_setting_and_apply_reads_no_config():
    config = ConvertConfig.pretrained(parent_init="lsq", residual_rank=2, fit_steps=3,
                                      gate_max_hidden=1, include=BODY)
    plan = plan_conversion(_net(), config)
    (group,) = plan.groups
    assert (group.parent_init, group.parent_steps, group.new_parent) == ("lsq", 3, True)
    assert group.children[0].name == group.parent  # a new parent: the reference is a child
    assert sorted(plan.children) == BODY and group.child_names == plan.layout[group.parent]
    layer = group.children[1]
    assert (layer.kind, layer.shape, layer.taps, layer.fit_steps, layer.residual_rank) == (
        "conv", (8, 8, 3, 3), True, 3, 2)
    assert (layer.gate_form, layer.gate_reduction, layer.gate_hidden) == ("identity", 8, 1)
    a, b = _net(), _net()
    torch.manual_seed(1)
    report = apply_plan(a, plan)
    torch.manual_seed(1)  # recorded with another config, the same plan builds the same network
    apply_plan(b, dataclasses.replace(plan, config=ConvertConfig.from_scratch()))
    assert _states_equal(a, b)
    child = a.get_submodule(layer.name)
    assert sum(p.numel() for p in child.adapter_parameters()) == layer.params
    assert child.gate.fc1.out_features == 1 and child.residual is not None
    assert report.groups[0].params_saved == group.params_saved == 3 * (576 - layer.params) - 576
    again = ConversionPlan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again.groups == plan.groups and again.config == plan.config


def test_a_plan_shares_a_part_of_its_layout_with_the_settings_it_decided():
    plan = plan_conversion(_net(), parent_rule="last", include=BODY)
    part = plan.with_layout({"9": ["6"]})
    assert part.layout == {"9": ["6"]} and part.groups[0].children == plan.groups[0].children[1:]
    lsq = plan_conversion(_net(), parent_rule="last", include=BODY, parent_init="lsq")
    assert [c.name for c in lsq.with_layout({"9": ["3"]}).groups[0].children] == ["9", "3"]
    for layout in ({"9": ["15"]}, {"3": ["6"]}, {"9": []}):
        with pytest.raises(ValueError, match="the plan shares no child"):
            plan.with_layout(layout)


def test_apply_plan_gives_what_convert_gives(batch):
    planned, converted = _net(), _net()
    plan = plan_conversion(planned, ConvertConfig.from_scratch(gate_form="identity"),
                           example_inputs=batch)
    torch.manual_seed(1)  # the gates' random initialisation
    report = apply_plan(planned, plan)
    torch.manual_seed(1)
    expected = convert(converted, ConvertConfig.from_scratch(), gate_form="identity",
                       example_inputs=batch)
    assert report.layout == expected.layout == plan.layout == {"9": ["3", "6"]}
    assert (report.params_before, report.params_after) == (expected.params_before,
                                                           expected.params_after)
    assert report.skipped == expected.skipped and report.agreement == expected.agreement
    assert report.agreement is not None and report.agreement.samples == 4
    assert _states_equal(planned, converted)
    assert all(planned.get_submodule(c).gate.form == "identity" for c in report.children)
    torch.testing.assert_close(planned(batch), converted(batch))


def test_a_plan_applies_to_an_unconverted_copy_but_not_twice_or_elsewhere():
    model = _net()
    plan = plan_conversion(model, parent_rule="last")
    copy_report = apply_plan(copy.deepcopy(model), plan)
    assert copy_report.layout == {"9": ["3", "6"]} and copy_report.agreement is None
    assert not any(isinstance(m, kdna.KernelChild) for m in model.modules())
    apply_plan(model, plan)
    with pytest.raises(ValueError, match="already converted"):
        apply_plan(model, plan)
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3))
    with pytest.raises(ValueError, match=r"the plan does not fit this model: '9' is not"):
        apply_plan(other, plan)
    assert all(type(m) is nn.Conv2d for m in other)
    with pytest.raises(TypeError, match="plan must be a ConversionPlan"):
        apply_plan(_net(), plan.layout)


# ---- the presets where kdna uses them ----------------------------------------------------------

@pytest.mark.parametrize(("pretrained", "form"), [(False, "paper"), (True, "identity")])
def test_apply_layout_picks_the_preset(pretrained, form):
    model = apply_layout(_net(), {"9": ["3", "6"]}, pretrained=pretrained)
    children = [model.get_submodule(c) for c in ("3", "6")]
    assert all(isinstance(c, ChildConv2d) and c.parent is model[9] for c in children)
    assert {c.gate.form for c in children} == {form}
    fitted = any(bool(c.filter_scale.abs().sum() > 0) for c in children)
    assert fitted == pretrained  # scales fitted only from pretrained weights
    auto = apply_layout(_net(), None, pretrained=pretrained)  # the automatic rule: last parent
    assert auto[3].parent is auto[9] and auto[6].parent is auto[9]


def test_the_speed_comparisons_kdna_variant_uses_converts_default_without_a_fit():
    from kdna.bench import comparison_models

    model = comparison_models("resnet18", ["kdna"], num_classes=10, image_size=64)["kdna"]
    children = [m for m in model.modules() if isinstance(m, kdna.KernelChild)]
    assert children and {c.gate.form for c in children} == {"identity"}
    assert all(bool(c.filter_scale.abs().sum() == 0) for c in children)  # no fit


def test_convert_config_is_public():
    assert kdna.ConvertConfig is ConvertConfig and "ConvertConfig" in kdna.__all__
    assert "ConvertConfig" in kdna.convert.__doc__
