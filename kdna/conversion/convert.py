"""Model surgery: turn the CNN you already have into a KernelDNA network, in place.

:func:`convert` works like peft's adapters: it collects first and replaces afterwards, so a
bad rule fails before anything changed.

1. **Candidates**: every exact ``nn.Conv2d`` with stride 1 and zero padding, and every
   ``nn.Linear`` that runs per position (its input has dimensions between batch and
   features, as ConvNeXt's channels-last pointwise layers do: such a Linear *is* a 1x1
   convolution, so it shares like one). Strided convolutions (the stem, the transitions),
   layers that see a single position (heads, squeeze-excitation) stay dense.
2. **Groups**: candidates with the same kernel shape, the same groups and the same input
   resolution share one parent. Resolution stands for "stage"; it is read from one probe
   forward pass (``example_inputs``, or a 224x224 zero image). A group is kept only if a
   child's adapter is smaller than the kernel it replaces (a depthwise kernel is not worth a
   gate, so depthwise convolutions stay dense, as in the paper's layouts).
3. **Parents and fits**: in each group one member stays as it is and becomes the parent
   (the member most similar to the others, by default); every other member becomes a child
   of it, whose static scales are fitted by least squares to the kernel it replaces, and
   whose gate starts at exactly 1 (``gate_form="identity"``).

The report (:class:`kdna.conversion.report.ConversionReport`) lists the groups, the fit errors, the
parameter counts and, given ``example_inputs``, how closely the outputs still agree.
Pretrained kernels in different layers are rarely scaled copies of each other, so expect
fit errors near 1 and changed predictions: the adapters are a starting point that
fine-tuning (:func:`kdna.conversion.freeze.adapter_only`) makes good.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from kdna.conversion.report import ChildFit, ConversionReport, SharedGroup, agreement
from kdna.nn.conv import ChildConv2d, KernelChild
from kdna.nn.fitting import fit_scales
from kdna.nn.gate import ChannelGate, GateForm
from kdna.nn.linear import ChildLinear
from kdna.nn.utils import count_parameters, replace_module

__all__ = ["convert", "select_layers"]

ParentRule = Literal["most_similar", "first", "last"]
Groups = Mapping[str, Sequence[str]] | Sequence[Sequence[str]]
_PARENT_RULES = ("most_similar", "first", "last")


def _is_candidate_type(module: nn.Module) -> bool:
    # Exact types: subclasses (timm's Conv2dSame, ...) may pad or reshape in forward.
    return type(module) in (nn.Conv2d, nn.Linear)


def _probe(model: nn.Module, layers: dict[str, nn.Module], example_inputs: Tensor | None
           ) -> tuple[dict[str, tuple[int, ...]], Tensor]:
    """Run one batch through ``model`` and record the input shape of each layer."""
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


def _reduction(module: nn.Module, gate_reduction: int | str | None) -> int | None:
    if gate_reduction != "auto":
        return gate_reduction
    # r = 4, raised by the expansion ratio when the input is wider than the output: the
    # paper's choice (r = 24 before MobileNetV2's 6x-expanded projection).
    c_in, c_out = module.weight.shape[1] * getattr(module, "groups", 1), module.weight.shape[0]
    return 4 * max(1, round(c_in / c_out))


def _adapter_size(module: nn.Module, reduction: int | None) -> int:
    weight = module.weight
    size = weight.shape[0] + (weight.shape[2] * weight.shape[3]
                              if weight.dim() == 4 and weight.shape[2:] != (1, 1) else 0)
    if reduction is not None:
        channels = weight.shape[1] * getattr(module, "groups", 1)
        with torch.device("meta"):
            size += count_parameters(ChannelGate(channels, reduction))
    return size


def _choose_parent(members: list[str], layers: dict[str, nn.Module], rule: str) -> str:
    if rule == "first":
        return members[0]
    if rule == "last":
        return members[-1]
    flat = torch.stack([layers[n].weight.detach().flatten().float() for n in members])
    flat = flat / torch.linalg.vector_norm(flat, dim=1, keepdim=True).clamp_min(1e-12)
    similarity = (flat @ flat.T).abs().sum(dim=1)
    return members[int(similarity.argmax())]


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
def _adopt(child: KernelChild, module: nn.Module, fit: bool, steps: int) -> float:
    """Initialise ``child`` to reproduce ``module``: copy its bias, fit its scales."""
    if module.bias is not None:
        child.bias.copy_(module.bias)
    child.train(module.training)
    if not fit:
        return float("nan")
    f, s, error = fit_scales(module.weight, child.parent.weight,
                             spatial=child.spatial_scale is not None, steps=steps)
    child.filter_scale.copy_(f.view_as(child.filter_scale))
    if child.spatial_scale is not None:
        child.spatial_scale.copy_(s.view_as(child.spatial_scale))
    return error


def _explicit_groups(groups: Groups, layers: dict[str, nn.Module], parent_rule: str
                     ) -> list[tuple[str, list[str]]]:
    items = (list(groups.items()) if isinstance(groups, Mapping)
             else [(None, list(members)) for members in groups])
    seen: set[str] = set()
    out = []
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
        out.append((parent, [n for n in members if n != parent]))
    return out


def convert(
    model: nn.Module,
    *,
    groups: Groups | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    parent: ParentRule = "most_similar",
    gate_reduction: int | Literal["auto"] | None = "auto",
    gate_form: GateForm = "identity",
    fit: bool = True,
    fit_steps: int = 10,
    example_inputs: Tensor | None = None,
) -> ConversionReport:
    """Replace groups of same-shaped layers of ``model`` by children of a shared parent.

    Args:
        model: a CNN built from ``nn.Conv2d`` (torchvision, timm, your own); changed in place.
        groups: explicit groups instead of the automatic rule: a mapping ``parent name ->
            child names``, or a list of name lists (the parent then chosen by ``parent``).
        include, exclude: glob patterns over module names (``"layer3.*"``) that restrict the
            automatic rule's candidates.
        parent: how a group's parent is chosen: ``"most_similar"`` (highest mean absolute
            cosine similarity to the other members), ``"first"`` or ``"last"`` in model order.
        gate_reduction: the gates' reduction ratio; ``"auto"`` is 4, times the layer's
            input/output width ratio when it narrows (the paper's 24 for MobileNetV2's
            projections); ``None`` for static-only children.
        gate_form: ``"identity"`` (exactly 1 at initialisation, so the converted network
            starts from the function it was given) or ``"paper"`` (sigmoid).
        fit: fit each child's static scales to the kernel it replaces (otherwise they start
            at zero: each child starts as a copy of its parent, as when training from scratch).
        fit_steps: alternating least-squares steps for the fit.
        example_inputs: a batch the model accepts: used to find each layer's resolution and
            to measure how closely the converted outputs agree with the original ones.

    Returns:
        a :class:`ConversionReport`.

    Raises:
        ValueError: the model is already converted, there is nothing to share, or a rule is
            invalid. The model is unchanged when this is raised.
    """
    already = [n for n, m in model.named_modules() if isinstance(m, KernelChild)]
    if already:
        raise ValueError(f"{type(model).__name__} is already converted ({len(already)} "
                         f"KernelDNA children, e.g. {already[0]!r}); convert a fresh copy")
    if parent not in _PARENT_RULES:
        raise ValueError(f"parent must be one of {_PARENT_RULES}, got {parent!r}")
    if not (gate_reduction in ("auto", None) or isinstance(gate_reduction, int)):
        raise ValueError(f"gate_reduction must be 'auto', a positive int or None, "
                         f"got {gate_reduction!r}")
    layers = {n: m for n, m in model.named_modules() if _is_candidate_type(m)}
    params_before = count_parameters(model)
    before = None
    skipped: list[tuple[tuple[str, ...], str]] = []
    if groups is not None:
        if include is not None or exclude is not None:
            raise ValueError("give either explicit groups or include/exclude patterns, not both")
        plan = _explicit_groups(groups, layers, parent)
        if example_inputs is not None:
            _, before = _probe(model, layers, example_inputs)
    else:
        shapes, before = _probe(model, layers, example_inputs)
        selected = select_layers(list(layers), include, exclude)
        plan = []
        for members in _auto_groups({n: layers[n] for n in selected}, shapes):
            module = layers[members[0]]
            adapter = _adapter_size(module, _reduction(module, gate_reduction))
            if adapter >= module.weight.numel():
                skipped.append((tuple(members), f"an adapter ({adapter:,} parameters) would "
                                f"not be smaller than the kernel ({module.weight.numel():,})"))
                continue
            chosen = _choose_parent(members, layers, parent)
            plan.append((chosen, [n for n in members if n != chosen]))
        if not plan:
            raise ValueError(
                f"nothing to share in {type(model).__name__}: no two stride-1 convolutions "
                f"(or pointwise Linears) with one kernel shape at one resolution"
                + (f" (left dense: {len(skipped)} groups whose adapters would cost more than "
                   "their kernels)" if skipped else "")
            )

    report_groups = []
    for parent_name, child_names in plan:
        parent_module = layers[parent_name]
        fits = []
        for name in child_names:
            module = layers[name]
            reduction = _reduction(module, gate_reduction)
            child = _make_child(module, parent_module, reduction, gate_form)
            fits.append(ChildFit(name, _adopt(child, module, fit, fit_steps)))
            replace_module(model, name, child)
        saved = sum(layers[n].weight.numel() for n in child_names) - sum(
            _adapter_size(layers[n], _reduction(layers[n], gate_reduction))
            for n in child_names)
        report_groups.append(SharedGroup(parent_name, tuple(fits),
                                         "conv" if parent_module.weight.dim() == 4 else "linear",
                                         tuple(parent_module.weight.shape), saved))

    report = ConversionReport(report_groups, params_before, count_parameters(model), skipped)
    if before is not None and isinstance(before, Tensor) and example_inputs is not None:
        _, after = _probe(model, {}, example_inputs)
        report.agreement = agreement(before, after)
    return report
