"""Routing, measured: what each child's gate does for each input, and per class.

:func:`capture_routing` records every gate vector through forward hooks that are always
removed (also when the forward pass raises); :func:`routing_statistics` summarises them per
class; :func:`gate_kinds` says which gates route at all (a freshly converted network's identity
gates are exactly 1 for every input, and a gate can also settle on one constant vector). Plain
torch; figures live in :mod:`kdna.viz`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kdna._checks import instance_arg, module_arg, positive_int
from kdna.analysis.hooks import detached_output, hooked, input_batches, resolve_layers
from kdna.nn.conv import KernelChild
from kdna.nn.utils import children_of

__all__ = ["GATE_KINDS", "Routing", "RoutingStats", "capture_routing", "child_distance",
           "gate_kinds", "most_changed_channels", "routing_statistics"]

# what a gate did on the captured inputs, from the least to the most routing (gate_kinds)
GATE_KINDS = ("identity", "constant", "per-input")


@dataclass
class Routing:
    """The gate vectors of a model's children, one row per input (see :func:`capture_routing`)."""

    names: list[str]  # child module names, in model order
    gates: dict[str, Tensor]  # name -> [N, C_in] gate vectors (float32, CPU)
    logits: Tensor | None  # [N, classes] model outputs, if captured


@dataclass
class RoutingStats:
    """Per-class summaries of :class:`Routing` (see :func:`routing_statistics`)."""

    mean_per_class: dict[str, Tensor]  # name -> [K, C] mean gate per class (rows as `classes`)
    variation: dict[str, float]  # name -> mean over channels of the gate's std across inputs
    specialisation: dict[str, float]  # name -> share of the gate's variance explained by class
    classes: list[int]  # the sorted class labels, one per row of mean_per_class


def capture_routing(model: nn.Module, inputs: Tensor | Iterable[Tensor | tuple], *,
                    layers: Sequence[str] | None = None, keep_logits: bool = True) -> Routing:
    """Record the gate vector that each KernelDNA child (``layers``, by default every child
    with a gate) computes for each input.

    ``inputs`` is one batch or an iterable of batches (a ``DataLoader`` of ``(x, y)``: ``x`` is
    taken), each moved to the model's device. ``logits`` keeps the model's outputs unless
    ``keep_logits=False`` or the model does not return a Tensor. A child that runs more than
    once per forward pass gives a row for every call.
    """
    module_arg("model", model)
    if layers is None:
        children = children_of(model, verb="capture the routing of", gated=True)
    else:
        children = resolve_layers(model, layers, None)
        for name, module in children.items():
            if not isinstance(module, KernelChild) or module.gate is None:
                raise ValueError(f"layer {name!r} ({type(module).__name__}) is not a KernelDNA "
                                 "child with a gate")
    gates: dict[str, list[Tensor]] = {name: [] for name in children}
    logits: list[Tensor] | None = [] if keep_logits else None

    def record(name: str, _module: nn.Module, out: object) -> None:
        gates[name].append(detached_output(name, out).float().cpu())

    gate_modules = {name: child.gate for name, child in children.items()}
    batches = 0
    with hooked(model, gate_modules, record) as device:
        for batch in input_batches(inputs):
            out = model(batch.to(device))
            batches += 1
            if logits is not None and isinstance(out, Tensor):
                logits.append(out.detach().float().cpu())
            else:
                logits = None
    if not batches:
        raise ValueError("inputs held no batch")
    missing = [name for name, rows in gates.items() if not rows]
    if missing:
        raise ValueError(f"the gates of {missing} did not run during the forward passes")
    return Routing(names=list(children), gates={n: torch.cat(g) for n, g in gates.items()},
                   logits=torch.cat(logits) if logits else None)


