"""kdna.data: offline sets, synthetic set, ImageFolder paths, online sets offline, errors."""

import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from kdna.data import IMAGENET_MEAN, IMAGENET_STD, DataSplits, list_datasets, load_data

OFFLINE = {"mnist": (10, 5000), "digits": (10, 1797), "faces": (2, 200), "synthetic": (10, 400)}
HALF = {"mean": (0.5,) * 3, "std": (0.5,) * 3}


def _labels(dataset):
    return torch.tensor([int(dataset.base[int(i)][1]) for i in dataset.indices])


@pytest.mark.parametrize("name", list(OFFLINE))
def test_offline_set_items_and_classes(name):
    num_classes, total = OFFLINE[name]
    data = load_data(name, image_size=24)
    assert isinstance(data, DataSplits) and data.name == name
    assert data.num_classes == len(data.classes) == num_classes
    assert len(data.train) + len(data.val) == total
    for split in (data.train, data.val):
        image, label = split[0]
        assert image.shape == (3, 24, 24) and image.dtype == torch.float32
        assert isinstance(label, int)
        labels = _labels(split)
        assert labels.min() >= 0 and labels.max() < num_classes
        assert len(labels.unique()) == num_classes


def test_class_names():
    assert load_data("digits").classes == [str(d) for d in range(10)]
    assert load_data("faces").classes == ["non-face", "face"]


@pytest.mark.parametrize("name", ["mnist", "digits", "synthetic"])
def test_split_is_deterministic_disjoint_complete_and_stratified(name):
    a, b = load_data(name, seed=3), load_data(name, seed=3)
    assert torch.equal(a.train.indices, b.train.indices)
    assert torch.equal(a.val.indices, b.val.indices)
    assert not torch.equal(load_data(name, seed=4).val.indices.sort().values,
                           a.val.indices.sort().values)
    train, val = set(a.train.indices.tolist()), set(a.val.indices.tolist())
    assert not train & val and len(train | val) == OFFLINE[name][1]
    all_labels = a.train.base.tensors[1]
    val_labels = all_labels[a.val.indices]
    for c in range(10):
        assert abs((val_labels == c).sum() - 0.2 * (all_labels == c).sum()) <= 1


def test_val_fraction_sets_the_split_size():
    data = load_data("synthetic", val_fraction=0.5)
    assert len(data.train) == len(data.val) == 200


def test_grey_images_repeat_to_three_identical_channels():
    image, _ = load_data("mnist", image_size=32, **HALF).val[0]
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    image, _ = load_data("faces", image_size=32).val[0]  # ImageNet statistics per channel
    std, mean = torch.tensor(IMAGENET_STD).view(3, 1, 1), torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    raw = image * std + mean
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[0], raw[2], atol=1e-5)


def test_one_channel():
    data = load_data("synthetic", image_size=16, channels=1)
    assert data.train[0][0].shape == (1, 16, 16) and len(data.mean) == 1
    assert load_data("digits", image_size=16, channels=1, mean=0.5, std=0.5).val[0][0].shape == (
        1, 16, 16)


def test_limit_keeps_class_proportions_deterministically():
    data = load_data("mnist", image_size=16, limit=50)
    assert len(data.train) == len(data.val) == 50
    assert torch.bincount(_labels(data.train), minlength=10).tolist() == [5] * 10
    assert torch.equal(data.train.indices, load_data("mnist", limit=50).train.indices)
    assert len(load_data("faces", limit=1000).train) == 160


def test_augment_is_random_for_train_only_and_can_be_turned_off():
    data = load_data("mnist", image_size=32)
    assert not torch.equal(data.train[0][0], data.train[0][0])
    assert torch.equal(data.val[0][0], data.val[0][0])
    plain = load_data("mnist", image_size=32, augment=False)
    assert torch.equal(plain.train[0][0], plain.train[0][0])


def test_synthetic_is_seeded_aliased_and_learnable():
    data = load_data("dummy", image_size=16, augment=False)
    assert data.name == "synthetic" and (len(data.train), len(data.val)) == (320, 80)
    assert not torch.equal(load_data("synthetic", seed=1).train.base.tensors[0],
                           data.train.base.tensors[0])
    x, y = next(iter(DataLoader(data.train, batch_size=len(data.train))))
    xv, yv = next(iter(DataLoader(data.val, batch_size=len(data.val))))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(15):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert (model(xv).argmax(1) == yv).float().mean() > 0.6  # chance: 0.1


def test_loader_batches():
    x, y = next(iter(DataLoader(load_data("digits", image_size=16).train, batch_size=8)))
    assert x.shape == (8, 3, 16, 16) and type(x) is torch.Tensor and y.dtype == torch.int64


