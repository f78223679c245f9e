"""kdna.dense and kdna.dense.train: KernelDNA backbones in torchvision's detectors and
segmenters, their training loop and metrics. Tiny images keep every test to seconds."""

import socket
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import kdna.models.layout
from kdna.data.shapes import ShapesDataset, collate
from kdna.dense import (
    deeplabv3,
    evaluate_detection,
    evaluate_segmentation,
    faster_rcnn,
    mask_rcnn,
    resnet_fpn_backbone,
    resnet_trunk,
    train_dense,
)
from kdna.nn import ChannelGate, FrozenBatchNorm1d, FrozenBatchNorm2d, KernelChild

SMALL = {"min_size": 64, "max_size": 64, "fpn_channels": 32, "representation_size": 64,
         "anchor_sizes": (16, 32, 64, 128)}


@pytest.fixture(scope="module")
def shapes():
    return ShapesDataset(16, image_size=64, classes=("circle", "square"), objects=(1, 3),
                         object_size=(16, 32), seed=0)


def _children(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, KernelChild)]


@pytest.mark.parametrize("trunk", ["paper", "converted", "plain"])
def test_fpn_levels_shapes_and_channels(trunk):
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone("resnet18", trunk=trunk, fpn_channels=32)
    assert backbone.out_channels == 32
    features = backbone.eval()(torch.rand(2, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "0": (2, 32, 8, 8), "1": (2, 32, 4, 4), "2": (2, 32, 2, 2), "pool": (2, 32, 1, 1)}
    children = _children(backbone)
    assert bool(children) == (trunk != "plain")
    if trunk == "paper":  # the paper's layout rebuilds layer3 and layer4 only
        assert all(n.startswith(("body.layer3", "body.layer4")) for n in children)
        assert len(backbone.body.layer3) == len(backbone.body.layer4) == 3


def test_all_four_levels_and_resnet50_widths():
    backbone = resnet_fpn_backbone("resnet50", returned_layers=(1, 2, 3, 4), fpn_channels=16)
    inner = [next(m for m in b.modules() if isinstance(m, nn.Conv2d)).in_channels
             for b in backbone.fpn.inner_blocks]
    assert inner == [256, 512, 1024, 2048]
    features = backbone.eval()(torch.rand(1, 3, 64, 64))
    assert [tuple(v.shape[1:]) for v in features.values()] == [
        (16, 16, 16), (16, 8, 8), (16, 4, 4), (16, 2, 2), (16, 1, 1)]


def test_gates_keep_fixed_statistics_so_batch_one_trains(shapes):
    torch.manual_seed(0)
    model = faster_rcnn(3, **SMALL)
    gates = [m for m in model.modules() if isinstance(m, ChannelGate)]
    assert gates and all(type(g.bn) is FrozenBatchNorm1d for g in gates)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())  # from scratch
    image, target = shapes[0]
    losses = model.train()([image], [target])  # one image: a BatchNorm1d would raise here
    assert {"loss_classifier", "loss_box_reg", "loss_objectness"} <= set(losses)
    sum(losses.values()).backward()
    gate = gates[0]
    assert gate.bn.weight.grad is not None and torch.equal(gate.bn.running_mean,
                                                           torch.zeros_like(gate.bn.running_mean))


def test_pretrained_backbone_freezes_norms_and_early_stages(monkeypatch):
    # No network in tests: pretend the weights were loaded (the trunk stays random).
    monkeypatch.setattr(kdna.models.layout, "torchvision_weights", lambda arch, weights: None)
    backbone = resnet_fpn_backbone("resnet18", trunk="converted", weights_backbone="DEFAULT")
    body = backbone.body
    assert not any(type(m) is nn.BatchNorm2d for m in body.modules())
    frozen = [m for m in body.modules() if type(m) is FrozenBatchNorm2d]
    assert frozen and not any(p.requires_grad for m in frozen for p in m.parameters())
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}  # the default 3 with weights
    gates = [g for g in body.modules() if isinstance(g, ChannelGate)]
    assert gates and all(type(g.bn) is FrozenBatchNorm1d for g in gates)
    assert any(g.bn.weight.requires_grad for g in gates)  # the gates' scale and shift train


