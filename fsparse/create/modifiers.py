"""Recipe modifiers: frozen, validated descriptions of what happens when.

Epochs are floats; a modifier acts from the first optimizer step whose epoch
(``steps / steps_per_epoch``) is at least its start. Each modifier converts to
and from a plain dict (``{"type": name, **fields}``) for YAML.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Union

from fsparse._src.checks import short_repr
from fsparse.create.modifier_fields import (
    ALL_PRUNABLE,
    LR_FUNCTIONS,
    MAX_EPOCH,
    MAX_LR,
    MAX_TEMPERATURE,
    Base,
    check_params,
    in_range,
)
from fsparse.create.pruning_modifiers import (
    PRUNER_MODIFIERS,
    ACDCPruning,
    MFACPruning,
    MovementPruning,
    OBSPruning,
    RigLPruning,
    SETPruning,
)
from fsparse.create.recipe_variables import max_sparsity, parse_mask_type

__all__ = [
    "ALL_PRUNABLE",
    "MAX_EPOCH",
    "PRUNING_TYPES",
    "ACDCPruning",
    "MFACPruning",
    "MovementPruning",
    "OBSPruning",
    "RigLPruning",
    "SETPruning",
    "LR_FUNCTIONS",
    "MODIFIER_TYPES",
    "ConstantPruning",
    "Distillation",
    "EpochRange",
    "GradualPruning",
    "LearningRateFunction",
    "Modifier",
    "Quantization",
    "modifier_from_dict",
    "modifier_to_dict",
]

@dataclasses.dataclass(frozen=True)
class EpochRange(Base):
    """The run's epoch span; sets ``max_epochs`` when nothing else ends later."""

    start_epoch: float
    end_epoch: float

    def __post_init__(self) -> None:
        self._coerce()
        self._check_span()


@dataclasses.dataclass(frozen=True)
class LearningRateFunction(Base):
    """LR from ``init_lr`` to ``final_lr`` over the span (held at ``final_lr`` after it).

    ``lr_func`` is ``"linear"``, ``"cosine"`` or ``"cyclic_linear"`` (a linear
    ramp restarted every ``cycle_epochs``).
    """

    FLOATS: ClassVar[tuple[str, ...]] = (
        "start_epoch", "end_epoch", "init_lr", "final_lr", "cycle_epochs"
    )
    start_epoch: float
    end_epoch: float
    init_lr: float
    final_lr: float
    lr_func: str = "linear"
    cycle_epochs: float = 1.0

    def __post_init__(self) -> None:
        self._coerce()
        self._check_span()
        for field in ("init_lr", "final_lr"):
            in_range("LearningRateFunction", field, getattr(self, field), 0.0, MAX_LR)
        if not isinstance(self.lr_func, str) or self.lr_func not in LR_FUNCTIONS:
            raise ValueError(
                f"LearningRateFunction.lr_func must be one of {LR_FUNCTIONS}, "
                f"got {short_repr(self.lr_func)}"
            )
        if self.cycle_epochs <= 0:
            raise ValueError(
                f"LearningRateFunction.cycle_epochs must be > 0, got {self.cycle_epochs!r}"
            )


@dataclasses.dataclass(frozen=True)
class GradualPruning(Base):
    """Magnitude pruning from ``init_sparsity`` to ``final_sparsity`` on the cubic schedule.

    Masks are recomputed every ``update_frequency`` epochs inside the span and
    held afterwards. ``global_sparsity`` ranks all ``params`` together.
    """

    FLOATS: ClassVar[tuple[str, ...]] = (
        "start_epoch", "end_epoch", "update_frequency", "init_sparsity", "final_sparsity"
    )
    start_epoch: float
    end_epoch: float
    update_frequency: float
    init_sparsity: float
    final_sparsity: float
    mask_type: str = "unstructured"
    global_sparsity: bool = True
    params: str | tuple[str, ...] = ALL_PRUNABLE

    def __post_init__(self) -> None:
        self._coerce()
        self._check_span()
        if self.update_frequency <= 0:
            raise ValueError(
                f"GradualPruning.update_frequency must be > 0, got {self.update_frequency!r}"
            )
        parse_mask_type(self.mask_type, "GradualPruning.mask_type")
        ceiling = max_sparsity(self.mask_type)
        in_range("GradualPruning", "final_sparsity", self.final_sparsity, 0.0, ceiling)
        if self.final_sparsity >= 1.0:
            raise ValueError("GradualPruning.final_sparsity must be < 1, got 1.0")
        in_range("GradualPruning", "init_sparsity", self.init_sparsity, 0.0, self.final_sparsity)
        if not isinstance(self.global_sparsity, bool):
            raise ValueError(
                "GradualPruning.global_sparsity must be a bool, "
                f"got {short_repr(self.global_sparsity)}"
            )
        object.__setattr__(self, "params", check_params("GradualPruning", self.params))


@dataclasses.dataclass(frozen=True)
class ConstantPruning(Base):
    """Hold the parameters' existing zeros fixed from ``start_epoch`` on."""

    start_epoch: float
    end_epoch: float
    params: str | tuple[str, ...] = ALL_PRUNABLE

    def __post_init__(self) -> None:
        self._coerce()
        self._check_span()
        object.__setattr__(self, "params", check_params("ConstantPruning", self.params))


@dataclasses.dataclass(frozen=True)
class Quantization(Base):
    """Eager-mode QAT from ``start_epoch``; observers off and BN frozen at the later epochs."""

    FLOATS: ClassVar[tuple[str, ...]] = (
        "start_epoch", "disable_observer_epoch", "freeze_bn_stats_epoch"
    )
    start_epoch: float
    disable_observer_epoch: float
    freeze_bn_stats_epoch: float

    def __post_init__(self) -> None:
        self._coerce()
        for field in ("disable_observer_epoch", "freeze_bn_stats_epoch"):
            if getattr(self, field) < self.start_epoch:
                raise ValueError(
                    f"Quantization.{field} must be >= start_epoch ({self.start_epoch}), "
                    f"got {getattr(self, field)!r}"
                )

    @property
    def end_epoch(self) -> float:
        """The last epoch at which this modifier changes anything."""
        return max(self.disable_observer_epoch, self.freeze_bn_stats_epoch)


@dataclasses.dataclass(frozen=True)
class Distillation(Base):
    """Loss ``(1 - hardness) * loss + hardness * KD`` inside the span."""

    FLOATS: ClassVar[tuple[str, ...]] = ("start_epoch", "end_epoch", "hardness", "temperature")
    start_epoch: float
    end_epoch: float
    hardness: float = 0.5
    temperature: float = 2.0

    def __post_init__(self) -> None:
        self._coerce()
        self._check_span()
        in_range("Distillation", "hardness", self.hardness, 0.0, 1.0)
        if not 0 < self.temperature <= MAX_TEMPERATURE:
            raise ValueError(
                f"Distillation.temperature must be in (0, {MAX_TEMPERATURE:g}], "
                f"got {self.temperature!r}"
            )


Modifier = Union[  # noqa: UP007 (an alias, evaluated at import)
    EpochRange, LearningRateFunction, GradualPruning, ConstantPruning, Quantization,
    Distillation, ACDCPruning, MovementPruning, OBSPruning, MFACPruning, RigLPruning, SETPruning,
]
# Every pruning modifier: each runs one fsparse.pruners pruner (ConstantPruning: none).
PRUNING_TYPES: tuple[type, ...] = (GradualPruning, ConstantPruning, *PRUNER_MODIFIERS)
MODIFIER_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        EpochRange,
        LearningRateFunction,
        GradualPruning,
        ConstantPruning,
        Quantization,
        Distillation,
        *PRUNER_MODIFIERS,
    )
}


def modifier_to_dict(modifier: Modifier) -> dict[str, Any]:
    """``{"type": name, **fields}`` with tuples as lists (YAML-safe).

    >>> modifier_to_dict(EpochRange(0, 2))
    {'type': 'EpochRange', 'start_epoch': 0.0, 'end_epoch': 2.0}
    """
    out: dict[str, Any] = {"type": type(modifier).__name__}
    for field in dataclasses.fields(modifier):
        value = getattr(modifier, field.name)
        out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def modifier_from_dict(data: Mapping[str, Any]) -> Modifier:
    """The modifier described by ``data``; unknown or missing keys raise ``ValueError``.

    >>> modifier_from_dict({"type": "EpochRange", "start_epoch": 0, "end_epoch": 3})
    EpochRange(start_epoch=0.0, end_epoch=3.0)
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"a modifier must be a mapping, got {short_repr(data)}")
    kind = data.get("type")
    cls = MODIFIER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(
            f"modifier type must be one of {sorted(MODIFIER_TYPES)}, got {short_repr(kind)}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    given = {k: v for k, v in data.items() if k != "type"}
    unknown = [k for k in given if k not in fields]
    if unknown:
        raise ValueError(
            f"{kind} has unknown keys {short_repr(unknown, 200)}; known keys: {sorted(fields)}"
        )
    missing = sorted(
        name
        for name, f in fields.items()
        if name not in given and f.default is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"{kind} is missing keys {missing}")
    return cls(**given)  # type: ignore[no-any-return]
