"""Model surgery: turn the CNN you already have into a KernelDNA network, in place.

:func:`convert` is two steps, like peft's adapters (collect first, replace afterwards, so a
bad rule fails before anything changed):

1. :func:`kdna.conversion.plan.plan_conversion` finds the groups of layers that will share a
   parent and picks each parent; it changes nothing and returns a
   :class:`~kdna.conversion.plan.ConversionPlan` (see :mod:`kdna.conversion.plan` for the
   rule).
2. :func:`apply_plan` carries the plan out: every member of a group other than its parent
   becomes a child of the parent (:class:`~kdna.nn.ChildConv2d` or
   :class:`~kdna.nn.ChildLinear`) with the config's gate (``gate_form="identity"``: exactly 1
   at initialisation), its old bias, and static scales fitted by least squares to the kernel it
   replaces (``fit_scales=True``) or left at zero. With ``parent_init="mean"`` or ``"lsq"``
   the parent is a new kernel made from every member (:mod:`kdna.conversion.parents`) and every
   member becomes its child; with ``residual_rank=r`` each child also gets a rank-r residual
   for what its scales cannot express (:func:`kdna.nn.relax`).

The policy lives in one :class:`~kdna.conversion.config.ConvertConfig`; its presets name the
settings for pretrained weights (the default), training from scratch, and fixed layouts.

The report (:class:`kdna.conversion.report.ConversionReport`) lists the groups, the fit errors, the
parameter counts and, given ``example_inputs``, how closely the outputs still agree.
Pretrained kernels in different layers are rarely scaled copies of each other, so expect
fit errors near 1 and changed predictions: the adapters are a starting point that
fine-tuning (:func:`kdna.conversion.freeze.adapter_only`) makes good.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from kdna._checks import module_arg
from kdna.conversion.base import record_conversion, state_digests
from kdna.conversion.config import ConvertConfig, resolve_config
from kdna.conversion.parents import shared_parent
from kdna.conversion.plan import (
    ConversionPlan,
    candidate_layers,
    check_not_converted,
    in_place_reduction,
    plan_conversion,
    probe,
    residual_rank,
    shared_child,
)
from kdna.conversion.report import (
    ChildFit,
    ConversionReport,
    LayerAdapter,
    SharedGroup,
    agreement,
)
from kdna.nn.conv import ChildConv2d, KernelChild, ParentKernel
from kdna.nn.fitting import fit_scales
from kdna.nn.gate import GateForm
from kdna.nn.linear import ChildLinear
from kdna.nn.residual import relax
from kdna.nn.utils import count_parameters, replace_module

__all__ = ["apply_plan", "convert"]


def _make_child(module: nn.Module, parent: nn.Module, reduction: int | None,
                gate_form: GateForm) -> KernelChild:
    if isinstance(module, nn.Conv2d):
        return ChildConv2d(parent, module.in_channels, module.out_channels, module.kernel_size,
                           module.stride, module.padding, module.dilation, module.groups,
                           bias=module.bias is not None, gate_reduction=reduction,
                           gate_form=gate_form)
    return ChildLinear(parent, module.in_features, module.out_features,
                       bias=module.bias is not None, gate_reduction=reduction,
                       gate_form=gate_form)


@torch.no_grad()
def _adopt(child: KernelChild, module: nn.Module, config: ConvertConfig, fit: bool) -> float:
    """Initialise ``child`` to reproduce ``module``: copy its bias, fit its scales (``fit``)
    and give it the config's residual; the relative error left (``nan`` without a fit)."""
    if module.bias is not None:
        child.bias.copy_(module.bias)
    child.train(module.training)
    error = float("nan")
    if fit:
        f, s, error = fit_scales(module.weight, child.parent.weight,
                                 spatial=child.spatial_scale is not None, steps=config.fit_steps)
        child.filter_scale.copy_(f.view_as(child.filter_scale))
        if child.spatial_scale is not None:
            child.spatial_scale.copy_(s.view_as(child.spatial_scale))
    if config.residual_rank:
        error = relax(child, residual_rank(module, config.residual_rank), module.weight)
    return error


