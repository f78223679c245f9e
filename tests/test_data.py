"""kdna.data: load_data's offline sets and their three splits, the synthetic set, transforms,
folders in every layout and their errors, online sets (offline), source keys, example folders."""

import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from kdna.data import IMAGENET_MEAN, IMAGENET_STD, DataSplits, list_datasets, load_data
from kdna.data.offline import offline_images
from kdna.data.splits import stratified_split

OFFLINE = {"mnist": (10, 5000), "digits": (10, 1797), "faces": (2, 200), "synthetic": (10, 400)}
HALF = {"mean": (0.5,) * 3, "std": (0.5,) * 3}


def _labels(dataset):
    return torch.tensor([int(dataset.base[int(i)][1]) for i in dataset.indices])


@pytest.mark.parametrize("name", list(OFFLINE))
def test_offline_set_items_and_classes(name):
    num_classes, total = OFFLINE[name]
    data = load_data(name, image_size=24)
    assert isinstance(data, DataSplits) and data.name == name and data.small
    assert data.num_classes == len(data.classes) == num_classes
    assert len(data.train) + len(data.val) + len(data.test) == total
    for split in (data.train, data.val, data.test):
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
def test_splits_are_deterministic_disjoint_complete_and_stratified(name):
    a, b = load_data(name, seed=3), load_data(name, seed=3)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).indices, getattr(b, split).indices)
    other = load_data(name, seed=4)
    for split in ("val", "test"):
        assert not torch.equal(getattr(other, split).indices.sort().values,
                               getattr(a, split).indices.sort().values)
    train, val, test = (set(s.indices.tolist()) for s in (a.train, a.val, a.test))
    assert not train & val and not train & test and not val & test
    assert len(train | val | test) == OFFLINE[name][1]
    all_labels = a.train.base.tensors[1]
    test_labels, val_labels = all_labels[a.test.indices], all_labels[a.val.indices]
    for c in range(10):
        n = (all_labels == c).sum()
        assert abs((test_labels == c).sum() - 0.2 * n) <= 1  # of the whole set
        assert abs((val_labels == c).sum() - 0.2 * (n - (test_labels == c).sum())) <= 1


def test_fractions_set_the_split_sizes():
    data = load_data("synthetic", val_fraction=0.5)  # 40 per class: 8 test, 16 + 16
    assert (len(data.train), len(data.val), len(data.test)) == (160, 160, 80)
    data = load_data("synthetic", test_fraction=0.5, val_fraction=0.25)  # 20 test, 15 + 5
    assert (len(data.train), len(data.val), len(data.test)) == (150, 50, 200)


def _protocol_today(name, limit, seed, val_fraction):
    """The train / validation / test indices that kdna.train.protocol.protocol_splits built
    from load_data's two splits: load_data held a stratified 20% out (its "val", the test
    split), kept a prefix of ``limit`` of each, and the protocol carved validation out of the
    kept train indices with ``stratified_split`` (the same seed)."""
    labels = offline_images(name, seed)[1]
    train, held_out = stratified_split(labels, 0.2, seed)
    train, held_out = train[:limit], held_out[:limit]
    fit, val = stratified_split(labels[train], val_fraction, seed)
    return train[fit], train[val], held_out


@pytest.mark.parametrize(("name", "limit", "seed", "val_fraction"), [
    ("mnist", 300, 0, 0.2), ("mnist", 1000, 2, 0.25), ("digits", None, 0, 0.2),
    ("digits", None, 5, 0.1)])
def test_offline_splits_are_the_protocols_index_for_index(name, limit, seed, val_fraction):
    data = load_data(name, image_size=16, seed=seed, limit=limit, val_fraction=val_fraction)
    train, val, test = _protocol_today(name, limit, seed, val_fraction)
    assert torch.equal(data.train.indices, train)
    assert torch.equal(data.val.indices, val)
    assert torch.equal(data.test.indices, test)
    assert data.train.base is data.val.base is data.test.base
    assert torch.equal(data.train.labels(), offline_images(name)[1][train])
    assert len(data.train) + len(data.val) == (limit or len(data.train) + len(data.val))


