"""Every user error a clear message, every interruption survivable (issue 13).

The command-line cases run each in its own process: most are forked from this one (kdna is
already imported, so a case costs milliseconds, not the five seconds of a fresh interpreter;
a forked case never computes, since a fork of a process that has computed may hang in
OpenMP) and a few are real ``python -m kdna`` subprocesses. Each asserts exit status 2, no traceback
and the bad value named on stderr. docs/errors.md lists every case.
"""

from __future__ import annotations

import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import traceback
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import kdna
import kdna.analysis
import kdna.bench
import kdna.conversion
import kdna.deploy
from kdna.cli import main
from kdna.data import BadImageError, load_data, scan_images
from kdna.train import (
    TrainConfig,
    TrainingInterrupted,
    check_writable,
    load_checkpoint,
    save_checkpoint,
    train_classifier,
)

ROOT = Path(__file__).resolve().parents[1]
FAST = ["-j", "0", "--no-progress"]


# ---------------------------------------------------------------- helpers


def _forked(argv: list[str], cwd: Path, offline: bool = True) -> tuple[int, str]:
    """Run ``kdna argv`` in a forked child process: its exit status and its stderr."""
    err = cwd / f".stderr-{time.monotonic_ns()}"
    pid = os.fork()
    if pid == 0:  # the child: what a user's process does, without re-importing torch
        code = 1
        try:
            fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            os.chdir(cwd)
            if offline:  # tests never download: every host is unreachable
                import socket

                def unreachable(*args, **kwargs):
                    raise OSError("network is unreachable (test)")

                socket.create_connection = unreachable
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    text = err.read_text()
    err.unlink()
    return os.waitstatus_to_exitcode(status), text


def _kdna(*argv: str, cwd: Path, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdna", *argv], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          **kwargs)


def _images(folder: Path, classes=("a", "b"), per_class=4) -> Path:
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(folder / c / f"{i}.png")
    return folder


def _data(n=128):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 8, 8, generator=gen)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long()
    return TensorDataset(x[:96], y[:96]), TensorDataset(x[96:], y[96:])


def _net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def _config(tmp_path, name, **kw):
    base = {"epochs": 3, "batch_size": 32, "lr": 0.05, "progress": False, "tensorboard": False,
            "out_dir": str(tmp_path / name)}
    return TrainConfig(**(base | kw))


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                  b.state_dict().values(), strict=True))


# ---------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Paths the command-line cases refer to."""
    root = tmp_path_factory.mktemp("cli")
    (root / "empty").mkdir()
    (root / "classes").mkdir()
    (root / "classes" / "a").mkdir()  # a class folder without images
    (root / "a_file").write_text("not a folder")
    (root / "random.pt").write_bytes(os.urandom(2048))
    (root / "notes.pt").write_text("these are my notes\n")
    (root / "empty.pt").write_bytes(b"")
    torch.save({"model": {}}, root / "foreign.pt")
    _images(root / "bad_images")
    (root / "bad_images" / "a" / "zero.png").write_bytes(b"")
    return root


