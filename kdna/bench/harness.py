"""One measuring harness for every model: parameters, MACs, latency, throughput, peak memory.

``measure(model, (batch, 3, 224, 224))`` times ``iters`` passes after ``warmup`` untimed ones
and reports the median and the spread (25th to 75th percentile) of the per-pass latency, the
throughput ``batch / median``, the MACs per image, the peak memory of one pass, and the device
it ran on (CPU model and thread count, or GPU name), so a number never travels without the
machine that produced it.

* On a GPU every pass is timed with CUDA events (the clock stops where the kernels stop, not
  where Python queued them) and peak memory is the caching allocator's high-water mark.
* On a CPU passes are timed with ``time.perf_counter``; peak memory is the most bytes of
  tensors alive at once during the pass, tracked op by op (weights and the input excluded).
* ``mode="train"`` times one full training step: forward, cross-entropy against fixed labels,
  backward, and an SGD update.

Comparisons belong in one run: ``compare({"static": a, "kdna": b}, shape)`` measures each
model under the same options, interleaving them round by round so that a machine that slows
down halfway penalises every model alike, and ``ratios`` reads throughput against a baseline.
Timings on shared machines are noisy: read ratios, not absolute numbers, and never assert
them in unit tests (``benchmarks/`` holds the scripts that do this properly).
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from kdna._checks import instance_arg, int_at_least, module_arg, one_of, optional_positive_int
from kdna.deploy import deploy
from kdna.nn.utils import count_parameters, device_description

__all__ = ["Measurement", "Options", "compare", "count_macs", "device_description",
           "measure", "peak_memory", "ratios"]

_MODES = ("inference", "train")
_DTYPES = {"float32": None, "fp32": None, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class Options:
    """How to run a model: the same for every model in a comparison."""

    device: str = "cpu"           # "cpu", "cuda", "cuda:1", ...
    mode: str = "inference"       # "inference" (no_grad, eval) or "train" (one SGD step)
    channels_last: bool = False   # model and input in NHWC memory format
    dtype: str = "float32"        # autocast dtype: "float32" (no autocast), "bf16", "fp16"
    compile: bool = False         # torch.compile the model first (warm-up absorbs compiling)
    deploy: bool = False          # inference in deployment form (kdna.deploy.deploy) first
    warmup: int = 10              # untimed passes before timing
    iters: int = 30               # timed passes; the median and quartiles come from these

    def __post_init__(self) -> None:
        one_of("mode", self.mode, _MODES)
        one_of("dtype", self.dtype, sorted(_DTYPES))
        int_at_least("warmup", self.warmup, 0)
        int_at_least("iters", self.iters, 1)
        torch.device(self.device)  # raises on a malformed device string


@dataclass
class Measurement:
    """One model measured under one set of :class:`Options`."""

    name: str
    params: int                 # parameters of the model as given (shared ones counted once)
    macs: int                   # multiply-accumulates per image (convolutions and matmuls)
    batch_size: int
    input_size: tuple[int, ...]  # one image: (channels, height, width)
    latency_ms: float           # median time per pass (one batch)
    latency_p25_ms: float
    latency_p75_ms: float
    throughput: float           # images per second at the median latency
    peak_memory_mb: float       # MiB; see the module docstring for what it counts per device
    device: str                 # what ran it, e.g. "AMD EPYC 7B13, 2 threads"
    mode: str
    dtype: str
    channels_last: bool
    compiled: bool

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median: how noisy the timing was."""
        return (self.latency_p75_ms - self.latency_p25_ms) / self.latency_ms

    def row(self) -> dict[str, object]:
        """A flat dict (for CSV writers and DataFrames)."""
        row = asdict(self)
        row["input_size"] = "x".join(map(str, self.input_size))
        return row


def count_macs(model: nn.Module, example_inputs: Tensor) -> int:
    """Multiply-accumulates per image for one forward pass of the batch ``example_inputs``
    (torch's own FLOP counter / 2, divided by the batch size)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example_inputs)
    return round(counter.get_total_flops() / 2 / example_inputs.shape[0])


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensor storage created under it that are still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _release(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in self._seen or storage.nbytes() == 0:
                continue  # a view of something counted already
            self._seen.add(key)
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._release, key, storage.nbytes())
        return out


def peak_memory(step: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """Peak bytes allocated while ``step()`` runs, beyond what was allocated before.

    CUDA: the caching allocator's high-water mark. Elsewhere: tensor storage created during
    the step and alive at the same time, tracked per operation.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    tracker = _LiveBytes()
    with tracker:
        step()
    return tracker.peak


