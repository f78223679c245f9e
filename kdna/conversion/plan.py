"""Planning a conversion: which layers share which parent, decided without changing anything.

:func:`kdna.convert` is :func:`plan_conversion` followed by
:func:`kdna.conversion.convert.apply_plan`, like peft's adapters: it collects first and
replaces afterwards, so a bad rule fails before anything changed. The plan is a
:class:`ConversionPlan` you can read (and print) before applying it.

1. **Candidates**: every exact ``nn.Conv2d`` with stride 1 and zero padding, and every
   ``nn.Linear`` that runs per position (its input has dimensions between batch and
   features, as ConvNeXt's channels-last pointwise layers do: such a Linear *is* a 1x1
   convolution, so it shares like one). Strided convolutions (the stem, the transitions),
   layers that see a single position (heads, squeeze-excitation) stay dense.
2. **Groups**: candidates with the same kernel shape, the same groups and the same input
   resolution share one parent. Resolution stands for "stage"; it is read from one probe
   forward pass (``example_inputs``, or a 224x224 zero image) in eval mode without gradients,
   so not even a BatchNorm statistic moves. A group is kept only if a child's adapter is
   smaller than the kernel it replaces (a depthwise kernel is not worth a gate, so depthwise
   convolutions stay dense, as in the paper's layouts). Explicit ``groups`` skip the rule.
3. **Parents**: in each group one member stays as it is and becomes the parent, chosen by
   the config's ``parent_rule`` (the member most similar to the others, by default).

With ``share=False`` (adapters in place, :meth:`ConvertConfig.adapters`) there are no groups:
every candidate that sees more than one position, whatever its stride, becomes a child of its
own kernel (``ConversionPlan.own``). Depthwise convolutions get static scales only: their
kernel is ``9 C`` parameters while a gate over ``C`` channels costs about ``2 C^2 / r``
(larger from ``C = 72`` at ``r = 16``), and a per-channel gate before a depthwise layer only
rescales channels that the BatchNorm after it and the next layer's gate can rescale too.
Any other layer whose gate would not be smaller than its kernel also gets static scales only.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from kdna._checks import module_arg
from kdna.conversion.config import ConvertConfig, Groups, resolve_config
from kdna.nn.conv import KernelChild
from kdna.nn.gate import ChannelGate
from kdna.nn.residual import residual_size
from kdna.nn.utils import count_parameters

__all__ = ["ConversionPlan", "adapter_size", "candidate_layers", "check_not_converted",
           "gate_reduction_for", "in_place_reduction", "plan_conversion", "probe",
           "residual_rank", "select_layers", "shared_child"]


@dataclass(frozen=True)
class ConversionPlan:
    """What :func:`kdna.convert` will do to a model: the result of :func:`plan_conversion`."""

    config: ConvertConfig  # the policy: gate form, fit, reductions (the parents already chosen)
    layout: dict[str, list[str]]  # parent name -> the names of the layers that become its children
    skipped: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # (group, why dense)
    example_inputs: Tensor | None = None  # the batch given, to measure agreement after applying
    probe_output: Any = None  # the unconverted model's output on example_inputs, if given
    own: list[str] = field(default_factory=list)  # layers that become children of their own kernel

    @property
    def children(self) -> list[str]:
        """The names of every layer that becomes a child."""
        return [c for children in self.layout.values() for c in children] + list(self.own)

    def __str__(self) -> str:
        lines = [f"KernelDNA conversion plan: {len(self.layout)} parents, "
                 f"{len(self.children)} children ({self.config})"]
        lines += [f"- {parent} <- {', '.join(children)}"
                  for parent, children in self.layout.items()]
        if self.own:
            lines.append(f"- adapters in place (each on its own kernel): {', '.join(self.own)}")
        lines += [f"- left dense: {', '.join(names)}: {why}" for names, why in self.skipped]
        return "\n".join(lines)


def check_not_converted(model: nn.Module) -> None:
    """A ``ValueError`` if ``model`` already has KernelDNA children."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    already = [n for n, m in model.named_modules() if isinstance(m, KernelChild)]
    if already:
        raise ValueError(f"{type(model).__name__} is already converted ({len(already)} "
                         f"KernelDNA children, e.g. {already[0]!r}); convert a fresh copy")


