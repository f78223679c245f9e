"""Figure builders return titled figures with the traces they promise."""

import numpy as np
import pytest
import torch

from kdna import ParentKernel
from kdna.conversion import Agreement, ChildFit, ConversionReport, SharedGroup
from kdna.viz import (
    accuracy_vs_parameters,
    attribution_overlay,
    conversion_tradeoff,
    fit_errors,
    image_predictions,
    kernel_family,
    layer_scores,
    routing_heatmap,
    routing_profile,
    similarity_heatmap,
)


def _report(saved=100, top1=0.5):
    groups = [SharedGroup("a", (ChildFit("b", 0.2), ChildFit("c", 0.9)), "conv", (4, 4, 3, 3), 50),
              SharedGroup("d", (ChildFit("e", 1.0),), "linear", (8, 4), 20)]
    return ConversionReport(groups, 1000, 1000 - saved, agreement=Agreement(4, top1, 0.3))


def test_kernel_family_has_one_heatmap_per_filter_and_kernel():
    torch.manual_seed(0)
    parent = ParentKernel(4, 6, 3)
    children = [parent.child() for _ in range(3)]
    with torch.no_grad():
        children[1].filter_scale[1] = 1.0  # child 2 doubles filter 1
    fig = kernel_family(parent, children, filters=(0, 1))
    assert len(fig.data) == 2 * 4
    assert all(t.type == "heatmap" for t in fig.data)
    assert "parent kernel" in fig.layout.title.text
    assert fig.layout.xaxis5.title.text == "kernel column"
    assert fig.layout.yaxis.title.text == "kernel row"
    names = [a.text for a in fig.layout.annotations]
    assert {"parent", "child 1", "child 3", "filter 0"} <= set(names)
    by_name = {t.name: torch.tensor(t.z) for t in fig.data}
    torch.testing.assert_close(by_name["child 2, filter 1"], 2 * by_name["parent, filter 1"])


def test_kernel_family_rejects_strangers_and_bad_indices():
    parent = ParentKernel(4, 6, 3)
    stranger = ParentKernel(4, 6, 3).child()
    with pytest.raises(ValueError, match="child 1 is not a child"):
        kernel_family(parent, [stranger])
    with pytest.raises(ValueError, match=r"filters \[7\] must lie in \[0, 6\)"):
        kernel_family(parent, [parent.child()], filters=(7,))


def test_fit_errors_has_one_bar_trace_per_parent():
    fig = fit_errors(_report())
    assert [t.name for t in fig.data] == ["a", "d"] and all(t.type == "bar" for t in fig.data)
    assert list(fig.data[0].y) == [0.2, 0.9]
    assert fig.layout.xaxis.title.text == "child layer"
    assert "fit error" in fig.layout.yaxis.title.text and fig.layout.title.text
    with pytest.raises(ValueError, match="nothing was converted"):
        fit_errors(ConversionReport([], 10, 10))


def test_conversion_tradeoff_plots_agreement_against_savings():
    fig = conversion_tradeoff([_report(100, 1.0), _report(300, 0.25)], labels=["one", "two"])
    top1, error = fig.data
    assert list(top1.x) == pytest.approx([10.0, 30.0]) and list(top1.y) == [100.0, 25.0]
    assert list(error.y) == [0.3, 0.3] and list(top1.text) == ["one", "two"]
    assert fig.layout.xaxis.title.text == "parameters saved (%)"
    assert "agreement" in fig.layout.yaxis.title.text
    assert fig.layout.yaxis2.title.text == "relative logit error"
    with pytest.raises(ValueError, match="needs reports made with example_inputs"):
        conversion_tradeoff([ConversionReport([], 10, 10)])


def test_image_predictions_embeds_small_pngs_under_their_captions():
    images = [np.zeros((400, 300, 3), np.uint8), np.full((50, 60), 200, np.uint8)]
    fig = image_predictions(images, ["cat", "cup"], size=64)
    assert [t.type for t in fig.data] == ["image", "image"]
    assert all(t.source.startswith("data:image/png;base64,") for t in fig.data)
    assert len(fig.data[0].source) < 2000  # a 64-pixel thumbnail, not 400x300 numbers
    assert [a.text for a in fig.layout.annotations] == ["cat", "cup"]
    with pytest.raises(ValueError, match="one caption per image"):
        image_predictions(images, ["cat"])
    with pytest.raises(ValueError, match="uint8 arrays, got float64"):
        image_predictions([np.zeros((4, 4))], ["x"])