CLI_CASES = {  # id: (argv, what stderr must name)
    "unknown arch": (["train", "--dummy", "--arch", "resnet99"], "resnet99"),
    "missing data folder": (["train", "--data", "./no/such/folder"], "no/such/folder"),
    "empty data folder": (["train", "--data", "{files}/empty"], "empty"),
    "data is a file": (["train", "--data", "{files}/a_file"], "a_file"),
    "class folder without images": (["train", "--data", "{files}/classes", "--epochs", "1"],
                                    "classes"),
    "unknown data set name": (["train", "--data", "mnsit"], "mnsit"),
    "offline online data": (["train", "--data", "cifar10", "--epochs", "1"], "cifar10"),
    "batch size 0": (["train", "--dummy", "-b", "0"], "got 0"),
    "negative lr": (["train", "--dummy", "--lr", "-1"], "got -1"),
    "zero epochs": (["train", "--dummy", "--epochs", "0"], "--epochs"),
    "warm-up longer than training": (["train", "--dummy", "--epochs", "2",
                                      "--warmup-epochs", "5"], "--warmup-epochs"),
    "image size 2": (["train", "--dummy", "--image-size", "2"], "--image-size"),
    "negative workers": (["train", "--dummy", "-j", "-1"], "-j/--workers"),
    "limit 0": (["train", "--dummy", "--limit", "0"], "--limit"),
    "max steps 0": (["train", "--dummy", "--max-steps", "0"], "--max-steps"),
    "label smoothing 1": (["train", "--dummy", "--label-smoothing", "1"], "--label-smoothing"),
    "not a number": (["train", "--dummy", "-b", "many"], "many"),
    "unknown flag": (["train", "--dummy", "--bogus"], "--bogus"),
    "missing resume file": (["train", "--dummy", "--resume", "gone.pt"], "gone.pt"),
    "resume is a folder": (["train", "--dummy", "--resume", "{files}/empty"], "empty"),
    "resume random bytes": (["train", "--dummy", "--resume", "{files}/random.pt"], "random.pt"),
    "resume a text file": (["eval", "--resume", "{files}/notes.pt"], "not a kdna checkpoint"),
    "resume an empty file": (["eval", "--resume", "{files}/empty.pt"], "empty"),
    "resume a foreign torch file": (["eval", "--resume", "{files}/foreign.pt"], "foreign.pt"),
    "ckpt_dir is a file": (["train", "--dummy", "--ckpt_dir", "{files}/a_file"], "a_file"),
    "eval without resume": (["eval", "--dummy"], "--resume"),
    "customize and convert": (["train", "--dummy", "--customize", "--convert"], "--convert"),
    "nccl without CUDA": (["train", "--dummy", "--dist-backend", "nccl"], "nccl"),
    "metrics unknown arch": (["metrics", "--arch", "resnet99", "--params"], "resnet99"),
    "metrics iterations 0": (["metrics", "--iter", "0"], "--iter"),
    "metrics threads 0": (["metrics", "--num-threads", "0"], "--num-threads"),
    "metrics gpu absent": (["metrics", "--gpu"], "--gpu"),
    "demo epochs 0": (["demo", "--epochs", "0"], "--epochs"),
    "check-data missing folder": (["check-data", "no/such/images"], "no/such/images"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_a_cli_mistake_is_one_line_and_status_2(case, files, tmp_path):
    argv, named = CLI_CASES[case]
    if case in ("nccl without CUDA", "metrics gpu absent") and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    argv = [a.replace("{files}", str(files)) for a in argv]
    if argv[0] in ("train", "eval"):  # short, should a check fail to fire (the case's flags win)
        argv = [argv[0], "-j", "0", "--max-steps", "1", "--epochs", "1", *argv[1:]]
    code, err = _forked(argv, tmp_path)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdna: error: "), err
    assert named in err


def test_an_unreadable_image_in_a_loader_worker_is_one_line(files, tmp_path, monkeypatch,
                                                            capsys):
    # in this process, not forked: a fork of a process that has computed may hang in OpenMP
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", str(files / "bad_images"), "-j", "1", "--image-size", "8",
                 "-b", "2", "--arch", "resnet18", "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kdna: error: cannot read image")
    assert "zero.png" in err and "the file is empty" in err and "Traceback" not in err


def test_a_real_subprocess_shows_the_traceback_only_with_debug(tmp_path):
    quiet = _kdna("train", "--dummy", "-b", "0", cwd=tmp_path)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert quiet.stderr.strip() == "kdna: error: -b/--batch-size must be a positive integer, got 0"
    loud = _kdna("train", "--dummy", "-b", "0", "--debug", cwd=tmp_path)
    assert loud.returncode == 2 and "Traceback" in loud.stderr
    env = _kdna("metrics", "--arch", "resnet99", cwd=tmp_path, env={"KDNA_DEBUG": "1"})
    assert env.returncode == 2 and "Traceback" in env.stderr and "resnet99" in env.stderr


def test_a_real_bug_keeps_its_traceback(tmp_path, monkeypatch):
    cli = sys.modules["kdna.cli.main"]  # kdna.cli.main is also the name of the function

    def broken(*args, **kwargs):
        return {}["missing"]  # a KeyError inside kdna: a bug, not a user's mistake

    monkeypatch.setattr(cli, "_train", broken)
    code, err = _forked(["train", "--dummy", *FAST], tmp_path)
    assert code == 1 and "Traceback" in err and "KeyError" in err


# ---------------------------------------------------------------- library arguments


LIBRARY_CASES = {
    "convert a string": (lambda: kdna.convert("resnet18"), TypeError, "model must be"),
    "fold a string": (lambda: kdna.fold("resnet18"), TypeError, "torch.nn.Module"),
    "unfold a list": (lambda: kdna.unfold([1]), TypeError, "a list"),
    "create_model a module": (lambda: kdna.create_model(nn.Linear(1, 1)), TypeError,
                              "model name"),
    "create_model unknown": (lambda: kdna.create_model("resnet99"), ValueError, "resnet99"),
    "create_model classes 2.5": (lambda: kdna.create_model("resnet18", num_classes=2.5),
                                 ValueError, "num_classes"),
    "plan a string": (lambda: kdna.conversion.plan_conversion("m"), TypeError, "model"),
    "plan a list input": (lambda: kdna.conversion.plan_conversion(
        nn.Conv2d(3, 3, 3), example_inputs=[[1.0]]), TypeError, "example_inputs"),
    "load_data a number": (lambda: load_data(3), TypeError, "source"),
    "load_data bad_images": (lambda: load_data("synthetic", bad_images="ignore"),
                             ValueError, "bad_images"),
    "train a string": (lambda: train_classifier("resnet18", *_data(), TrainConfig()),
                       TypeError, "model"),
    "train a tensor as data": (
        lambda: train_classifier(_net(), torch.zeros(3), None, TrainConfig()), TypeError,
        "train_set"),
    "train a dict config": (lambda: train_classifier(_net(), *_data(), {"epochs": 1}),
                            TypeError, "config"),
    "epochs 2.5": (lambda: TrainConfig(epochs=2.5), ValueError, "epochs"),
    "warm-up too long": (lambda: TrainConfig(epochs=1, warmup_epochs=2), ValueError,
                         "warmup_epochs"),
    "negative workers": (lambda: TrainConfig(workers=-1), ValueError, "workers"),
    "measure a string": (lambda: kdna.bench.measure("resnet18", (1, 3, 8, 8)), TypeError,
                         "model"),
    "measure a bad shape": (lambda: kdna.bench.measure(_net(), "1x3x8x8"), ValueError,
                            "input_shape"),
    "export a string": (lambda: kdna.deploy.export_onnx("m", "m.onnx", torch.zeros(1, 3, 8, 8)),
                        TypeError, "model"),
    "cka a list": (lambda: kdna.analysis.linear_cka([[1.0]], torch.zeros(2, 2)), TypeError,
                   "x must be a"),
    "routing a string": (lambda: kdna.analysis.capture_routing("m", torch.zeros(1)),
                         TypeError, "model"),
    "kernel similarity a string": (lambda: kdna.analysis.kernel_similarity("m"), TypeError,
                                   "model"),
}


@pytest.mark.parametrize("case", list(LIBRARY_CASES))
def test_a_wrong_argument_names_itself(case):
    call, kind, message = LIBRARY_CASES[case]
    with pytest.raises(kind, match=message):
        call()


# ---------------------------------------------------------------- checkpoints


def _zip_not_torch(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")


class _Code:
    def __reduce__(self):
        return (print, ("pickled code ran",))


BAD_FILES = {  # name: (write it, what the message says)
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(4096)), "not a readable checkpoint"),
    "text": (lambda p: p.write_text("epoch=3\n"), "a text file"),
    "zip, not torch": (_zip_not_torch, "zip archive that is not a torch file"),
    "foreign torch file": (lambda p: torch.save([1, 2], p), "not a kdna checkpoint"),
    "torch dict without format": (lambda p: torch.save({"model": {}}, p),
                                  "not a kdna checkpoint"),
    "pickled code": (lambda p: p.write_bytes(pickle.dumps({"x": _Code()})),
                     "possibly pickled code"),
    "truncated": (lambda p: p.write_bytes(_good_bytes()[:3000]), "truncated or corrupt"),
}


