"""What a conversion changed: groups, fit errors, parameter counts and output agreement.

:func:`kdna.convert` returns a :class:`ConversionReport`. It prints as a Markdown table
(and renders as one in Jupyter); :func:`kdna.viz.fit_errors` draws its fit errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from kdna._tables import markdown_table

__all__ = ["Agreement", "ChildFit", "ConversionReport", "LayerAdapter", "SharedGroup",
           "agreement"]


@dataclass(frozen=True)
class ChildFit:
    """One converted layer: its name and how well its adapter reproduces its old kernel.

    ``fit_error`` is ``||W - P * (1 + f) * (1 + s)|| / ||W||`` for the fitted scales: 0 when
    the old kernel was an exact scaled copy of the parent, about 1 when it was unrelated.
    """

    name: str
    fit_error: float


@dataclass(frozen=True)
class SharedGroup:
    """A parent and the children that now share its kernel."""

    parent: str
    children: tuple[ChildFit, ...]
    kind: str  # "conv" or "linear"
    shape: tuple[int, ...]  # the shared kernel's shape
    params_saved: int
    # "member": ``parent`` is the member kept as it is; "mean" / "lsq": a new parent kernel,
    # every member (``parent``, the reference, included) is one of ``children``
    parent_init: str = "member"

    @property
    def child_names(self) -> list[str]:
        """The members other than ``parent``: what ``groups={parent: child_names}`` takes."""
        return [c.name for c in self.children if c.name != self.parent]

    @property
    def mean_fit_error(self) -> float:
        return sum(c.fit_error for c in self.children) / len(self.children)


@dataclass(frozen=True)
class LayerAdapter:
    """One adapter in place (``share=False``): a layer made a child of its own frozen kernel."""

    name: str
    kind: str  # "conv", "depthwise" or "linear"
    shape: tuple[int, ...]  # the kernel's shape
    gate_hidden: int | None  # the gate's hidden width; None: static scales only
    params: int  # the adapter's parameters: static scales and gate (an own bias not counted)
    kernel_params: int  # the frozen kernel's


@dataclass(frozen=True)
class Agreement:
    """How closely the converted network's outputs follow the original's on one batch."""

    samples: int
    top1: float  # fraction of inputs whose arg-max class is unchanged
    logit_error: float  # ||new - old|| / ||old|| over the whole output
    kl: float = float("nan")  # mean KL(softmax(old) || softmax(new)) per input, in nats


def agreement(before: Tensor, after: Tensor) -> Agreement:
    """Compare two outputs of shape ``[batch, classes, ...]`` (arg-max and softmax over
    dim 1)."""
    before, after = before.detach().float(), after.detach().float()
    top1 = (before.argmax(dim=1) == after.argmax(dim=1)).float().mean().item()
    error = (torch.linalg.vector_norm(after - before)
             / torch.linalg.vector_norm(before).clamp_min(1e-12)).item()
    old, new = before.log_softmax(dim=1), after.log_softmax(dim=1)
    kl = (old.exp() * (old - new)).sum(dim=1).mean().item()
    return Agreement(samples=before.shape[0], top1=top1, logit_error=error, kl=kl)


@dataclass
class ConversionReport:
    """The result of :func:`kdna.convert`: what now shares what, and at what cost."""

    groups: list[SharedGroup]
    params_before: int
    params_after: int
    skipped: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    agreement: Agreement | None = None
    adapters: list[LayerAdapter] = field(default_factory=list)  # adapters in place, per layer

    @property
    def adapter_params(self) -> int:
        """Parameters of every adapter in place, in total."""
        return sum(a.params for a in self.adapters)

    @property
    def adapter_fraction(self) -> float:
        """:attr:`adapter_params` as a share of the network before conversion."""
        return self.adapter_params / self.params_before

    @property
    def layout(self) -> dict[str, list[str]]:
        """``parent -> children`` names: pass as ``convert(model, groups=report.layout)`` to
        give a fresh copy of the architecture the same structure (e.g. to load a state_dict)."""
        return {g.parent: g.child_names for g in self.groups}

    @property
    def children(self) -> list[str]:
        return [c.name for g in self.groups for c in g.children] + [a.name for a in self.adapters]

    @property
    def fit_errors(self) -> dict[str, float]:
        return {c.name: c.fit_error for g in self.groups for c in g.children}

    @property
    def saved_fraction(self) -> float:
        return 1 - self.params_after / self.params_before

    def __str__(self) -> str:
        lines = [
            f"**KernelDNA conversion**: {len(self.groups)} parents, {len(self.children)} "
            f"children; parameters {self.params_before / 1e6:.3f}M -> "
            f"{self.params_after / 1e6:.3f}M ({-100 * self.saved_fraction:+.1f}%)",
        ]
        if self.agreement is not None:
            a = self.agreement
            lines.append(f"\nOutputs on {a.samples} inputs: top-1 agreement {100 * a.top1:.1f}%, "
                         f"relative logit error {a.logit_error:.3f}, KL {a.kl:.3f} nats")
        if self.adapters:
            lines += self._adapter_lines()
        if self.groups:
            rows = [[g.parent, f"{g.kind} {'x'.join(map(str, g.shape))}",
                     ", ".join(c.name for c in g.children), f"{g.mean_fit_error:.3f}",
                     f"{g.params_saved:,}"] for g in self.groups]
            lines += ["", markdown_table(["parent", "kernel", "children", "mean fit error",
                                          "params saved"], rows)]
        if self.skipped:
            lines.append("\nLeft dense:")
            lines += [f"- {', '.join(names)}: {why}" for names, why in self.skipped]
        return "\n".join(lines)

    def _adapter_lines(self) -> list[str]:
        lines = [f"\nAdapters in place: {len(self.adapters)} layers, each on its own frozen "
                 f"kernel; {self.adapter_params:,} adapter parameters "
                 f"({100 * self.adapter_fraction:.2f}% of the network)", ""]
        rows = [[a.name, f"{a.kind} {'x'.join(map(str, a.shape))}",
                 "static only" if a.gate_hidden is None else str(a.gate_hidden),
                 f"{a.params:,}", f"{a.kernel_params:,}"] for a in self.adapters]
        return [*lines, markdown_table(["layer", "kernel", "gate hidden", "adapter params",
                                        "kernel params"], rows)]

    def _repr_markdown_(self) -> str:
        return str(self)
