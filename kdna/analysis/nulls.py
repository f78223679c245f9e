"""Null baselines: what each analysis measure gives when there is nothing to find.

An analysis claim stands beside its null (DESIGN.md). Here are the nulls kdna's measures need:

* :func:`random_weights`: the same architecture with random weights (BatchNorm statistics
  re-estimated on the inputs), for CKA between layers; the sample-permuted null of CKA is
  :func:`kdna.analysis.cka_matrices` with ``permuted_seed``;
* :func:`random_kernel_similarity`: random kernels of the same shapes, aligned the same way,
  for the kernel cosine of :func:`kdna.analysis.kernel_similarity`;
* :func:`block_permutation_test`: a p-value for "layers within a group (a stage) are more
  alike than layers of different groups", from shuffling the group labels;
* :func:`label_permutation_test`: the class-explained share of each gate's variance
  (``routing_statistics(...).specialisation``) against shuffled class labels;
* :func:`fixed_gates`: the gate ablation, every child's gate held at a constant (its mean over
  the data, or 1), to measure what the per-input routing does for the prediction.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kdna._checks import positive_int
from kdna.analysis.hooks import resolve_layers
from kdna.analysis.routing import Routing, routing_statistics
from kdna.analysis.similarity import Similarity, kernel_cosine_matrix, kernel_similarity
from kdna.nn.conv import KernelChild
from kdna.nn.norm import BATCH_NORMS
from kdna.nn.utils import children_of, device_of

__all__ = ["PermutationTest", "block_permutation_test", "fixed_gates", "label_permutation_test",
           "random_kernel_similarity", "random_weights"]



@dataclass
class PermutationTest:
    """An observed statistic beside its permutation distribution."""

    statistic: float  # the observed value
    null: Tensor  # [permutations] the statistic under shuffled labels (float64)
    p_value: float  # (1 + #{null >= statistic}) / (1 + permutations), one-sided; NaN: no statistic

    @property
    def null_mean(self) -> float:
        return float(self.null.mean())


def _p_value(statistic: float, null: Tensor) -> float:
    """One-sided p-value; NaN for a NaN statistic (e.g. a gate that never varies has no
    class-explained share), which no threshold counts as significant."""
    if math.isnan(statistic):
        return math.nan
    return float((1 + (null >= statistic - 1e-12).sum()) / (1 + null.numel()))


def random_weights(model: nn.Module, inputs: Tensor | Iterable[Tensor] | None = None, *,
                   seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every parameter re-drawn by its module's own
    ``reset_parameters`` (PyTorch's default initialisation) under ``seed``.

    With ``inputs`` (one batch or an iterable of batches), every BatchNorm's running
    statistics are then re-estimated on them (a plain average over the batches), as a
    randomly initialised network would see them in training mode; without, they are reset to
    mean 0 and variance 1. The copy is returned in eval mode; ``model`` is untouched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    if inputs is not None:
        norms = [m for m in clone.modules() if isinstance(m, BATCH_NORMS)]
        momenta = [m.momentum for m in norms]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the batches
        clone.train()
        device = device_of(clone)
        with torch.no_grad():
            for batch in [inputs] if isinstance(inputs, Tensor) else inputs:
                batch = batch[0] if isinstance(batch, tuple | list) else batch
                clone(batch.to(device))
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
    return clone.eval()


def random_kernel_similarity(model: nn.Module, *, layers: Sequence[str] | None = None,
                             align: bool = False, seed: int = 0) -> Similarity:
    """:func:`kernel_similarity` of independent Gaussian kernels of the same shapes as
    ``model``'s (the same layers, the same ``align``): the cosine that shape and alignment
    alone produce. Matching each filter to its best partner lifts even unrelated kernels
    well above 0, so an aligned cosine means something only above this."""
    names = kernel_similarity(model, layers=layers).names
    modules = resolve_layers(model, names, None)
    generator = torch.Generator().manual_seed(seed)
    kernels = []
    for module in modules.values():
        shape = (module.static_weight() if isinstance(module, KernelChild) else module.weight).shape
        kernels.append(torch.randn(shape, generator=generator, dtype=torch.float64))
    kind = "random kernel cosine" + (" (aligned)" if align else "")
    return Similarity(names, kernel_cosine_matrix(kernels, align=align).float(), kind)


def _within_minus_across(matrix: Tensor, same: Tensor) -> Tensor:
    """``[P]`` mean of ``matrix`` over ``same`` off-diagonal pairs minus over the others."""
    valid = ~matrix.isnan() & ~torch.eye(len(matrix), dtype=torch.bool)
    values = matrix.nan_to_num(0.0)
    within, across = same & valid, ~same & valid
    mean = lambda mask: (values * mask).sum(dim=(-2, -1)) / mask.sum(dim=(-2, -1))  # noqa: E731
    return mean(within) - mean(across)


def block_permutation_test(similarity: Similarity | Tensor, groups: Sequence[object], *,
                           permutations: int = 10000, seed: int = 0) -> PermutationTest:
    """Is the mean similarity within groups larger than across groups, beyond chance?

    ``groups`` gives each layer's group (e.g. its stage), in the order of the matrix. The
    statistic is the mean over off-diagonal within-group pairs minus the mean over
    across-group pairs (NaN entries skipped); the null shuffles the group labels among the
    layers ``permutations`` times. Layers next to each other tend to be alike whatever their
    group, so a small p-value says "grouped", not yet "grouped by stage rather than by depth".
    """
    matrix = similarity.matrix if isinstance(similarity, Similarity) else similarity
    matrix = torch.as_tensor(matrix, dtype=torch.float64).cpu()
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or len(groups) != len(matrix):
        raise ValueError(f"need a square matrix and one group per layer, got shape "
                         f"{list(matrix.shape)} and {len(groups)} groups")
    permutations = positive_int("permutations", permutations)
    codes = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    labels = torch.tensor([codes[g] for g in groups])
    if len(codes) < 2 or len(codes) == len(labels):
        raise ValueError(f"groups must put some layers together and keep some apart, got "
                         f"{len(codes)} groups for {len(labels)} layers")
    observed = float(_within_minus_across(matrix, labels[:, None] == labels[None, :]))
    generator = torch.Generator().manual_seed(seed)
    null = []
    for start in range(0, permutations, 1000):
        count = min(1000, permutations - start)
        shuffled = labels[torch.argsort(torch.rand(count, len(labels), generator=generator), 1)]
        null.append(_within_minus_across(matrix, shuffled[:, :, None] == shuffled[:, None, :]))
    null = torch.cat(null)
    return PermutationTest(observed, null, _p_value(observed, null))


def label_permutation_test(routing: Routing, labels: Tensor | Sequence[int], *,
                           permutations: int = 200, seed: int = 0) -> dict[str, PermutationTest]:
    """Each child's ``specialisation`` (the class-explained share of its gate variance, from
    :func:`routing_statistics`) against the same share for shuffled ``labels``.

    With few inputs per class, even class-blind gates score about ``(K - 1) / (N - 1)``; the
    shuffled labels show that floor, and the p-value how often chance reaches the observed
    share. One permutation of the labels is shared by all children. A gate that never varies
    (``gate_kinds``: identity or constant) has no share: its statistic and p-value are NaN."""
    observed = routing_statistics(routing, labels).specialisation
    labels = torch.as_tensor(labels).cpu()
    permutations = positive_int("permutations", permutations)
    _, index = torch.unique(labels, return_inverse=True)
    generator = torch.Generator().manual_seed(seed)
    orders = torch.argsort(torch.rand(permutations, len(labels), generator=generator), dim=1)
    onehot = torch.nn.functional.one_hot(index[orders]).to(torch.float64)  # [P, N, K]
    counts = onehot.sum(dim=1)  # [P, K]
    tests = {}
    for name in routing.names:
        gate = routing.gates[name].to(torch.float64)
        centred = gate - gate.mean(dim=0)
        total = centred.square().sum()
        sums = onehot.transpose(1, 2) @ centred  # [P, K, C] per-class sums of deviations
        between = (sums.square().sum(dim=2) / counts.clamp_min(1)).sum(dim=1)
        null = between / total if total > 0 else torch.full((permutations,), float("nan"))
        tests[name] = PermutationTest(observed[name], null, _p_value(observed[name], null))
    return tests


@contextmanager
def fixed_gates(model: nn.Module, gates: float | Mapping[str, Tensor]) -> Iterator[nn.Module]:
    """Inside the block, every gated child's gate outputs a constant instead of its per-input
    vector: ``gates`` one number for all (1: the routing switched off, for the identity gate
    form) or a ``{child name: [C] vector}`` for each child (e.g. each gate's mean over the data,
    ``{n: g.mean(0) for n, g in routing.gates.items()}``). The hooks come off on exit."""
    children = children_of(model, verb="fix the gates of", gated=True)
    if isinstance(gates, Mapping):
        missing = [n for n in children if n not in gates]
        if missing:
            raise ValueError(f"gates has no value for the children {missing[:5]}")
        values = {n: torch.as_tensor(gates[n]).detach() for n in children}
    elif isinstance(gates, int | float) and not isinstance(gates, bool):
        values = {n: torch.tensor(float(gates)) for n in children}
    else:
        raise TypeError(f"gates must be a number or a mapping of child names to gate vectors, "
                        f"got {type(gates).__name__}")
    handles = []
    try:
        for name, child in children.items():
            handles.append(child.gate.register_forward_hook(
                lambda _m, _a, out, value=values[name]: value.to(out).expand_as(out)))
        yield model
    finally:
        for handle in handles:
            handle.remove()
