"""kdna.train.devices: autocast by compute capability, the gradient scaler, loader workers; and
train_classifier's exact resume with a float16 scaler and with worker processes."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from kdna.train import TrainConfig, autocast_for, load_checkpoint, loader_options, train_classifier
from kdna.train.devices import Precision, loader_workers


@pytest.fixture
def fake_cuda(monkeypatch):
    """CUDA "available" with a chosen compute capability; nothing else of CUDA is touched."""
    def install(capability):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability",
                            lambda device=None: capability)
    return install


@pytest.mark.parametrize("capability, expected", [
    ((7, 5), (True, torch.float16, True)),    # T4: no fast bf16 convolutions, fp16 + scaler
    ((7, 0), (True, torch.float16, True)),    # V100
    ((8, 0), (True, torch.bfloat16, False)),  # A100
    ((9, 0), (True, torch.bfloat16, False)),  # H100
])
def test_autocast_follows_the_compute_capability(fake_cuda, capability, expected):
    fake_cuda(capability)
    assert tuple(autocast_for("cuda")) == expected
    assert tuple(autocast_for()) == expected  # the default device is CUDA when available
    enabled, dtype, use_scaler = autocast_for(torch.device("cuda", 0))
    assert (enabled, dtype, use_scaler) == expected


def test_no_autocast_on_a_cpu(fake_cuda):
    assert autocast_for("cpu") == Precision(False, torch.float32, False)
    fake_cuda((9, 0))  # a GPU elsewhere changes nothing for a CPU run
    assert autocast_for("cpu") == Precision(False, torch.float32, False)
    assert autocast_for("cpu").describe() == "float32 (no autocast)"


def test_explicit_choices_win(fake_cuda):
    fake_cuda((7, 5))
    assert autocast_for("cuda", amp=False) == Precision(False, torch.float32, False)
    assert autocast_for("cuda", dtype="bfloat16") == Precision(True, torch.bfloat16, False)
    assert autocast_for("cpu", amp=True) == Precision(True, torch.bfloat16, False)
    fp16 = autocast_for("cpu", amp=True, dtype=torch.float16)
    assert fp16 == Precision(True, torch.float16, True)
    assert fp16.describe() == "float16 autocast with a gradient scaler"
    with pytest.raises(ValueError, match="dtype"):
        autocast_for("cpu", amp=True, dtype="float64")


def test_the_scaler_and_autocast_follow_the_flags():
    off, fp16 = autocast_for("cpu"), autocast_for("cpu", amp=True, dtype="float16")
    assert not off.grad_scaler("cpu").is_enabled() and fp16.grad_scaler("cpu").is_enabled()
    x = torch.randn(2, 4)
    with off.autocast("cpu"):
        assert (x @ x.T).dtype == torch.float32
    with fp16.autocast("cpu"):
        assert (x @ x.T).dtype == torch.float16


def test_loader_workers_from_the_cpu_count(fake_cuda, monkeypatch):
    assert loader_workers("cpu") == 0
    assert loader_options("cpu") == {"num_workers": 0, "pin_memory": False}
    fake_cuda((8, 0))
    for cpus, workers in ((16, 4), (3, 2), (2, 1), (1, 0)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cpus: set(range(n)),
                            raising=False)
        assert loader_workers("cuda") == workers
    assert loader_options("cuda") == {"num_workers": 0, "pin_memory": True}
    assert loader_options("cuda", workers=3) == {"num_workers": 3, "pin_memory": True}


def _data(n=256):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 8, 8, generator=gen)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long() + 2 * (x[:, 1].mean(dim=(1, 2)) > 0).long()
    cut = n * 3 // 4
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])


class Noisy(Dataset):
    """A random augmentation (noise from torch's global generator), as transforms draw it."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        x, y = self.base[index]
        return x + 0.3 * torch.randn_like(x), y


def _net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
                         nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def _resumes_exactly(tmp_path, train, val, stop, **kw):
    base = {"epochs": 3, "batch_size": 32, "lr": 0.05, "warmup_epochs": 0.5, "progress": False,
            "tensorboard": False}
    whole, parts, resumed = _net(), _net(), _net()
    train_classifier(whole, train, val, TrainConfig(**base, **kw, out_dir=str(tmp_path / "whole")))
    train_classifier(parts, train, val, TrainConfig(**base, **kw, out_dir=str(tmp_path / "parts"),
                                                    max_steps=stop))
    saved = load_checkpoint(tmp_path / "parts" / "last.pt")
    train_classifier(resumed, train, val,
                     TrainConfig(**base, **kw, out_dir=str(tmp_path / "parts")),
                     resume=tmp_path / "parts" / "last.pt")
    same = all(torch.equal(p, q) for p, q in zip(whole.state_dict().values(),
                                                  resumed.state_dict().values(), strict=True))
    return same, saved


@pytest.mark.parametrize("stop", [3, 6])  # mid-epoch, at an epoch's end
def test_float16_with_a_scaler_trains_and_resumes_exactly_on_a_cpu(tmp_path, stop):
    train, val = _data()
    same, saved = _resumes_exactly(tmp_path, train, val, stop, amp=True, amp_dtype="float16")
    assert saved["scaler"]["scale"] > 0 and "_growth_tracker" in saved["scaler"]
    assert same


def test_no_scaler_state_without_float16(tmp_path):
    train, val = _data()
    train_classifier(_net(), train, val, TrainConfig(epochs=1, batch_size=32, progress=False,
                                        tensorboard=False, out_dir=str(tmp_path)))
    assert load_checkpoint(tmp_path / "last.pt")["scaler"] == {}


def test_worker_processes_resume_mid_epoch_exactly(tmp_path):
    train, val = _data()
    same, _ = _resumes_exactly(tmp_path, Noisy(train), val, 3, workers=2)
    assert same
