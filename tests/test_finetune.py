"""kdna.finetune: the one fine-tuning path, its defaults, its task files, its training rules."""

from __future__ import annotations

import copy
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

import kdna
from kdna.finetune import committed
from kdna.finetune.methods import METHODS
from kdna.finetune.results import read_csv
from kdna.nn import ChannelGate, KernelChild
from kdna.train.interrupt import TrainingInterrupted
from kdna.train.schedule import build_optimizer, weight_decay_groups

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
COLOURS = {"blue": (40, 60, 200), "red": (200, 50, 40), "yellow": (210, 200, 40)}


class Tiny(nn.Module):
    """A small pretrained-looking network: a 3x3 and a 1x1 convolution, BatchNorms, a head."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, classes)
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.relu(self.bn2(self.conv2(x))).mean(dim=(2, 3)))


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return Tiny().eval()


def _write(folder: Path, per_class: int, size: int = 80, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = torch.randint(-40, 40, (size, size, 3), generator=gen)
            pixels = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


LAYOUTS = {"classes": (), "train+val": ("train", "val"), "train+test": ("train", "test"),
           "train+val+test": ("train", "val", "test")}


def _folder(root: Path, layout: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    splits = LAYOUTS[layout]
    if not splits:
        _write(root, 12)
    for i, split in enumerate(splits):
        _write(root / split, 12 if split == "train" else 5, seed=i)
    return root


def _quick(model, data, **kw):
    kw = {"mean": MEAN, "std": STD, "image_size": 16, "steps": 4, "batch_size": 8,
          "lr": 0.01, "progress": False, **kw}
    if isinstance(model, str):
        kw.pop("mean"), kw.pop("std")
    return kdna.finetune(model, data, **kw)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_folder_layout_fine_tunes_and_says_where_each_split_came_from(layout, tmp_path):
    result = _quick(_tiny(), _folder(tmp_path / layout, layout), method="kdna_static")
    assert result.classes == sorted(COLOURS) and result.steps == 4
    assert (result.test is not None) == ("test" in LAYOUTS[layout])
    if result.test is None:
        assert result.sources["test"].startswith("none") and "no test split" in str(result)
    if "val" not in LAYOUTS[layout]:
        assert "carved" in result.sources["val"]
    assert 0 <= result.reported.top1 <= 1 and result.reported.confusion.sum() > 0
    assert len(result.history) >= 1 and "val_top1" in result.history[-1]
    assert not result.model.training


def test_a_registered_arch_brings_its_weights_and_normalisation(tmp_path):
    folder = _folder(tmp_path / "f", "train+test")
    result = _quick("efficientnet_lite0", folder, image_size=32, steps=2)
    lite = kdna.pretrained_config("efficientnet_lite0")
    assert result.config.mean == lite.mean and result.arch == "efficientnet_lite0"
    assert result.method.name == committed.default_method() and result.method.in_place
    image, _ = result.splits.val[0]  # normalised with Lite0's mean and std, not ImageNet's
    assert image.min() >= -1.0 - 1e-6 and image.max() <= 1.0 + 1e-6 and image.min() < -0.2


def test_data_sets_need_their_normalisation_from_somewhere():
    data = [TensorDataset(torch.randn(16, 3, 16, 16), torch.arange(16) % 2) for _ in range(2)]
    result = kdna.finetune(_tiny(), data, method="norms_head", mean=MEAN, std=STD, steps=2,
                           batch_size=8, lr=0.01, classes=["no", "yes"], progress=False)
    assert result.classes == ["no", "yes"] and result.test is None and result.data is None
    with pytest.raises(ValueError, match=r"Tiny.*mean= and std="):
        kdna.finetune(_tiny(), data, steps=2, progress=False)


def test_the_search_chooses_on_validation_and_reports_every_rate(tmp_path):
    folder = _folder(tmp_path / "f", "train+test")
    result = _quick(_tiny(), folder, method="norms_head", lr="search", lrs=(1e-4, 0.05))
    assert set(result.lr_search) == {1e-4, 0.05}
    assert result.lr == max(result.lr_search, key=lambda lr: (result.lr_search[lr], -lr))
    assert result.test is not None  # read once, for the chosen rate


@pytest.mark.parametrize("bad, message", [
    ({"lr": -1.0}, "lr must be a positive number"), ({"lr": "best"}, "lr must be one of"),
    ({"steps": 2, "epochs": 1}, "steps or epochs, not both"), ({"method": "lorra"}, "lorra"),
    ({"batchnorm": "moving"}, "batchnorm must be one of")])
def test_bad_arguments_name_themselves(bad, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        _quick(_tiny(), _folder(tmp_path / "f", "classes"), **bad)


def test_defaults_come_from_the_committed_table():
    csv = ROOT / committed.committed()["source"]
    rows = read_csv(csv)
    in_place = [m.name for m in METHODS.values() if m.in_place]
    assert committed.choices_from_rows(rows, source=committed.committed()["source"],
                                       in_place=in_place) == committed.committed()
    means = {}  # validation top-1 at the chosen rate: the default is chosen on validation
    for row in rows:
        if row["method"] in in_place and row["lr"] is not None:
            means.setdefault(row["method"], []).append(row["val_top1_by_lr"][row["lr"]])
    assert committed.default_method() == max(means, key=lambda m: sum(means[m]) / len(means[m]))
    gated = {m: v for m, v in means.items() if METHODS[m].gated}
    assert set(gated) == {"kdna_gates_4", "kdna_gates_16"}
    assert committed.default_method(gated=True) == max(gated, key=lambda m: sum(gated[m]))
    for row in rows:
        if row["lr"] is not None:
            assert committed.default_lr(row["method"], row["data"]) == row["lr"]
    grids = [r["val_top1_by_lr"] for r in rows if r["method"] == "lora"]
    best = max(grids[0], key=lambda lr: (sum(g[lr] for g in grids), -lr))
    assert committed.default_lr("lora", "my_photos/") == best  # other data: the mean's best


def test_weight_decay_falls_on_weights_only():
    model = _tiny()
    kdna.convert(model, kdna.ConvertConfig.adapters(gate_reduction=4, gate_max_hidden=None),
                 example_inputs=torch.randn(2, 3, 16, 16))
    model.requires_grad_(True)
    decayed, free = weight_decay_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.05 and free["weight_decay"] == 0.0
    decayed_names = {names[id(p)] for p in decayed["params"]}
    assert decayed_names == {"conv1.parent.weight", "conv2.parent.weight", "fc.weight"}
    gates = {id(p) for m in model.modules() if isinstance(m, ChannelGate) for p in m.parameters()}
    scales = {id(m.filter_scale) for m in model.modules() if isinstance(m, KernelChild)}
    free_ids = {id(p) for p in free["params"]}
    assert gates and scales and gates | scales <= free_ids
    assert {id(p) for p in (model.bn1.weight, model.bn1.bias, model.fc.bias)} <= free_ids
    optimizer = build_optimizer(model, "adamw", lr=0.1, momentum=0.9, weight_decay=0.05,
                                decay_on="weights")
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    with pytest.raises(TypeError, match="needs the module"):
        build_optimizer(model.parameters(), "sgd", lr=0.1, momentum=0.9, weight_decay=0.1,
                        decay_on="weights")


@pytest.mark.parametrize("batchnorm", ["frozen", "train"])
def test_fine_tuning_freezes_the_statistics_by_default(batchnorm, tmp_path):
    base = _tiny()
    result = _quick(base, _folder(tmp_path / "f", "classes"), method="norms_head",
                    batchnorm=batchnorm)
    same = torch.equal(result.model.bn1.running_mean, base.bn1.running_mean)
    assert same == (batchnorm == "frozen")
    assert not torch.equal(result.model.bn1.weight, base.bn1.weight)  # the norms trained


@pytest.mark.parametrize("method", ["kdna_gates_4", "norms_head", "lora", "full"])
def test_a_saved_task_loads_onto_a_fresh_base_with_equal_outputs(method, tmp_path):
    folder = _folder(tmp_path / "f", "train+test")
    result = _quick(_tiny(), folder, method=method)
    saved = result.save(tmp_path / "task")
    task = kdna.load_task(saved, base=_tiny())
    batch = torch.stack([result.splits.test[i][0] for i in range(6)])
    with torch.no_grad():
        torch.testing.assert_close(task.model(batch), result.model(batch), rtol=0, atol=1e-5)
    images = sorted((folder / "test" / "red").iterdir())[:3]
    assert task.predict(images, topk=2) == result.predict(images, topk=2)
    with pytest.raises(ValueError, match="not a registered arch"):
        kdna.load_task(saved)


def _networks():
    import torchvision

    def randomised(model):
        torch.manual_seed(0)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        return model.eval()

    return {"resnet18": lambda: randomised(torchvision.models.resnet18()),
            "mobilenet_v3_small": lambda: randomised(torchvision.models.mobilenet_v3_small()),
            "mnasnet0_5": lambda: randomised(torchvision.models.mnasnet0_5())}


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "mnasnet0_5"])
def test_save_load_predict_on_torchvision_networks(name, tmp_path):
    build = _networks()[name]
    torch.manual_seed(0)
    base = build()
    folder = _folder(tmp_path / "f", "train+test")
    result = _quick(base, folder, method="kdna_gates_4", image_size=32, steps=2)
    task = kdna.load_task(result.save(tmp_path / "task"), base=copy.deepcopy(base))
    images = sorted((folder / "test" / "blue").iterdir())[:2]
    assert task.predict(images) == result.predict(images)


def test_a_registered_arch_task_needs_no_base(tmp_path):
    folder = _folder(tmp_path / "f", "train+test")
    result = _quick("efficientnet_lite0", folder, image_size=32, steps=2)
    task = kdna.load_task(result.save(tmp_path / "task"))
    images = sorted((folder / "test" / "yellow").iterdir())[:2]
    assert task.predict(images) == result.predict(images)
    assert task.classes == sorted(COLOURS)


class _Interrupting:
    """Items of ``base``; reading item ``at`` sends this process SIGINT (Ctrl-C) once."""

    def __init__(self, base, at: int) -> None:
        self.base, self.at, self.sent = base, at, False

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i == self.at and not self.sent:
            self.sent = True
            signal.raise_signal(signal.SIGINT)
        return self.base[i]


def test_ctrl_c_saves_and_the_same_call_resumes_exactly(tmp_path, monkeypatch):
    from kdna.finetune import runs

    folder = _folder(tmp_path / "f", "train+test")
    unbroken = _quick(_tiny(), folder, method="norms_head", steps=6, out=tmp_path / "a")
    draw = runs.draw

    def interrupted(splits, protocol, seed):
        data, passes = draw(splits, protocol, seed)
        return _Interrupting(data, at=3), passes

    monkeypatch.setattr(runs, "draw", interrupted)
    with pytest.raises(TrainingInterrupted):
        _quick(_tiny(), folder, method="norms_head", steps=6, out=tmp_path / "b")
    monkeypatch.setattr(runs, "draw", draw)
    resumed = _quick(_tiny(), folder, method="norms_head", steps=6, out=tmp_path / "b")
    assert resumed.steps == unbroken.steps == 6
    for a, b in zip(unbroken.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
