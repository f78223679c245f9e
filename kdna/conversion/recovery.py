"""Recovering a shared network from its original: distillation on unlabeled images.

Sharing pretrained kernels changes a network's function (their kernels are unrelated, so the
children's scales cannot reproduce them). :func:`distill` trains the converted network (the
*student*) back towards the original (the *teacher*) on images without labels, in two stages:

1. **block by block**: every block that holds a child (or a parent that children borrow) is
   fed the *teacher's* input to that block and trained to give the teacher's output, all
   blocks at once (their losses summed; a parent shared by blocks gets every block's
   gradient). A block's error cannot reach the next block, so each learns its own job, as in
   few-sample knowledge distillation. The teacher's block inputs and outputs are computed once.
2. **logits**: the whole student is trained to match the teacher's softened class
   probabilities (KL divergence at a temperature), so the blocks' small errors stop adding up.

By default only what KernelDNA added trains (``train="adapters"``: the children's scales,
residuals, gates and biases), so a parent kept as a member of its group, and every dense
layer, keep computing exactly what they did; ``train="blocks"`` trains every parameter of the
blocks (parents, depthwise layers, norms). The rest is frozen, the student stays in eval mode
(no BatchNorm statistic moves) and every ``requires_grad`` flag is restored afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from kdna._checks import (
    int_at_least,
    module_arg,
    one_of,
    positive_float,
    positive_int,
    tensor_arg,
)
from kdna.conversion.report import Agreement, agreement
from kdna.nn.conv import KernelChild
from kdna.nn.utils import eval_mode

__all__ = ["DistillResult", "distill", "recovery_blocks"]


@dataclass
class DistillResult:
    """What :func:`distill` did: agreement with the teacher before and after, per stage."""

    before: Agreement
    after_blocks: Agreement
    after: Agreement
    blocks: list[str]
    trainable: int  # parameters trained
    block_losses: list[float] = field(default_factory=list)  # per step, summed over blocks
    logit_losses: list[float] = field(default_factory=list)  # per step
    seconds: float = 0.0

    def __str__(self) -> str:
        return (f"distilled {len(self.blocks)} blocks ({self.trainable:,} parameters) in "
                f"{self.seconds:.0f} s: top-1 agreement {self.before.top1:.1%} -> "
                f"{self.after_blocks.top1:.1%} (blocks) -> {self.after.top1:.1%} (logits); "
                f"KL {self.before.kl:.3f} -> {self.after.kl:.3f} nats")


def recovery_blocks(model: nn.Module, *, parents: bool = True) -> list[str]:
    """The blocks :func:`distill` trains by default: for each child (and, with ``parents``,
    each layer whose kernel a child borrows), its outermost enclosing module that is an
    element of an ``nn.Sequential`` and not a container itself (``features.6.1``,
    ``layer3.0``); the layer itself where it has none. In model order."""
    module_arg("model", model)
    modules = dict(model.named_modules())
    borrowed = {id(m.parent) for m in modules.values() if isinstance(m, KernelChild)}
    wanted = [n for n, m in modules.items()
              if isinstance(m, KernelChild)
              or (parents and id(m) in borrowed and not n.endswith("parent"))]
    if not wanted:
        raise ValueError(f"{type(model).__name__} has no KernelDNA children to recover; "
                         "convert it first (kdna.convert)")
    blocks: list[str] = []
    for name in wanted:
        block = _block_of(name, modules)
        if not any(block == b or block.startswith(b + ".") for b in blocks):
            blocks = [b for b in blocks if not b.startswith(block + ".")] + [block]
    order = list(modules)
    return sorted(blocks, key=order.index)


def _block_of(name: str, modules: dict[str, nn.Module]) -> str:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        prefix, container = ".".join(parts[:i]), ".".join(parts[:i - 1])
        if (isinstance(modules.get(container), nn.Sequential)
                and not isinstance(modules[prefix], (nn.Sequential, nn.ModuleList))):
            return prefix
    return name


def distill(student: nn.Module, teacher: nn.Module, images: Tensor, *,
            held_out: Tensor | None = None, blocks: Sequence[str] | None = None,
            train: str = "adapters", block_steps: int = 200, logit_steps: int = 100,
            lr: float = 1e-3, batch_size: int = 32, temperature: float = 2.0, seed: int = 0,
            progress: bool = True) -> DistillResult:
    """Train ``student`` (a converted copy of ``teacher``) back towards ``teacher`` on
    ``images`` (a batch the teacher accepts, no labels), block by block and then on the
    logits (see the module docstring). Changes ``student`` in place.

    Args:
        held_out: images to measure the agreement on (default: ``images`` themselves); keep
            them disjoint from ``images`` for an honest figure.
        blocks: module names of ``student`` to distill block by block (default:
            :func:`recovery_blocks`, with the parents' blocks when ``train="blocks"``).
        train: ``"adapters"`` (what KernelDNA added inside the blocks: every child's scales,
            residual, gate and own bias; the parents and every dense layer stay as they
            are) or ``"blocks"`` (every parameter of the blocks, parents included).
        block_steps, logit_steps: Adam steps of each stage (0 skips a stage).
        lr: Adam's learning rate (cosine-annealed to zero over each stage).
        batch_size: images per step; temperature: of the logit stage's softmax.

    Returns:
        a :class:`DistillResult` (agreement before, after the block stage, after).
    """
    module_arg("student", student)
    module_arg("teacher", teacher)
    tensor_arg("images", images)
    if held_out is not None:
        tensor_arg("held_out", held_out)
    int_at_least("block_steps", block_steps, 0)
    int_at_least("logit_steps", logit_steps, 0)
    positive_float("lr", lr)
    positive_int("batch_size", batch_size)
    positive_float("temperature", temperature)
    one_of("train", train, ("adapters", "blocks"))
    names = (list(blocks) if blocks is not None
             else recovery_blocks(student, parents=train == "blocks"))
    parts = _resolve(student, teacher, names)
    trained = _trained(parts, train)
    measured_on = images if held_out is None else held_out
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    with _frozen_except(student, trained) as params, eval_mode(student), eval_mode(teacher):
        reference = _outputs(teacher, measured_on, batch_size)

        def measure() -> Agreement:
            return agreement(reference, _outputs(student, measured_on, batch_size))

        before = measure()
        block_losses = _block_stage(parts, teacher, images, params, block_steps, lr,
                                    batch_size, generator, progress)
        after_blocks = measure() if block_steps else before
        logit_losses = _logit_stage(student, teacher, images, params, logit_steps, lr,
                                    batch_size, temperature, generator, progress)
        after = measure() if logit_steps else after_blocks
    return DistillResult(before, after_blocks, after, names, sum(p.numel() for p in params),
                         block_losses, logit_losses, time.perf_counter() - start)


def _resolve(student: nn.Module, teacher: nn.Module, names: list[str]
             ) -> dict[str, tuple[nn.Module, nn.Module]]:
    if not names:
        raise ValueError("blocks is empty; name at least one module of the student")
    parts = {}
    for name in names:
        try:
            parts[name] = (student.get_submodule(name), teacher.get_submodule(name))
        except AttributeError:
            raise ValueError(f"block {name!r} is not a module of both the student "
                             f"({type(student).__name__}) and the teacher "
                             f"({type(teacher).__name__})") from None
    return parts


def _trained(parts: dict[str, tuple[nn.Module, nn.Module]], train: str) -> list[nn.Parameter]:
    """The parameters ``train`` names, each once; a ``ValueError`` for none."""
    blocks = [student for student, _ in parts.values()]
    if train == "blocks":
        params = [p for block in blocks for p in block.parameters()]
    else:
        children = [m for block in blocks for m in block.modules() if isinstance(m, KernelChild)]
        params = [p for c in children for p in (*c.adapter_parameters(), c.bias)
                  if p is not None]
    unique = list({id(p): p for p in params}.values())
    if not unique:
        raise ValueError(f"the blocks {list(parts)} have nothing to train with train={train!r}"
                         " (no KernelDNA child in them)")
    return unique


class _frozen_except:
    """Only ``params`` train; every ``requires_grad`` flag comes back afterwards."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter]) -> None:
        self.model, self.params = model, params

    def __enter__(self) -> list[nn.Parameter]:
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self.flags:
            p.requires_grad_(False)
        params = self.params
        for p in params:
            p.requires_grad_(True)
        return params

    def __exit__(self, *exc: object) -> None:
        for p, flag in self.flags:
            p.requires_grad_(flag)


@torch.no_grad()
def _outputs(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    return torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def _block_io(teacher: nn.Module, modules: dict[str, nn.Module], images: Tensor,
              batch_size: int) -> dict[str, tuple[Tensor, Tensor]]:
    """Each block's input and output in the teacher, for every image (one pass)."""
    seen: dict[str, tuple[list[Tensor], list[Tensor]]] = {n: ([], []) for n in modules}

    def hook(name: str):
        def record(_module: nn.Module, args: tuple, output: object) -> None:
            if len(args) != 1 or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
                raise ValueError(f"block {name!r} must take one tensor and return one to be "
                                 "distilled block by block; name other blocks (blocks=...)")
            seen[name][0].append(args[0])
            seen[name][1].append(output)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        _outputs(teacher, images, batch_size)
    finally:
        for handle in handles:
            handle.remove()
    return {n: (torch.cat(ins), torch.cat(outs)) for n, (ins, outs) in seen.items()}


def _optimise(loss_of: Callable[[Tensor], Tensor], params: list[nn.Parameter], steps: int,
              lr: float, count: int, batch_size: int, generator: torch.Generator, desc: str,
              progress: bool) -> list[float]:
    """``steps`` Adam steps (cosine-annealed ``lr``) on ``loss_of(indices)`` for random
    minibatches of ``count`` samples; the loss of each step."""
    optimiser = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(steps, 1))
    losses = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        index = torch.randint(count, (min(batch_size, count),), generator=generator)
        loss = loss_of(index)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def _block_stage(parts: dict[str, tuple[nn.Module, nn.Module]], teacher: nn.Module,
                 images: Tensor, params: list[nn.Parameter], steps: int, lr: float,
                 batch_size: int, generator: torch.Generator, progress: bool) -> list[float]:
    if steps == 0:
        return []
    io = _block_io(teacher, {n: t for n, (_, t) in parts.items()}, images, batch_size)
    scale = {n: out.float().pow(2).mean().clamp_min(1e-12) for n, (_, out) in io.items()}

    def loss_of(index: Tensor) -> Tensor:
        return sum(F.mse_loss(student(io[n][0][index]), io[n][1][index]) / scale[n]
                   for n, (student, _) in parts.items())

    return _optimise(loss_of, params, steps, lr, len(images), batch_size, generator,
                     "distill: blocks", progress)


def _logit_stage(student: nn.Module, teacher: nn.Module, images: Tensor,
                 params: list[nn.Parameter], steps: int, lr: float, batch_size: int,
                 temperature: float, generator: torch.Generator, progress: bool) -> list[float]:
    if steps == 0:
        return []
    targets = (_outputs(teacher, images, batch_size) / temperature).log_softmax(dim=1)

    def loss_of(index: Tensor) -> Tensor:
        logits = student(images[index]) / temperature
        return F.kl_div(logits.log_softmax(dim=1), targets[index], log_target=True,
                        reduction="batchmean") * temperature ** 2

    return _optimise(loss_of, params, steps, lr, len(images), batch_size, generator,
                     "distill: logits", progress)