def gate_kinds(routing: Routing, *, tolerance: float = 0.0) -> dict[str, str]:
    """What each child's gate did on the captured inputs, in model order (see
    :data:`GATE_KINDS`):

    * ``"identity"``: every value within ``tolerance`` of 1, for every input and channel. The
      identity gate of a freshly converted, untrained network is exactly 1 (its last layer is
      zero), so it changes nothing and routes nothing: look at routing after fine-tuning;
    * ``"constant"``: the same vector for every input (within ``tolerance``), not all 1: a
      fixed per-channel scale, no routing (e.g. a gate whose hidden units never fire);
    * ``"per-input"``: the gate differs between inputs: routing.

    A gate seen on one input only cannot vary: it is ``"identity"`` or ``"constant"``. When
    every gate is ``"identity"`` a ``UserWarning`` says so: there is no routing to look at.
    """
    instance_arg("routing", routing, Routing, "a Routing (from capture_routing)")
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not (
            tolerance >= 0):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    kinds = {}
    for name in routing.names:
        gate = routing.gates[name]
        if gate.dim() != 2 or not len(gate):
            raise ValueError(f"the gates of {name!r} must be [inputs, channels] with at least "
                             f"one input, got shape {list(gate.shape)}")
        if (gate - 1).abs().max() <= tolerance:
            kinds[name] = "identity"
        elif (gate - gate[0]).abs().max() <= tolerance:
            kinds[name] = "constant"
        else:
            kinds[name] = "per-input"
    if kinds and set(kinds.values()) == {"identity"}:
        warnings.warn(f"every gate of the {len(kinds)} gated children is exactly 1 on these "
                      f"inputs: identity gates as a freshly converted, untrained network has "
                      f"them, which route nothing; fine-tune the network first (e.g. "
                      f"kdna.finetune(..., method='kdna_gates_4'))", UserWarning, stacklevel=2)
    return kinds


def routing_statistics(routing: Routing, labels: Tensor | Sequence[int]) -> RoutingStats:
    """Per-class mean gates, and how much of the routing the class (``labels``, ``[N]``) explains.

    ``variation``: the mean over channels of the gate's (population) std across inputs.
    ``specialisation``: between-class / total variance summed over channels (the per-channel
    shares weighted by variance), in [0, 1]; NaN for a gate that never varies. It is biased
    upwards with few inputs per class: class-blind gates give about ``(K - 1) / (N - 1)``.
    """
    instance_arg("routing", routing, Routing, "a Routing (from capture_routing)")
    labels = torch.as_tensor(labels).detach().cpu()
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.is_complex():
        raise ValueError(f"labels must be a 1-D sequence of integer classes, got dtype "
                         f"{labels.dtype} and shape {list(labels.shape)}")
    classes, index = torch.unique(labels, return_inverse=True)
    counts = torch.bincount(index, minlength=len(classes)).to(torch.float64)
    means, variation, specialisation = {}, {}, {}
    for name in routing.names:
        gate = routing.gates[name].to(torch.float64)
        if gate.dim() != 2 or gate.shape[0] != len(labels) or not len(labels):
            raise ValueError(f"{len(labels)} labels for the gates of {name!r} of shape "
                             f"{list(gate.shape)}; need one label per gate vector")
        class_means = torch.zeros(len(classes), gate.shape[1], dtype=torch.float64)
        class_means = class_means.index_add_(0, index, gate) / counts[:, None]
        overall = gate.mean(dim=0)
        total = (gate - overall).square().mean(dim=0)
        between = (counts[:, None] / len(labels) * (class_means - overall).square()).sum(dim=0)
        means[name] = class_means.float()
        variation[name] = float(total.sqrt().mean())
        spread = float(total.sum())
        specialisation[name] = (min(1.0, max(0.0, float(between.sum()) / spread)) if spread > 0
                                else math.nan)
    return RoutingStats(means, variation, specialisation, classes.tolist())


def child_distance(model: nn.Module) -> dict[str, float]:
    """How far static fine-tuning moved each child from its parent, in model order:
    ``||child.static_weight() - parent.weight|| / ||parent.weight||`` (0 for a new child)."""
    module_arg("model", model)
    children = children_of(model, verb="measure")
    distances = {}
    with torch.no_grad():
        for name, child in children.items():
            parent = child.parent.weight.to(torch.float64)
            norm = torch.linalg.vector_norm(parent)
            moved = torch.linalg.vector_norm(child.static_weight().to(torch.float64) - parent)
            distances[name] = float(moved / norm) if norm > 0 else math.nan
    return distances


def most_changed_channels(gate: Tensor, k: int = 5) -> tuple[list[int], list[int]]:
    """For one gate vector ``[C]``: the ``k`` most boosted channels (largest gate first) and
    the ``k`` most suppressed (smallest first); ``k`` larger than ``C`` means all channels."""
    if not isinstance(gate, Tensor):
        raise TypeError(f"gate must be a Tensor [channels], got {type(gate).__name__}")
    if gate.dim() != 1 or gate.numel() == 0:
        raise ValueError(f"gate must be one gate vector [channels] (a row of Routing.gates[name]),"
                         f" got shape {list(gate.shape)}")
    k = positive_int("k", k)
    order = torch.argsort(gate.detach().float().cpu(), stable=True)
    k = min(k, len(order))
    return order.flip(0)[:k].tolist(), order[:k].tolist()
