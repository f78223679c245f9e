"""The speed comparison and ``kdna metrics``: every variant builds and is reported."""

import csv
import json

import pytest
import torch

from kdna.bench.variants import (
    VARIANTS,
    comparison_models,
    run_comparison,
    speed_table,
    write_csv,
)
from kdna.cli import main


def test_every_variant_of_resnet18_builds_and_keeps_the_output_shape():
    models = comparison_models("resnet18", num_classes=7, image_size=32)
    assert list(models) == list(VARIANTS)
    x = torch.randn(2, 3, 32, 32)
    for name, model in models.items():
        assert model.eval()(x).shape == (2, 7), name
    sizes = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    assert sizes["kdna"] < sizes["static"] < sizes["odconv1x"] < sizes["odconv4x"]


def test_variants_and_archs_are_checked():
    with pytest.raises(ValueError, match="arch must be one of"):
        comparison_models("vgg16")
    with pytest.raises(ValueError, match=r"unknown variants \['lora'\]"):
        comparison_models("resnet18", ["static", "lora"])
    with pytest.raises(ValueError, match="odconv4x is only built for"):
        comparison_models("mobilenet_v2_1d2", ["odconv4x"])


def test_a_comparison_reports_ratios_to_the_static_network(tmp_path):
    results = run_comparison("mobilenet_v2", (2, 3, 32, 32), ["static", "kdna", "paper"],
                             warmup=0, iters=2, threads=1)
    table = speed_table(results)
    assert table.splitlines()[0].startswith("| model | params (M)")
    static_row = next(line for line in table.splitlines() if line.startswith("| static "))
    assert "| 1.00 |" in static_row
    write_csv(tmp_path / "r.csv", results, extra={"arch": "mobilenet_v2"})
    write_csv(tmp_path / "r.csv", results[:1], extra={"arch": "mobilenet_v2"}, append=True)
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["name"] for r in rows] == ["static", "kdna", "paper", "static"]
    assert float(rows[0]["x_static"]) == 1.0 and rows[1]["arch"] == "mobilenet_v2"


def test_metrics_params_with_the_reference_flags(capsys):
    assert main(["metrics", "--arch", "resnet18", "--customize", "--params",
                 "--image-size", "224"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["paper"]["params"] == 9_240_798  # the reference table: 9.241M
    assert abs(report["paper"]["macs"] / 2283e6 - 1) < 0.01  # and 2283M MACs


def test_metrics_compare_prints_a_table_and_writes_csv(tmp_path, capsys):
    out = tmp_path / "m.csv"
    assert main(["metrics", "--compare", "--variants", "static", "kdna", "dyconv4x",
                 "--iter", "2", "--warmup", "0", "--batch_size", "2", "--image-size", "32",
                 "--num-threads", "1", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "inference, deployed" in text and "threads" in text
    assert [line.split("|")[1].strip() for line in text.splitlines()[4:]] == [
        "static", "kdna", "dyconv4x"]
    assert out.exists()


def test_metrics_gpu_without_cuda_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["metrics", "--gpu", "--latency"]) == 2  # a user error: one line, status 2
    err = capsys.readouterr().err
    assert "--gpu given but no CUDA device" in err and "Traceback" not in err
