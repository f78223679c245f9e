"""kdna.data.shapes: the synthetic shapes set (deterministic, valid targets, segmentation view),
collate, and Penn-Fudan's offline failure."""

import socket
import time

import pytest
import torch
from torchvision.ops import masks_to_boxes

from kdna.data.shapes import SHAPES, ShapesDataset, collate, penn_fudan


@pytest.fixture(scope="module")
def shapes():
    return ShapesDataset(24, image_size=64, objects=(1, 5), seed=3)


def test_items_are_deterministic_for_a_seed(shapes):
    again = ShapesDataset(24, image_size=64, objects=(1, 5), seed=3)
    for i in (0, 7, 23, -1):
        (a, ta), (b, tb) = shapes[i], again[i]
        assert torch.equal(a, b)
        assert all(torch.equal(ta[k], tb[k]) for k in ("boxes", "labels", "masks"))
    assert torch.equal(shapes[-1][0], shapes[23][0])
    other = ShapesDataset(24, image_size=64, objects=(1, 5), seed=4)
    assert not torch.equal(shapes[0][0], other[0][0])


def test_targets_are_valid(shapes):
    counts = []
    for image, target in (shapes[i] for i in range(len(shapes))):
        boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
        n = len(labels)
        counts.append(n)
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        assert boxes.shape == (n, 4) and boxes.dtype == torch.float32
        assert labels.dtype == torch.int64 and masks.dtype == torch.uint8
        assert masks.shape == (n, 64, 64)
        assert ((labels >= 1) & (labels <= len(SHAPES))).all()
        assert (boxes >= 0).all() and (boxes <= 64).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()  # non-degenerate
        assert (masks.flatten(1).sum(1) > 0).all()
        # each box is the extent of its (visible) mask; x2, y2 exclusive
        assert torch.equal(boxes, masks_to_boxes(masks) + torch.tensor([0, 0, 1, 1]))
        assert masks.sum(0).max() <= 1  # occlusion: a pixel belongs to one instance
    assert min(counts) >= 1 and max(counts) > 1


def test_segmentation_view_matches_the_instances(shapes):
    view = shapes.segmentation()
    assert len(view) == len(shapes)
    for i in (0, 5, 11):
        image, classes = view[i]
        base_image, target = shapes[i]
        assert torch.equal(image, base_image)
        assert classes.shape == (64, 64) and classes.dtype == torch.int64
        expected = (target["masks"].long() * target["labels"][:, None, None]).sum(0)
        assert torch.equal(classes, expected)


def test_collate_makes_lists(shapes):
    images, targets = collate([shapes[0], shapes[1]])
    assert isinstance(images, list) and isinstance(targets, list)
    assert len(images) == len(targets) == 2 and "boxes" in targets[0]


def test_class_subset_and_num_classes():
    data = ShapesDataset(8, image_size=48, classes=("square", "circle"), seed=0)
    assert data.num_classes == 3 and data.classes == ["square", "circle"]
    labels = torch.cat([data[i][1]["labels"] for i in range(8)])
    assert set(labels.tolist()) <= {1, 2}


@pytest.mark.parametrize(("kwargs", "bad"), [
    ({"length": 0}, "length"), ({"image_size": 16}, "image_size"),
    ({"classes": ("circle", "hexagon")}, "hexagon"), ({"classes": ()}, "classes"),
    ({"objects": (3, 1)}, "objects"), ({"objects": (0, 2)}, "objects"),
    ({"object_size": (8, 200)}, "object_size"), ({"object_size": (2, 8)}, "object_size"),
    ({"seed": -1}, "seed"),
])
def test_bad_arguments(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        ShapesDataset(**kwargs)


def test_numpy_integers_are_integers_and_bools_are_not():
    import numpy as np

    data = ShapesDataset(np.int64(3), image_size=np.int32(32), seed=np.int64(1))
    assert (data.length, data.image_size, data.seed) == (3, 32, 1)
    assert type(data.length) is int
    with pytest.raises(ValueError, match="length must be an integer of at least 1, got True"):
        ShapesDataset(True)


def test_index_errors(shapes):
    with pytest.raises(IndexError, match="24"):
        shapes[24]
    with pytest.raises(TypeError, match="integer"):
        shapes[1.5]


def test_penn_fudan_fails_fast_offline(monkeypatch, tmp_path):
    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="ShapesDataset") as info:
        penn_fudan(tmp_path)
    assert time.perf_counter() - start < 1.0
    assert "penn_fudan" in str(info.value)
    with pytest.raises(FileNotFoundError, match="download=True"):
        penn_fudan(tmp_path, download=False)
    assert not any(tmp_path.iterdir())
