"""A conversion plan: every decision a conversion makes, layer by layer, before anything changes.

:func:`kdna.conversion.rules.plan_conversion` reads a :class:`~kdna.conversion.config.ConvertConfig`
once and decides; :func:`kdna.conversion.convert.apply_plan` only carries out what the plan
says. So a plan holds, for each layer that becomes a child (a :class:`LayerPlan`), everything
its child is built with: its kind and kernel shape, its gate (reduction ratio and form, or
none), whether it learns per-tap scales, how its scales start (fitted by least squares in
``fit_steps`` steps, or at zero), the rank of its low-rank residual and what its adapter costs.
Shared layers sit in a :class:`GroupPlan` with their parent: a member kept as it is
(``parent_init="member"``), or a new kernel made from every member (``"mean"`` / ``"lsq"``,
the first child being the reference member). Adapters in place are layers that become
children of their own kernel (:attr:`ConversionPlan.in_place`).

A plan prints as a table (and renders as one in Jupyter), and is what
:func:`kdna.save_adapters` records (:meth:`ConversionPlan.to_json`,
:meth:`ConversionPlan.from_json`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from kdna._tables import markdown_table
from kdna.conversion.config import ConvertConfig

__all__ = ["ConversionPlan", "GroupPlan", "LayerPlan"]


@dataclass(frozen=True)
class LayerPlan:
    """One layer that becomes a child, with every setting its child is built with."""

    name: str  # the module it replaces, e.g. "layer1.0.conv2"
    kind: str  # "conv", "depthwise" or "linear"
    shape: tuple[int, ...]  # its kernel's shape (the parent's)
    gate_reduction: int | None  # the gate's reduction ratio; None: static scales only
    gate_hidden: int | None  # the gate's hidden width that ratio gives (max(1, C_in // r))
    gate_form: str  # "identity" (exactly 1 at initialisation) or "paper" (plain sigmoid)
    taps: bool  # per-tap (spatial) scales as well as per-filter ones
    fit_steps: int  # least-squares steps fitting its scales to its kernel; 0: scales at zero
    residual_rank: int  # rank of its low-rank residual (kdna.nn.relax); 0: none
    params: int  # what its adapter adds: scales, gate and residual

    @property
    def kernel_params(self) -> int:
        size = 1
        for n in self.shape:
            size *= n
        return size


@dataclass(frozen=True)
class GroupPlan:
    """A shared parent and the layers that become its children."""

    parent: str  # the member kept as the parent, or the reference of a new parent
    parent_init: str  # "member", or a new parent: "mean" (aligned mean) or "lsq"
    children: tuple[LayerPlan, ...]  # with a new parent, the reference member first
    parent_steps: int = 0  # least-squares steps of an "lsq" parent

    @property
    def new_parent(self) -> bool:
        return self.parent_init != "member"

    @property
    def child_names(self) -> list[str]:
        """The members other than :attr:`parent` (what ``groups={parent: names}`` takes)."""
        return [c.name for c in self.children if c.name != self.parent]

    @property
    def params_saved(self) -> int:
        """Each child's kernel less its adapter, less a new parent's own kernel."""
        saved = sum(c.kernel_params - c.params for c in self.children)
        return saved - (self.children[0].kernel_params if self.new_parent else 0)


@dataclass(frozen=True)
class ConversionPlan:
    """What :func:`kdna.convert` will do to a model: the result of
    :func:`~kdna.conversion.rules.plan_conversion` (see the module docstring)."""

    config: ConvertConfig  # the policy the plan was decided from (a record: apply never reads it)
    groups: tuple[GroupPlan, ...] = ()  # shared parents and their children, in build order
    in_place: tuple[LayerPlan, ...] = ()  # adapters in place: each a child of its own kernel
    skipped: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # (names, why)
    example_inputs: Tensor | None = None  # the batch given, to measure agreement after applying
    original_output: Any = None  # the unconverted model's output on example_inputs, if given

    @property
    def layout(self) -> dict[str, list[str]]:
        """``parent -> children`` names, as ``convert(model, groups=...)`` takes them."""
        return {g.parent: g.child_names for g in self.groups}

    @property
    def own(self) -> list[str]:
        """The names of the layers adapted in place."""
        return [layer.name for layer in self.in_place]

    @property
    def layers(self) -> list[LayerPlan]:
        """Every layer that becomes a child, in build order."""
        return [c for g in self.groups for c in g.children] + list(self.in_place)

    @property
    def children(self) -> list[str]:
        """The names of every layer that becomes a child."""
        return [layer.name for layer in self.layers]

    def with_layout(self, layout: dict[str, list[str]]) -> ConversionPlan:
        """This plan sharing only ``layout`` (``parent -> child names``, a part of
        :attr:`layout`), each child with the settings decided for it, in ``layout``'s order;
        nothing left dense is listed. A ``ValueError`` names a child the plan does not share
        under that parent."""
        groups = {g.parent: g for g in self.groups}
        chosen = []
        for parent, names in layout.items():
            group = groups.get(parent)
            entries = {c.name: c for c in group.children} if group else {}
            missing = [n for n in names if n == parent or n not in entries]
            if group is None or missing or not names:
                raise ValueError(f"the plan shares no child {missing or names!r} under the "
                                 f"parent {parent!r}; its layout is {self.layout}")
            reference = (entries[parent],) if group.new_parent else ()
            chosen.append(dataclasses.replace(
                group, children=reference + tuple(entries[n] for n in names)))
        return dataclasses.replace(self, groups=tuple(chosen), skipped=[])

    def to_json(self) -> dict[str, Any]:
        """The plan as plain JSON values (the adapter files' record)."""
        config = dataclasses.asdict(self.config)
        if isinstance(config["groups"], dict):
            config["groups"] = {k: list(v) for k, v in config["groups"].items()}
        return {"config": config,
                "groups": [dataclasses.asdict(g) for g in self.groups],
                "in_place": [dataclasses.asdict(layer) for layer in self.in_place]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConversionPlan:
        """The plan :meth:`to_json` wrote."""
        groups = tuple(GroupPlan(**{**g, "children": tuple(_layer(c) for c in g["children"])})
                       for g in data["groups"])
        return cls(ConvertConfig(**data["config"]), groups,
                   tuple(_layer(c) for c in data["in_place"]))

    def __str__(self) -> str:
        rows = []
        for g in self.groups:
            parent = (f"{g.parent} (kept)" if not g.new_parent
                      else f"new ({g.parent_init}, from {g.parent})")
            rows += [_row(c, "shared", parent) for c in g.children]
        rows += [_row(c, "in place", "its own kernel") for c in self.in_place]
        lines = [f"**KernelDNA conversion plan**: {len(self.groups)} parents, "
                 f"{len(self.layers)} children, {sum(c.params for c in self.layers):,} "
                 f"adapter parameters ({self.config})", "",
                 markdown_table(["layer", "role", "parent", "kernel", "gate (r, hidden)",
                                 "tap scales", "scales start", "residual rank",
                                 "adapter params"], rows, "lllllllrr")]
        if self.skipped:
            lines.append("\nLeft dense:")
            lines += [f"- {', '.join(names)}: {why}" for names, why in self.skipped]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return str(self)


def _layer(data: dict[str, Any]) -> LayerPlan:
    return LayerPlan(**{**data, "shape": tuple(data["shape"])})


def _row(layer: LayerPlan, role: str, parent: str) -> list[str]:
    gate = ("none" if layer.gate_reduction is None
            else f"{layer.gate_form}, r={layer.gate_reduction}, {layer.gate_hidden}")
    start = f"fitted ({layer.fit_steps} steps)" if layer.fit_steps else "zero"
    return [layer.name, role, parent, f"{layer.kind} {'x'.join(map(str, layer.shape))}", gate,
            "yes" if layer.taps else "no", start, str(layer.residual_rank), f"{layer.params:,}"]