def _check_fits(plan: ConversionPlan, layers: dict[str, nn.Module]) -> None:
    """A ``ValueError`` unless every layer the plan names is in ``layers`` with its parent's
    kernel shape (a plan made for another architecture, or applied twice)."""
    for name in plan.own:
        if name not in layers:
            raise ValueError(f"the plan does not fit this model: {name!r} is not an nn.Conv2d "
                             "or nn.Linear of it (or is already a child)")
    for parent, children in plan.layout.items():
        for name in (parent, *children):
            if name not in layers:
                raise ValueError(f"the plan does not fit this model: {name!r} is not an "
                                 "nn.Conv2d or nn.Linear of it (or is already a child)")
        shapes = {n: tuple(layers[n].weight.shape) for n in (parent, *children)}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"the plan does not fit this model: the group of {parent!r} has "
                             f"kernel shapes {shapes}, one shape expected")


def _new_parent(layers: dict[str, nn.Module], names: list[str], config: ConvertConfig
                ) -> nn.Module:
    """A parent kernel made from every member of a group (``config.parent_init``), with the
    first of ``names`` as the reference."""
    weights = [layers[n].weight for n in names]
    reference = layers[names[0]]
    kernel = shared_parent(weights, config.parent_init, steps=config.fit_steps, reference=0,
                           spatial=weights[0].dim() == 4 and weights[0].shape[2:] != (1, 1))
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


def _share(model: nn.Module, layers: dict[str, nn.Module], parent_name: str,
           child_names: list[str], config: ConvertConfig) -> SharedGroup:
    """Replace each of ``child_names`` by a child of ``parent_name`` (or, with a new parent,
    every member by a child of that); the group's report."""
    new = config.parent_init != "member"
    parent = _new_parent(layers, [parent_name, *child_names], config) if new \
        else layers[parent_name]
    members = [parent_name, *child_names] if new else child_names
    fits, saved = [], -parent.weight.numel() if new else 0
    for name in members:
        module = layers[name]
        reduction, cost = shared_child(module, config)
        child = _make_child(module, parent, reduction, config.gate_form)
        fits.append(ChildFit(name, _adopt(child, module, config, config.fit_scales)))
        saved += module.weight.numel() - cost
        replace_module(model, name, child)
    return SharedGroup(parent_name, tuple(fits), "conv" if parent.weight.dim() == 4 else "linear",
                       tuple(parent.weight.shape), saved, config.parent_init)


def _adapt_in_place(model: nn.Module, layers: dict[str, nn.Module], names: list[str],
                    config: ConvertConfig) -> list[LayerAdapter]:
    """Make each of ``names`` a child of its own kernel (scales at zero, identity-at-init gate
    where it has one): the model computes what it did. The report's rows."""
    rows = []
    for name in names:
        module = layers[name]
        reduction = in_place_reduction(module, config)
        child = _make_child(module, module, reduction, config.gate_form)
        _adopt(child, module, config, False)
        depthwise = (isinstance(module, nn.Conv2d) and module.groups > 1
                     and module.weight.shape[1] == 1)
        kind = "linear" if isinstance(module, nn.Linear) else "depthwise" if depthwise else "conv"
        rows.append(LayerAdapter(name, kind, tuple(module.weight.shape),
                                 None if child.gate is None else child.gate.fc1.out_features,
                                 sum(p.numel() for p in child.adapter_parameters()),
                                 module.weight.numel()))
        replace_module(model, name, child)
    return rows


def apply_plan(model: nn.Module, plan: ConversionPlan) -> ConversionReport:
    """Carry out ``plan`` (from :func:`~kdna.conversion.plan.plan_conversion`) on ``model``,
    in place: each planned child replaces its layer. The model may be the one planned or an
    unconverted copy of it.

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
    groups = [_share(model, layers, parent, children, plan.config)
              for parent, children in plan.layout.items()]
    adapters = _adapt_in_place(model, layers, list(plan.own), plan.config)
    report = ConversionReport(groups, params_before, count_parameters(model), list(plan.skipped),
                              adapters=adapters)
    record_conversion(model, digests, dataclasses.replace(plan, example_inputs=None,
                                                          probe_output=None))
    if plan.example_inputs is not None and isinstance(plan.probe_output, Tensor):
        _, after = probe(model, {}, plan.example_inputs)
        report.agreement = agreement(plan.probe_output, after)
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
    config = resolve_config(config, overrides, caller="convert")
    return apply_plan(model, plan_conversion(model, config, example_inputs=example_inputs))
