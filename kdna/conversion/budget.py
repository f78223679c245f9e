"""Sharing guided by measured damage: reach a parameter saving by sharing what hurts least.

The automatic rule (:func:`kdna.conversion.rules.plan_conversion`) shares every group it finds,
and on a pretrained network some layers cost far more of its function than others.
:func:`plan_by_damage` measures each candidate child alone: it shares that one layer with its
group's parent in a copy of the model and records how far the outputs on ``example_inputs`` move
(KL divergence from the original's, top-1 agreement) and how many parameters it saves. Then it
takes children in order of damage per parameter saved, the least first, until the saving asked
for is reached, and returns the plan that shares them (each with its group's parent), ready for
:func:`kdna.conversion.convert.apply_plan`. Measuring one child at a time, not whole groups,
lets the budget take the harmless half of a group without the harmful half.

Children that are harmless one at a time can still break the network together (on inputs far
from the training distribution, e.g. small images, a pretrained classifier's outputs are
nearly the same for every input, its softmax nearly uniform, and a KL divergence from them
stays small even for a child that makes every output identical). So each child is also
measured by how much of the outputs' *spread* over the batch it keeps (every output
minus the batch mean, its norm relative to the original's: 1 unchanged in size, 0 when every
input gives the same output), and the plan is built one child at a time on the combined
network: a child whose addition leaves less than ``min_spread`` of the original spread is
refused (:attr:`DamagePlan.refused`) and the next one is tried.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from kdna._checks import module_arg, tensor_arg
from kdna._tables import markdown_table
from kdna.conversion.config import ConvertConfig, resolve_config
from kdna.conversion.convert import apply_plan
from kdna.conversion.plan import ConversionPlan
from kdna.conversion.report import Agreement, ConversionReport, agreement
from kdna.conversion.rules import decide_plan
from kdna.nn.utils import count_parameters, eval_mode

__all__ = ["DamagePlan", "LayerDamage", "least_damaging", "plan_by_damage"]


@dataclass(frozen=True)
class LayerDamage:
    """One layer shared with its group's parent, alone: what it saves and what it costs on
    ``example_inputs`` (``children`` holds that one layer)."""

    parent: str
    children: tuple[str, ...]
    params_saved: int
    agreement: Agreement
    spread_kept: float = 1.0  # the outputs' spread over the batch, a fraction of the original's

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
    refused: list[LayerDamage] = dataclasses.field(default_factory=list)  # collapsed it
    min_spread: float = 0.0  # the least share of the outputs' spread a plan had to keep

    def plan_for(self, saving: float) -> ConversionPlan:
        """The plan for another saving, at most :attr:`target`, from the same measurements
        (the same order without the refused children, a shorter prefix of it): no group is
        measured again. A larger saving was never checked on the combined network: call
        :func:`plan_by_damage` with it."""
        if not 0 < saving <= self.target:
            raise ValueError(f"plan_for gives savings in (0, {self.target:g}], the saving "
                             f"these measurements were checked for; got {saving!r}: call "
                             f"plan_by_damage with it")
        usable = [g for g in self.measured if g not in self.refused]
        chosen = least_damaging(usable, saving * self.params_before)
        return self.plan.with_layout(_layout(chosen))

    @property
    def saving(self) -> float:
        """The fraction of parameters the plan saves, summed over its children as measured
        one at a time (exact with ``parent_init="member"``; with a new parent, whose cost is
        shared by more members in the plan than in a measurement, a lower bound)."""
        return sum(g.params_saved for g in self.chosen) / self.params_before

    def __str__(self) -> str:
        lines = [f"sharing by measured damage: {len(self.chosen)} of {len(self.measured)} "
                 f"candidate children, saving {self.saving:.1%} (asked for {self.target:.1%}); "
                 f"{len(self.refused)} refused: with the children before them they kept less "
                 f"than {self.min_spread:.0%} of the outputs' spread over the batch", ""]
        chosen = {g.children for g in self.chosen}
        refused = {g.children for g in self.refused}
        rows = [[", ".join(g.children), g.parent, f"{g.params_saved:,}", f"{g.agreement.kl:.3f}",
                 f"{g.agreement.top1:.0%}", f"{g.spread_kept:.0%}",
                 "yes" if g.children in chosen else "refused" if g.children in refused else ""]
                for g in self.measured]
        lines.append(markdown_table(["child", "parent", "params saved", "KL alone",
                                     "top-1 alone", "spread kept alone", "chosen"], rows))
        return "\n".join(lines)


def plan_by_damage(model: nn.Module, saving: float, example_inputs: Tensor,
                   config: ConvertConfig | None = None, *, progress: bool = True,
                   min_spread: float = 0.1, **overrides) -> DamagePlan:
    """A plan that saves at least ``saving`` (a fraction, e.g. ``0.15``) of ``model``'s
    parameters by sharing the layers that change its outputs on ``example_inputs`` least.

    ``config`` and ``overrides`` are as for :func:`kdna.convert` (sharing, so ``share`` must
    stay ``True``); the candidates are the children of explicit ``groups``, otherwise of the
    automatic rule's groups, each with its group's parent. ``model`` is not changed. The
    children are taken least KL divergence per parameter saved first, each checked on the
    network that shares it with the ones taken before it: one that leaves that network less
    than ``min_spread`` of the original outputs' spread over the batch (see the module
    docstring) is refused. Where the rest together save less than ``saving``, the plan
    shares them all (:attr:`DamagePlan.saving` says what it reaches).

    Raises:
        ValueError: ``example_inputs`` give the same output for every input (nothing to
            measure damage against: use varied inputs, e.g. at the network's native
            resolution), or every candidate child alone leaves less than ``min_spread``.
    """
    module_arg("model", model)
    tensor_arg("example_inputs", example_inputs)
    if isinstance(saving, bool) or not isinstance(saving, (int, float)) or not 0 < saving < 1:
        raise ValueError(f"saving must be a fraction of the parameters between 0 and 1 "
                         f"(e.g. 0.15), got {saving!r}")
    if isinstance(min_spread, bool) or not isinstance(min_spread, (int, float)) or not (
            0 <= min_spread < 1):
        raise ValueError(f"min_spread must be a fraction in [0, 1), got {min_spread!r}")
    config = resolve_config(config, overrides, caller="plan_by_damage")
    if not config.share:
        raise ValueError("plan_by_damage chooses groups to share; share=False (adapters in "
                         "place) shares nothing")
    full = decide_plan(model, config, example_inputs)
    original = _checked_output(full.original_output, example_inputs)
    units = [(parent, child) for parent, children in full.layout.items() for child in children]
    measured = [_damage(model, full, parent, [child], original)
                for parent, child in tqdm(units, desc="damage per child", disable=not progress,
                                          leave=False)]
    measured.sort(key=lambda g: g.damage_per_param)
    params_before = count_parameters(model)
    chosen, refused = _combined(model, full, measured, saving * params_before, original,
                                min_spread)
    if refused and not chosen:
        raise ValueError(f"plan_by_damage found no child it can share: each of the "
                         f"{len(refused)} candidates leaves less than {min_spread:.0%} of the "
                         f"outputs' spread over example_inputs (at most "
                         f"{max(g.spread_kept for g in refused):.1%}); measure on inputs the "
                         f"network was made for, or lower min_spread")
    plan = full.with_layout(_layout(chosen))
    return DamagePlan(plan, measured, chosen, params_before, float(saving), refused,
                      float(min_spread))


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


def _spread(outputs: Tensor) -> float:
    """The spread of a batch of outputs: the norm of every output minus the batch mean (0
    when every input gives the same output)."""
    outputs = outputs.detach().float()
    return float(torch.linalg.vector_norm(outputs - outputs.mean(dim=0, keepdim=True)))


def _checked_output(output: object, example_inputs: Tensor) -> Tensor:
    """The original network's output on ``example_inputs``, refused where it cannot show
    damage (not a tensor, or the same for every input)."""
    if not isinstance(output, Tensor):
        raise TypeError(f"plan_by_damage compares the network's outputs, which must be a "
                        f"tensor of shape [batch, classes, ...]; got {type(output).__name__}")
    scale = float(torch.linalg.vector_norm(output.detach().float()))
    if len(example_inputs) < 2 or not _spread(output) > 1e-6 * scale:  # rounding only
        raise ValueError(f"example_inputs (shape {list(example_inputs.shape)}) give the same "
                         f"output for every input, so no damage can be measured on them: pass "
                         f"at least two varied inputs, e.g. at the network's native resolution")
    return output


def _combined(model: nn.Module, full: ConversionPlan, measured: list[LayerDamage],
              params: float, original: Tensor, min_spread: float
              ) -> tuple[list[LayerDamage], list[LayerDamage]]:
    """The children taken in the order of ``measured`` until they save ``params``, each
    checked on the network that shares it with those taken before it; and those refused."""
    chosen: list[LayerDamage] = []
    refused: list[LayerDamage] = []
    total, spread = 0, _spread(original)
    for unit in measured:
        if total >= params:
            break
        if unit.params_saved <= 0:
            continue
        kept = unit.spread_kept  # alone; with others, measured on the combined network
        if chosen and min_spread > 0 and kept >= min_spread:
            kept = _spread(_shared_output(model, full, _layout([*chosen, unit]))[1]) / spread
        if kept >= min_spread:
            chosen.append(unit)
            total += unit.params_saved
        else:
            refused.append(unit)
    return chosen, refused


def _layout(chosen: list[LayerDamage]) -> dict[str, list[str]]:
    """The chosen children gathered under their parents, in the order measured."""
    layout: dict[str, list[str]] = {}
    for unit in chosen:
        layout.setdefault(unit.parent, []).extend(unit.children)
    return layout


def _shared_output(model: nn.Module, full: ConversionPlan, layout: dict[str, list[str]]
                   ) -> tuple[ConversionReport, Tensor]:
    """A copy of ``model`` sharing ``layout``: its report and its output on
    ``example_inputs`` (eval mode, no gradients). ``model`` is not changed."""
    trial = copy.deepcopy(model)
    plan = dataclasses.replace(full.with_layout(layout), example_inputs=None,
                               original_output=None)
    with torch.no_grad():
        report = apply_plan(trial, plan)
        with eval_mode(trial):
            output = trial(full.example_inputs)
    return report, output


def _damage(model: nn.Module, full: ConversionPlan, parent: str, children: list[str],
            original: Tensor) -> LayerDamage:
    report, output = _shared_output(model, full, {parent: list(children)})
    return LayerDamage(parent, tuple(children), report.groups[0].params_saved,
                       agreement(original, output), _spread(output) / _spread(original))