def test_sources_say_where_each_split_came_from():
    data = load_data("mnist", limit=100, seed=1)
    assert set(data.sources) == {"train", "val", "test"}
    assert "test share" in data.sources["test"] and "no official test split" in data.sources["test"]
    assert "seed 1" in data.sources["test"] and "limit: 100 of 1000" in data.sources["test"]
    assert "validation share" in data.sources["train"] and "limit: 100" in data.sources["train"]
    assert data.sources["val"].startswith("a 20% stratified validation share (seed 1) carved")


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
    assert len(data.train) + len(data.val) == len(data.test) == 50  # validation from the 50
    both = torch.cat([_labels(data.train), _labels(data.val)])
    assert torch.bincount(both, minlength=10).tolist() == [5] * 10
    assert torch.bincount(_labels(data.test), minlength=10).tolist() == [5] * 10
    assert torch.equal(data.train.indices, load_data("mnist", limit=50).train.indices)
    faces = load_data("faces", limit=1000)
    assert (len(faces.train), len(faces.val), len(faces.test)) == (128, 32, 40)


def test_a_limit_too_small_to_carve_validation_is_named():
    with pytest.raises(ValueError, match=r"limit=15.*at least 2 images per class") as info:
        load_data("mnist", limit=15)
    assert "has 1" in str(info.value)


def test_augment_is_random_for_train_only_and_can_be_turned_off():
    data = load_data("mnist", image_size=32)
    assert not torch.equal(data.train[0][0], data.train[0][0])
    assert torch.equal(data.val[0][0], data.val[0][0])
    assert torch.equal(data.test[0][0], data.test[0][0])
    plain = load_data("mnist", image_size=32, augment=False)
    assert torch.equal(plain.train[0][0], plain.train[0][0])


def test_synthetic_is_seeded_aliased_and_learnable():
    data = load_data("dummy", image_size=16, augment=False)
    assert data.name == "synthetic"
    assert (len(data.train), len(data.val), len(data.test)) == (260, 60, 80)
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


def test_unknown_name_suggests():
    with pytest.raises(ValueError, match="did you mean 'mnist'") as info:
        load_data("mnsit")
    assert "cifar10" in str(info.value) and "path" in str(info.value)


@pytest.mark.parametrize(("kwargs", "bad"), [
    ({"channels": 2}, "channels"), ({"image_size": 4}, "image_size"),
    ({"val_fraction": 0.0}, "val_fraction"), ({"val_fraction": 1.0}, "val_fraction"),
    ({"test_fraction": 0.0}, "test_fraction"), ({"test_fraction": 1.5}, "test_fraction"),
    ({"limit": 0}, "limit"), ({"mean": (0.1, 0.2)}, "mean"), ({"std": 0.0}, "std"),
])
def test_bad_arguments(kwargs, bad):
    value = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=bad) as info:
        load_data("synthetic", **kwargs)
    assert str(value) in str(info.value)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "flowers102", "pets"])
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
    assert {"cifar10", "cifar100", "flowers102", "pets"} <= set(sets)
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


# ---------------------------------------------------------------- online sets, their splits


_MADE = []  # (constructor arguments, download) of every _FakeOnline


class _FakeOnline(torch.utils.data.Dataset):
    """Stands in for a torchvision set whose files are cached: 4 classes, labels in targets,
    40 items in a training split, 12 in the others."""

    def __init__(self, root, download, **split):
        self.classes = ["a", "b", "c", "d"]
        training = split in ({"train": True}, {"split": "train"}, {"split": "trainval"})
        self.targets = [i % 4 for i in range(40 if training else 12)]
        _MADE.append((split, download))

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.zeros(3, 4, 4), self.targets[i]


@pytest.mark.parametrize(("name", "official"), [
    ("cifar10", {"train": "train", "test": "test"}),
    ("cifar100", {"train": "train", "test": "test"}),
    ("flowers102", {"train": "train", "val": "val", "test": "test"}),
    ("pets", {"train": "trainval", "test": "test"})])