class _Timer:
    """Per-pass wall time: CUDA events on a GPU, ``perf_counter`` elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, step: Callable[[], object]) -> float:
        if self.cuda:
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            step()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        begin = time.perf_counter()
        step()
        return (time.perf_counter() - begin) * 1e3


def _prepare(model: nn.Module, shape: tuple[int, ...], options: Options
             ) -> tuple[Callable[[], object], nn.Module, Tensor]:
    """The model on the device and one callable that runs one pass (or training step)."""
    if len(shape) != 4 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError(f"input_shape must be (batch, channels, height, width) with positive "
                         f"integers, got {shape!r}")
    device = torch.device(options.device)
    if options.deploy and options.mode == "inference":
        model = deploy(model, inplace=True)  # BatchNorms folded wherever the method allows
    memory = torch.channels_last if options.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory)
    example = torch.randn(shape, device=device).contiguous(memory_format=memory)
    dtype = _DTYPES[options.dtype]
    autocast = ((lambda: torch.autocast(device.type, dtype=dtype)) if dtype
                else contextlib.nullcontext)
    runner = torch.compile(model) if options.compile else model

    if options.mode == "inference":
        model.eval()

        def step() -> object:
            with torch.no_grad(), autocast():
                return runner(example)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        with torch.no_grad(), autocast():
            classes = model.eval()(example[:1]).shape[-1]
        model.train()
        labels = torch.arange(shape[0], device=device) % classes

        def step() -> object:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(runner(example).float(), labels)
            loss.backward()
            optimizer.step()
            return loss
    return step, model, example


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def compare(models: Mapping[str, nn.Module], input_shape: tuple[int, ...], *,
            options: Options | None = None, threads: int | None = None,
            progress: bool = False, **option_overrides) -> list[Measurement]:
    """Measure several models under the same options, interleaved round by round.

    Parameters are counted on the models as given (before any deployment folding). Each
    model is deep-copied first (a training step changes weights; ``channels_last``
    changes layouts), so the caller's models are left as they were. ``threads`` sets torch's
    CPU thread count for the run. ``option_overrides`` are :class:`Options` fields.
    """
    instance_arg("models", models, Mapping, "a mapping of names to models")
    if not models:
        raise ValueError("compare needs at least one model, got none")
    for key, model in models.items():
        module_arg(f"models[{key!r}]", model)
    check_input_shape(input_shape)
    optional_positive_int("threads", threads)
    options = replace(options or Options(), **option_overrides)
    with _threads(threads):
        device = torch.device(options.device)
        timer = _Timer(device)
        prepared = {name: _prepare(copy.deepcopy(m), input_shape, options)
                    for name, m in models.items()}
        for step, _, _ in prepared.values():
            for _ in range(options.warmup):
                step()
        times: dict[str, list[float]] = {name: [] for name in prepared}
        rounds = range(options.iters)
        if progress:
            from tqdm.auto import tqdm
            rounds = tqdm(rounds, desc="timing", leave=False)
        for _ in rounds:
            for name, (step, _, _) in prepared.items():
                times[name].append(timer(step))
        description = device_description(device)
        results = []
        for name, (step, model, example) in prepared.items():
            p25, median, p75 = statistics.quantiles(times[name] * (2 if options.iters == 1 else 1),
                                                    n=4, method="inclusive")
            training = model.training
            macs = count_macs(model.eval(), example[:1])
            model.train(training)
            # The per-op tracker cannot see inside compiled kernels: no CPU number for those.
            peak = (float("nan") if options.compile and device.type != "cuda"
                    else peak_memory(step, device) / 2**20)
            results.append(Measurement(
                name=name, params=count_parameters(models[name]), macs=macs,
                batch_size=input_shape[0], input_size=tuple(input_shape[1:]),
                latency_ms=median, latency_p25_ms=p25, latency_p75_ms=p75,
                throughput=input_shape[0] / median * 1e3,
                peak_memory_mb=peak, device=description,
                mode=options.mode, dtype=options.dtype, channels_last=options.channels_last,
                compiled=options.compile))
            del step
    return results


def check_input_shape(input_shape: object) -> tuple[int, ...]:
    """``input_shape`` if it is a tuple (or list) of positive integers: ``(batch, 3, 224, 224)``."""
    if (isinstance(input_shape, str) or not isinstance(input_shape, tuple | list)
            or not input_shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                                      for d in input_shape)):
        raise ValueError(f"input_shape must be a tuple of positive integers such as "
                         f"(1, 3, 224, 224), got {input_shape!r}")
    return tuple(input_shape)


def measure(model: nn.Module, input_shape: tuple[int, ...], *, name: str = "model",
            **kwargs) -> Measurement:
    """Measure one model; keyword arguments as for :func:`compare` (and :class:`Options`)."""
    module_arg("model", model)
    return compare({name: model}, input_shape, **kwargs)[0]


def ratios(results: list[Measurement], baseline: str = "static") -> dict[str, float]:
    """Throughput of each result relative to ``baseline``'s (same mode and options)."""
    by_name = {r.name: r for r in results}
    if baseline not in by_name:
        raise ValueError(f"baseline {baseline!r} is not among the results {sorted(by_name)}")
    return {r.name: r.throughput / by_name[baseline].throughput for r in results}
