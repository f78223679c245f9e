from __future__ import annotations

import datetime
import io

import ipywidgets
import numpy as np
import pytest
import torch
from conftest import TinyNet, randomize
from PIL import Image
from torch import nn

from kdna import ChildLinear, ParentKernel
from kdna.viz.widgets import (
    RoutingExplorer,
    changed_channels_html,
    effective_kernel_figure,
    gate_comparison_figure,
    gate_figure,
)

CLASSES = ["ant", "bee", "cat", "dog", "eel"]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.tensor(image).permute(2, 0, 1).float() / 255


def png(shape: tuple[int, ...], seed: int = 5) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def pictures():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(3)]


@pytest.fixture
def explorer(pictures):
    torch.manual_seed(0)
    net = randomize(TinyNet()).eval()
    return RoutingExplorer(net, pictures, to_tensor, classes=CLASSES, labels=[0, 3, 4])


def gate_bars(explorer) -> tuple:
    return explorer.figures["gate"].data[0].y


def test_initial_state(explorer):
    assert isinstance(explorer.widget, ipywidgets.Widget)
    assert explorer.layers == ["block1.0", "conv2"]  # conv3 has no gate
    assert (explorer.index, explorer.layer, explorer.comparison) == (0, "block1.0", 1)
    assert explorer.gate.shape == (8,)
    assert explorer.prediction.name == CLASSES[explorer.prediction.label]
    assert 0 < explorer.prediction.probability <= 1
    gate = explorer.gate
    assert gate[explorer.boosted[0]] == gate.max() and gate[explorer.suppressed[0]] == gate.min()
    assert len(explorer.boosted) == len(explorer.suppressed) == 5
    assert set(explorer.figures) == {"image", "gate", "kernel", "comparison"}
    for fig in explorer.figures.values():
        assert fig.layout.title.text
    assert explorer.figures["gate"].layout.xaxis.title.text == "input channel"
    assert "label: ant" in explorer.figures["image"].layout.annotations[0].text


def test_the_first_child_shown_can_be_chosen(pictures):
    net = randomize(TinyNet()).eval()
    explorer = RoutingExplorer(net, pictures, to_tensor, classes=CLASSES, layer="conv2")
    assert explorer.layer == "conv2" and explorer._layer_chooser.value == "conv2"
    assert explorer.figures["gate"].layout.title.text.startswith("conv2")
    with pytest.raises(ValueError, match=r"layer must be a gated child.*got 'conv3'"):
        RoutingExplorer(net, pictures, to_tensor, classes=CLASSES, layer="conv3")


def test_select_image(explorer):
    before = (explorer.gate.clone(), explorer.prediction, gate_bars(explorer),
              explorer.figures["image"].data[0].source)
    explorer.select_image(2)
    assert explorer.index == 2 and explorer._image_chooser.value == 2
    assert not torch.equal(explorer.gate, before[0])
    assert explorer.prediction != before[1]
    assert gate_bars(explorer) != before[2]
    assert explorer.figures["image"].data[0].source != before[3]
    assert "image 2" in explorer.figures["comparison"].layout.title.text
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        explorer.select_image(3)


def test_select_layer(explorer):
    before = explorer.gate.clone(), gate_bars(explorer), explorer.figures["kernel"]
    explorer.select_layer("conv2")
    assert explorer.layer == "conv2" and explorer._layer_chooser.value == "conv2"
    assert not torch.equal(explorer.gate, before[0]) and gate_bars(explorer) != before[1]
    assert explorer.figures["kernel"] is not before[2]
    assert explorer.figures["kernel"].layout.title.text.startswith("conv2")
    with pytest.raises(ValueError, match=r"conv3.*'block1\.0', 'conv2'"):
        explorer.select_layer("conv3")


def test_select_comparison(explorer):
    figures = dict(explorer.figures)
    lines = explorer.figures["comparison"].data[1].y
    explorer.select_comparison(2)
    assert explorer.comparison == 2
    assert explorer.figures["comparison"].data[1].y != lines
    difference = np.array(explorer.figures["comparison"].data[2].y)
    expected = (explorer.gate - explorer.comparison_gate).numpy()
    assert np.allclose(difference, expected)
    assert all(explorer.figures[k] is figures[k] for k in ("image", "gate", "kernel"))