def test_online_sets_use_their_official_splits(monkeypatch, tmp_path, name, official):
    from kdna.data import classification

    spec = classification._ONLINE[name]
    monkeypatch.setitem(classification._ONLINE, name, (_FakeOnline, *spec[1:]))
    (tmp_path / spec[3]).mkdir(parents=True)  # the files are cached: nothing downloads
    for split, n in (("trainval", 40), ("test", 12)) if name == "pets" else ():
        lines = [f"breed_{i} {i % 4 + 1} 1 1" for i in range(n)]  # pets' labels: annotations
        (tmp_path / spec[3] / f"{split}.txt").write_text("\n".join(lines))
    _MADE.clear()
    data = load_data(name, root=tmp_path, image_size=8)
    assert [download for _, download in _MADE] == [False] * len(official)
    for role in ("train", "val", "test"):
        if role in official:
            assert data.sources[role].startswith(f"{name}'s official {official[role]} split")
    if "val" in official:  # every split as it is
        assert (len(data.train), len(data.val)) == (40, 12)
        assert data.val.base is not data.train.base
    else:  # validation carved out of the official training split
        assert data.val.base is data.train.base and len(data.train) + len(data.val) == 40
        assert "carved from" in data.sources["val"] and official["train"] in data.sources["val"]
    assert data.test.base is not data.train.base and len(data.test) == 12


