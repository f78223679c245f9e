"""Planning a conversion: every per-layer decision, made once, without changing anything.

:func:`kdna.convert` is :func:`plan_conversion` followed by
:func:`kdna.conversion.convert.apply_plan`, like peft's adapters: it collects first and
replaces afterwards, so a bad rule fails before anything changed. The config is read here and
only here; the :class:`~kdna.conversion.plan.ConversionPlan` holds every layer's settings.

1. **Candidates**: every exact ``nn.Conv2d`` with stride 1 and zero padding, and every
   ``nn.Linear`` that runs per position (its input has dimensions between batch and
   features, as ConvNeXt's channels-last pointwise layers do: such a Linear *is* a 1x1
   convolution, so it shares like one). Strided convolutions (the stem, the transitions),
   layers that see a single position (heads, squeeze-excitation) stay dense.
2. **Groups**: candidates with the same kernel shape, the same groups and the same input
   resolution share one parent. Resolution stands for "stage"; it is read from one forward
   pass (``example_inputs``, or a 224x224 zero image: :func:`kdna.conversion.layers.input_shapes`)
   in eval mode without gradients, so not even a BatchNorm statistic moves. A group is kept
   only if a child's adapter is smaller than the kernel it replaces (a depthwise kernel is not
   worth a gate, so depthwise convolutions stay dense, as in the paper's layouts). Explicit
   ``groups`` skip the rule.
3. **Parents**: in each group one member stays as it is and becomes the parent, chosen by
   the config's ``parent_rule`` (the member most similar to the others, by default); with
   ``parent_init="mean"`` or ``"lsq"`` that member is the reference of a new parent and every
   member becomes a child.
4. **Each child's settings**: its gate reduction (``gate_reduction``, raised to keep the hidden
   width under ``gate_max_hidden``), gate form, tap scales (kernels larger than 1x1), how its
   scales start (``fit_scales``, ``fit_steps``), its residual rank (``residual_rank``, at most
   what its kernel allows) and what its adapter costs.

With ``share=False`` (adapters in place, :meth:`ConvertConfig.adapters`) there are no groups:
every candidate that sees more than one position, whatever its stride, becomes a child of its
own kernel (``ConversionPlan.in_place``), its scales at zero. Depthwise convolutions get static
scales only: their kernel is ``9 C`` parameters while a gate over ``C`` channels costs about
``2 C^2 / r`` (larger from ``C = 72`` at ``r = 16``), and a per-channel gate before a depthwise
layer only rescales channels that the BatchNorm after it and the next layer's gate can rescale
too. Any other layer whose gate would not be smaller than its kernel also gets static scales
only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from kdna._checks import module_arg
from kdna.conversion.config import ConvertConfig, Groups, resolve_config
from kdna.conversion.layers import (
    adapter_size,
    candidate_layers,
    check_not_converted,
    gate_reduction_for,
    input_shapes,
    layer_kind,
    residual_rank,
    select_layers,
)
from kdna.conversion.plan import ConversionPlan, GroupPlan, LayerPlan
from kdna.nn.residual import residual_size

__all__ = ["decide_plan", "plan_conversion"]


def _layer_plan(name: str, module: nn.Module, config: ConvertConfig, *, shared: bool
                ) -> LayerPlan:
    """The settings of the child that replaces ``module``: a shared child, or an adapter in
    place (scales at zero; static scales only where a gate would cost the kernel or more)."""
    kind = layer_kind(module)
    reduction = gate_reduction_for(module, config.gate_reduction, config.gate_max_hidden)
    rank = residual_rank(module, config.residual_rank) if shared else 0
    if not shared and reduction is not None and (
            kind == "depthwise" or adapter_size(module, reduction) >= module.weight.numel()):
        reduction = None
    channels = module.weight.shape[1] * getattr(module, "groups", 1)
    shape = tuple(module.weight.shape)
    return LayerPlan(
        name, kind, shape, reduction,
        None if reduction is None else max(1, channels // reduction), config.gate_form,
        taps=len(shape) == 4 and shape[2:] != (1, 1),
        fit_steps=config.fit_steps if shared and config.fit_scales else 0,
        residual_rank=rank,
        params=adapter_size(module, reduction) + residual_size(shape, rank))


def _group_plan(members: list[str], parent: str, layers: dict[str, nn.Module],
                config: ConvertConfig) -> GroupPlan:
    """The group of ``members`` around ``parent``: a member kept, or a new parent's reference
    (then every member becomes a child, the reference first)."""
    new = config.parent_init != "member"
    names = [parent, *(n for n in members if n != parent)] if new else \
        [n for n in members if n != parent]
    children = tuple(_layer_plan(n, layers[n], config, shared=True) for n in names)
    return GroupPlan(parent, config.parent_init, children,
                     config.fit_steps if config.parent_init == "lsq" else 0)


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


def _choose_parent(members: list[str], layers: dict[str, nn.Module], rule: str) -> str:
    if rule == "first":
        return members[0]
    if rule == "last":
        return members[-1]
    flat = torch.stack([layers[n].weight.detach().flatten().float() for n in members])
    flat = flat / torch.linalg.vector_norm(flat, dim=1, keepdim=True).clamp_min(1e-12)
    similarity = (flat @ flat.T).abs().sum(dim=1)
    return members[int(similarity.argmax())]


def _explicit_groups(groups: Groups, layers: dict[str, nn.Module], config: ConvertConfig
                     ) -> tuple[GroupPlan, ...]:
    items = (list(groups.items()) if isinstance(groups, Mapping)
             else [(None, list(members)) for members in groups])
    seen: set[str] = set()
    plans = []
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
        parent = parent or _choose_parent(members, layers, config.parent_rule)
        plans.append(_group_plan(members, parent, layers, config))
    return tuple(plans)


def _automatic_groups(model: nn.Module, layers: dict[str, nn.Module],
                      shapes: dict[str, tuple[int, ...]], config: ConvertConfig
                      ) -> tuple[tuple[GroupPlan, ...], list[tuple[tuple[str, ...], str]]]:
    """The automatic rule: ``(groups, skipped)``; a ``ValueError`` when nothing is shared."""
    selected = select_layers(list(layers), config.include, config.exclude)
    plans: list[GroupPlan] = []
    skipped: list[tuple[tuple[str, ...], str]] = []
    for members in _auto_groups({n: layers[n] for n in selected}, shapes):
        module = layers[members[0]]
        adapter = _layer_plan(members[0], module, config, shared=True).params
        if adapter >= module.weight.numel():
            skipped.append((tuple(members), f"an adapter ({adapter:,} parameters) would "
                            f"not be smaller than the kernel ({module.weight.numel():,})"))
            continue
        parent = _choose_parent(members, layers, config.parent_rule)
        plans.append(_group_plan(members, parent, layers, config))
    if not plans:
        raise ValueError(
            f"nothing to share in {type(model).__name__}: no two stride-1 convolutions "
            f"(or pointwise Linears) with one kernel shape at one resolution"
            + (f" (left dense: {len(skipped)} groups whose adapters would cost more than "
               "their kernels)" if skipped else "")
        )
    return tuple(plans), skipped


def _in_place_layers(model: nn.Module, layers: dict[str, nn.Module],
                     shapes: dict[str, tuple[int, ...]], config: ConvertConfig
                     ) -> tuple[LayerPlan, ...]:
    """The adapters in place: candidates that see more than one position (any stride; zero
    padding), restricted by include/exclude; a ``ValueError`` for none."""
    eligible = []
    for name in select_layers(list(layers), config.include, config.exclude):
        module, shape = layers[name], shapes.get(name)
        if shape is None or getattr(module, "padding_mode", "zeros") != "zeros":
            continue
        positions = shape[2:] if isinstance(module, nn.Conv2d) else shape[1:-1]
        if math.prod(positions) > 1:
            eligible.append(_layer_plan(name, module, config, shared=False))
    if not eligible:
        raise ValueError(f"no layer of {type(model).__name__} can take an adapter in place: "
                         "none is an nn.Conv2d (zero padding) or a pointwise nn.Linear that "
                         "sees more than one position"
                         + (" among the include/exclude patterns" if config.include
                            or config.exclude else ""))
    return tuple(eligible)


def decide_plan(model: nn.Module, config: ConvertConfig, example_inputs: Tensor | None
                ) -> ConversionPlan:
    """The plan for ``model`` under ``config`` (already resolved: see
    :func:`plan_conversion`, which takes the same arguments as :func:`kdna.convert`)."""
    check_not_converted(model)
    layers = candidate_layers(model)
    before, skipped, groups, in_place = None, [], (), ()
    if config.share and config.groups is not None:
        groups = _explicit_groups(config.groups, layers, config)
        if example_inputs is not None:
            _, before = input_shapes(model, {}, example_inputs)
    else:
        shapes, output = input_shapes(model, layers, example_inputs)
        before = output if example_inputs is not None else None
        if config.share:
            groups, skipped = _automatic_groups(model, layers, shapes, config)
        else:
            in_place = _in_place_layers(model, layers, shapes, config)
    return ConversionPlan(config, groups, in_place, skipped, example_inputs, before)


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
    return decide_plan(model, resolve_config(config, overrides, caller="plan_conversion"),
                       example_inputs)
