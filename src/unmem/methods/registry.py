"""Registry of unlearning methods: name -> config class, loss function and what the loop must compute.

A method module calls :func:`register_method` at import time; ``unmem.methods`` imports
every module in this package, so adding a method is adding one file.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from unmem.errors import UnmemError
from unmem.methods.base import REFERENCE_KINDS, LossInputs

LossFn = Callable[[LossInputs, Any], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class SetupContext:
    """What a method's optional ``setup`` may use, once, before training."""

    model: torch.nn.Module  # the policy (after ``prepare_model``)
    ref_model: torch.nn.Module | None
    tokenizer: Any
    forget_records: list[dict[str, Any]]
    retain_records: list[dict[str, Any]]
    device: torch.device


class Needs(NamedTuple):
    """Which extra forward passes one configured method needs."""

    ref: bool
    retain: bool
    idk: bool


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_cls: type
    loss_fn: LossFn
    description: str
    needs_ref: bool = False
    needs_retain: bool = False
    needs_idk: bool = False
    # Which hidden states the loop must return: a function of (config, number of layers).
    hidden_layers: Callable[[Any, int], list[int]] | None = None
    # Optional one-off setup before training (e.g. a fixed random direction); result -> LossInputs.state.
    setup: Callable[[SetupContext, Any], Any] | None = None
    # Optional model surgery before training (e.g. EUL's unlearning layers); returns the model to train.
    prepare_model: Callable[[torch.nn.Module, Any], torch.nn.Module] | None = None
    # Optional, full fine-tuning only: freeze what the method does not train (e.g. RMU trains only
    # the MLPs below its steering layer, as WMDP). Called on the model before the optimiser is built.
    restrict_training: Callable[[torch.nn.Module, Any], None] | None = None
    # "joint": every step sees a forget and (if needed) a retain batch.
    # "alternate": epochs alternate retain-only and forget-only (EUL).
    schedule: str = "joint"
    # "alternate" only: the most retain batches in one retain phase, given the forget phase's batches
    # (config, forget batches) -> int; None: a whole retain epoch.
    retain_phase_batches: Callable[[Any, int], int] | None = None
    # Optional work after training, given (model, SetupContext, config, output dir) (e.g. EUL's Gram matrices).
    finalize: Callable[..., None] | None = None
    # Optional config-dependent needs: config -> {"ref"|"retain"|"idk": bool}, overriding the flags above
    # for that config (e.g. a retain term with weight 0 needs no retain batch). The static flags describe
    # the default config; the loop should ask ``needs(cfg)``.
    needs_for: Callable[[Any], dict[str, bool]] | None = None
    # What the loss reads from the frozen reference: config -> {role: kinds}, roles "forget" | "retain" |
    # "idk", kinds from ``base.REFERENCE_KINDS`` (summed answer log-probs, the next-token distribution at
    # answer positions, hidden states of ``hidden_layers``). The reference is always the model as loaded,
    # before LoRA or ``prepare_model``: DI's starting model, EUL's base without its unlearning layers.
    # The loop computes exactly these, once per example before training (``reference: cached``) or
    # every step (``live``); needs(cfg).ref is whether anything is declared. A method that needs the
    # reference but declares nothing (None) gets the live reference's full outputs on every role.
    ref_outputs: Callable[[Any], dict[str, frozenset[str]]] | None = None
    # False: the loss reads no policy logits (RMU: hidden states only), so none are computed.
    needs_logits: bool = True
    # False: the loss takes nothing from the policy on the forget batch (IdkNLL learns the refusals
    # to the forget questions instead), so the loop does not run that pass.
    forget_pass: bool = True

    def needs(self, cfg: Any) -> Needs:
        """What the loop must compute for this configured method."""
        flags = {"ref": self.needs_ref, "retain": self.needs_retain, "idk": self.needs_idk}
        if self.needs_for is not None:
            override = self.needs_for(cfg)
            unknown = sorted(set(override) - set(flags))
            if unknown:
                raise ValueError(f"method {self.name!r}: needs_for returned unknown key(s) {unknown}")
            flags.update(override)
        if self.ref_outputs is not None:
            flags["ref"] = bool(self.reference_outputs(cfg))
        return Needs(**flags)

    def reference_outputs(self, cfg: Any) -> dict[str, frozenset[str]]:
        """{role: kinds} the configured method reads from the reference; {} when it reads nothing."""
        if self.ref_outputs is None:
            return {}
        declared = {role: frozenset(kinds) for role, kinds in self.ref_outputs(cfg).items() if kinds}
        bad_roles = sorted(set(declared) - {"forget", "retain", "idk"})
        bad_kinds = sorted({k for kinds in declared.values() for k in kinds} - set(REFERENCE_KINDS))
        if bad_roles or bad_kinds:
            raise ValueError(
                f"method {self.name!r}: ref_outputs names unknown role(s) {bad_roles} or kind(s) "
                f"{bad_kinds}; roles: forget, retain, idk; kinds: {', '.join(REFERENCE_KINDS)}"
            )
        return declared

    def make_config(self, overrides: dict[str, Any] | None = None) -> Any:
        """Build the method config from overrides, naming unknown keys and bad values."""
        overrides = dict(overrides or {})
        known = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UnmemError(
                f"method '{self.name}': unknown hyper-parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        try:
            return self.config_cls(**overrides)
        except (TypeError, ValueError) as exc:
            raise UnmemError(f"method '{self.name}': {exc}") from None


_METHODS: dict[str, MethodSpec] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_method(
    name: str,
    config_cls: type,
    loss_fn: LossFn,
    *,
    description: str,
    **options: Any,
) -> MethodSpec:
    """Register a method; rejects malformed and duplicate names so two files cannot collide."""
    if not _NAME.match(name):
        raise ValueError(f"method name {name!r} must be lower_snake_case (file src/unmem/methods/{name}.py)")
    if name in _METHODS:
        raise ValueError(
            f"method {name!r} is registered twice; rename one of the files in src/unmem/methods/"
        )
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"method {name!r}: config class {config_cls.__name__} must be a dataclass")
    spec = MethodSpec(name=name, config_cls=config_cls, loss_fn=loss_fn, description=description, **options)
    _METHODS[name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    from unmem import methods  # noqa: F401  (imports every method module)

    if name not in _METHODS:
        raise UnmemError(f"unknown method '{name}'; known: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def all_methods() -> dict[str, MethodSpec]:
    from unmem import methods  # noqa: F401

    return dict(sorted(_METHODS.items()))