def test_pets_labels_come_from_its_annotation_files_without_reading_an_image(tmp_path):
    from torchvision import datasets

    pets = tmp_path / "oxford-iiit-pet"
    (pets / "images").mkdir(parents=True)  # empty: an image read would fail
    (pets / "annotations").mkdir()
    breeds = ["Abyssinian", "american_bulldog", "Bengal"]
    for split, per_class in (("trainval", 4), ("test", 2)):
        lines = [f"{breed}_{i} {label + 1} 1 1" for i in range(per_class)
                 for label, breed in enumerate(breeds)]
        (pets / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    data = load_data("pets", root=tmp_path, image_size=8, val_fraction=0.25)
    assert data.classes == ["Abyssinian", "American Bulldog", "Bengal"]
    assert (len(data.train), len(data.val), len(data.test)) == (9, 3, 6)
    assert data.val.labels().tolist() == [0, 1, 2] and data.test.base.targets == [0, 1, 2] * 2
    # torchvision keeps its labels private; the test notices when its numbering moves
    theirs = getattr(datasets.OxfordIIITPet(tmp_path, split="trainval"), "_labels", None)
    assert data.train.base.targets == [0, 1, 2] * 4 == (theirs or [0, 1, 2] * 4)


# ---------------------------------------------------------------- folders


def _write_images(folder, classes, per_class, grey=False, size=(20, 30)):
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size if grey else (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def test_a_folder_of_photos_is_cropped_and_one_of_small_images_is_resized_whole(tmp_path):
    _write_images(tmp_path / "photos", ("cat", "dog"), 3, size=(90, 120))
    _write_images(tmp_path / "small", ("cat", "dog"), 3, size=(28, 28))
    photos, small = (load_data(tmp_path / n, image_size=16) for n in ("photos", "small"))
    assert not photos.small and small.small
    assert "CenterCrop" in repr(photos.val.transform)
    assert "CenterCrop" not in repr(small.val.transform)


def test_flip_follows_the_data_unless_told(tmp_path):
    _write_images(tmp_path / "f", ("cat", "dog"), 3, size=(28, 28))
    assert load_data(tmp_path / "f").train.transform.transforms[0].flip
    assert not load_data(tmp_path / "f", flip=False).train.transform.transforms[0].flip
    assert not load_data("digits").train.transform.transforms[0].flip
    _write_images(tmp_path / "photos", ("cat", "dog"), 3, size=(90, 120))
    assert "RandomHorizontalFlip" in repr(load_data(tmp_path / "photos").train.transform)
    assert "RandomHorizontalFlip" not in repr(
        load_data(tmp_path / "photos", flip=False).train.transform)


def _layout(root, splits, classes=("cat", "dog"), per_class=5):
    for split in splits:
        _write_images(root / split if split else root, classes, per_class)
    return root


@pytest.mark.parametrize(("splits", "sizes", "sources"), [
    ([""], (8, 2, None), ("the class folders, less the validation share", "carved from the "
                          "class folders", "none: the folder has no test/ folder")),
    (["train"], (8, 2, None), ("train/, less the validation share", "carved from train/",
                               "none: the folder has no test/ folder")),
    (["train", "val"], (10, 10, None), ("train/", "val/", "none: the folder has no test/ folder")),
    (["train", "test"], (8, 2, 10), ("train/, less the validation share", "carved from train/",
                                     "test/")),
    (["train", "val", "test"], (10, 10, 10), ("train/", "val/", "test/")),
])
def test_every_folder_layout(tmp_path, splits, sizes, sources):
    data = load_data(_layout(tmp_path, splits), image_size=12)
    assert data.classes == ["cat", "dog"] and data.name == str(tmp_path)
    assert data.small  # 30x20 images: resized whole, as small images, not cropped as photos
    got = (len(data.train), len(data.val), None if data.test is None else len(data.test))
    assert got == sizes
    for role, source in zip(("train", "val", "test"), sources, strict=True):
        assert source in data.sources[role]
    for split in (data.train, data.val, data.test):
        if split is not None:
            assert sorted(set(split.labels().tolist())) == [0, 1]
            image, _ = split[len(split) - 1]
            assert image.shape == (3, 12, 12) and image.dtype == torch.float32
    if data.test is not None:
        paths = {data.test.base.samples[i][0] for i in data.test.indices}
        assert all("/test/" in p for p in paths)
        train = {data.train.base.samples[i][0] for i in data.train.indices}
        assert not paths & train


def test_image_folder_with_train_and_val(tmp_path):
    _write_images(tmp_path / "train", ["cat", "dog"], 3)
    _write_images(tmp_path / "val", ["cat", "dog"], 2, grey=True)
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints").mkdir()
    _write_images(tmp_path / "train" / "cat" / ".ipynb_checkpoints", ["old"], 2)  # not images
    _write_images(tmp_path / "val" / "dog", [".cache"], 1)
    (tmp_path / "notes.txt").write_text("a file beside the splits is not a split")
    data = load_data(tmp_path, image_size=16)
    assert data.classes == ["cat", "dog"] and (len(data.train), len(data.val)) == (6, 4)
    assert data.test is None
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
    other = load_data(str(tmp_path), image_size=12, seed=2)
    assert not torch.equal(other.val.indices.sort().values, data.val.indices.sort().values)


def test_limit_on_a_folder_caps_each_split_before_validation_is_carved(tmp_path):
    _layout(tmp_path, ["train", "test"], classes=("a", "b", "c", "d"), per_class=10)
    data = load_data(tmp_path, limit=16)
    assert len(data.train) + len(data.val) == 16 and len(data.test) == 16
    assert torch.bincount(data.val.labels(), minlength=4).tolist() == [1] * 4
    assert torch.bincount(data.test.labels(), minlength=4).tolist() == [4] * 4
    assert "limit: 16 of 40" in data.sources["train"]


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_data(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_data(tmp_path / "nowhere")


@pytest.mark.parametrize(("splits", "there"), [
    (["val"], "has val/ but no train/"), (["test"], "has test/ but no train/"),
    (["val", "test"], "has val/ and test/ but no train/")])
def test_split_folders_without_train(tmp_path, splits, there):
    with pytest.raises(ValueError, match=there) as info:
        load_data(_layout(tmp_path, splits))
    assert str(tmp_path) in str(info.value) and "<root>/<class>/<image>" in str(info.value)


def test_a_folder_beside_train_that_is_not_a_split(tmp_path):
    _layout(tmp_path, ["train", "validation"])
    with pytest.raises(ValueError, match=r"train/ beside \['validation'\]"):
        load_data(tmp_path)


def test_an_empty_folder_and_a_file(tmp_path):
    with pytest.raises(ValueError, match="no class folder") as info:
        load_data(tmp_path)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        load_data(tmp_path / "file.png")
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(ValueError, match=r"no class folder in .*train"):
        load_data(tmp_path)


@pytest.mark.parametrize("splits", [[""], ["train", "test"]])
def test_a_single_class_is_named(tmp_path, splits):
    _layout(tmp_path, splits, classes=("only",))
    with pytest.raises(ValueError, match=r"single class folder, 'only'.*at least 2 classes"):
        load_data(tmp_path)


def test_class_folders_that_differ_between_splits_are_named(tmp_path):
    _write_images(tmp_path / "train", ["cat", "dog", "owl"], 2)
    _write_images(tmp_path / "val", ["cat", "dog"], 2)
    _write_images(tmp_path / "test", ["cat", "emu", "owl"], 2)
    with pytest.raises(ValueError, match="different class folders") as info:
        load_data(tmp_path)
    message = str(info.value)
    assert "train/ lacks ['emu']" in message and "val/ lacks ['emu', 'owl']" in message
    assert "test/ lacks ['dog']" in message and str(tmp_path) in message


@pytest.mark.parametrize("splits", [[""], ["train", "test"]])
def test_a_class_too_small_to_carve_validation_is_named(tmp_path, splits):
    _layout(tmp_path, splits)
    base = tmp_path / splits[0]
    for extra in range(1, 5):
        (base / "cat" / f"{extra}.png").unlink()
    with pytest.raises(ValueError, match=r"at least 2 images per class") as info:
        load_data(tmp_path)
    message = str(info.value)
    assert "'cat' has 1" in message and "'dog'" not in message and str(base) in message
    if splits != [""]:  # with val/ nothing is carved: one image per class is enough
        _write_images(tmp_path / "val", ["cat", "dog"], 1)
        assert len(load_data(tmp_path).train) == 6


@pytest.mark.parametrize("bad_images", ["error", "skip"])
def test_an_empty_class_folder_is_named(tmp_path, bad_images):
    _layout(tmp_path, ["train", "test"], classes=("cat", "dog", "owl"))
    for image in (tmp_path / "test" / "owl").iterdir():
        image.unlink()
    (tmp_path / "test" / "owl" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"\['owl'\] of .*test.* hold no") as info:
        load_data(tmp_path, bad_images=bad_images)
    assert ".png" in str(info.value)


def test_a_class_of_unreadable_images_is_empty_once_they_are_skipped(tmp_path):
    _layout(tmp_path, ["train", "test"])
    for image in (tmp_path / "train" / "dog").iterdir():
        image.write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 5"), pytest.raises(
            ValueError, match=r"\['dog'\] of .*train.* hold no readable image"):
        load_data(tmp_path, bad_images="skip")


# ---------------------------------------------------------------- source keys


def test_the_key_of_a_name_is_its_canonical_name():
    from kdna.data import source_key

    assert source_key("mnist") == "mnist" and source_key(" Dummy ") == "synthetic"
    assert source_key("cifar10") == "cifar10"  # nothing is downloaded or read
    with pytest.raises(ValueError, match="did you mean 'mnist'"):
        source_key("mnsit")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        source_key("./nowhere")


def test_the_key_of_a_folder_follows_its_files_not_its_path(tmp_path):
    import os
    import shutil

    from kdna.data import source_key

    folder = _layout(tmp_path / "mine", ["train", "test"])
    key = source_key(folder)
    assert len(key) == 16 and int(key, 16) >= 0 and source_key(str(folder)) == key
    moved = folder.rename(tmp_path / "renamed")
    assert source_key(moved) == key
    copy = shutil.copytree(moved, tmp_path / "elsewhere" / "copy")  # times kept
    assert source_key(copy) == key
    (copy / ".ipynb_checkpoints").mkdir()
    (copy / "train" / ".DS_Store").write_bytes(b"hidden")
    assert source_key(copy) == key  # hidden files are not data
    image = copy / "train" / "cat" / "0.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    touched = source_key(copy)
    assert touched != key
    shutil.copy2(image, copy / "train" / "cat" / "new.png")
    assert source_key(copy) not in (key, touched)
    assert source_key(moved) == key  # the original is untouched


# ---------------------------------------------------------------- example folders


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("name", "classes", "size"), [
    ("digits", [str(d) for d in range(10)], 28), ("faces", ["face", "non-face"], 25)])
def test_an_example_folder_is_real_images_in_the_train_test_layout(tmp_path, name, classes,
                                                                    size):
    from kdna.data import write_example_folder

    folder = write_example_folder(tmp_path, name, per_class=4, test_per_class=2, seed=1)
    assert folder.parent == tmp_path and folder.name.startswith(name)
    assert sorted(p.name for p in folder.iterdir()) == ["README.txt", "test", "train"]
    for split, count in (("train", 4), ("test", 2)):
        assert sorted(p.name for p in (folder / split).iterdir()) == classes
        for cls in classes:
            files = list((folder / split / cls).iterdir())
            assert len(files) == count and all(f.suffix == ".png" for f in files)
            with Image.open(files[0]) as image:
                assert image.size == (size, size) and image.mode == "L"
    train_names = {p.relative_to(folder / "train") for p in (folder / "train").rglob("*.png")}
    test_names = {p.relative_to(folder / "test") for p in (folder / "test").rglob("*.png")}
    assert not train_names & test_names  # no image in both
    data = load_data(folder, image_size=16)
    assert data.classes == classes and data.sources["test"] == "test/"
    assert len(data.train) + len(data.val) == 4 * len(classes)
    assert len(data.test) == 2 * len(classes)
    assert data.test[0][0].shape == (3, 16, 16)


def test_example_images_are_the_packaged_ones(tmp_path):
    from kdna.data import write_example_folder

    images, labels, _ = offline_images("mnist")
    root = write_example_folder(tmp_path, "digits", per_class=2, test_per_class=1)
    for path in (root / "train").rglob("*.png"):
        index = int(path.stem)
        with Image.open(path) as image:
            assert np.array_equal(np.asarray(image), images[index, 0].numpy())
        assert str(int(labels[index])) == path.parent.name


def test_an_example_folder_is_deterministic_and_reused(tmp_path, monkeypatch):
    from kdna.data import write_example_folder

    a = write_example_folder(tmp_path / "a", per_class=3, test_per_class=2, image_size=32)
    b = write_example_folder(tmp_path / "b", per_class=3, test_per_class=2, image_size=32)
    assert a.name == b.name and _files(a) == _files(b)
    with Image.open(next((a / "test").rglob("*.png"))) as image:
        assert image.size == (32, 32)
    other = write_example_folder(tmp_path / "a", per_class=3, test_per_class=2, seed=1,
                                 image_size=32)
    assert other != a and _files(other).keys() != _files(a).keys()  # another draw
    before = {p: p.stat().st_mtime_ns for p in a.rglob("*")}

    def no_write(*args, **kwargs):
        raise AssertionError("a complete example folder was written again")

    monkeypatch.setattr(Image.Image, "save", no_write)
    assert write_example_folder(tmp_path / "a", per_class=3, test_per_class=2,
                                image_size=32) == a
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*")} == before


def test_an_interrupted_example_folder_leaves_nothing_behind(tmp_path, monkeypatch):
    from kdna.data import write_example_folder

    save, calls = Image.Image.save, []

    def full_disk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise OSError(28, "No space left on device")
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_example_folder(tmp_path, "faces", per_class=4, test_per_class=2)
    assert list(tmp_path.iterdir()) == []  # neither a half folder nor its temporary one
    monkeypatch.setattr(Image.Image, "save", save)
    folder = write_example_folder(tmp_path, "faces", per_class=4, test_per_class=2)
    assert len(list(folder.rglob("*.png"))) == 12 and list(tmp_path.iterdir()) == [folder]


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"name": "photos"}, "photos"), ({"per_class": 1}, "per_class"),
    ({"test_per_class": 0}, "test_per_class"), ({"image_size": 4}, "image_size"),
    ({"name": "faces", "per_class": 90, "test_per_class": 20}, r"at most 100, got 90 \+ 20")])
def test_example_folder_arguments_are_checked(tmp_path, kwargs, named):
    from kdna.data import write_example_folder

    with pytest.raises(ValueError, match=named):
        write_example_folder(tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []
