"""Sharing guided by measured damage: reach a parameter saving by sharing what hurts least.

The automatic rule (:func:`kdna.conversion.plan.plan_conversion`) shares every group it finds,
and on a pretrained network some layers cost far more of its function than others.
:func:`plan_by_damage` measures each candidate child alone: it shares that one layer with its
group's parent in a copy of the model and records how far the outputs on a probe batch move
(KL divergence from the original's, top-1 agreement) and how many parameters it saves. Then it
takes children in order of damage per parameter saved, the least first, until the saving asked
for is reached, and returns the plan that shares them (each with its group's parent), ready for
:func:`kdna.conversion.convert.apply_plan`. Measuring one child at a time, not whole groups,
lets the budget take the harmless half of a group without the harmful half.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from kdna._checks import module_arg, tensor_arg
from kdna.conversion.config import ConvertConfig, resolve_config
from kdna.conversion.convert import apply_plan
from kdna.conversion.plan import ConversionPlan, plan_conversion
from kdna.conversion.report import Agreement
from kdna.nn.utils import count_parameters

__all__ = ["DamagePlan", "LayerDamage", "least_damaging", "plan_by_damage"]


@dataclass(frozen=True)
class LayerDamage:
    """One layer shared with its group's parent, alone: what it saves and what it costs on
    the probe batch (``children`` holds that one layer)."""

    parent: str
    children: tuple[str, ...]
    params_saved: int
    agreement: Agreement

    @property
    def damage_per_param(self) -> float:
        """KL divergence per parameter saved (``inf`` for a group that saves nothing)."""
        return self.agreement.kl / self.params_saved if self.params_saved > 0 else float("inf")


@dataclass(frozen=True)
class DamagePlan:
    """The result of :func:`plan_by_damage`."""

    plan: ConversionPlan  # the chosen groups, to apply with apply_plan
    measured: list[LayerDamage]  # every candidate group, least damage per parameter first
    chosen: list[LayerDamage]  # the children in the plan
    params_before: int
    target: float  # the saving asked for, a fraction of params_before

    def plan_for(self, saving: float) -> ConversionPlan:
        """The plan for another saving from the same measurements (the same order, a longer
        or shorter prefix of it): no group is measured again."""
        chosen = least_damaging(self.measured, saving * self.params_before)
        return dataclasses.replace(self.plan, layout=_layout(chosen))

    @property
    def saving(self) -> float:
        """The fraction of parameters the plan saves, summed over its children as measured
        one at a time (exact with ``parent_init="member"``; with a new parent, whose cost is
        shared by more members in the plan than in a measurement, a lower bound)."""
        return sum(g.params_saved for g in self.chosen) / self.params_before

    def __str__(self) -> str:
        lines = [f"sharing by measured damage: {len(self.chosen)} of {len(self.measured)} "
                 f"candidate children, saving {self.saving:.1%} (asked for {self.target:.1%})",
                 "", "| child | parent | params saved | KL alone | top-1 alone | chosen |",
                 "|---|---|---|---|---|---|"]
        chosen = {g.children for g in self.chosen}
        for g in self.measured:
            lines.append(f"| {', '.join(g.children)} | {g.parent} | {g.params_saved:,} | "
                         f"{g.agreement.kl:.3f} | {g.agreement.top1:.0%} | "
                         f"{'yes' if g.children in chosen else ''} |")
        return "\n".join(lines)


def plan_by_damage(model: nn.Module, saving: float, example_inputs: Tensor,
                   config: ConvertConfig | None = None, *, progress: bool = True,
                   **overrides) -> DamagePlan:
    """A plan that saves at least ``saving`` (a fraction, e.g. ``0.15``) of ``model``'s
    parameters by sharing the layers that change its outputs on ``example_inputs`` least.

    ``config`` and ``overrides`` are as for :func:`kdna.convert` (sharing, so ``share`` must
    stay ``True``); the candidates are the children of explicit ``groups``, otherwise of the
    automatic rule's groups, each with its group's parent. ``model`` is not changed. Where all
    of them together save less than ``saving``, the plan shares them all
    (:attr:`DamagePlan.saving` says what it reaches).
    """
    module_arg("model", model)
    tensor_arg("example_inputs", example_inputs)
    if isinstance(saving, bool) or not isinstance(saving, (int, float)) or not 0 < saving < 1:
        raise ValueError(f"saving must be a fraction of the parameters between 0 and 1 "
                         f"(e.g. 0.15), got {saving!r}")
    config = resolve_config(config, overrides, caller="plan_by_damage")
    if not config.share:
        raise ValueError("plan_by_damage chooses groups to share; share=False (adapters in "
                         "place) shares nothing")
    full = plan_conversion(model, config, example_inputs=example_inputs)
    units = [(parent, child) for parent, children in full.layout.items() for child in children]
    measured = [_damage(model, full, parent, [child])
                for parent, child in tqdm(units, desc="damage per child", disable=not progress,
                                          leave=False)]
    measured.sort(key=lambda g: g.damage_per_param)
    params_before = count_parameters(model)
    chosen = least_damaging(measured, saving * params_before)
    plan = dataclasses.replace(full, layout=_layout(chosen), skipped=[])
    return DamagePlan(plan, measured, chosen, params_before, float(saving))


def least_damaging(measured: list[LayerDamage], params: float) -> list[LayerDamage]:
    """The first groups of ``measured`` (least damage first) that save at least ``params``
    together; all of them that save anything, where they save less."""
    chosen, total = [], 0
    for group in measured:
        if total >= params:
            break
        if group.params_saved > 0:
            chosen.append(group)
            total += group.params_saved
    return chosen


def _layout(chosen: list[LayerDamage]) -> dict[str, list[str]]:
    """The chosen children gathered under their parents, in the order measured."""
    layout: dict[str, list[str]] = {}
    for unit in chosen:
        layout.setdefault(unit.parent, []).extend(unit.children)
    return layout


def _damage(model: nn.Module, full: ConversionPlan, parent: str, children: list[str]
            ) -> LayerDamage:
    trial = copy.deepcopy(model)
    plan = dataclasses.replace(full, layout={parent: list(children)}, skipped=[])
    with torch.no_grad():
        report = apply_plan(trial, plan)
    return LayerDamage(parent, tuple(children), report.groups[0].params_saved, report.agreement)
