"""Fine-tuning methods in one registry, each stating exactly which parameters it trains.

Every method starts from a fresh copy of the same pretrained network (with its original
head), gives it a new head for the task's classes and sets ``requires_grad`` on exactly the
parameters it trains; :func:`prepare` does that and returns a :class:`Prepared` that names
them. :data:`METHODS` holds them by name:

* ``linear_probe``: the new head only. Every BatchNorm is frozen while training
  (:func:`kdna.nn.freeze_batchnorm`): batches are normalised with the ImageNet running statistics,
  which never move, so the head reads the features exactly as the pretrained network makes
  them;
* ``norms_head``: every normalisation layer's scale and shift, and the head;
* ``bitfit``: every bias, every norm's scale and shift, and the head (BitFit-style; on a
  network whose convolutions carry no bias, as EfficientNet-Lite0's, that is ``norms_head``);
* ``full``: every parameter;
* ``lora`` / ``lora_norms``: a rank-8 LoRA update (peft) beside every dense (``groups == 1``)
  convolution and per-position ``Linear`` that KernelDNA adapters convert, and the head;
  ``lora_norms`` trains the norms too;
* ``kdna_static``, ``kdna_gates_4``, ``kdna_gates_16``: KernelDNA adapters in place
  (:meth:`kdna.ConvertConfig.adapters`, :func:`kdna.adapter_only`): static scales only, or
  with gates of at most 4 or 16 hidden units; adapters, norms and head train;
* ``kdna_shared``: KernelDNA sharing chosen by measured damage
  (:func:`kdna.conversion.budget.plan_by_damage`), recovered by distillation towards the
  original on the task's unlabeled training images (:func:`kdna.conversion.recovery.distill`),
  then adapters, norms and head fine-tuned.

The linear probe keeps its BatchNorms in eval mode whatever the protocol says; for the others the
protocol decides (:attr:`kdna.finetune.protocol.Protocol.batchnorm`). A method that cannot be
prepared (a missing extra, a conversion step that fails) raises
:class:`MethodFailed` naming the method and why.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from kdna._checks import module_arg, tensor_arg
from kdna._extras import require
from kdna.conversion.config import ConvertConfig
from kdna.conversion.convert import apply_plan, convert
from kdna.conversion.rules import plan_conversion
from kdna.conversion.trainable import adapter_only
from kdna.nn.norm import NORM_LAYERS, freeze_batchnorm
from kdna.nn.utils import eval_mode, head_name, replace_module

__all__ = ["METHODS", "FinetuneMethod", "MethodContext", "MethodFailed",
           "Prepared", "get_method", "inference_form", "list_methods", "lora_targets",
           "prepare", "trainable_names"]


class MethodFailed(RuntimeError):
    """A method could not be prepared; the message names the method and the reason."""


@dataclass
class MethodContext:
    """What preparing a method may use besides the pretrained network."""

    num_classes: int  # the task's classes: the size of the new head
    example_inputs: Tensor  # a batch of task images: the conversions' example_inputs
    # unlabeled task training images (kdna_shared's recovery), or a function that reads them
    # when first needed (most methods never do)
    images: Tensor | Callable[[], Tensor] | None = None
    seed: int = 0  # the new head's initialisation (and LoRA's)
    progress: bool = False
    memo: dict[Any, Any] = field(default_factory=dict)  # expensive steps kept across calls
    notes: dict[str, str] = field(default_factory=dict)  # method name -> what preparing did

    def unlabeled_images(self) -> Tensor | None:
        """:attr:`images`, read now if it was given as a function."""
        if callable(self.images):
            self.images = self.images()
        return self.images

    def new_head(self, model: nn.Module) -> nn.Module:
        """Replace ``model``'s head (its last ``nn.Linear``) by a fresh one for the task."""
        name = head_name(model)
        old = model.get_submodule(name)
        generator = torch.Generator().manual_seed(self.seed)
        head = nn.Linear(old.in_features, self.num_classes)
        bound = old.in_features ** -0.5
        with torch.no_grad():
            head.weight.uniform_(-bound, bound, generator=generator)
            head.bias.zero_()
        replace_module(model, name, head.to(old.weight.device))
        return model


@dataclass(frozen=True)
class FinetuneMethod:
    """One way to fine-tune: its name, what it trains, and how it prepares a network."""

    name: str
    label: str  # for tables and figures
    trains: str  # exactly which parameters train, in words
    build: Callable[..., nn.Module]  # (copy of the pretrained network, context, **settings)
    settings: Mapping[str, Any] = field(default_factory=dict)  # part of every cache key
    adapter_files: bool = False  # whether its task file is a kdna.save_adapters folder
    in_place: bool = False  # KernelDNA adapters in place: the network's function kept at start

    @property
    def gated(self) -> bool:
        """Adapters in place whose children have input gates (per-input routing): an in-place
        method whose settings do not turn the gate off. Methods that are not in place are not
        counted, whatever their children have."""
        return self.in_place and self.settings.get("gate_reduction", "auto") is not None