def test_offline_weights_fail_fast(monkeypatch, tmp_path):
    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="torchvision weights resnet18/DEFAULT") as info:
        faster_rcnn(3, trunk="converted", weights_backbone="DEFAULT")
    assert time.perf_counter() - start < 2.0
    assert "efficientnet_lite0" in str(info.value)  # the offline alternative
    with pytest.raises(ConnectionError, match="IMAGENET1K_V1"):
        deeplabv3(3, trunk="plain", weights_backbone="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="convert"):  # the paper layout has no weights
        mask_rcnn(3, trunk="paper", weights_backbone="DEFAULT")


def test_training_lowers_the_detection_loss(shapes):
    torch.manual_seed(0)
    model = faster_rcnn(shapes.num_classes, **SMALL)
    loader = DataLoader(shapes, batch_size=4, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    losses = train_dense(model, loader, 12, lr=2e-3, progress=False)
    assert len(losses) == 12 and all(loss > 0 for loss in losses)
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def test_training_lowers_the_segmentation_loss(shapes):
    torch.manual_seed(0)
    model = deeplabv3(shapes.num_classes, output_stride=16, atrous_rates=(1, 2, 3))
    loader = DataLoader(shapes.segmentation(), batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    losses = train_dense(model, loader, 10, lr=2e-3, progress=False)
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_segmenter_output_and_dilated_children(output_stride):
    torch.manual_seed(0)
    model = deeplabv3(4, output_stride=output_stride, atrous_rates=(1, 2, 3)).eval()
    x = torch.rand(2, 3, 64, 64)
    assert model(x)["out"].shape == (2, 4, 64, 64)
    features = model.backbone(x)["out"]
    assert features.shape == (2, 512, 64 // output_stride, 64 // output_stride)
    child = model.backbone.layer4[2].conv1  # a KernelDNA child in the paper layout
    assert isinstance(child, KernelChild)
    assert child.dilation == ({8: 4, 16: 2, 32: 1}[output_stride],) * 2


def test_mask_rcnn_trains_and_predicts_masks(shapes):
    torch.manual_seed(0)
    model = mask_rcnn(shapes.num_classes, trunk="converted", mask_layers=(16,), **SMALL)
    assert _children(model.backbone)
    images, targets = collate([shapes[0], shapes[1]])
    losses = model.train()(images, targets)
    assert "loss_mask" in losses and torch.isfinite(sum(losses.values()))
    out = model.eval()(images)
    assert out[0]["masks"].shape[1:] == (1, 64, 64)
    scores = evaluate_detection(model, DataLoader([shapes[i] for i in range(4)], batch_size=2,
                                                  collate_fn=collate))
    assert set(scores) == {"map", "map_50", "map_75", "mask_map", "mask_map_50", "mask_map_75"}
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in scores.values())


class _Oracle(nn.Module):
    """Predicts the targets exactly: image i carries its index in pixel [0, 0, 0]."""

    def __init__(self, targets):
        super().__init__()
        self.targets = targets
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        out = []
        for image in images:
            target = self.targets[int(image[0, 0, 0])]
            n = len(target["labels"])
            out.append({"boxes": target["boxes"], "labels": target["labels"],
                        "scores": torch.ones(n), "masks": target["masks"][:, None].float()})
        return out


def test_a_perfect_detector_scores_one(shapes):
    items = [shapes[i] for i in range(6)]
    targets = [t for _, t in items]
    indexed = [(torch.full((3, 64, 64), float(i)), t) for i, t in enumerate(targets)]
    scores = evaluate_detection(_Oracle(targets), DataLoader(indexed, batch_size=4,
                                                             collate_fn=collate))
    assert scores == pytest.approx(dict.fromkeys(scores, 1.0))
    assert "mask_map" in scores
    halves = [{k: v[: (len(t["labels"]) + 1) // 2] for k, v in t.items()} for t in targets]
    half = evaluate_detection(_Oracle(halves), DataLoader(indexed, batch_size=4,
                                                          collate_fn=collate))
    assert 0 < half["map"] < 1 and 0 < half["mask_map"] < 1  # missed shapes cost recall


def test_segmentation_metrics(shapes):
    view = shapes.segmentation()
    classes = torch.stack([view[i][1] for i in range(4)])
    encoded = DataLoader(list(zip(classes[:, None].float().expand(-1, 3, -1, -1), classes,
                                  strict=True)), batch_size=2)

    class Perfect(nn.Module):
        def forward(self, x):
            return {"out": F.one_hot(x[:, 0].long(), 3).permute(0, 3, 1, 2).float()}

    assert evaluate_segmentation(Perfect(), encoded, 3) == {"miou": 1.0, "pixel_accuracy": 1.0}
    torch.manual_seed(0)
    untrained = evaluate_segmentation(deeplabv3(3, atrous_rates=(1, 2, 3)),
                                      DataLoader(view, batch_size=8), 3)
    assert all(0 <= v <= 1 for v in untrained.values())


@pytest.mark.parametrize(("build", "kwargs", "bad"), [
    (faster_rcnn, {"arch": "resnet34"}, "resnet34"),
    (faster_rcnn, {"trunk": "yes"}, "yes"),
    (faster_rcnn, {"trainable_layers": 6}, "6"),
    (faster_rcnn, {"returned_layers": (0, 5)}, "(0, 5)"),
    (faster_rcnn, {"fpn_channels": 0}, "fpn_channels"),
    (faster_rcnn, {"anchor_sizes": (16, 32)}, "(16, 32)"),
    (faster_rcnn, {"min_size": 0}, "min_size"),
    (mask_rcnn, {"mask_layers": ()}, "mask_layers"),
    (deeplabv3, {"output_stride": 4}, "output_stride"),
    (deeplabv3, {"atrous_rates": (1, 2)}, "atrous_rates"),
    (deeplabv3, {"arch": "vgg16"}, "vgg16"),
])
def test_bad_arguments_name_the_value(build, kwargs, bad):
    with pytest.raises(ValueError, match="must be") as info:
        build(3, **kwargs)
    assert bad in str(info.value)


def test_bad_num_classes_and_trunk_choices():
    with pytest.raises(ValueError, match="num_classes"):
        faster_rcnn(1)
    with pytest.raises(ValueError, match="num_classes"):
        deeplabv3(True)
    assert _children(resnet_trunk(trunk="paper")) and not _children(
        resnet_trunk(trunk="plain"))
    with pytest.raises(ValueError, match="steps"):
        train_dense(nn.Linear(1, 1), [], 0)
    with pytest.raises(ValueError, match="optimizer"):
        train_dense(nn.Linear(1, 1), [], 1, optimizer="lion")
    with pytest.raises(ValueError, match="no batch"):
        train_dense(nn.Linear(1, 1), [], 1)


def test_converted_layout_does_not_depend_on_the_weights():
    torch.manual_seed(0)
    saved = deeplabv3(3, trunk="converted").state_dict()
    torch.manual_seed(1)
    fresh = deeplabv3(3, trunk="converted")
    fresh.load_state_dict(saved)  # same children and parents whatever the random weights
    assert _children(fresh)
