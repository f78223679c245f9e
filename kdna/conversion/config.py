"""The conversion policy, decided in one place: :class:`ConvertConfig` and its presets.

A conversion is described by one frozen dataclass (peft style): which layers may share, how
each group's parent is chosen, what the gates look like and whether the children's static
scales are fitted to the kernels they replace. Three presets name the settings kdna uses:

* :meth:`ConvertConfig.pretrained` (:func:`kdna.convert`'s default): converting pretrained
  weights. Identity gates, fitted scales, the most similar member of each group as parent.
* :meth:`ConvertConfig.from_scratch`: training the paper's layouts from scratch. The paper's
  sigmoid gates, no fit (each child starts as a copy of its parent), the last member as parent.
* :meth:`ConvertConfig.pretrained_layout`: pretrained weights in a structure that must not
  depend on them (so a state_dict always fits a fresh model). Identity gates, fitted scales,
  the last member as parent.
* :meth:`ConvertConfig.adapters`: adapters in place (``share=False``): every eligible layer
  becomes a child of its *own* frozen kernel, with static scales at zero and a small identity
  gate (``r = 16``, at most 8 hidden units), so the network computes exactly what it did; a
  parameter-efficient fine-tuning method, saved and loaded with :func:`kdna.save_adapters`
  and :func:`kdna.load_adapters`.

Each preset takes overrides (``ConvertConfig.pretrained(fit_scales=False)``), and any config
gives a changed copy with :meth:`ConvertConfig.with_overrides`; both go through
:func:`dataclasses.replace`, so every value is checked again. :func:`resolve_config` is what
:func:`kdna.convert` uses to turn ``(config, **overrides)`` into one config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kdna._checks import checked_replace, int_at_least, one_of, positive_int
from kdna.conversion.parents import PARENT_INITS
from kdna.nn.gate import GateForm

__all__ = ["GATE_FORMS", "PARENT_RULES", "ConvertConfig", "Groups", "ParentInit", "ParentRule",
           "resolve_config"]

ParentRule = Literal["most_similar", "first", "last"]
ParentInit = Literal["member", "mean", "lsq"]
Groups = Mapping[str, Sequence[str]] | Sequence[Sequence[str]]
PARENT_RULES: tuple[str, ...] = ("most_similar", "first", "last")
GATE_FORMS: tuple[str, ...] = ("identity", "paper")


def _names(label: str, value: object) -> tuple[str, ...] | None:
    """A list of glob patterns (or names) as a tuple; a lone string is a mistake."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{label} must be a list of glob patterns such as ['layer3.*'] or None, "
                        f"got {value!r}")
    if not all(isinstance(v, str) for v in value):
        raise TypeError(f"{label} must hold strings (module-name patterns), got {value!r}")
    return tuple(value)


def _groups(value: object) -> dict[str, tuple[str, ...]] | tuple[tuple[str, ...], ...] | None:
    """Explicit groups as an immutable copy: ``{parent: (children...)}`` or ``((names...),)``."""
    if value is None:
        return None
    expected = ("groups must be a mapping 'parent name -> child names' or a list of name "
                "lists, e.g. {'layer1.0.conv2': ['layer1.1.conv2']}")
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{expected}; got the keys {list(value)!r}")
        return {k: _members(f"groups[{k!r}]", v) for k, v in value.items()}
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{expected}; got {value!r}")
    return tuple(_members(f"groups[{i}]", v) for i, v in enumerate(value))