@dataclass
class Prepared:
    """A network ready to train: only ``trainable`` (parameter names) have gradients."""

    method: FinetuneMethod
    model: nn.Module
    trainable: tuple[str, ...]
    total: int  # parameters of the prepared network (shared tensors once)

    @property
    def trainable_count(self) -> int:
        params = dict(self.model.named_parameters())
        return sum(params[n].numel() for n in self.trainable)


def trainable_names(model: nn.Module) -> tuple[str, ...]:
    """The names of ``model``'s parameters that have ``requires_grad`` (each tensor once)."""
    return tuple(sorted(n for n, p in model.named_parameters() if p.requires_grad))


def _train_only(model: nn.Module, *, norms: bool = False, biases: bool = False) -> None:
    model.requires_grad_(False)
    for module in model.modules():
        if norms and isinstance(module, NORM_LAYERS):
            module.requires_grad_(True)
    if biases:
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] == "bias":
                p.requires_grad_(True)
    model.get_submodule(head_name(model)).requires_grad_(True)


def _linear_probe(model: nn.Module, context: MethodContext) -> nn.Module:
    context.new_head(model)
    _train_only(model)
    return freeze_batchnorm(model)


def _norms_head(model: nn.Module, context: MethodContext, *, biases: bool = False
                ) -> nn.Module:
    context.new_head(model)
    _train_only(model, norms=True, biases=biases)
    return model


def _full(model: nn.Module, context: MethodContext) -> nn.Module:
    context.new_head(model)
    return model.requires_grad_(True)


def lora_targets(model: nn.Module, example_inputs: Tensor) -> list[str]:
    """The layers LoRA adapts: those KernelDNA adapters in place convert
    (:meth:`ConvertConfig.adapters`) that are dense convolutions (``groups == 1``) or
    ``Linear`` layers; depthwise convolutions are left out (LoRA's low-rank update is meant
    for dense kernels)."""
    plan = plan_conversion(model, ConvertConfig.adapters(), example_inputs=example_inputs)
    layers = {name: model.get_submodule(name) for name in plan.own}
    return [name for name, m in layers.items()
            if type(m) is nn.Linear or (type(m) is nn.Conv2d and m.groups == 1)]


def _lora(model: nn.Module, context: MethodContext, *, rank: int, norms: bool) -> nn.Module:
    peft = require("peft", "peft", "the LoRA fine-tuning methods")
    targets = lora_targets(model, context.example_inputs)
    context.new_head(model)
    torch.manual_seed(context.seed)  # LoRA's A matrices draw from the global generator
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                             target_modules=targets, modules_to_save=[head_name(model)])
    model = peft.get_peft_model(model, config)
    if norms:
        for module in model.modules():
            if isinstance(module, NORM_LAYERS):
                module.requires_grad_(True)
    return model


def _kdna_in_place(model: nn.Module, context: MethodContext, **settings: Any) -> nn.Module:
    context.new_head(model)
    convert(model, ConvertConfig.adapters(**settings), example_inputs=context.example_inputs)
    adapter_only(model)
    return model