def _good_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"format": "kdna-checkpoint", "x": torch.ones(1000)}, buffer)
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_file_that_is_not_a_checkpoint_is_named_and_left_alone(case, tmp_path):
    write, message = BAD_FILES[case]
    path = tmp_path / "bad.pt"
    write(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load_checkpoint(path)
    assert "bad.pt" in str(info.value) and len(str(info.value)) < 400
    assert path.read_bytes() == before


def test_a_failed_resume_writes_nothing(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(os.urandom(100))
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        train_classifier(_net(), *_data(), _config(tmp_path, "run"), resume=bad)
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_write_that_fails_midway_keeps_the_previous_one(tmp_path, monkeypatch):
    path = save_checkpoint({"x": torch.ones(2)}, tmp_path / "last.pt")

    def half_then_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint({"x": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_full_or_unwritable_checkpoint_folder_is_found_before_training(tmp_path,
                                                                         monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="existing file"):
        check_writable(tmp_path / "file")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(OSError, match="not writable: No space left"):
        train_classifier(model, *_data(), _config(tmp_path, "full"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert list((tmp_path / "full").iterdir()) == []  # the test file is gone too


# ---------------------------------------------------------------- data


@pytest.fixture
def broken_folder(tmp_path):
    folder = _images(tmp_path / "imgs")
    (folder / "a" / "empty.png").write_bytes(b"")
    good = (folder / "b" / "0.png").read_bytes()
    (folder / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    return folder


def test_an_unreadable_image_is_named_with_its_reason(broken_folder):
    data = load_data(broken_folder, image_size=8, augment=False, val_fraction=0.5)
    with pytest.raises(BadImageError) as info:
        for split in (data.train, data.val):
            for i in range(len(split)):
                split[i]
    assert info.value.path.endswith(("empty.png", "cut.png")) and info.value.reason
    assert "cannot read image" in str(info.value)


def test_bad_images_skip_warns_once_with_the_count(broken_folder):
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\).*\.png") as record:
        data = load_data(broken_folder, image_size=8, bad_images="skip", val_fraction=0.5)
    assert len(record) == 1
    assert len(data.train) + len(data.val) == 8
    for split in (data.train, data.val):
        for i in range(len(split)):
            assert split[i][0].shape == (3, 8, 8)


def test_scan_and_check_data_list_every_bad_file(broken_folder, tmp_path):
    bad = scan_images(broken_folder, progress=False)
    assert sorted(Path(p).name for p, _ in bad) == ["cut.png", "empty.png"]
    assert any("empty" in reason for _, reason in bad)
    code, _ = _forked(["check-data", str(broken_folder), "--no-progress"], tmp_path)
    assert code == 1
    clean = _images(tmp_path / "clean")
    assert scan_images(clean, progress=False) == []


# ---------------------------------------------------------------- interrupts and resume


class _Signal(Dataset):
    """``base``, sending this process ``signum`` when item number ``at`` is read."""

    def __init__(self, base, at, signum=signal.SIGINT, copy: tuple[Path, Path] | None = None):
        self.base, self.at, self.signum, self.copy, self.calls = base, at, signum, copy, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.at:
            if self.copy:  # snapshot the checkpoint there is at this moment
                self.copy[1].write_bytes(self.copy[0].read_bytes())
            else:
                os.kill(os.getpid(), self.signum)
        return self.base[i]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    path = tmp_path_factory.mktemp("unbroken")
    model = _net()
    train_classifier(model, *_data(), _config(path, "run"))
    return model, path / "run" / "last.pt"


# 96 training samples, batches of 32: 3 steps an epoch; 32 validation samples
POSITIONS = {
    "mid-epoch (SIGINT in a step)": ({"train": 32 * 4 + 5}, (1, 2)),
    "after the last step, before evaluation (SIGTERM in it)": ({"val": 32 + 7}, (1, 3)),
    "before evaluation (max_steps at an epoch end)": ({"max_steps": 3}, (0, 3)),
    "after evaluation": ({"snapshot": 32 * 3 + 1}, (1, 0)),
    "after the final epoch": ({"final": True}, (3, 0)),
}


@pytest.mark.parametrize("position", list(POSITIONS))
def test_resume_from_every_position_ends_with_the_unbroken_weights(position, unbroken,
                                                                    tmp_path):
    how, (epoch, step) = POSITIONS[position]
    train, val = _data()
    last = tmp_path / "run" / "last.pt"
    if "final" in how:
        last = unbroken[1]
    elif "max_steps" in how:
        train_classifier(_net(), train, val, _config(tmp_path, "run", max_steps=how["max_steps"]))
    elif "snapshot" in how:
        snap = tmp_path / "snap.pt"
        train_classifier(_net(), _Signal(train, how["snapshot"], copy=(last, snap)), val,
                         _config(tmp_path, "run"))
        last = snap
    else:
        signum = signal.SIGINT if "train" in how else signal.SIGTERM
        wrapped = (_Signal(train, how["train"], signum), val) if "train" in how else (
            train, _Signal(val, how["val"], signum))
        with pytest.raises(TrainingInterrupted) as info:
            train_classifier(_net(), *wrapped, _config(tmp_path, "run"))
        assert info.value.exit_code == 128 + signum and info.value.checkpoint == last
    state = load_checkpoint(last)
    assert (state["epoch"], state["step_in_epoch"]) == (epoch, step)
    resumed = _net()
    result = train_classifier(resumed, train, val, _config(tmp_path, "resumed"), resume=last)
    assert _same_weights(resumed, unbroken[0])
    assert [row["epoch"] for row in result.history] == [1, 2, 3]


_TRAIN_FOREVER = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from kdna.train import TrainConfig, train_classifier
    out = sys.argv[1]
    torch.manual_seed(0)
    x, y = torch.randn(256, 3, 8, 8), torch.randint(0, 2, (256,))
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2))
    config = TrainConfig(epochs=10_000, batch_size=8, lr=0.01, checkpoint_every=1,
                         progress=False, tensorboard=False, out_dir=out)
    last = out + "/last.pt"
    import os
    train_classifier(net, TensorDataset(x, y), None, config,
                     resume=last if os.path.exists(last) else None)
""")


def _progressed(last: Path, step: int) -> bool:
    return last.exists() and load_checkpoint(last)["global_step"] > step


def test_a_run_killed_at_any_moment_leaves_a_loadable_checkpoint(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_TRAIN_FOREVER)
    last = tmp_path / "out" / "last.pt"
    steps = []
    for delay in (0.0, 0.013, 0.071):
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out")],
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        start = time.monotonic()
        while not _progressed(last, steps[-1] if steps else -1) and time.monotonic() - start < 60:
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        steps.append(load_checkpoint(last)["global_step"])  # always there, always loadable
    assert steps == sorted(steps) and steps[-1] > steps[0]  # each run resumed the last


def test_ctrl_c_in_the_cli_saves_and_prints_the_resume_command(tmp_path, monkeypatch):
    argv = ["train", "--dummy", "--arch", "mobilenet_v2_1d2", "--image-size", "32", "-b", "16",
            "--epochs", "3", "--checkpoint-every", "1", "--ckpt_dir", "ck", *FAST]
    proc = subprocess.Popen([sys.executable, "-m", "kdna", *argv], cwd=tmp_path,
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    start = time.monotonic()
    while not (tmp_path / "ck" / "last.pt").exists() and time.monotonic() - start < 120:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted by SIGINT" in err
    command = err.split("resume with: ", 1)[1].strip()
    assert command.startswith("kdna train") and command.endswith("--resume ck/last.pt")
    step = load_checkpoint(tmp_path / "ck" / "last.pt")["global_step"]
    monkeypatch.chdir(tmp_path)  # the printed command, run where it was printed (in-process)
    assert main([*shlex.split(command)[1:], "--max-steps", str(step + 1)]) == 0
    assert load_checkpoint(tmp_path / "ck" / "last.pt")["global_step"] == step + 1