def _write_images(folder, classes, per_class, grey=False):
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20, 30) if grey else (20, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def test_image_folder_with_train_and_val(tmp_path):
    _write_images(tmp_path / "train", ["cat", "dog"], 3)
    _write_images(tmp_path / "val", ["cat", "dog"], 2, grey=True)
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    data = load_data(tmp_path, image_size=16)
    assert data.classes == ["cat", "dog"] and (len(data.train), len(data.val)) == (6, 4)
    for split in (data.train, data.val):
        image, label = split[len(split) - 1]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == 1
    assert len(load_data(str(tmp_path), limit=2).train) == 2


def test_image_folder_of_classes_is_split(tmp_path):
    _write_images(tmp_path, ["a", "b", "c"], 5)
    data = load_data(str(tmp_path), image_size=12, seed=1)
    assert data.num_classes == 3 and (len(data.train), len(data.val)) == (12, 3)
    assert not set(data.train.indices.tolist()) & set(data.val.indices.tolist())
    assert sorted(label for _, label in data.val) == [0, 1, 2]
    assert data.val[0][0].shape == (3, 12, 12)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_data(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_data(tmp_path / "nowhere")


def test_bad_folders(tmp_path):
    with pytest.raises(ValueError, match="class folder"):
        load_data(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="ImageFolder"):
        load_data(tmp_path)
    _write_images(tmp_path / "split" / "train", ["a"], 1)
    with pytest.raises(ValueError, match="no val/"):
        load_data(tmp_path / "split")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ValueError, match="file"):
        load_data(tmp_path / "file.png")


def test_unknown_name_suggests():
    with pytest.raises(ValueError, match="did you mean 'mnist'") as info:
        load_data("mnsit")
    assert "cifar10" in str(info.value) and "path" in str(info.value)


@pytest.mark.parametrize(("kwargs", "bad"), [
    ({"channels": 2}, "channels"), ({"image_size": 4}, "image_size"),
    ({"val_fraction": 0.0}, "val_fraction"), ({"val_fraction": 1.0}, "val_fraction"),
    ({"limit": 0}, "limit"), ({"mean": (0.1, 0.2)}, "mean"), ({"std": 0.0}, "std"),
])
def test_bad_arguments(kwargs, bad):
    value = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=bad) as info:
        load_data("synthetic", **kwargs)
    assert str(value) in str(info.value)


@pytest.mark.parametrize("name", ["cifar10", "flowers102", "pets"])
def test_online_set_fails_fast_offline(monkeypatch, tmp_path, name):
    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="mnist") as info:
        load_data(name, root=tmp_path)
    assert time.perf_counter() - start < 1.0
    assert all(n in str(info.value) for n in ("digits", "faces", "synthetic"))
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_data(name, root=tmp_path, download=False)
    assert not any(tmp_path.iterdir())


def test_list_datasets():
    sets = list_datasets()
    assert list(sets)[:4] == ["mnist", "digits", "faces", "synthetic"]
    assert {"cifar10", "flowers102", "pets"} <= set(sets)
    kinds = [d.split(":")[0] for d in sets.values()]
    assert kinds == sorted(kinds, key=lambda k: k != "offline")
    assert all(isinstance(d, str) and "\n" not in d for d in sets.values())


class _Items(torch.utils.data.Dataset):
    """(image, label) items; ``targets`` only when asked for, like Flowers-102 and Pets."""

    def __init__(self, labels, with_targets):
        self.labels, self.reads = list(labels), 0
        if with_targets:
            self.targets = self.labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.reads += 1
        return torch.zeros(1, 2, 2), self.labels[i]


def test_limit_reads_labels_from_targets_or_else_through_the_items():
    from kdna.data.splits import balanced_subset, dataset_labels

    labels = [0] * 6 + [1] * 3 + [2] * 3
    with_targets, without = _Items(labels, True), _Items(labels, False)
    assert torch.equal(dataset_labels(with_targets), torch.tensor(labels))
    assert with_targets.reads == 0  # no image touched
    assert torch.equal(dataset_labels(without), torch.tensor(labels))
    picked = balanced_subset(without, 4, seed=0)
    assert torch.equal(picked, balanced_subset(with_targets, 4, seed=0))
    assert sorted(labels[i] for i in picked) == [0, 0, 1, 2]
    fresh = _Items(labels, False)
    assert torch.equal(balanced_subset(fresh, None, seed=0), torch.arange(12))
    assert fresh.reads == 0  # without a limit, no label is read


def test_online_urls_are_torchvisions():
    from torchvision import datasets

    from kdna.data.classification import FLOWERS102_URL, PETS_URL

    # torchvision keeps these private; the test notices when they move, the library never reads them
    flowers = getattr(datasets.Flowers102, "_download_url_prefix", FLOWERS102_URL)
    pets = getattr(datasets.OxfordIIITPet, "_RESOURCES", ((PETS_URL, None),))[0][0]
    assert (FLOWERS102_URL, PETS_URL) == (flowers, pets)
