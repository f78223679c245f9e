"""kdna.train: exact resume, safe checkpoints, stopping on a non-finite loss, DDP on CPU."""

from __future__ import annotations

import csv
import os
import pickle

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from kdna.train import (
    NonFiniteLossError,
    TrainConfig,
    evaluate,
    load_checkpoint,
    save_checkpoint,
    train_classifier,
)


def _data(n=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=gen)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long() + 2 * (x[:, 1].mean(dim=(1, 2)) > 0).long()
    cut = n * 3 // 4
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])


def _net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
                         nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def _config(tmp_path, name, **kw):
    base = {"epochs": 3, "batch_size": 32, "lr": 0.05, "warmup_epochs": 0.5, "progress": False,
            "tensorboard": False, "out_dir": str(tmp_path / name)}
    return TrainConfig(**(base | kw))


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                  b.state_dict().values(), strict=True))


@pytest.mark.parametrize("stop", [3, 6, 10])  # mid-epoch, at an epoch end, in the last epoch
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, stop):
    train, val = _data()
    whole = _net()
    train_classifier(whole, train, val, _config(tmp_path, "whole"))
    interrupted = _net()
    first = train_classifier(interrupted, train, val, _config(tmp_path, "parts", max_steps=stop))
    assert first.steps == stop
    resumed = _net()
    result = train_classifier(resumed, train, val, _config(tmp_path, "parts"),
                              resume=tmp_path / "parts" / "last.pt")
    assert result.steps == 18 and _same_weights(whole, resumed)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]


def test_training_learns_and_logs_csv_and_checkpoints(tmp_path):
    train, val = _data(512)
    model = _net()
    result = train_classifier(model, train, val,
                              _config(tmp_path, "run", epochs=4, tensorboard=True), device="cpu")
    assert result.history[-1]["val_top1"] > 0.6 and result.best_top1 >= 0.6  # fractions
    assert all(0 <= r[k] <= 1 for r in result.history for k in ("train_top1", "val_top1",
                                                                   "val_top5"))
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-9)  # cosine down to eta_min
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "run"))
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    fresh = _net()
    fresh.load_state_dict(best["model"])
    assert evaluate(fresh, val, progress=False).top1 == pytest.approx(best["best_top1"])


def test_warmup_then_cosine_schedule(tmp_path):
    train, _ = _data()
    model = _net()
    result = train_classifier(model, train, None, _config(tmp_path, "s", epochs=4, warmup_epochs=1))
    lrs = [r["lr"] for r in result.history]
    assert lrs[0] == pytest.approx(0.05) and lrs[1] > lrs[2] > lrs[3]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_checkpoints_are_refused_and_left_alone(tmp_path):
    train, val = _data()
    train_classifier(_net(), train, val, _config(tmp_path, "ok", epochs=1))
    good = (tmp_path / "ok" / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        train_classifier(_net(), train, val, _config(tmp_path, "t"), resume=truncated)
    assert truncated.read_bytes() == good[: len(good) // 2]
    assert not (tmp_path / "t").exists()  # nothing was written

    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(pickle.dumps({"format": "kdna-checkpoint", "x": Payload()}))
    with pytest.raises(ValueError, match="possibly pickled code"):
        load_checkpoint(foreign)
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="is not a kdna checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    path = save_checkpoint({"x": torch.ones(2)}, tmp_path / "c.pt")
    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"x": torch.zeros(2)}, path)
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(2))
    assert os.listdir(tmp_path) == ["c.pt"]  # no temporary file left behind


def test_a_non_finite_loss_stops_with_the_last_checkpoint_intact(tmp_path):
    train, val = _data()
    model = _net()
    train_classifier(model, train, val, _config(tmp_path, "n", epochs=1))
    before = (tmp_path / "n" / "last.pt").read_bytes()
    with torch.no_grad():
        model[-1].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 1, step 1.*intact"):
        train_classifier(model, train, val, _config(tmp_path, "n", epochs=2))
    assert (tmp_path / "n" / "last.pt").read_bytes() == before


def test_bad_configs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"optimizer must be one of .*, got 'adam'"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr must be a positive number, got 0"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="warmup_epochs must be a number of at least 0"):
        TrainConfig(warmup_epochs=-1)
    train, val = _data(32)
    with pytest.raises(ValueError, match=r"smaller than one batch \(64\)"):
        train_classifier(_net(), train, val, _config(tmp_path, "b", batch_size=64))


def _ddp_worker(rank, world, tmp, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank,
                            world_size=world)
    try:
        train, val = _data(512)
        model = _net()
        train_classifier(model, train, val,
                         TrainConfig(epochs=2, batch_size=16, lr=0.05, progress=False,
                                     tensorboard=False, out_dir=f"{tmp}/ddp"), device="cpu")
        torch.save(model.state_dict(), f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_on_two_cpu_processes_ends_with_identical_weights(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path), None), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["5.weight"], _net().state_dict()["5.weight"])  # it trained
    assert (tmp_path / "ddp" / "last.pt").exists()  # rank 0 wrote the checkpoint


def test_start_epoch_skips_ahead_in_the_schedule(tmp_path):
    train, _ = _data()
    result = train_classifier(_net(), train, None, _config(tmp_path, "se", epochs=4, start_epoch=3))
    assert [r["epoch"] for r in result.history] == [4] and result.steps == 6
    assert result.history[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # the cosine's last epoch


def _evaluate_worker(rank, world, tmp, sizes):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous_eval", rank=rank,
                            world_size=world)
    try:
        _, val = _data(sizes[0] * 4)
        tiny = TensorDataset(val.tensors[0][:1], val.tensors[1][:1])
        model = _net()
        # train_classifier evaluates its DDP-wrapped model
        wrapped = nn.parallel.DistributedDataParallel(_net())
        found = {"plain": evaluate(model, val, batch_size=16, progress=False),
                 "ddp": evaluate(wrapped, val, batch_size=16, progress=False),
                 "tiny": evaluate(model, tiny, batch_size=16, progress=False)}  # rank 1: none
        torch.save({k: vars(m) for k, m in found.items()}, f"{tmp}/metrics{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_evaluation_counts_every_sample_once(tmp_path):
    _, val = _data(65 * 4)  # 65 validation samples: an odd number, shards of 33 and 32
    assert len(val) == 65
    whole = vars(evaluate(_net(), val, batch_size=16, progress=False))
    tiny = vars(evaluate(_net(), TensorDataset(val.tensors[0][:1], val.tensors[1][:1]),
                         progress=False))
    mp.spawn(_evaluate_worker, args=(2, str(tmp_path), (65,)), nprocs=2)
    for rank in (0, 1):
        found = torch.load(tmp_path / f"metrics{rank}.pt", weights_only=True)
        for name, expected in (("plain", whole), ("ddp", whole), ("tiny", tiny)):
            assert found[name] == pytest.approx(expected), (rank, name)
        assert found["plain"]["samples"] == 65 and found["tiny"]["samples"] == 1
