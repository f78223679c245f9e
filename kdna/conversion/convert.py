"""Model surgery: turn the CNN you already have into a KernelDNA network, in place.

:func:`convert` is two steps, like peft's adapters (collect first, replace afterwards, so a
bad rule fails before anything changed):

1. :func:`kdna.conversion.rules.plan_conversion` reads the
   :class:`~kdna.conversion.config.ConvertConfig` once and decides everything: which layers
   share which parent, and every child's settings. It changes nothing and returns a
   :class:`~kdna.conversion.plan.ConversionPlan` (see :mod:`kdna.conversion.rules` for the
   rule).
2. :func:`apply_plan` carries the plan out and decides nothing: each planned layer becomes a
   child (:class:`~kdna.nn.ChildConv2d` or :class:`~kdna.nn.ChildLinear`) of its group's
   parent, or of its own kernel, with the gate, tap scales and residual the plan gives it,
   its old bias, and static scales fitted by least squares to the kernel it replaces (in the
   plan's ``fit_steps``) or left at zero. A new parent (``parent_init="mean"`` or ``"lsq"``)
   is made from every member of its group (:mod:`kdna.conversion.parents`); a residual is
   initialised by :func:`kdna.nn.relax`.

The report (:class:`kdna.conversion.report.ConversionReport`) lists the groups, the fit errors, the
parameter counts and, given ``example_inputs``, how closely the outputs still agree.
Pretrained kernels in different layers are rarely scaled copies of each other, so expect
fit errors near 1 and changed predictions: the adapters are a starting point that
fine-tuning (:func:`kdna.conversion.trainable.adapter_only`) makes good.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from kdna._checks import module_arg
from kdna.conversion.config import ConvertConfig, resolve_config
from kdna.conversion.layers import candidate_layers, check_not_converted
from kdna.conversion.parents import shared_parent
from kdna.conversion.plan import ConversionPlan, GroupPlan, LayerPlan
from kdna.conversion.record import record_conversion, state_digests
from kdna.conversion.report import (
    ChildFit,
    ConversionReport,
    LayerAdapter,
    SharedGroup,
    agreement,
)
from kdna.conversion.rules import decide_plan
from kdna.nn.conv import ChildConv2d, KernelChild, ParentKernel
from kdna.nn.fitting import fit_scales
from kdna.nn.linear import ChildLinear
from kdna.nn.residual import relax
from kdna.nn.utils import count_parameters, eval_mode, replace_module

__all__ = ["apply_plan", "convert"]


def _make_child(module: nn.Module, parent: nn.Module, layer: LayerPlan) -> KernelChild:
    """The child ``layer`` plans for ``module``, on ``parent``'s kernel."""
    if isinstance(module, nn.Conv2d):
        return ChildConv2d(parent, module.in_channels, module.out_channels, module.kernel_size,
                           module.stride, module.padding, module.dilation, module.groups,
                           bias=module.bias is not None, gate_reduction=layer.gate_reduction,
                           gate_form=layer.gate_form, spatial=layer.taps)
    return ChildLinear(parent, module.in_features, module.out_features,
                       bias=module.bias is not None, gate_reduction=layer.gate_reduction,
                       gate_form=layer.gate_form)


@torch.no_grad()
def _adopt(child: KernelChild, module: nn.Module, layer: LayerPlan) -> float:
    """Initialise ``child`` to reproduce ``module``: copy its bias, fit its scales and give it
    its residual, as ``layer`` says; the relative error left (``nan`` without a fit)."""
    if module.bias is not None:
        child.bias.copy_(module.bias)
    child.train(module.training)
    error = float("nan")
    if layer.fit_steps:
        f, s, error = fit_scales(module.weight, child.parent.weight,
                                 spatial=child.spatial_scale is not None, steps=layer.fit_steps)
        child.filter_scale.copy_(f.view_as(child.filter_scale))
        if child.spatial_scale is not None:
            child.spatial_scale.copy_(s.view_as(child.spatial_scale))
    if layer.residual_rank:
        error = relax(child, layer.residual_rank, module.weight)
    return error


def _check_fits(plan: ConversionPlan, layers: dict[str, nn.Module]) -> None:
    """A ``ValueError`` unless every layer the plan names is in ``layers`` with the planned
    kernel shape (a plan made for another architecture, or applied twice)."""
    planned = [(g.parent, g.children[0].shape) for g in plan.groups]
    planned += [(layer.name, layer.shape) for layer in plan.layers]
    for name, shape in planned:
        if name not in layers:
            raise ValueError(f"the plan does not fit this model: {name!r} is not an nn.Conv2d "
                             "or nn.Linear of it (or is already a child)")
        if tuple(layers[name].weight.shape) != tuple(shape):
            raise ValueError(f"the plan does not fit this model: {name!r} has the kernel shape "
                             f"{list(layers[name].weight.shape)}, the plan {list(shape)}")


