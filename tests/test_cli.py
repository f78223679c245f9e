"""The command line: reference flags, train / eval / resume through it, and the demo."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdna.cli import main, parser
from kdna.cli.demo import BASELINE, BEST, COMMITTED, PROTOCOL
from kdna.train.comparison import read_csv

REFERENCE = ["--data", "some/dir", "--ckpt_dir", "c", "--log_dir", "l", "--arch", "resnet50",
             "--customize", "--pretrained", "--epochs", "3", "--warmup-epochs", "1",
             "--start-epoch", "1", "-b", "32", "--lr", "0.05", "--momentum", "0.8", "--wd",
             "4e-5", "--eta-min", "1e-5", "-j", "2", "--seed", "7", "--resume", "r.pt", "-e",
             "--dummy", "--world-size", "1", "--rank", "0", "--dist-url", "tcp://h:1",
             "--dist-backend", "gloo", "--multiprocessing-distributed"]


def test_the_reference_flags_parse_in_both_spellings():
    args = parser().parse_args(["train", *REFERENCE])
    assert (args.arch, args.customize, args.pretrained, args.epochs) == ("resnet50", True, True, 3)
    assert (args.warmup_epochs, args.start_epoch, args.batch_size, args.wd) == (1, 1, 32, 4e-5)
    assert (args.eta_min, args.workers, args.evaluate, args.dummy) == (1e-5, 2, True, True)
    assert args.multiprocessing_distributed and args.dist_url == "tcp://h:1"
    twins = parser().parse_args(["train", "--warmup_epochs", "2", "--eta_min", "0.1",
                                 "--batch-size", "8", "--ckpt-dir", "x", "--log-dir", "y",
                                 "--adapters_only", "--image_size", "32"])
    assert (twins.warmup_epochs, twins.eta_min, twins.batch_size) == (2, 0.1, 8)
    assert (twins.ckpt_dir, twins.log_dir, twins.adapters_only, twins.image_size) == (
        "x", "y", True, 32)


def test_defaults_write_under_runs():
    args = parser().parse_args(["train"])
    assert args.ckpt_dir == "runs/train" and args.log_dir is None
    assert parser().parse_args(["demo"]).out == "runs/demo"


def test_train_then_evaluate_reproduces_the_logged_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["-j", "0", "-b", "32", "--no-progress"]
    main(["train", "--dummy", "--arch", "resnet18", "--customize", "--epochs", "2",
          "--image-size", "32", "--lr", "0.05", "--ckpt_dir", str(out), *common])
    summary = json.loads(capsys.readouterr().out)
    with open(out / "metrics.csv") as f:
        logged = float(list(csv.DictReader(f))[-1]["val_top1"])
    assert summary["val_top1"] == pytest.approx(logged)
    assert 0 <= summary["best_top1"] <= 1 and 0 <= logged <= 1  # accuracies are fractions
    main(["eval", "--resume", str(out / "last.pt"), *common])
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["val_top1"] == pytest.approx(logged)
    main(["train", "--resume", str(out / "last.pt"), "--epochs", "3", "--ckpt_dir", str(out),
          *common])  # resuming continues the same run: its model, data and settings
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["steps"] == 3 * summary["steps"] // 2


def test_convert_and_adapters_only_through_the_cli(tmp_path, capsys):
    main(["train", "--dummy", "--arch", "efficientnet_lite0", "--pretrained", "--convert",
          "--adapters-only", "--epochs", "1", "--max-steps", "2", "--image-size", "32", "-j", "0",
          "-b", "32", "--ckpt_dir", str(tmp_path), "--no-progress"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["trainable"] < 0.3 * summary["parameters"]
    main(["eval", "--resume", str(tmp_path / "last.pt"), "-j", "0", "--no-progress"])
    assert "val_top1" in json.loads(capsys.readouterr().out)


def test_bad_combinations_are_clear_errors(capsys):
    for argv, message in ((["train", "--dummy", "--customize", "--convert", "-j", "0"],
                           r"--customize .* or --convert"),
                          (["train", "-j", "0"], "give --data"),
                          (["train", "--dummy", "-e", "-j", "0", "--image-size", "32"],
                           "evaluating needs --resume")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and err.startswith("kdna: error: ")


def test_the_demo_trains_both_ways_and_writes_its_report(tmp_path, capsys):
    main(["demo", "--out", str(tmp_path), "--epochs", "1", "--limit", "256", "--image-size",
          "32", "--no-progress"])
    report = (tmp_path / "report.md").read_text()
    assert capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    methods = summary["methods"]
    assert set(methods) == {BEST, BASELINE}  # the adapters and the baseline, in one run
    for name, row in methods.items():
        assert 0 <= row["test_top1"] <= 1  # a fraction in summary.json, a percentage below
        assert f"| {row['lr']:g} | {100 * row['test_top1']:.1f}% |" in report, name
        assert row["lr"] == COMMITTED[name]["lr"]
    assert methods[BEST]["trainable"] > methods[BASELINE]["trainable"]
    assert f"What the adapters add: **{summary['adds_points']:+.1f} points**" in report
    assert {"summary.json", "adapters", "routing.html"} <= {p.name for p in tmp_path.iterdir()}
    page = (tmp_path / "routing.html").read_text()
    assert "Routing: " in report and "plotly" in page
    assert '"ticktext":["0","1","2","3","4","5","6","7","8","9"]' in page  # each band labelled
    assert "grouped by their label" in page


def test_the_demo_quotes_the_committed_benchmark_and_its_best_kernel_dna_way():
    root = Path(__file__).resolve().parents[1]
    rows = read_csv(root / COMMITTED["source"].replace(".md", ".csv"))
    mnist = {r["method"]: r for r in rows if r["data"] == "mnist"}
    ran = [mnist[m] for m in ("kdna_static", "kdna_gates_4", "kdna_gates_16")
           if not (mnist[m]["same_as"] or mnist[m]["error"])]
    assert BEST == max(ran, key=lambda r: r["test_top1_mean"])["method"]
    for name in (BEST, BASELINE):
        row = mnist[name]
        assert COMMITTED[name]["lr"] == row["lr"] and COMMITTED[name]["seeds"] == row["seeds"]
        assert COMMITTED[name]["mean"] == pytest.approx(row["test_top1_mean"], abs=5e-4)
        assert COMMITTED[name]["std"] == pytest.approx(row["test_top1_std"], abs=5e-4)
    assert COMMITTED["device"] == rows[0]["device"]
    assert (PROTOCOL.image_size, PROTOCOL.steps, PROTOCOL.batch_size) == (
        rows[0]["image_size"], rows[0]["steps"], rows[0]["batch_size"])


def test_python_dash_m_kdna_is_the_same_command():
    done = subprocess.run([sys.executable, "-m", "kdna", "train", "--help"], capture_output=True,
                          text=True, check=True)
    assert "--warmup-epochs" in done.stdout and "--adapters-only" in done.stdout