def candidate_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``name -> layer`` for every exact ``nn.Conv2d`` and ``nn.Linear`` of ``model``."""
    # Exact types: subclasses (timm's Conv2dSame, ...) may pad or reshape in forward.
    return {n: m for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)}


def probe(model: nn.Module, layers: dict[str, nn.Module], example_inputs: Tensor | None
          ) -> tuple[dict[str, tuple[int, ...]], Any]:
    """Run one batch through ``model`` (eval mode, no gradients) and record the input shape
    of each of ``layers``; ``(shapes, output)``. Without ``example_inputs``, a 224x224 zero
    image with the first convolution's channels."""
    if example_inputs is None:
        first = next((m for m in layers.values() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise ValueError("the model has no nn.Conv2d; pass example_inputs to probe it")
        example_inputs = torch.zeros(1, first.in_channels, 224, 224,
                                     device=first.weight.device, dtype=first.weight.dtype)
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            shapes.setdefault(name, tuple(args[0].shape))
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in layers.items()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            output = model(example_inputs)
    except Exception as exc:
        raise ValueError(
            f"could not run a probe batch of shape {list(example_inputs.shape)} through "
            f"{type(model).__name__} to find each layer's resolution ({exc}); pass "
            "example_inputs=<a batch the model accepts>, or give groups explicitly"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return shapes, output


def select_layers(names: list[str], include: Sequence[str] | None,
                  exclude: Sequence[str] | None) -> list[str]:
    """The ``names`` that match a glob of ``include`` (all, if ``None``) and none of
    ``exclude``; a ``ValueError`` for a pattern that matches nothing."""
    for label, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns or ():
            if not fnmatch.filter(names, pattern):
                example = names[len(names) // 2] if names else "none"
                raise ValueError(f"{label} pattern {pattern!r} matches no convolution or "
                                 f"pointwise layer (names look like {example!r})")
    return [n for n in names
            if (include is None or any(fnmatch.fnmatch(n, p) for p in include))
            and not any(fnmatch.fnmatch(n, p) for p in exclude or ())]


def _group_key(module: nn.Module, in_shape: tuple[int, ...]) -> tuple | None:
    positions = in_shape[2:] if isinstance(module, nn.Conv2d) else in_shape[1:-1]
    if math.prod(positions) <= 1:  # a head, or squeeze-excitation on a pooled vector
        return None
    if isinstance(module, nn.Conv2d):
        if module.stride != (1, 1) or module.padding_mode != "zeros":
            return None
        return ("conv", tuple(module.weight.shape), module.groups, in_shape[2:])
    return ("linear", tuple(module.weight.shape), 1, in_shape[1:-1])


def _auto_groups(layers: dict[str, nn.Module], shapes: dict[str, tuple[int, ...]]
                 ) -> list[list[str]]:
    grouped: dict[tuple, list[str]] = {}
    for name, module in layers.items():
        key = _group_key(module, shapes[name]) if name in shapes else None
        if key is not None:
            grouped.setdefault(key, []).append(name)
    return [members for members in grouped.values() if len(members) > 1]


def gate_reduction_for(module: nn.Module, gate_reduction: int | str | None,
                       max_hidden: int | None = None) -> int | None:
    """The gate reduction ratio a child of ``module`` gets under the config's setting,
    raised where needed so that the gate's hidden width is at most ``max_hidden``."""
    if gate_reduction is None:
        return None
    c_in, c_out = module.weight.shape[1] * getattr(module, "groups", 1), module.weight.shape[0]
    if gate_reduction == "auto":
        # r = 4, raised by the expansion ratio when the input is wider than the output: the
        # paper's choice (r = 24 before MobileNetV2's 6x-expanded projection).
        gate_reduction = 4 * max(1, round(c_in / c_out))
    if max_hidden is not None:  # hidden = c_in // r <= max_hidden once r >= ceil(c_in / cap)
        gate_reduction = max(gate_reduction, -(-c_in // max_hidden))
    return gate_reduction


def in_place_reduction(module: nn.Module, config: ConvertConfig) -> int | None:
    """The gate reduction of an adapter in place on ``module``; ``None`` (static scales only)
    for a depthwise convolution or where the gate would not be smaller than the kernel."""
    if getattr(module, "groups", 1) > 1 and module.weight.shape[1] == 1:  # depthwise
        return None
    reduction = gate_reduction_for(module, config.gate_reduction, config.gate_max_hidden)
    if reduction is not None and adapter_size(module, reduction) >= module.weight.numel():
        return None
    return reduction


def adapter_size(module: nn.Module, reduction: int | None) -> int:
    """Parameters of the adapter (scales and gate) that replaces ``module``'s kernel."""
    weight = module.weight
    size = weight.shape[0] + (weight.shape[2] * weight.shape[3]
                              if weight.dim() == 4 and weight.shape[2:] != (1, 1) else 0)
    if reduction is not None:
        channels = weight.shape[1] * getattr(module, "groups", 1)
        with torch.device("meta"):
            size += count_parameters(ChannelGate(channels, reduction))
    return size


def shared_child(module: nn.Module, config: ConvertConfig) -> tuple[int | None, int]:
    """``(gate reduction, parameters)`` of a shared child that replaces ``module`` under
    ``config``: its scales, gate and residual, against the kernel it saves."""
    reduction = gate_reduction_for(module, config.gate_reduction, config.gate_max_hidden)
    size = adapter_size(module, reduction) + residual_size(
        module.weight.shape, residual_rank(module, config.residual_rank))
    return reduction, size


def residual_rank(module: nn.Module, rank: int) -> int:
    """The residual rank a shared child of ``module`` gets: ``rank``, at most the kernel's
    ``min(C_out, C_in / groups * kh * kw)``."""
    weight = module.weight
    return min(rank, weight.shape[0], weight[0].numel())


def _choose_parent(members: list[str], layers: dict[str, nn.Module], rule: str) -> str:
    if rule == "first":
        return members[0]
    if rule == "last":
        return members[-1]
    flat = torch.stack([layers[n].weight.detach().flatten().float() for n in members])
    flat = flat / torch.linalg.vector_norm(flat, dim=1, keepdim=True).clamp_min(1e-12)
    similarity = (flat @ flat.T).abs().sum(dim=1)
    return members[int(similarity.argmax())]


def _explicit_groups(groups: Groups, layers: dict[str, nn.Module], parent_rule: str
                     ) -> dict[str, list[str]]:
    items = (list(groups.items()) if isinstance(groups, Mapping)
             else [(None, list(members)) for members in groups])
    seen: set[str] = set()
    layout = {}
    for parent, children in items:
        members = ([parent] if parent else []) + list(children)
        for name in members:
            if name not in layers:
                raise ValueError(f"group member {name!r} is not an nn.Conv2d or nn.Linear of "
                                 f"the model (or is already a child)")
            if name in seen:
                raise ValueError(f"{name!r} appears in more than one group")
            seen.add(name)
        shapes = {n: tuple(layers[n].weight.shape) for n in members}
        if len(members) < 2 or len(set(shapes.values())) != 1:
            raise ValueError(f"a group needs two or more layers with one kernel shape, got "
                             f"{shapes}")
        parent = parent or _choose_parent(members, layers, parent_rule)
        layout[parent] = [n for n in members if n != parent]
    return layout


def _automatic_groups(model: nn.Module, layers: dict[str, nn.Module],
                      shapes: dict[str, tuple[int, ...]], config: ConvertConfig
                      ) -> tuple[dict[str, list[str]], list[tuple[tuple[str, ...], str]]]:
    """The automatic rule: ``(layout, skipped)``; a ``ValueError`` when nothing is shared."""
    selected = select_layers(list(layers), config.include, config.exclude)
    layout: dict[str, list[str]] = {}
    skipped: list[tuple[tuple[str, ...], str]] = []
    for members in _auto_groups({n: layers[n] for n in selected}, shapes):
        module = layers[members[0]]
        _, adapter = shared_child(module, config)
        if adapter >= module.weight.numel():
            skipped.append((tuple(members), f"an adapter ({adapter:,} parameters) would "
                            f"not be smaller than the kernel ({module.weight.numel():,})"))
            continue
        chosen = _choose_parent(members, layers, config.parent_rule)
        layout[chosen] = [n for n in members if n != chosen]
    if not layout:
        raise ValueError(
            f"nothing to share in {type(model).__name__}: no two stride-1 convolutions "
            f"(or pointwise Linears) with one kernel shape at one resolution"
            + (f" (left dense: {len(skipped)} groups whose adapters would cost more than "
               "their kernels)" if skipped else "")
        )
    return layout, skipped


def _in_place_layers(model: nn.Module, layers: dict[str, nn.Module],
                     shapes: dict[str, tuple[int, ...]], config: ConvertConfig) -> list[str]:
    """The layers that get an adapter in place: candidates that see more than one position
    (any stride; zero padding), restricted by include/exclude; a ``ValueError`` for none."""
    eligible = []
    for name in select_layers(list(layers), config.include, config.exclude):
        module, shape = layers[name], shapes.get(name)
        if shape is None or getattr(module, "padding_mode", "zeros") != "zeros":
            continue
        positions = shape[2:] if isinstance(module, nn.Conv2d) else shape[1:-1]
        if math.prod(positions) > 1:
            eligible.append(name)
    if not eligible:
        raise ValueError(f"no layer of {type(model).__name__} can take an adapter in place: "
                         "none is an nn.Conv2d (zero padding) or a pointwise nn.Linear that "
                         "sees more than one position"
                         + (" among the include/exclude patterns" if config.include
                            or config.exclude else ""))
    return eligible


def plan_conversion(model: nn.Module, config: ConvertConfig | None = None, *,
                    example_inputs: Tensor | None = None, **overrides: Any) -> ConversionPlan:
    """Decide what :func:`kdna.convert` would do to ``model``, changing nothing.

    Takes the same arguments as :func:`kdna.convert` (``config`` defaults to
    :meth:`ConvertConfig.pretrained`; ``overrides`` are its field names). With
    ``example_inputs`` the plan keeps the batch and the model's output on it, so that
    :func:`kdna.conversion.convert.apply_plan` can report how closely the outputs agree.

    Raises:
        ValueError: the model is already converted, there is nothing to share, or a rule
            does not fit the model. ``TypeError``: an unknown setting.
    """
    module_arg("model", model)
    if example_inputs is not None and not isinstance(example_inputs, Tensor):
        raise TypeError(f"example_inputs must be a torch.Tensor batch, got a "
                        f"{type(example_inputs).__name__}")
    config = resolve_config(config, overrides, caller="plan_conversion")
    check_not_converted(model)
    layers = candidate_layers(model)
    skipped: list[tuple[tuple[str, ...], str]] = []
    before = None
    if not config.share:
        shapes, output = probe(model, layers, example_inputs)
        before = output if example_inputs is not None else None
        own = _in_place_layers(model, layers, shapes, config)
        return ConversionPlan(config, {}, [], example_inputs, before, own)
    if config.groups is not None:
        layout = _explicit_groups(config.groups, layers, config.parent_rule)
        if example_inputs is not None:
            _, before = probe(model, layers, example_inputs)
    else:
        shapes, output = probe(model, layers, example_inputs)
        before = output if example_inputs is not None else None
        layout, skipped = _automatic_groups(model, layers, shapes, config)
    return ConversionPlan(config, layout, skipped, example_inputs, before)