def _new_parent(layers: dict[str, nn.Module], group: GroupPlan) -> nn.Module:
    """A parent kernel made from every member of ``group`` (its ``parent_init``), with the
    reference member (the first child) as the reference."""
    weights = [layers[c.name].weight for c in group.children]
    reference = layers[group.parent]
    kernel = shared_parent(weights, group.parent_init, steps=group.parent_steps, reference=0,
                           spatial=group.children[0].taps)
    if isinstance(reference, nn.Conv2d):
        parent = ParentKernel(reference.in_channels, reference.out_channels,
                              reference.kernel_size, reference.groups,
                              device=kernel.device, dtype=kernel.dtype)
    else:
        parent = nn.Linear(reference.in_features, reference.out_features, bias=False,
                           device=kernel.device, dtype=kernel.dtype)
    with torch.no_grad():
        parent.weight.copy_(kernel)
    parent.weight.requires_grad_(reference.weight.requires_grad)
    return parent


def _share(model: nn.Module, layers: dict[str, nn.Module], group: GroupPlan) -> SharedGroup:
    """Replace each planned child of ``group`` by a child of its parent; the group's report."""
    parent = _new_parent(layers, group) if group.new_parent else layers[group.parent]
    fits = []
    for layer in group.children:
        module = layers[layer.name]
        child = _make_child(module, parent, layer)
        fits.append(ChildFit(layer.name, _adopt(child, module, layer)))
        replace_module(model, layer.name, child)
    return SharedGroup(group.parent, tuple(fits), "conv" if parent.weight.dim() == 4 else "linear",
                       tuple(parent.weight.shape), group.params_saved, group.parent_init)


def _adapt_in_place(model: nn.Module, layers: dict[str, nn.Module],
                    planned: tuple[LayerPlan, ...]) -> list[LayerAdapter]:
    """Make each planned layer a child of its own kernel (scales at zero, identity-at-init
    gate where it has one): the model computes what it did. The report's rows."""
    rows = []
    for layer in planned:
        module = layers[layer.name]
        child = _make_child(module, module, layer)
        _adopt(child, module, layer)
        rows.append(LayerAdapter(layer.name, layer.kind, layer.shape, layer.gate_hidden,
                                 sum(p.numel() for p in child.adapter_parameters()),
                                 module.weight.numel()))
        replace_module(model, layer.name, child)
    return rows


def apply_plan(model: nn.Module, plan: ConversionPlan) -> ConversionReport:
    """Carry out ``plan`` (from :func:`~kdna.conversion.rules.plan_conversion`) on ``model``,
    in place: each planned child replaces its layer, built with the plan's settings. The model
    may be the one planned or an unconverted copy of it.

    Raises:
        ValueError: the model is already converted or does not have the planned layers; it
            is unchanged when this is raised.
    """
    module_arg("model", model)
    if not isinstance(plan, ConversionPlan):
        raise TypeError(f"plan must be a ConversionPlan (from kdna.conversion.plan_conversion), "
                        f"got {type(plan).__name__}")
    check_not_converted(model)
    layers = candidate_layers(model)
    _check_fits(plan, layers)
    digests = state_digests(model)
    params_before = count_parameters(model)
    groups = [_share(model, layers, group) for group in plan.groups]
    adapters = _adapt_in_place(model, layers, plan.in_place)
    report = ConversionReport(groups, params_before, count_parameters(model), list(plan.skipped),
                              adapters=adapters)
    record_conversion(model, digests, dataclasses.replace(plan, example_inputs=None,
                                                          original_output=None))
    if plan.example_inputs is not None and isinstance(plan.original_output, Tensor):
        with eval_mode(model), torch.no_grad():
            after = model(plan.example_inputs)
        report.agreement = agreement(plan.original_output, after)
    return report


def convert(model: nn.Module, config: ConvertConfig | None = None, *,
            example_inputs: Tensor | None = None, **overrides: Any) -> ConversionReport:
    """Replace groups of same-shaped layers of ``model`` by children of a shared parent.

    ``convert(model, config, **overrides)`` is ``apply_plan(model, plan_conversion(model,
    config, **overrides))``.

    Args:
        model: a CNN built from ``nn.Conv2d`` (torchvision, timm, your own); changed in place.
        config: the policy, a :class:`~kdna.conversion.config.ConvertConfig`; default
            :meth:`ConvertConfig.pretrained() <kdna.conversion.config.ConvertConfig.pretrained>`
            (identity gates, fitted scales, the most similar member as parent).
        example_inputs: a batch the model accepts: used to find each layer's resolution and
            to measure how closely the converted outputs agree with the original ones.
        **overrides: fields of the config to change for this call: ``groups``, ``include``,
            ``exclude``, ``parent_rule``, ``gate_reduction``, ``gate_form``, ``fit_scales``,
            ``fit_steps``, ``share``, ``gate_max_hidden``, ``parent_init``, ``residual_rank``
            (see :class:`~kdna.conversion.config.ConvertConfig`).

    Returns:
        a :class:`ConversionReport`.

    Raises:
        ValueError: the model is already converted, there is nothing to share, or a rule is
            invalid. The model is unchanged when this is raised.
        TypeError: an unknown setting, or a config that is not a ``ConvertConfig``.
    """
    module_arg("model", model)
    if example_inputs is not None and not isinstance(example_inputs, Tensor):
        raise TypeError(f"example_inputs must be a torch.Tensor batch, got a "
                        f"{type(example_inputs).__name__}")
    config = resolve_config(config, overrides, caller="convert")
    return apply_plan(model, decide_plan(model, config, example_inputs))
