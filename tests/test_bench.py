"""The measuring harness: what it reports is consistent, and it leaves models as they were."""

import copy
import math

import pytest
import torch
from conftest import TinyNet, randomize
from torch import nn

from kdna import bench


def _conv_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 5))


def test_macs_match_the_analytic_count():
    macs = bench.count_macs(_conv_net().eval(), torch.zeros(2, 3, 6, 6))
    assert macs == 8 * 3 * 9 * 6 * 6 + 8 * 6 * 6 * 5  # per image, not per batch
    assert bench.count_macs(_conv_net().eval(), example_inputs=torch.zeros(1, 3, 6, 6)) == macs


def test_measure_reports_a_consistent_result(device):
    model = _conv_net()
    r = bench.measure(model, (4, 3, 6, 6), name="net", device=str(device), warmup=1, iters=5)
    assert r.name == "net" and r.batch_size == 4 and r.input_size == (3, 6, 6)
    assert r.params == sum(p.numel() for p in model.parameters())
    assert r.latency_p25_ms <= r.latency_ms <= r.latency_p75_ms
    assert math.isclose(r.throughput, 4 / r.latency_ms * 1e3)
    assert r.peak_memory_mb > 0 and r.spread >= 0
    assert r.mode == "inference" and not r.compiled
    expected = torch.cuda.get_device_name(device) if device.type == "cuda" else "threads"
    assert expected in r.device
    row = r.row()
    assert row["input_size"] == "3x6x6" and row["device"] == r.device


def test_peak_memory_grows_with_the_batch():
    model = _conv_net().eval()
    small, large = (bench.peak_memory(lambda b=b: model(torch.zeros(b, 3, 6, 6)))
                    for b in (1, 16))
    assert 0 < small < large
    # at least the first activation: 16 images x 8 channels x 36 pixels x 4 bytes
    assert large >= 16 * 8 * 36 * 4


def test_a_training_step_leaves_the_callers_model_untouched(device):
    torch.manual_seed(0)
    model = randomize(TinyNet())
    before = copy.deepcopy(model.state_dict())
    r = bench.measure(model, (2, 3, 12, 12), device=str(device), mode="train", warmup=1, iters=2)
    assert r.mode == "train" and r.latency_ms > 0
    assert all(torch.equal(before[k], v) if torch.is_tensor(v) else before[k] == v
               for k, v in model.state_dict().items())
    assert model.training  # its mode is untouched too


def test_compare_interleaves_models_and_reads_ratios():
    models = {"small": _conv_net(), "wide": nn.Sequential(nn.Conv2d(3, 64, 3, padding=1),
                                                          nn.Flatten(), nn.LazyLinear(5))}
    models["wide"](torch.zeros(1, 3, 6, 6))  # materialise the lazy layer
    results = bench.compare(models, (2, 3, 6, 6), warmup=0, iters=3, threads=1)
    assert [r.name for r in results] == ["small", "wide"]
    assert torch.get_num_threads() >= 1
    rel = bench.ratios(results, "small")
    assert rel["small"] == 1.0
    assert math.isclose(rel["wide"], results[1].throughput / results[0].throughput)
    with pytest.raises(ValueError, match="'nope' is not among"):
        bench.ratios(results, "nope")


def test_deploy_option_times_the_folded_network_but_counts_the_given_one():
    model = randomize(TinyNet())
    plain = bench.measure(model, (2, 3, 12, 12), warmup=0, iters=1)
    folded = bench.measure(model, (2, 3, 12, 12), warmup=0, iters=1, deploy=True)
    assert plain.params == folded.params == sum(p.numel() for p in model.parameters())
    assert not any(c.is_folded for c in model.children_convs())  # the caller's copy


@pytest.mark.parametrize("bad, message", [
    ({"mode": "serve"}, "mode must be one of"),
    ({"dtype": "int8"}, "dtype must be one of"),
    ({"iters": 0}, "iters must be an integer of at least 1, got 0"),
    ({"warmup": -1}, "warmup must be an integer of at least 0, got -1"),
])
def test_bad_options_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        bench.Options(**bad)


def test_bad_shapes_and_empty_comparisons_are_clear_errors():
    with pytest.raises(ValueError, match="input_shape must be"):
        bench.measure(_conv_net(), (3, 6, 6))
    with pytest.raises(ValueError, match="at least one model"):
        bench.compare({}, (1, 3, 6, 6))
