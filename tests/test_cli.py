"""The command line: reference flags, train / eval / resume through it, and the demo."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdna.cli import build_model, main, parser
from kdna.cli.demo import BASELINE
from kdna.finetune import default_lr, default_method

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
    assert "note" not in summary  # adapters in place: the function was kept
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=False)
    assert checkpoint["meta"]["batchnorm"] == "frozen"  # fine-tuning: statistics frozen
    assert checkpoint["config"]["weight_decay_on"] == "weights"
    main(["eval", "--resume", str(tmp_path / "last.pt"), "-j", "0", "--no-progress"])
    assert "val_top1" in json.loads(capsys.readouterr().out)


def test_convert_keeps_the_function_and_share_says_it_does_not(capsys, tmp_path):
    x = torch.randn(2, 3, 32, 32)
    plain, _ = build_model("efficientnet_lite0", num_classes=1000, pretrained=True)
    kept, _ = build_model("efficientnet_lite0", num_classes=1000, pretrained=True,
                          do_convert=True, image_size=32)
    with torch.no_grad():
        torch.testing.assert_close(kept.eval()(x), plain.eval()(x), rtol=1e-4, atol=1e-4)
    main(["train", "--dummy", "--arch", "efficientnet_lite0", "--pretrained", "--convert",
          "--share", "--epochs", "1", "--max-steps", "1", "--image-size", "32", "-j", "0",
          "-b", "32", "--ckpt_dir", str(tmp_path), "--no-progress"])
    assert "changed the pretrained network's function" in json.loads(
        capsys.readouterr().out)["note"]


def test_a_shortened_resume_command_takes_the_batch_and_data_from_the_checkpoint(tmp_path,
                                                                                  capsys):
    main(["train", "--dummy", "--arch", "resnet18", "--customize", "--epochs", "1", "-b", "16",
          "--image-size", "32", "--ckpt_dir", str(tmp_path), "-j", "0", "--no-progress"])
    first = json.loads(capsys.readouterr().out)
    assert main(["train", "--resume", str(tmp_path / "last.pt"), "--epochs", "2",
                 "--ckpt_dir", str(tmp_path), "-j", "0", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2 * first["steps"]


def test_bad_combinations_are_clear_errors(capsys):
    for argv, message in ((["train", "--dummy", "--customize", "--convert", "-j", "0"],
                           r"--customize .* or --convert"),
                          (["train", "-j", "0"], "give --data"),
                          (["train", "--dummy", "-e", "-j", "0", "--image-size", "32"],
                           "evaluating needs --resume")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and err.startswith("kdna: error: ")


def test_the_demo_is_the_user_path_finetune_then_predict(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "3", "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "$ kdna finetune --data" in printed.err and "$ kdna predict" in printed.err
    assert re.search(r"kdna predict named \d+ of 10 held-out digits right", printed.out)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["method"] == default_method(gated=True) and metrics["steps"] == 3
    assert metrics["baseline"]["method"] == BASELINE and metrics["baseline"]["steps"] == 3
    assert 0 <= metrics["test_top1"] <= 1 and metrics["sources"]["test"] == "test/"
    report = (tmp_path / "report.md").read_text()
    for section in ("## Beside norms + head, at the same budget", "## Held-out images",
                    "## Routing", "![confusion matrix](confusion.svg)"):
        assert section in report
    assert {"adapters", "confusion.svg", "metrics.json", "routing.html"} <= {
        p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "confusion.svg").read_text().startswith("<svg")


def _colour_folder(root: Path, per_class: int = 10) -> Path:
    from PIL import Image

    for split, count in (("train", per_class), ("test", 4)):
        for name, colour in (("blue", (30, 60, 200)), ("red", (200, 40, 30))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (72, 72), (colour[0] + 3 * i, colour[1], colour[2])).save(
                    folder / f"{i}.png")
    return root


def test_finetune_predict_and_eval_end_to_end(tmp_path, capsys):
    data, out = _colour_folder(tmp_path / "data"), tmp_path / "out"
    assert main(["finetune", "--data", str(data), "--image-size", "32", "--steps", "3", "-b",
                 "8", "--method", "norms_head", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "norms_head" and summary["steps"] == 3
    assert summary["lr"] == default_lr("norms_head", str(data))
    assert {"adapters", "metrics.json", "report.md", "confusion.svg"} <= {
        p.name for p in out.iterdir()}
    image = sorted((data / "test" / "red").iterdir())[0]
    assert main(["predict", str(out), str(image), "--json", "--topk", "2"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["image"] == str(image) and {t["class"] for t in row["top"]} == {"blue", "red"}
    assert sum(t["probability"] for t in row["top"]) == pytest.approx(1.0, abs=1e-5)
    assert main(["eval", str(out), "--data", str(data), "-j", "0", "--no-progress"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["split"] == "test" and evaluated["samples"] == 8
    assert evaluated["top1"] == pytest.approx(summary["test_top1"])


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--data", "no/such/folder"], "no such folder"),
    (["finetune", "--data", "mnist", "--steps", "0"], "--steps must be a positive integer"),
    (["finetune", "--data", "mnist", "--lr", "fast"], "--lr must be a positive number"),
    (["finetune", "--data", "mnist", "--method", "lorra"], "invalid choice: 'lorra'"),
    (["predict", "nowhere", "x.png"], "no such image file"),
    (["train", "--dummy", "--share", "-j", "0"], "--share chooses how --convert converts")])
def test_finetune_and_predict_mistakes_are_one_line(argv, message, tmp_path, capsys,
                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors (an unknown choice) exit at parsing
        status = exit_.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("kdna: error: ") and message in err and "Traceback" not in err


def test_predict_refuses_a_folder_without_a_task(tmp_path, capsys):
    image = _colour_folder(tmp_path / "data") / "test" / "red" / "0.png"
    assert main(["predict", str(tmp_path), str(image)]) == 2
    assert "holds no fine-tuned task" in capsys.readouterr().err


def test_python_dash_m_kdna_is_the_same_command():
    done = subprocess.run([sys.executable, "-m", "kdna", "train", "--help"], capture_output=True,
                          text=True, check=True)
    assert "--warmup-epochs" in done.stdout and "--adapters-only" in done.stdout