def _members(label: str, value: object) -> tuple[str, ...]:
    """One group's module names as a tuple."""
    if (isinstance(value, str) or not isinstance(value, Sequence)
            or not all(isinstance(v, str) for v in value)):
        raise TypeError(f"{label} must be a list of module names such as ['layer1.1.conv2'], "
                        f"got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class ConvertConfig:
    """How :func:`kdna.convert` turns a network into a KernelDNA one (see the module docstring).

    The defaults are the :meth:`pretrained` preset. Every field is checked when the config is
    made, so a bad value fails before any model is touched.
    """

    # Explicit groups instead of the automatic rule: a mapping "parent name -> child names",
    # or a list of name lists whose parent is then chosen by ``parent_rule``. None: automatic
    # (same kernel shape, same groups, same input resolution).
    groups: Groups | None = None
    # Glob patterns over module names ("layer3.*") that restrict the automatic rule's
    # candidates to those matching one of them; None: every candidate. Not with ``groups``.
    include: Sequence[str] | None = None
    # Glob patterns of candidates the automatic rule leaves dense; None: none. Not with groups.
    exclude: Sequence[str] | None = None
    # How a group's parent is chosen: "most_similar" (highest mean absolute cosine similarity
    # to the other members: depends on the weights), "first" or "last" in model order.
    parent_rule: ParentRule = "most_similar"
    # The gates' reduction ratio: a positive int; "auto" is 4, times the layer's input/output
    # width ratio when it narrows (the paper's 24 before MobileNetV2's projections); None for
    # static-only children (no gate).
    gate_reduction: int | Literal["auto"] | None = "auto"
    # "identity" (2 * sigmoid with the last layer zeroed: exactly 1 at initialisation, so a
    # converted network starts from the function it was given) or "paper" (plain sigmoid).
    gate_form: GateForm = "identity"
    # Fit each child's static scales by least squares to the kernel it replaces; otherwise
    # they start at zero and each child starts as a copy of its parent (as from scratch).
    fit_scales: bool = True
    # Alternating least-squares steps of that fit (ignored when fit_scales is False).
    fit_steps: int = 10
    # False: adapters in place. No sharing: every eligible layer (each exact Conv2d and each
    # Linear that runs per position, except those that see one position: heads and
    # squeeze-excitation) becomes a child of its own frozen kernel, with its scales at zero
    # (fit_scales and parent_rule do not apply) and the function exactly the original's.
    # Depthwise convolutions get static scales only (see kdna.conversion.rules).
    share: bool = True
    # A cap on each gate's hidden width (the reduction ratio is raised where C / r would
    # exceed it); None: no cap.
    gate_max_hidden: int | None = None
    # Each shared group's parent: "member" (the member parent_rule picks, kept as it is; the
    # others become its children), or a new kernel made from every member, all of which then
    # become children: "mean" (the aligned mean) or "lsq" (a least-squares fit to all of
    # them); see kdna.conversion.parents. parent_rule then picks the reference member.
    parent_init: ParentInit = "member"
    # Relaxed children: each shared child gets a low-rank residual of this rank, initialised
    # by a truncated SVD of what its scales cannot express (kdna.nn.relax) and folded into its
    # static kernel for inference; 0: none. Shared children only (share=True).
    residual_rank: int = 0

    def __post_init__(self) -> None:
        include, exclude = _names("include", self.include), _names("exclude", self.exclude)
        groups = _groups(self.groups)
        if groups is not None and (include is not None or exclude is not None):
            raise ValueError("give either explicit groups or include/exclude patterns, not both "
                             f"(got groups={self.groups!r}, include={self.include!r}, "
                             f"exclude={self.exclude!r})")
        one_of("parent_rule", self.parent_rule, PARENT_RULES)
        r = self.gate_reduction
        if not (r in ("auto", None) or (isinstance(r, int) and not isinstance(r, bool) and r > 0)):
            raise ValueError(f"gate_reduction must be 'auto', a positive int or None, got {r!r}")
        one_of("gate_form", self.gate_form, GATE_FORMS)
        if not isinstance(self.fit_scales, bool):
            raise TypeError(f"fit_scales must be True or False, got {self.fit_scales!r}")
        positive_int("fit_steps", self.fit_steps)
        if not isinstance(self.share, bool):
            raise TypeError(f"share must be True (layers share parents) or False (adapters in "
                            f"place, each layer on its own kernel), got {self.share!r}")
        if self.gate_max_hidden is not None:
            positive_int("gate_max_hidden", self.gate_max_hidden)
        one_of("parent_init", self.parent_init, PARENT_INITS)
        int_at_least("residual_rank", self.residual_rank, 0)
        if not self.share and (self.parent_init != "member" or self.residual_rank):
            raise ValueError("parent_init and residual_rank shape shared groups; with "
                             "share=False (adapters in place) nothing is shared (got "
                             f"parent_init={self.parent_init!r}, "
                             f"residual_rank={self.residual_rank!r})")
        if not self.share and groups is not None:
            raise ValueError("groups name layers that share a parent; with share=False (adapters "
                             "in place) there is no sharing: use include/exclude to choose the "
                             f"layers (got groups={self.groups!r})")
        for name, value in (("groups", groups), ("include", include), ("exclude", exclude)):
            object.__setattr__(self, name, value)

    # ---- presets -------------------------------------------------------------------------
    @classmethod
    def pretrained(cls, **overrides: Any) -> ConvertConfig:
        """Converting pretrained weights: identity gates, fitted scales, the most similar
        member as parent (the converted network starts as close to the original as it can)."""
        return cls().with_overrides(**overrides)

    @classmethod
    def from_scratch(cls, **overrides: Any) -> ConvertConfig:
        """Training from scratch (the paper's setting): sigmoid gates, no fit (each child starts
        as a copy of its parent), the last member of each group as parent."""
        return cls(parent_rule="last", gate_form="paper", fit_scales=False
                   ).with_overrides(**overrides)

    @classmethod
    def pretrained_layout(cls, **overrides: Any) -> ConvertConfig:
        """Pretrained weights in a structure that must not depend on them: as
        :meth:`pretrained`, but the last member of each group is the parent, so a freshly built
        model always has the same layout and any state_dict of it fits."""
        return cls(parent_rule="last").with_overrides(**overrides)

    @classmethod
    def adapters(cls, **overrides: Any) -> ConvertConfig:
        """Adapters in place (``share=False``): every eligible layer a child of its own frozen
        kernel, static scales at zero, identity gates with ``r = 16`` and at most 8 hidden
        units: the network starts from exactly the function it was given. Depthwise layers
        get static scales only. ``gate_reduction=None`` for static scales only everywhere,
        ``gate_max_hidden=None`` for uncapped gates (on EfficientNet-Lite0: 200K adapter
        parameters capped, 1.01M uncapped, 21K static only)."""
        return cls(share=False, gate_reduction=16, gate_max_hidden=8, fit_scales=False
                   ).with_overrides(**overrides)

    def with_overrides(self, **overrides: Any) -> ConvertConfig:
        """A copy with the given fields changed (``TypeError`` for an unknown field name)."""
        return checked_replace(self, "conversion", overrides) if overrides else self


def resolve_config(config: ConvertConfig | None, overrides: Mapping[str, Any], *,
                   caller: str = "convert") -> ConvertConfig:
    """``config`` (default: :meth:`ConvertConfig.pretrained`) with ``overrides`` applied; a
    ``TypeError`` that names ``caller`` for a config that is not a :class:`ConvertConfig`."""
    if config is None:
        config = ConvertConfig.pretrained()
    elif not isinstance(config, ConvertConfig):
        raise TypeError(f"config must be a kdna.ConvertConfig or None, got "
                        f"{type(config).__name__} ({config!r}); pass settings by keyword, "
                        f"e.g. {caller}(model, groups=...)")
    return config.with_overrides(**overrides)
