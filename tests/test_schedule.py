"""kdna.train.schedule: the optimiser and learning-rate schedule both training loops share."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kdna.train.sampler import EpochSampler, epoch_seed
from kdna.train.schedule import build_optimizer, warmup_cosine


def test_warmup_is_linear_and_reaches_the_peak_on_its_last_step():
    factor = warmup_cosine(10, 4)
    assert [factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factor(4) == pytest.approx(1.0)  # the cosine starts at the peak
    assert all(factor(s) > factor(s + 1) for s in range(4, 10))  # then decays


def test_cosine_ends_at_the_floor_and_stays_there():
    factor = warmup_cosine(10, 2, floor=0.1)
    assert factor(10) == pytest.approx(0.1) and factor(50) == pytest.approx(0.1)
    midway = 2 + (10 - 2) / 2
    assert factor(int(midway)) == pytest.approx(0.1 + 0.9 * 0.5)  # cos(pi / 2) = 0
    assert warmup_cosine(8, 0)(8) == pytest.approx(0.0)  # default floor 0, no warm-up
    assert warmup_cosine(8, 0)(0) == pytest.approx(1.0)


def test_constant_after_warmup():
    factor = warmup_cosine(10, 3, cosine=False)
    assert [factor(s) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert {factor(s) for s in range(3, 30)} == {1.0}


def test_offset_starts_part_way_through_the_schedule():
    whole, late = warmup_cosine(20, 5), warmup_cosine(20, 5, offset=7)
    assert [late(s) for s in range(13)] == pytest.approx([whole(s + 7) for s in range(13)])


def test_a_lambda_lr_follows_the_factor():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(6, 2, floor=0.25))
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:2] == pytest.approx([0.2, 0.4])
    assert lrs[6] == pytest.approx(0.1)  # 0.4 * floor after the last step
    expected = [0.4 * (0.25 + 0.75 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 4)))
                for s in range(2, 7)]
    assert lrs[2:] == pytest.approx(expected)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"total_steps": 0, "warmup_steps": 0}, "total_steps must be a positive integer"),
    ({"total_steps": 5, "warmup_steps": -1}, "warmup_steps must be an integer of at least 0"),
    ({"total_steps": 5, "warmup_steps": 1, "floor": -0.5}, "floor must be a number"),
    ({"total_steps": 5, "warmup_steps": 1, "offset": 1.5}, "offset must be an integer"),
])
def test_bad_schedules_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        warmup_cosine(**kwargs)


def test_build_optimizer_sgd_and_adamw():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    model[0].requires_grad_(False)
    sgd = build_optimizer(model.parameters(), "sgd", lr=0.1, momentum=0.8, weight_decay=1e-4)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.8, 1e-4)
    assert [id(p) for p in group["params"]] == [id(p) for p in model[1].parameters()]
    adamw = build_optimizer(model.parameters(), "adamw", lr=1e-3, momentum=0.85,
                            weight_decay=0.0)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["betas"] == (0.85, 0.999)


def test_build_optimizer_errors():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        build_optimizer(frozen.parameters(), "sgd", lr=0.1, momentum=0.9, weight_decay=0.0)
    with pytest.raises(ValueError, match=r"optimizer must be one of .*'lion'"):
        build_optimizer(nn.Linear(2, 2).parameters(), "lion", lr=0.1, momentum=0.9,
                        weight_decay=0.0)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        build_optimizer(nn.Linear(2, 2).parameters(), "sgd", lr=0.0, momentum=0.9,
                        weight_decay=0.0)


def test_epoch_seed_and_the_sampler_that_uses_it():
    assert epoch_seed(0, 1) != epoch_seed(1, 0)
    sampler = EpochSampler(10, seed=3)
    sampler.set_epoch(2)
    order = list(sampler)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(epoch_seed(3, 2)))
    assert order == expected.tolist() and sorted(order) == list(range(10))
    sampler.set_epoch(2, start=4)
    assert list(sampler) == order[4:] and len(sampler) == 6
