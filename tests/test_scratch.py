"""kdna.scratch: the network registry, the from-scratch protocol, one tiny comparison end to end
(runs cached and reused), and the verdicts on the paper's claims. Tiny widths and images:
nothing here measures accuracy or speed."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

import kdna
from kdna.finetune.results import MethodSummary
from kdna.nn import ChildConv2d
from kdna.nn.dynamic import CondConv2d, DynamicConv2d, ExpertConv2d, ODConv2d
from kdna.nn.utils import count_parameters
from kdna.scratch import (
    ScratchProtocol,
    ScratchRow,
    build_network,
    claims,
    compare_networks,
    list_networks,
    markdown_table,
    measure_networks,
    narrow_width,
    read_rows,
    scratch_splits,
    train_at,
)
from kdna.scratch.networks import anneal_temperature
from kdna.scratch.protocol import scratch_key
from kdna.scratch.results import accuracy_verdict, csv_rows

TINY = 0.0625  # base width 4


@pytest.mark.parametrize("name", list_networks())
def test_every_network_builds_with_the_cifar_stem(name):
    model = build_network(name, 7, width=TINY, steps=10)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    if name.startswith("mobilenet") or name.startswith("kdna_mobilenet"):
        stem = model.features[0][0]
    else:
        stem = model.conv1
        assert isinstance(model.maxpool, nn.Identity)
    assert type(stem) is nn.Conv2d and stem.kernel_size == (3, 3) and stem.stride == (1, 1)


def test_the_kernel_dna_layout_is_the_papers_with_a_cifar_stem():
    mine = build_network("kdna_resnet18", 10)
    paper = kdna.create_model("resnet18", num_classes=10)
    stem_difference = (7 * 7 - 3 * 3) * 3 * 64  # the only change: a 3x3 stem instead of 7x7
    assert count_parameters(paper) - count_parameters(mine) == stem_difference
    shapes = {n: tuple(p.shape) for n, p in mine.named_parameters() if n != "conv1.weight"}
    assert shapes == {n: tuple(p.shape) for n, p in paper.named_parameters()
                      if n != "conv1.weight"}
    children = [n for n, m in mine.named_modules() if isinstance(m, ChildConv2d)]
    assert len(children) == 6 and all(n.startswith(("layer3", "layer4")) for n in children)


def test_the_controls_hold_depth_and_size():
    kdna_net, deep = build_network("kdna_resnet18", 10), build_network("resnet18_deep", 10)
    assert [len(getattr(deep, f"layer{i}")) for i in range(1, 5)] == [2, 2, 3, 3]
    assert not any(isinstance(m, ChildConv2d) for m in deep.modules())
    assert [len(getattr(kdna_net, f"layer{i}")) for i in range(1, 5)] == [2, 2, 3, 3]
    assert narrow_width(1.0, 10) == 57  # the width the docs state
    for width in (1.0, 0.25):
        target = count_parameters(build_network("kdna_resnet18", 10, width=width))
        narrow = count_parameters(build_network("resnet18_narrow", 10, width=width))
        assert abs(narrow - target) / target < 0.03, (width, narrow, target)
        assert count_parameters(build_network("resnet18", 10, width=width)) > 1.2 * target


@pytest.mark.parametrize(("name", "kind", "shortcut_dynamic"), [
    ("condconv8x", CondConv2d, False), ("dyconv4x", DynamicConv2d, True),
    ("odconv1x", ODConv2d, False), ("odconv4x", ODConv2d, False)])
def test_dynamic_networks_start_from_independent_experts(name, kind, shortcut_dynamic):
    model = build_network(name, 10, width=TINY, steps=10)
    assert type(model.conv1) is nn.Conv2d  # the stem stays dense
    assert isinstance(model.layer2[0].downsample[0], ExpertConv2d) == shortcut_dynamic
    layers = [m for m in model.modules() if isinstance(m, kind)]
    assert len(layers) == 16 + 3 * shortcut_dynamic  # 16 3x3 convolutions, 3 shortcuts
    many = [m for m in layers if m.weight.shape[0] > 1]
    assert all(not torch.equal(m.weight[0], m.weight[1]) for m in many)


def test_dy_conv_temperature_falls_from_30_to_1_over_a_tenth_of_the_steps():
    model = build_network("dyconv4x", 10, width=TINY, steps=20)  # span: 2 passes
    layer = next(m for m in model.modules() if isinstance(m, DynamicConv2d))
    assert layer.temperature == 30.0
    x = torch.randn(2, 3, 8, 8)
    model.train()(x)
    assert layer.temperature == 30.0  # the first pass runs at the start value
    model(x)
    assert layer.temperature == pytest.approx(15.5)
    model.eval()(x)  # evaluation leaves the schedule alone
    model.train()(x)
    assert layer.temperature == 1.0
    with pytest.raises(ValueError, match="DY-Conv"):
        anneal_temperature(build_network("resnet18", 10, width=TINY), 10)


def test_unknown_network_and_bad_sizes_are_named():
    with pytest.raises(ValueError, match=r"'resnet19'.*resnet18"):
        build_network("resnet19")
    with pytest.raises(ValueError, match="width"):
        build_network("resnet18", width=0)


@pytest.mark.parametrize(("overrides", "match"), [
    ({"lrs": ()}, "lrs"), ({"lrs": (0.1, 0.1)}, "lrs"), ({"seeds": (1, 2)}, "seeds"),
    ({"width": -1.0}, "width"), ({"optimizer": "rmsprop"}, "optimizer"),
    ({"warmup": 1.0}, "warmup"), ({"steps": 0}, "steps"), ({"val_fraction": 1.0}, "val_fraction"),
    ({"momentum": 1.0}, "momentum"), ({"train_images": 0}, "train_images"),
    ({"networks": ()}, "networks"), ({"networks": ("resnet18", "resnet18")}, "networks"),
    ({"networks": ("resnet19",)}, "resnet19")])
def test_protocol_checks_every_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        ScratchProtocol(**overrides)


def test_protocol_overrides_and_the_run_key():
    protocol = ScratchProtocol(data="synthetic")
    with pytest.raises(TypeError, match="stepz"):
        protocol.with_overrides(stepz=3)
    key = scratch_key(protocol, "resnet18", 0.1, 0)
    assert key == scratch_key(protocol.with_overrides(lrs=(0.1, 1.0), seeds=(0, 5),
                                                      networks=("resnet18",)),
                              "resnet18", 0.1, 0)  # the grid, seeds, networks: not the run's
    changed = [scratch_key(protocol, "kdna_resnet18", 0.1, 0),
               scratch_key(protocol, "resnet18", 0.3, 0), scratch_key(protocol, "resnet18", 0.1, 1),
               scratch_key(protocol.with_overrides(width=0.5), "resnet18", 0.1, 0),
               scratch_key(protocol.with_overrides(train_images=None), "resnet18", 0.1, 0)]
    assert key not in changed and len(set(changed)) == len(changed)


def test_splits_keep_a_class_balanced_prefix_of_the_training_images():
    full = scratch_splits(ScratchProtocol(data="synthetic", image_size=8, train_images=None))
    cut = scratch_splits(ScratchProtocol(data="synthetic", image_size=8, train_images=50))
    assert len(cut.train) == 50 and len(full.train) > 50
    assert torch.bincount(cut.train.labels(), minlength=10).tolist() == [5] * 10
    assert (len(cut.val), len(cut.test)) == (len(full.val), len(full.test))
    assert "train_images" in cut.sources["train"]
    with pytest.raises(ValueError, match=r"train_images=5 .* 10 classes"):
        scratch_splits(ScratchProtocol(data="synthetic", image_size=8, train_images=5))


TINY_PROTOCOL = ScratchProtocol(data="synthetic", image_size=8, train_images=40, width=TINY,
                                steps=4, batch_size=8, lrs=(0.01, 0.1), seeds=(0, 1))


def test_a_tiny_comparison_end_to_end_and_its_cache(tmp_path):
    names = ["resnet18", "kdna_resnet18", "resnet18_deep"]
    first = compare_networks(names, TINY_PROTOCOL, cache=tmp_path, progress=False)
    assert (first.trained, first.reloaded) == (3 * 3, 0)
    for s in first.summaries:
        assert s.lr == max(s.val_by_lr, key=lambda lr: (s.val_by_lr[lr], -lr))
        assert len(s.test) == 2 and all(0 <= t <= 1 for t in s.test) and s.steps == 4
        assert first.train_seconds(s.method) > 0
    again = compare_networks(names, TINY_PROTOCOL, cache=tmp_path, progress=False)
    assert (again.trained, again.reloaded) == (0, 9)
    assert [s.test for s in again.summaries] == [s.test for s in first.summaries]
    more = compare_networks(names[:1], TINY_PROTOCOL.with_overrides(seeds=(0, 1, 2)),
                            cache=tmp_path, progress=False)
    assert (more.trained, more.reloaded) == (1, 3)  # only the new seed trains
    chosen = first.summary("resnet18").lr
    other = next(lr for lr in TINY_PROTOCOL.lrs if lr != chosen)
    live = train_at({"resnet18": chosen}, TINY_PROTOCOL, seed=1, cache=tmp_path, progress=False)
    assert (live.trained, live.reloaded) == (0, 1)  # the comparison's seed-1 run
    assert live.summaries[0].test == [first.summary("resnet18").test[1]]
    untested = train_at({"resnet18": other}, TINY_PROTOCOL, cache=tmp_path, progress=False)
    assert untested.trained == 1 and untested.runs[0].test_top1 is not None  # grid runs: no test
    with pytest.raises(ValueError, match="not compared"):
        first.summary("odconv4x")
    with pytest.raises(ValueError, match="distinct"):
        compare_networks(["resnet18", "resnet18"], TINY_PROTOCOL, cache=None, progress=False)


def test_measure_networks_reads_throughput_against_the_plain_reference():
    measured = measure_networks(["kdna_resnet18"], TINY_PROTOCOL, num_classes=10, batch=2,
                                iters=1)
    assert set(measured) == {"kdna_resnet18"}  # the reference is measured, not returned
    assert measured["kdna_resnet18"]["macs"] > 0 and measured["kdna_resnet18"]["throughput"] > 0
    both = measure_networks(["resnet18", "kdna_resnet18"], TINY_PROTOCOL, num_classes=10,
                            batch=2, iters=1)
    assert both["resnet18"]["throughput"] == 1.0


def _summary(name: str, test: list[float], throughput: float | None = None) -> MethodSummary:
    return MethodSummary(name, name, "", lr=0.1, val_by_lr={0.1: 0.5}, test=test,
                         total=100, seconds_per_step=0.1, steps=4, throughput=throughput)


def test_verdicts_met_not_met_and_within_one_spread():
    kdna_net = _summary("kdna_resnet18", [0.90, 0.92, 0.94], throughput=0.8)  # sd 0.02
    assert accuracy_verdict(kdna_net, _summary("resnet18", [0.80, 0.81, 0.82])) == "met"
    assert accuracy_verdict(kdna_net, _summary("resnet18", [0.97, 0.98, 0.99])) == "not met"
    assert accuracy_verdict(kdna_net, _summary("resnet18", [0.89, 0.90, 0.91])) == \
        "within one spread"  # 2 points apart, one spread is 2 points: cannot tell them apart
    assert accuracy_verdict(kdna_net, _summary("resnet18", [0.895, 0.9, 0.905])) == \
        "within one spread"
    found = {v.other: v for v in claims([
        kdna_net, _summary("resnet18", [0.80, 0.81, 0.82], 1.0),
        _summary("condconv8x", [0.85, 0.85, 0.85], 0.2),  # slower and worse: met
        _summary("odconv1x", [0.92, 0.92, 0.92], 0.9),  # faster than KernelDNA: not met
        _summary("odconv4x", [0.99, 0.99, 0.99], 0.1)])}  # slower, more accurate: not met
    assert set(found) == {"resnet18", "condconv8x", "odconv1x", "odconv4x"}  # no controls given
    assert found["resnet18"].verdict == "met" and found["resnet18"].throughput is None
    assert found["condconv8x"].verdict == "met"
    assert found["condconv8x"].throughput == pytest.approx(4.0)
    assert found["odconv1x"].verdict == "not met" and "not faster" in found["odconv1x"].text
    assert found["odconv4x"].verdict == "not met" and "at 8.00x its throughput" in \
        found["odconv4x"].text
    assert "+11.0 points" in found["resnet18"].text and "one spread = 2.0" in \
        found["resnet18"].text
    with pytest.raises(ValueError, match="throughput"):
        claims([_summary("kdna_resnet18", [0.9]), _summary("dyconv4x", [0.9])])


def test_table_and_csv_round_trip(tmp_path):
    rows = [ScratchRow(_summary("resnet18", [0.80, 0.82], 1.0), macs=2_000_000,
                       train_seconds=90.0, images_per_second=500.0),
            ScratchRow(_summary("kdna_resnet18", [0.85, 0.86], 0.75), macs=2_500_000,
                       train_seconds=120.0, images_per_second=375.0)]
    table = markdown_table(rows, [0.1])
    assert "**81.0 ± 1.4** (2)" in table and "0.75x" in table and "2.50M" in table
    path = tmp_path / "scratch.csv"
    written = csv_rows(rows, device="cpu")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(written[0]))
        writer.writeheader()
        writer.writerows(written)
    back = read_rows(path)
    assert [r.summary.test for r in back] == [[0.80, 0.82], [0.85, 0.86]]
    assert [r.summary.throughput for r in back] == [1.0, 0.75]
    assert [r.macs for r in back] == [2_000_000, 2_500_000]
    assert back[1].train_seconds == 120.0 and back[0].summary.val_by_lr == {0.1: 0.5}
    assert [v.verdict for v in claims([r.summary for r in back])] == ["met"]
