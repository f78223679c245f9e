"""Figure builders return titled figures with the traces they promise."""

import numpy as np
import pytest
import torch

from kdna import ParentKernel
from kdna.conversion import Agreement, ChildFit, ConversionReport, SharedGroup
from kdna.viz import (
    accuracy_vs_parameters,
    attribution_overlay,
    confident_mistakes,
    confusion_heatmap,
    conversion_tradeoff,
    fit_errors,
    gate_pipeline,
    image_grid,
    image_predictions,
    kernel_family,
    layer_scores,
    mistakes_grid,
    parent_and_children,
    pictures,
    routing_heatmap,
    routing_profile,
    similarity_heatmap,
    training_curves,
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
    with pytest.raises(ValueError, match=r"filters \[7\] must be a non-empty list in \[0, 6\)"):
        kernel_family(parent, [parent.child()], filters=(7,))


def test_parent_and_children_has_one_panel_per_kernel_with_gaps_between_filters():
    torch.manual_seed(0)
    parent = ParentKernel(4, 6, 3)
    children = {"a": parent.child(), "b": parent.child()}
    with torch.no_grad():
        children["b"].filter_scale[1] = 1.0  # child b doubles filter 1
    fig = parent_and_children(parent.weight, children, filters=(0, 1), channel=2)
    assert [t.name for t in fig.data] == ["parent", "a", "b"]
    assert all(t.type == "heatmap" for t in fig.data)
    assert "input channel 2" in fig.layout.title.text
    z = {t.name: np.array(t.z, dtype=float) for t in fig.data}
    assert z["parent"].shape == (3, 2 * 3 + 1)  # two 3x3 kernels and a blank column
    assert np.isnan(z["parent"][:, 3]).all()
    np.testing.assert_allclose(z["parent"][:, :3], parent.weight[0, 2].detach().numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(z["b"][:, 4:], 2 * z["parent"][:, 4:], rtol=1e-6)
    np.testing.assert_allclose(z["a"], z["parent"], rtol=1e-6)  # a fresh child is its parent
    assert list(fig.layout.xaxis3.ticktext) == ["f0", "f1"]


def test_parent_and_children_accepts_modules_written_from_scratch():
    class Scratch(torch.nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.weight = weight

        def static_weight(self):
            return 3 * self.weight

    conv = torch.nn.Conv2d(2, 5, 3, bias=False)
    fig = parent_and_children(conv, [Scratch(conv.weight)], filters=(4,))
    z = [np.array(t.z, dtype=float) for t in fig.data]
    np.testing.assert_allclose(z[1], 3 * z[0], rtol=1e-6)
    assert fig.data[1].name == "child 1"


def test_parent_and_children_rejects_bad_kernels_and_indices():
    parent = ParentKernel(4, 6, 3)
    with pytest.raises(ValueError, match="at least one child"):
        parent_and_children(parent, [])
    with pytest.raises(ValueError, match=r"child 1 has kernel shape \[6, 4, 1, 1\]"):
        parent_and_children(parent, [torch.zeros(6, 4, 1, 1)])
    with pytest.raises(TypeError, match=r"child 1 must be a 4-D kernel.*shape \[6, 4\]"):
        parent_and_children(parent, [torch.zeros(6, 4)])
    with pytest.raises(TypeError, match=r"parent must be a 4-D kernel.*got ReLU"):
        parent_and_children(torch.nn.ReLU(), [parent])
    with pytest.raises(ValueError, match=r"channel 4 in \[0, 4\)"):
        parent_and_children(parent, [parent.child()], channel=4)
    with pytest.raises(ValueError, match="non-empty"):
        parent_and_children(parent, [parent.child()], filters=())


def _boxes(fig):
    """Box label -> the tensor shape printed under it."""
    texts = [a.text for a in fig.layout.annotations if a.text]
    return {t.split("</b>")[0].removeprefix("<b>"): t.split("<br>")[1] for t in texts}


def test_gate_pipeline_labels_every_step_with_its_tensor_shape():
    child = ParentKernel(8, 16, 3).child(stride=2, padding=1, gate_reduction=4)
    fig = gate_pipeline(child, (2, 8, 10, 10))
    boxes = _boxes(fig)
    assert boxes["input x"] == "[2, 8, 10, 10]"
    assert boxes["average pool"] == "[2, 8]"
    assert boxes["fc1 (no bias)"] == "[2, 2]"  # 8 channels reduced by 4
    assert boxes["g = sigmoid"] == "[2, 8]"
    assert boxes["P·(1+f)·(1+s)"] == "[16, 8, 3, 3]"
    assert boxes["one conv2d"] == boxes["output"] == "[2, 16, 5, 5]"  # stride 2
    assert len(fig.layout.shapes) == len(boxes) == 11
    arrows = [a for a in fig.layout.annotations if a.showarrow]
    assert len(arrows) == 11
    assert fig.layout.title.text.startswith("Inside a child")
    identity = ParentKernel(8, 8, 3).child(gate_form="identity")
    assert "g = 2·sigmoid" in _boxes(gate_pipeline(identity))
    assert _boxes(gate_pipeline(identity))["input x"] == "[8, 8, 16, 16]"  # the default input


def test_gate_pipeline_rejects_a_child_without_a_gate_and_a_wrong_input():
    parent = ParentKernel(8, 8, 3)
    with pytest.raises(ValueError, match="ChildConv2d with a gate, got ChildConv2d without"):
        gate_pipeline(parent.child(gate_reduction=None))
    with pytest.raises(ValueError, match="got ParentKernel"):
        gate_pipeline(parent)
    with pytest.raises(ValueError, match=r"\[batch, 8, height, width\], got \[2, 3, 4, 4\]"):
        gate_pipeline(parent.child(), (2, 3, 4, 4))


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


def test_pictures_undo_the_normalisation_into_uint8_arrays():
    mean, std = (0.5, 0.4, 0.3), (0.5, 0.2, 0.1)
    raw = torch.tensor([[0.0, 1.0], [0.5, 0.25]])  # pixel values in [0, 1]
    image = torch.stack([(raw - m) / s for m, s in zip(mean, std, strict=True)])
    (rgb,) = pictures(image[None], mean, std)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[..., 1].tolist() == [[0, 255], [128, 64]]
    (grey,) = pictures(torch.full((1, 1, 3, 3), 9.0), (0.0,), (1.0,))  # clipped, one channel
    assert grey.shape == (3, 3) and (grey == 255).all()
    with pytest.raises(ValueError, match="one mean and std per channel"):
        pictures(image, (0.5,), (0.5,))


def test_image_grid_captions_each_image_with_its_class():
    data = torch.utils.data.TensorDataset(torch.zeros(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1]))
    fig = image_grid(data, classes=["zero", "one", "two"], mean=(0, 0, 0), std=(1, 1, 1),
                     count=4, cols=2, title="Training images")
    assert [t.type for t in fig.data] == ["image"] * 4
    assert [a.text for a in fig.layout.annotations] == ["zero", "one", "two", "zero"]
    assert fig.layout.title.text == "Training images"
    picked = image_grid(data, classes=["zero", "one", "two"], mean=(0, 0, 0), std=(1, 1, 1),
                        indices=[4])
    assert [a.text for a in picked.layout.annotations] == ["one"]
    with pytest.raises(ValueError, match="at least one image"):
        image_grid(data, classes=["a", "b", "c"], mean=(0, 0, 0), std=(1, 1, 1), indices=[])


def test_training_curves_draw_loss_and_accuracy_per_split_and_run():
    history = [{"step": 30, "train_loss": 1.5, "train_top1": 0.5, "val_loss": 1.0,
                "val_top1": 0.6},
               {"step": 60, "train_loss": 0.5, "train_top1": 0.8, "val_loss": 0.4,
                "val_top1": 0.9}]
    fig = training_curves(history, title="Fine-tuning")
    assert [t.name for t in fig.data] == ["training batches", "validation"] * 2
    assert list(fig.data[3].y) == pytest.approx([60.0, 90.0])  # accuracy in %
    assert list(fig.data[0].x) == [30, 60] and fig.layout.title.text == "Fine-tuning"
    assert fig.layout.xaxis.title.text == "optimizer step"
    assert fig.layout.yaxis.title.text == "cross-entropy loss"
    assert fig.layout.yaxis2.title.text == "top-1 accuracy (%)"
    no_val = [{k: v for k, v in row.items() if not k.startswith("val")} for row in history]
    runs = training_curves({"adapters": history, "head": no_val})
    assert [t.name for t in runs.data] == ["adapters, train", "adapters, val"] * 2 + [
        "head, train"] * 2
    assert [t.showlegend for t in runs.data] == [True, True, False, False, True, False]
    with pytest.raises(ValueError, match="at least one history row"):
        training_curves({"a": []})


def test_confusion_heatmap_colours_row_shares_and_labels_counts():
    matrix = torch.tensor([[3, 1], [0, 0]])
    fig = confusion_heatmap(matrix, ["cat", "dog"], title="Test split")
    (heat,) = fig.data
    assert np.asarray(heat.z).tolist() == [[0.75, 0.25], [0.0, 0.0]]  # an empty row stays 0
    assert np.asarray(heat.text).tolist() == [[3, 1], [0, 0]]
    assert list(heat.x) == list(heat.y) == ["cat", "dog"]
    assert fig.layout.xaxis.title.text == "predicted class"
    assert fig.layout.yaxis.title.text == "true class" and fig.layout.title.text == "Test split"
    with pytest.raises(ValueError, match="must be 3x3"):
        confusion_heatmap(matrix, ["a", "b", "c"])


def test_confident_mistakes_are_the_wrong_predictions_most_confident_first():
    probabilities = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    labels = torch.tensor([0, 0, 0, 1])
    assert confident_mistakes(probabilities, labels) == [2, 3, 1]
    assert confident_mistakes(probabilities, labels, count=1) == [2]
    assert confident_mistakes(probabilities, torch.tensor([0, 1, 1, 0])) == []
    with pytest.raises(ValueError, match="labels \\[N\\]"):
        confident_mistakes(probabilities, labels[:3])


def test_mistakes_grid_names_true_and_predicted_class():
    data = torch.utils.data.TensorDataset(torch.zeros(3, 1, 4, 4), torch.tensor([0, 1, 1]))
    probabilities = torch.tensor([[0.9, 0.1], [0.75, 0.25], [0.2, 0.8]])
    fig = mistakes_grid(data, probabilities, torch.tensor([0, 1, 1]), classes=["a", "b"],
                        mean=(0.5,), std=(0.5,))
    assert [t.type for t in fig.data] == ["image"]
    assert [a.text for a in fig.layout.annotations] == ["true b<br>predicted a (75%)"]
    assert fig.layout.title.text == "The most confident mistakes"
    right = mistakes_grid(data, probabilities, torch.tensor([0, 0, 1]), classes=["a", "b"],
                          mean=(0.5,), std=(0.5,))
    assert not right.data and "no mistakes" in right.layout.annotations[0].text
    with pytest.raises(ValueError, match="one row of probabilities per item"):
        mistakes_grid(data, probabilities[:2], torch.tensor([0, 1]), classes=["a", "b"],
                      mean=(0.5,), std=(0.5,))


def test_accuracy_against_draws_error_bars_and_highlights_kernel_dna():
    from kdna.viz import accuracy_against

    rows = {"ResNet-18": {"throughput": 1.0, "top1": 90.0, "spread": 1.5},
            "KernelDNA ResNet-18": {"throughput": 0.8, "top1": 91.0, "spread": 0.5},
            "ODConv-4x": {"throughput": 0.2, "top1": 89.0}}
    fig = accuracy_against(rows, "throughput", xaxis="throughput vs plain")
    assert [t.name for t in fig.data] == list(rows)
    assert list(fig.data[0].error_y.array) == [1.5] and fig.data[2].error_y.array is None
    assert fig.data[1].marker.symbol == "square" and fig.data[0].marker.symbol.endswith("-open")
    assert fig.layout.xaxis.title.text == "throughput vs plain"
    assert fig.layout.xaxis.type == "linear" and fig.layout.yaxis.title.text == "test top-1 (%)"
    assert "throughput" in fig.layout.title.text
    logged = accuracy_against({k: {"params": 1e6, "top1": v["top1"]} for k, v in rows.items()},
                              "params", log=True)
    assert logged.layout.xaxis.type == "log" and "log scale" in logged.layout.xaxis.title.text
    with pytest.raises(ValueError, match=r"result 'x' lacks \['top1'\]"):
        accuracy_against({"x": {"params": 1}}, "params")
    with pytest.raises(ValueError, match="at least one"):
        accuracy_against({}, "params")