def test_upload(explorer):
    before = explorer.gate.clone(), gate_bars(explorer)
    index = explorer.upload(png((16, 20)), "grey.png")  # a grey picture of another size
    assert index == 3 == explorer.index and len(explorer.images) == 4
    assert explorer.images[3].shape == (16, 20, 3)
    assert not torch.equal(explorer.gate, before[0]) and gate_bars(explorer) != before[1]
    assert (("3: grey.png", 3) in explorer._image_chooser.options
            and ("3: grey.png", 3) in explorer._comparison_chooser.options)
    explorer.select_comparison(3)
    assert torch.equal(explorer.comparison_gate, explorer.gate)
    with pytest.raises(ValueError, match=r"could not read 'notes\.txt'"):
        explorer.upload(b"not an image", "notes.txt")
    assert len(explorer.images) == 4


def test_controls_drive_the_callbacks(explorer):
    explorer._image_chooser.value = 1
    explorer._layer_chooser.value = "conv2"
    explorer._comparison_chooser.value = 2
    assert (explorer.index, explorer.layer, explorer.comparison) == (1, "conv2", 2)

    def file(content: bytes) -> dict:
        return {"name": "mine.png", "type": "image/png", "size": len(content),
                "content": memoryview(content), "last_modified": datetime.datetime.now()}

    explorer._uploader.value = (file(png((10, 10, 3))),)
    assert explorer.index == 3 and explorer._uploader.value == ()
    explorer._uploader.value = (file(b"junk"),)
    assert "Upload failed" in explorer._status.value and len(explorer.images) == 4


def test_bad_arguments(pictures):
    net = TinyNet().eval()
    with pytest.raises(TypeError, match=r"images\[1\]"):
        RoutingExplorer(net, [pictures[0], pictures[1].astype(float)], to_tensor,
                        classes=CLASSES)
    with pytest.raises(ValueError, match="labels"):
        RoutingExplorer(net, pictures, to_tensor, classes=CLASSES, labels=[0, 1])
    with pytest.raises(ValueError, match=r"\[1, 4\] logits"):
        RoutingExplorer(net, pictures, to_tensor, classes=CLASSES[:4])
    with pytest.raises(ValueError, match="no KernelDNA children with a gate"):
        RoutingExplorer(nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten()), pictures, to_tensor, classes=CLASSES)
    for knob in ("top_k", "filters"):
        with pytest.raises(ValueError, match=f"{knob} must be a positive integer, got 0"):
            RoutingExplorer(net, pictures, to_tensor, classes=CLASSES, **{knob: 0})


def test_effective_kernel_is_the_gated_static_kernel():
    child = randomize(ParentKernel(8, 8, 3, groups=4).child(padding=1))
    gate = torch.linspace(0.2, 1.8, 8)
    fig = effective_kernel_figure(child, gate, 5, filters=4)
    assert [a.text for a in fig.layout.annotations][:2] == ["filter 4", "filter 5"]  # group 2
    static, gated = np.array(fig.data[0].z), np.array(fig.data[2].z)
    assert np.allclose(static, child.static_weight()[4, 1].detach().numpy())
    assert np.allclose(gated, static * gate[5].item(), atol=1e-6)
    linear = ChildLinear(nn.Linear(6, 4), 6, 4)
    assert len(effective_kernel_figure(linear, torch.ones(6), 2).data) == 8  # 4 filters, 1x1
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        effective_kernel_figure(child, gate, 8)
    with pytest.raises(ValueError, match="filters must be a positive integer, got 0"):
        effective_kernel_figure(child, gate, 5, filters=0)


def test_the_figures_live_in_kdna_viz_gates_and_are_the_same_here():
    import kdna.viz
    import kdna.viz.gates
    import kdna.viz.widgets

    for name in kdna.viz.gates.__all__:
        assert getattr(kdna.viz.widgets, name) is getattr(kdna.viz.gates, name)
        assert getattr(kdna.viz, name) is getattr(kdna.viz.gates, name)


def test_small_figures():
    gate = torch.tensor([0.5, 1.5, 1.0, 0.2])
    fig = gate_figure(gate, boosted=[1], suppressed=[3], title="g")
    assert fig.data[0].y == tuple(gate.tolist()) and fig.layout.shapes[0].y0 == 1
    assert fig.data[0].marker.color[1] != fig.data[0].marker.color[3]
    both = gate_comparison_figure(gate, torch.ones(4), names=("a", "b"))
    assert [t.name for t in both.data] == ["a", "b", "a - b"]
    with pytest.raises(ValueError, match="two gate vectors"):
        gate_comparison_figure(gate, torch.ones(5))
    table = changed_channels_html(gate, [1], [3])
    assert "channel 1: 1.500" in table and "channel 3: 0.200" in table
