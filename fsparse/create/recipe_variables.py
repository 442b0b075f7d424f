"""The user-facing knobs of an auto-generated recipe, validated on construction."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from fsparse._src.checks import short_repr

__all__ = ["TARGETS", "RecipeVariables", "max_sparsity", "parse_mask_type", "to_variables"]

# Deployment targets and the mask type each one needs.
TARGETS: dict[str, str] = {"vnni": "block4", "tensorrt": "2:4"}

_NM = re.compile(r"^(\d{1,6}):(\d{1,6})$")


def parse_mask_type(mask_type: object, field: str = "mask_type") -> tuple[int, int, int]:
    """``(block_width, zeros_per_block, kept_per_block)`` for a mask type name.

    ``"unstructured"`` is ``(1, 1, 0)``, ``"block4"`` is ``(4, 4, 0)``, and
    ``"N:M"`` is ``(M, M - N, N)``.

    >>> parse_mask_type("2:4")
    (4, 2, 2)
    """
    if mask_type == "unstructured":
        return (1, 1, 0)
    if mask_type == "block4":
        return (4, 4, 0)
    match = _NM.match(mask_type) if isinstance(mask_type, str) else None
    if match is None:
        raise ValueError(
            f"{field} must be 'unstructured', 'block4' or 'N:M' such as '2:4' "
            f"(N, M below a million), got {short_repr(mask_type)}"
        )
    kept, size = int(match[1]), int(match[2])
    if not 0 < kept < size:
        raise ValueError(f"{field} {mask_type!r} must have 0 < N < M")
    return (size, size - kept, kept)


def max_sparsity(mask_type: str) -> float:
    """The highest element sparsity ``mask_type`` can reach (``(M - N) / M`` for N:M).

    >>> max_sparsity("2:4"), max_sparsity("block4")
    (0.5, 1.0)
    """
    width, zeros, kept = parse_mask_type(mask_type)
    return zeros / width if kept else 1.0


def _number(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} must be a finite number, got {short_repr(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{field} must be a finite number, got {short_repr(value)}")
    return number


@dataclasses.dataclass(frozen=True)
class RecipeVariables:
    """Variables of the default recipe (see :func:`fsparse.create.create_recipe`).

    ``mask_type=None`` means the one ``target`` needs (``"vnni"``: ``"block4"``,
    ``"tensorrt"``: ``"2:4"``), else ``"unstructured"``. ``sparsity=None`` means
    0.8, or the most an N:M mask type can reach (0.5 for ``"2:4"``).

    >>> v = RecipeVariables(target="tensorrt")
    >>> v.mask_type, v.sparsity
    ('2:4', 0.5)
    >>> RecipeVariables(sparsity=1.5)
    Traceback (most recent call last):
    ...
    ValueError: sparsity must be in (0, 1), got 1.5
    """

    num_epochs: float = 20.0
    init_lr: float = 1e-3
    final_lr: float = 1e-7
    target: str | None = None
    sparsity: float | None = None
    mask_type: str | None = None
    global_sparsity: bool | None = None
    hardness: float = 0.5
    temperature: float = 2.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "num_epochs", _number("num_epochs", self.num_epochs))
        if self.num_epochs <= 0:
            raise ValueError(f"num_epochs must be positive, got {self.num_epochs!r}")
        for field in ("init_lr", "final_lr"):
            value = _number(field, getattr(self, field))
            if not 0 <= value <= 3.4e38:  # a float32, as torch's optimizers need
                raise ValueError(f"{field} must be in [0, 3.4e38], got {value!r}")
            set_(self, field, value)
        known_target = isinstance(self.target, str) and self.target in TARGETS
        if self.target is not None and not known_target:
            raise ValueError(
                f"target must be None or one of {sorted(TARGETS)}, got {short_repr(self.target)}"
            )
        needed = TARGETS.get(self.target) if self.target is not None else None
        mask_type = self.mask_type if self.mask_type is not None else needed or "unstructured"
        parse_mask_type(mask_type)
        if needed is not None and mask_type != needed:
            raise ValueError(
                f"target {self.target!r} requires mask_type {needed!r}, got mask_type {mask_type!r}"
            )
        set_(self, "mask_type", mask_type)
        ceiling = max_sparsity(mask_type)
        given = self.sparsity if self.sparsity is not None else min(0.8, ceiling)
        sparsity = _number("sparsity", given)
        if not 0 < sparsity < 1:
            raise ValueError(f"sparsity must be in (0, 1), got {sparsity!r}")
        if sparsity > ceiling:
            raise ValueError(
                f"sparsity {sparsity!r} is above {ceiling}, the most mask_type {mask_type!r} "
                "can reach"
            )
        set_(self, "sparsity", sparsity)
        if self.global_sparsity is not None and not isinstance(self.global_sparsity, bool):
            raise ValueError(
                f"global_sparsity must be a bool or None, got {short_repr(self.global_sparsity)}"
            )
        hardness = _number("hardness", self.hardness)
        if not 0 <= hardness <= 1:
            raise ValueError(f"hardness must be in [0, 1], got {hardness!r}")
        set_(self, "hardness", hardness)
        temperature = _number("temperature", self.temperature)
        if not 0 < temperature <= 1.8e19:  # its square must fit a float32
            raise ValueError(f"temperature must be in (0, 1.8e19], got {temperature!r}")
        set_(self, "temperature", temperature)


def to_variables(value: RecipeVariables | Mapping[str, Any] | None) -> RecipeVariables:
    """``value`` as :class:`RecipeVariables`; unknown keys of a mapping raise ``ValueError``.

    >>> to_variables({"num_epochs": 10}).num_epochs
    10.0
    """
    if value is None:
        return RecipeVariables()
    if isinstance(value, RecipeVariables):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(
            f"recipe_variables must be RecipeVariables, a dict or None, got {type(value).__name__}"
        )
    known = {f.name for f in dataclasses.fields(RecipeVariables)}
    unknown = [key for key in value if not (isinstance(key, str) and key in known)]
    if unknown:
        raise ValueError(
            f"recipe_variables has unknown keys {short_repr(unknown, 200)}; "
            f"known keys: {sorted(known)}"
        )
    return RecipeVariables(**value)