def test_accuracy_vs_parameters_has_a_marker_per_method_on_a_log_axis():
    fig = accuracy_vs_parameters({"full": {"trainable": 3e6, "top1": 90.0},
                                  "kdna": {"trainable": 4e5, "top1": 60.0,
                                           "seconds_per_step": 0.3}})
    assert [t.name for t in fig.data] == ["full", "kdna"]
    assert fig.layout.showlegend and all(t.mode == "markers" for t in fig.data)  # no labels
    assert fig.data[0].marker.symbol != fig.data[1].marker.symbol  # told apart in grey too
    assert fig.layout.xaxis.type == "log" and "trainable" in fig.layout.xaxis.title.text
    assert fig.layout.yaxis.title.text == "validation top-1 (%)"
    with pytest.raises(ValueError, match=r"result 'x' lacks \['top1'\]"):
        accuracy_vs_parameters({"x": {"trainable": 1}})


def test_similarity_heatmap_leaves_incomparable_pairs_blank():
    from types import SimpleNamespace

    matrix = torch.tensor([[1.0, 0.5, float("nan")], [0.5, 1.0, float("nan")],
                           [float("nan"), float("nan"), 1.0]])
    fig = similarity_heatmap(SimpleNamespace(names=["a", "b", "c"], matrix=matrix,
                                             kind="linear CKA"))
    (heat,) = fig.data
    assert heat.type == "heatmap" and heat.z[0][2] is None and heat.z[0][1] == 0.5
    assert fig.layout.title.text == "linear CKA between layers"
    assert fig.layout.xaxis.title.text == "layer" and fig.layout.yaxis.title.text == "layer"
    with pytest.raises(ValueError, match="does not fit 2 names"):
        similarity_heatmap(SimpleNamespace(names=["a", "b"], matrix=matrix, kind="x"))


def test_routing_figures_have_their_traces_and_axes():
    gates = torch.tensor([[1.0, 1.5, 0.5], [0.9, 1.1, 1.0]])
    fig = routing_heatmap(gates, layer="layer3.0.conv2", labels=["cat", "dog"])
    assert fig.data[0].type == "heatmap" and fig.data[0].zmid == 1.0
    assert fig.layout.xaxis.title.text == "input channel of the child"
    assert "layer3.0.conv2" in fig.layout.title.text
    profile = routing_profile(gates, classes=["cat", "dog"], layer="l")
    assert [t.name for t in profile.data] == ["cat", "dog"]
    assert profile.layout.yaxis.title.text == "mean gate"
    with pytest.raises(ValueError, match="3 labels for 2 inputs"):
        routing_heatmap(gates, layer="l", labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="one name per class"):
        routing_profile(gates, classes=["cat"], layer="l")


def test_attribution_overlay_draws_the_map_over_the_image():
    image = np.zeros((40, 60, 3), np.uint8)
    fig = attribution_overlay(image, torch.rand(10, 15), title="which pixels")
    assert [t.type for t in fig.data] == ["image", "heatmap"]
    assert np.asarray(fig.data[1].z).shape == (40, 60) and np.nanmax(fig.data[1].z) <= 1
    assert fig.layout.title.text == "which pixels"
    with pytest.raises(ValueError, match=r"must be \[height, width\]"):
        attribution_overlay(image, torch.rand(1, 10, 15), title="x")


def test_layer_scores_is_one_bar_per_layer():
    fig = layer_scores({"a": 0.1, "b": 0.7}, title="specialisation", yaxis="share")
    assert list(fig.data[0].x) == ["a", "b"] and list(fig.data[0].y) == [0.1, 0.7]
    assert fig.layout.xaxis.title.text == "layer" and fig.layout.yaxis.title.text == "share"
    with pytest.raises(ValueError, match="at least one layer"):
        layer_scores({}, title="t", yaxis="y")