def _recovered(teacher: nn.Module, context: MethodContext, saving: float, steps: tuple[int, int],
               lr: float) -> tuple[nn.Module, str]:
    """The shared and distilled network (ImageNet head still on), and what was done."""
    try:
        from kdna.conversion.budget import plan_by_damage
        from kdna.conversion.recovery import distill
    except ImportError as error:
        raise MethodFailed(f"kdna_shared needs kdna.conversion.budget.plan_by_damage and "
                           f"kdna.conversion.recovery.distill: {error}") from error
    images = context.unlabeled_images()
    if images is None or len(images) < 2:
        raise MethodFailed("kdna_shared needs unlabeled training images (context.images) to "
                           "distil the shared network towards the original")
    held_out, images = images[: max(1, len(images) // 8)], images[max(1, len(images) // 8):]
    try:
        student = copy.deepcopy(teacher)
        damage = plan_by_damage(student, saving, context.example_inputs,
                                ConvertConfig.pretrained(), progress=context.progress)
        apply_plan(student, damage.plan)
        result = distill(student, teacher, images, held_out=held_out, block_steps=steps[0],
                         logit_steps=steps[1], lr=lr, batch_size=32, progress=context.progress)
    except Exception as error:  # another module's work in progress: fail this method only
        raise MethodFailed(f"kdna_shared could not be prepared: {type(error).__name__}: "
                           f"{error}") from error
    with eval_mode(student), torch.no_grad():
        spread = float(student(context.example_inputs).std(dim=0).max())
    if not spread > 1e-6:  # a broken network that no fine-tuning can repair
        raise MethodFailed(f"kdna_shared could not be prepared: after plan_by_damage, "
                           f"apply_plan and distill the shared network gives the same output "
                           f"for every input (largest spread over a batch {spread:.1e}; "
                           f"{len(damage.chosen)} layers shared)")
    refused = (f" ({len(damage.refused)} more refused: with the others they left less than "
               f"{damage.min_spread:.0%} of the outputs' spread over the example batch)"
               if damage.refused else "")
    best = max(g.agreement.top1 for g in damage.chosen)
    return student, (f"{len(damage.chosen)} layers shared{refused}, saving "
                     f"{damage.saving:.1%} of the parameters; each of them alone keeps the "
                     f"original's top-1 class on at most {best:.0%} of the example images; "
                     f"{result}; fine-tuning starts from this changed network, not from the "
                     f"pretrained one the other methods start from")


def _kdna_shared(model: nn.Module, context: MethodContext, *, saving: float,
                 block_steps: int, logit_steps: int, lr: float) -> nn.Module:
    key = ("kdna_shared", id(context.unlabeled_images()), saving, block_steps, logit_steps, lr)
    if key not in context.memo:
        context.memo[key] = _recovered(model, context, saving, (block_steps, logit_steps), lr)
    student, note = context.memo[key]
    context.notes["kdna_shared"] = note
    student = copy.deepcopy(student)
    context.new_head(student)
    adapter_only(student)
    return student


def _methods() -> dict[str, FinetuneMethod]:
    lora = "a rank-8 LoRA update (peft, alpha 16) beside every dense convolution KernelDNA " \
           "adapters convert, and the head"
    kdna = "KernelDNA adapters in place (each layer a child of its own frozen kernel)"
    rows = [
        ("linear_probe", "linear probe", "the new head only; every BatchNorm kept in eval "
         "mode (ImageNet running statistics, never re-estimated)", _linear_probe, {}, False),
        ("norms_head", "norms + head", "every norm's scale and shift, and the head",
         _norms_head, {}, False),
        ("bitfit", "BitFit (biases + norms + head)", "every bias, every norm's scale and "
         "shift, and the head", _norms_head, {"biases": True}, False),
        ("full", "full fine-tuning", "every parameter", _full, {}, False),
        ("lora", "LoRA r=8 (peft)", f"{lora}; norms frozen", _lora,
         {"rank": 8, "norms": False}, False),
        ("lora_norms", "LoRA r=8 + norms", f"{lora}, and every norm's scale and shift", _lora,
         {"rank": 8, "norms": True}, False),
        ("kdna_static", "KernelDNA in place, static only", f"{kdna}: static scales only, "
         "norms and head", _kdna_in_place, {"gate_reduction": None}, True),
        ("kdna_gates_4", "KernelDNA in place, gates <= 4", f"{kdna}: static scales and gates "
         "of at most 4 hidden units, norms and head", _kdna_in_place,
         {"gate_max_hidden": 4}, True),
        ("kdna_gates_16", "KernelDNA in place, gates <= 16", f"{kdna}: static scales and "
         "gates of at most 16 hidden units, norms and head", _kdna_in_place,
         {"gate_max_hidden": 16}, True),
        ("kdna_shared", "KernelDNA shared + recovered", "sharing chosen by measured damage "
         "(5% of the parameters), distilled towards the original on the task's unlabeled "
         "images, then the children's adapters, norms and head", _kdna_shared,
         {"saving": 0.05, "block_steps": 100, "logit_steps": 50, "lr": 1e-3}, True),
    ]
    return {name: FinetuneMethod(name, label, trains, build, settings, adapter_files,
                                 in_place=build is _kdna_in_place)
            for name, label, trains, build, settings, adapter_files in rows}


METHODS: dict[str, FinetuneMethod] = _methods()


def list_methods() -> list[str]:
    """Every method's name, in the order tables show them."""
    return list(METHODS)


def get_method(name: str | FinetuneMethod) -> FinetuneMethod:
    """The method called ``name`` (a :class:`FinetuneMethod` is returned as it is)."""
    if isinstance(name, FinetuneMethod):
        return name
    if name not in METHODS:
        raise ValueError(f"unknown fine-tuning method {name!r}; expected one of "
                         f"{', '.join(METHODS)}")
    return METHODS[name]


def prepare(method: str | FinetuneMethod, pretrained: nn.Module, context: MethodContext
            ) -> Prepared:
    """A fresh copy of ``pretrained`` (left unchanged) prepared by ``method``: a new head,
    and ``requires_grad`` on exactly the parameters the method trains. Whatever it draws at
    random (gates, LoRA, kdna_shared's recovery) comes from ``context.seed``; the global
    generators (CPU and CUDA) are left as they were."""
    method = get_method(method)
    module_arg("pretrained", pretrained)
    tensor_arg("context.example_inputs", context.example_inputs)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(context.seed)
        model = method.build(copy.deepcopy(pretrained), context, **method.settings)
    params = {id(p): p for p in model.parameters()}.values()
    return Prepared(method, model, trainable_names(model), sum(p.numel() for p in params))


def inference_form(model: nn.Module) -> nn.Module:
    """The plain network a prepared (and trained) one deploys as: LoRA merged into its
    kernels (peft's ``merge_and_unload``); others as they are."""
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model
