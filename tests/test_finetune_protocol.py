"""The fine-tuning protocol: what each method trains, the learning rate chosen on validation and
reported on test, cache keys that follow the configuration, seeds that spread, clear errors."""

from __future__ import annotations

import copy
import dataclasses
import re

import pytest
import torch
from torch import nn

from kdna.finetune.compare import compare_methods
from kdna.finetune.methods import (
    MethodContext,
    MethodFailed,
    get_method,
    list_methods,
    prepare,
)
from kdna.finetune.protocol import Protocol, run_key
from kdna.finetune.results import (
    RunResult,
    choose_lr,
    comparison_table,
    csv_rows,
    read_csv,
    summarise,
)
from kdna.finetune.runs import train_run
from kdna.nn import FrozenBatchNorm2d

pytest.importorskip("peft")


class Small(nn.Module):
    """Convolutions with biases (so BitFit differs from norms + head), BatchNorms, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 128, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(128)
        self.conv2 = nn.Conv2d(128, 64, 1)  # its gate: 128 / 16 = 8 hidden units uncapped
        self.bn2 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 7)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _context(**kw) -> MethodContext:
    return MethodContext(num_classes=3, example_inputs=torch.randn(4, 3, 16, 16), **kw)


def _kinds(names) -> set[str]:
    """What each trainable parameter is, in words the methods use."""
    kinds = set()
    for n in names:
        if "lora_" in n:
            kinds.add("lora")
        elif "gate" in n:
            kinds.add("gate")
        elif "scale" in n:
            kinds.add("static")
        elif ".bn" in n or n.startswith("bn"):
            kinds.add("norm")
        elif "fc" in n:
            kinds.add("head")
        elif n.endswith("bias"):
            kinds.add("conv bias")
        else:
            kinds.add("kernel")
    return kinds


EXPECTED = {
    "linear_probe": {"head"},
    "norms_head": {"norm", "head"},
    "bitfit": {"norm", "head", "conv bias"},
    "full": {"norm", "head", "conv bias", "kernel"},
    "lora": {"lora", "head"},
    "lora_norms": {"lora", "norm", "head"},
    "kdna_static": {"static", "norm", "head", "conv bias"},  # a child keeps its own bias
    "kdna_gates_4": {"static", "gate", "norm", "head", "conv bias"},
    "kdna_gates_16": {"static", "gate", "norm", "head", "conv bias"},
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_method_trains_exactly_what_it_states(name):
    base = Small()
    before = copy.deepcopy(base.state_dict())
    prepared = prepare(name, base, _context())
    assert _kinds(prepared.trainable) == EXPECTED[name]
    trainable = {n for n, p in prepared.model.named_parameters() if p.requires_grad}
    assert trainable == set(prepared.trainable)
    assert prepared.model(torch.randn(2, 3, 16, 16)).shape == (2, 3)  # the new head
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # untouched


def test_gate_budgets_and_the_probe_statistics():
    counts = {n: prepare(n, Small(), _context()).trainable_count
              for n in ("norms_head", "kdna_static", "kdna_gates_4", "kdna_gates_16", "full")}
    assert counts["norms_head"] < counts["kdna_static"] < counts["kdna_gates_4"]
    assert counts["kdna_gates_4"] < counts["kdna_gates_16"] < counts["full"]
    probe = prepare("linear_probe", Small(), _context()).model
    assert isinstance(probe.bn1, FrozenBatchNorm2d)
    stats = probe.bn1.running_mean.clone()
    probe.train()(torch.randn(8, 3, 16, 16) + 3)
    assert torch.equal(probe.bn1.running_mean, stats)  # never re-estimated
    heads = prepare("norms_head", Small(), _context()).model.train()
    heads(torch.randn(8, 3, 16, 16) + 3)
    assert not torch.equal(heads.bn1.running_mean, stats)  # the others follow the data


def test_a_method_that_cannot_be_prepared_says_which_and_why():
    with pytest.raises(MethodFailed, match="kdna_shared needs unlabeled training images"):
        prepare("kdna_shared", Small(), _context(images=None))
    with pytest.raises(ValueError, match=r"'lorra'.*expected one of .*lora"):
        get_method("lorra")


def _run(lr, seed, val, test, loss=1.0):
    return RunResult("m", lr, seed, val, test, loss, 10, 100, 5, 0.1, 1000)


def test_the_learning_rate_is_chosen_on_validation_and_reported_on_test():
    runs = [_run(1e-3, 0, val=0.90, test=0.50), _run(1e-2, 0, val=0.80, test=0.99),
            _run(1e-1, 0, val=0.90, test=None),  # a tie on validation: the smaller rate
            _run(1e-3, 1, val=0.10, test=0.60), _run(1e-3, 2, val=0.10, test=0.70)]
    assert choose_lr(runs) == 1e-3
    summary = summarise("m", "method", "things", runs)
    assert summary.lr == 1e-3 and summary.test == [0.50, 0.60, 0.70]  # test at the chosen rate
    assert summary.mean == pytest.approx(0.60) and summary.std == pytest.approx(0.10)
    assert summary.val_by_lr == {1e-3: 0.90, 1e-2: 0.80, 1e-1: 0.90}
    flipped = [dataclasses.replace(r, test_top1=1 - (r.test_top1 or 0)) for r in runs]
    assert choose_lr(flipped) == 1e-3  # test accuracies never move the choice
    with pytest.raises(ValueError, match="seeds \\[0\\] were not evaluated"):
        summarise("m", "method", "things", [_run(1e-3, 0, 0.9, None)])


def test_tables_show_the_choice_and_round_trip_through_csv(tmp_path):
    runs = [_run(1e-3, 0, 0.9, 0.5), _run(1e-2, 0, 0.8, 0.9), _run(1e-3, 1, 0.1, 0.7)]
    summary = summarise("m", "a method", "things", runs)
    table = comparison_table([summary], (1e-3, 1e-2))
    assert "0.001 (**90.0** / 80.0)" in table and "**60.0 ± 14.1** (2)" in table
    rows = csv_rows([summary], data="digits")
    path = tmp_path / "r.csv"
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    back = read_csv(path)[0]
    assert back["data"] == "digits" and back["lr"] == 1e-3
    assert back["test_top1_per_seed"] == [0.5, 0.7] and back["val_top1_by_lr"][1e-2] == 0.8


def test_run_keys_change_whenever_the_configuration_of_the_run_does():
    protocol = Protocol(data="digits")
    key = run_key(protocol, "norms_head", 3e-3, 0)
    assert key == run_key(Protocol(data="digits"), "norms_head", 3e-3, 0)
    changed = {"data": "mnist", "arch": "other_arch", "image_size": 48, "limit": 100,
               "val_fraction": 0.3, "split_seed": 1, "steps": 60, "batch_size": 32,
               "warmup": 0.2, "weight_decay": 1e-4, "batchnorm": "train", "bn_momentum": 0.01,
               "augment": False, "recovery_images": 64}
    grid = {"lrs": (3e-3,), "seeds": (0, 5)}  # the comparison's, not one run's
    assert set(changed) | set(grid) == {f.name for f in dataclasses.fields(Protocol)}
    keys = {run_key(protocol.with_overrides(**{k: v}), "norms_head", 3e-3, 0)
            for k, v in changed.items()}
    keys |= {run_key(protocol, "bitfit", 3e-3, 0), run_key(protocol, "norms_head", 3e-2, 0),
             run_key(protocol, "norms_head", 3e-3, 1),
             run_key(protocol, "norms_head", 3e-3, 0, device="cuda")}
    assert key not in keys and len(keys) == len(changed) + 4
    assert run_key(protocol.with_overrides(**grid), "norms_head", 3e-3, 0) == key


def test_bad_protocol_values_are_named():
    for kw, message in (({"steps": 0}, "steps must be a positive integer, got 0"),
                        ({"lrs": ()}, "lrs must be distinct positive"),
                        ({"lrs": (1e-3, -1.0)}, r"got \(0.001, -1.0\)"),
                        ({"seeds": (1, 2)}, r"starting with the selection seed 0, got \(1, 2\)"),
                        ({"val_fraction": 1.5}, "val_fraction .* got 1.5"),
                        ({"warmup": 2}, "warmup .* got 2")):
        with pytest.raises(ValueError, match=message):
            Protocol(**kw)
    with pytest.raises(TypeError, match="'step'"):
        Protocol().with_overrides(step=3)
    with pytest.raises(ValueError, match="at least one method"):
        compare_methods([], Protocol(), cache=None)


TINY = Protocol(data="digits", image_size=16, limit=120, steps=4, batch_size=8,
                lrs=(1e-3, 3e-2), seeds=(0, 1), recovery_images=16)


def test_the_protocol_end_to_end_caches_by_configuration(tmp_path):
    methods = ["norms_head", "bitfit", "kdna_static"]
    first = compare_methods(methods, TINY, cache=tmp_path, pretrained=Small(), progress=False)
    assert first.trained == 3 * 3 and first.reloaded == 0  # 2 rates + 1 more seed, each
    for s in first.summaries:
        mine = [r for r in first.runs if r.method == s.method]
        assert s.lr == max((r for r in mine if r.seed == 0), key=lambda r: (r.val_top1, -r.lr)).lr
        assert len(s.test) == 2 and all(r.test_top1 is not None for r in mine if r.lr == s.lr)
        losses = [r.test_loss for r in mine if r.lr == s.lr]
        assert losses[0] != losses[1]  # the seeds give a spread
    again = compare_methods(methods, TINY, cache=tmp_path, pretrained=Small(), progress=False)
    assert again.trained == 0 and again.reloaded == 9
    assert [s.test for s in again.summaries] == [s.test for s in first.summaries]
    longer = compare_methods(["norms_head"], TINY.with_overrides(steps=5), cache=tmp_path,
                             pretrained=Small(), progress=False)
    assert longer.trained == 3 and longer.reloaded == 0


def test_a_run_refuses_a_rate_outside_the_grid():
    from kdna.finetune.protocol import protocol_splits

    splits = protocol_splits(TINY)
    with pytest.raises(ValueError, match=r"lr must be one of .* got 0.5"):
        train_run("full", TINY, splits, Small(), _context(), 0.5, 0)


def test_every_registered_method_states_what_it_trains():
    for name in list_methods():
        method = get_method(name)
        assert method.trains and method.label and method.name == name


def test_the_accuracy_figure_draws_the_spread_over_seeds_as_error_bars():
    pytest.importorskip("plotly")
    from kdna.viz import accuracy_vs_parameters

    fig = accuracy_vs_parameters({"a": {"trainable": 10, "top1": 90.0, "spread": 1.5},
                                  "b": {"trainable": 100, "top1": 80.0}},
                                 yaxis="test top-1 (%)")
    assert list(fig.data[0].error_y.array) == [1.5] and fig.data[1].error_y.array is None
    assert fig.layout.yaxis.title.text == "test top-1 (%)"


def test_the_readme_quotes_the_committed_fine_tuning_table():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    rows = read_csv(root / "benchmarks" / "results" / "finetune-amd-epyc-2-threads.csv")
    section = (root / "README.md").read_text().split("## Which fine-tuning method?")[1]
    section = section.split("\n## ")[0]
    assert rows[0]["device"] in section and "finetune-amd-epyc-2-threads.md" in section
    for r in rows:
        if not (r["same_as"] or r["error"]):
            quoted = f"{100 * r['test_top1_mean']:.1f} ± {100 * r['test_top1_std']:.1f}"
            assert quoted in section, (r["data"], r["method"], quoted)


def test_preparing_draws_from_the_context_seed_and_leaves_the_global_generator_alone():
    net, states = Small().eval(), []
    for global_seed in (1, 2):
        context = _context(seed=3)
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        states.append(prepare("kdna_gates_4", net, context).model.state_dict())
        assert torch.equal(torch.get_rng_state(), before)  # nothing drawn from it
    assert states[0].keys() == states[1].keys()
    tensors = [k for k, v in states[0].items() if isinstance(v, torch.Tensor)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in tensors)
    other = prepare("kdna_gates_4", net, _context(seed=4)).model.state_dict()
    assert any(not torch.equal(states[0][k], other[k]) for k in tensors)


def _benchmark_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "finetune.py"
    spec = importlib.util.spec_from_file_location("finetune_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fresh_tables(script, folder, method: str, test: list[float]):
    from argparse import Namespace

    from kdna.finetune.results import MethodSummary

    m = get_method(method)
    results = [{"data": data, "seconds": 60.0, "reloaded": 0, "trained": 7,
                "sizes": (10, 5, 5), "device": "Test CPU, 2 threads", "protocol": Protocol(),
                "summaries": [MethodSummary(method, m.label, m.trains, lr=3e-3,
                                            val_by_lr={3e-3: 0.5}, test=test, trainable=7,
                                            total=9, task_bytes=2048, seconds_per_step=0.1,
                                            steps=120, note="fresh note", throughput=1.0)]}
               for data in ("mnist", "digits")]
    return script.write(results, Namespace(jobs=1, threads=None, out=folder), 78.0, (0.5, 1.5))


def test_the_benchmark_merges_one_methods_rows_into_committed_tables(tmp_path):
    import shutil
    from pathlib import Path

    script = _benchmark_script()
    committed = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    target = tmp_path / "target" / "finetune-amd-epyc-2-threads.md"
    target.parent.mkdir()
    for suffix in (".md", ".csv"):
        shutil.copy(committed / f"finetune-amd-epyc-2-threads{suffix}", target.with_suffix(suffix))
    before_rows, before_md = read_csv(target.with_suffix(".csv")), target.read_text()
    before_csv = target.with_suffix(".csv").read_text().splitlines()
    fresh = _fresh_tables(script, tmp_path / "fresh", "kdna_shared", [0.5, 0.6, 0.55])
    merged = script.merge_tables(fresh, target)
    assert merged == [("mnist", "kdna_shared"), ("digits", "kdna_shared")]
    rows = read_csv(target.with_suffix(".csv"))
    assert [(r["data"], r["method"]) for r in rows] == [
        (r["data"], r["method"]) for r in before_rows]  # the same rows, in the same order
    for new in rows:
        if new["method"] == "kdna_shared":
            assert new["test_top1_mean"] == pytest.approx(0.55) and new["note"] == "fresh note"
            assert new["wall_seconds"] == 60 and not new["error"]
    after_csv = target.with_suffix(".csv").read_text().splitlines()
    assert [x for x in after_csv if ",kdna_shared," not in x] == [
        x for x in before_csv if ",kdna_shared," not in x]  # every other row as it was
    text = target.read_text()
    label = get_method("kdna_shared").label
    shared = [x for x in text.splitlines() if x.startswith(f"| {label} |")]
    assert len(shared) == 2 and all("**55.0 ± 5.0** (3)" in x for x in shared)
    assert text.count(f"- {label}: fresh note") == 2 and "could not be prepared" not in text
    committed_minutes = re.search(r"in (\*\*[\d.]+ minutes\*\*)", before_md).group(1)
    assert "**Merged rows.**" in text and "**1.3 minutes**" in text and committed_minutes in text
    kept = [x for x in before_md.splitlines() if label not in x]
    assert all(x in text.splitlines() for x in kept)  # every other line is still there
    script.merge_tables(fresh, target)
    assert target.read_text() == text  # merging again changes nothing
    other = _fresh_tables(script, tmp_path / "other", "lora", [0.9, 0.9, 0.9])
    with pytest.raises(ValueError, match="rerun the whole comparison"):
        script.merge_tables(other, target)


def test_train_at_trains_each_method_once_at_its_rate_and_caches_it(tmp_path):
    from kdna.finetune.compare import train_at

    lrs = {"norms_head": 3e-2, "kdna_static": 1e-3}
    first = train_at(lrs, TINY, cache=tmp_path, pretrained=Small(), progress=False, device="cpu")
    assert [(r.method, r.lr, r.seed) for r in first.runs] == [(m, lr, 0) for m, lr in lrs.items()]
    assert first.reloaded == [False, False] and first.cache == tmp_path
    assert all(r.steps == TINY.steps and r.test_top1 is not None for r in first.runs)
    assert first.keys == [run_key(TINY, m, lr, 0, "cpu") for m, lr in lrs.items()]
    assert len(first.splits.train) + len(first.splits.val) == TINY.limit  # the data it used
    again = train_at(lrs, TINY, cache=tmp_path, pretrained=Small(), progress=False, device="cpu")
    assert again.reloaded == [True, True]
    assert [r.test_top1 for r in again.runs] == [r.test_top1 for r in first.runs]


def test_a_cached_run_without_a_test_accuracy_is_trained_again_only_when_asked(tmp_path):
    from kdna.finetune.runs import cached_run

    untested = RunResult("m", 1e-3, 0, 0.5, None, None, 10, 100, 5, 0.1, 1000)
    tested = dataclasses.replace(untested, test_top1=0.7, test_loss=0.9)
    calls = []

    def train(run):
        return lambda: calls.append(run) or run

    assert cached_run("k", train(untested), tmp_path) == (untested, False)
    assert cached_run("k", train(tested), tmp_path) == (untested, True)  # a grid run: reloaded
    assert cached_run("k", train(tested), tmp_path, tested=True) == (tested, False)
    assert cached_run("k", train(untested), tmp_path, tested=True) == (tested, True)  # stored
    assert calls == [untested, tested]
    assert cached_run("k", train(tested), None, tested=True) == (tested, False)  # no cache
