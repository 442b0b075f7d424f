"""The fields every recipe modifier shares: finite floats, epoch bounds, ``params``.

Epochs are floats capped at :data:`MAX_EPOCH`, so that ``epoch * steps_per_epoch``
stays a finite float; numeric strings such as YAML's ``1e-7`` are accepted.
"""

from __future__ import annotations

import math
from typing import ClassVar

from fsparse._src.checks import short_repr

__all__ = ["ALL_PRUNABLE", "LR_FUNCTIONS", "MAX_EPOCH", "MAX_LR", "MAX_TEMPERATURE", "Base",
           "check_float", "check_params", "in_range"]

ALL_PRUNABLE = "__ALL_PRUNABLE__"
LR_FUNCTIONS = ("linear", "cosine", "cyclic_linear")
# Epoch fields are capped so that ``epoch * steps_per_epoch`` stays a finite float;
# a learning rate and a squared temperature must fit a float32 (torch's optimizers
# and the KD loss turn them into one).
MAX_EPOCH = 1e9
MAX_LR = 3.4e38
MAX_TEMPERATURE = 1.8e19
_EPOCH_FIELDS = frozenset(
    {"start_epoch", "end_epoch", "update_frequency", "cycle_epochs",
     "disable_observer_epoch", "freeze_bn_stats_epoch", "phase_epochs"}
)


def check_float(owner: str, field: str, value: object) -> float:
    """``value`` as a finite float; numeric strings such as YAML's ``1e-7`` are accepted."""
    given = value
    if isinstance(value, str) and len(value) <= 64:
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{owner}.{field} must be a finite number, got {short_repr(given)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{owner}.{field} must be a finite number, got {short_repr(given)}")
    if field in _EPOCH_FIELDS and abs(number) > MAX_EPOCH:
        raise ValueError(f"{owner}.{field} must be at most {MAX_EPOCH:g}, got {short_repr(given)}")
    return number


def in_range(owner: str, field: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{owner}.{field} must be in [{low}, {high}], got {short_repr(value)}")


class Base:
    """Float coercion and epoch checks shared by all modifiers."""

    FLOATS: ClassVar[tuple[str, ...]] = ("start_epoch", "end_epoch")

    def _coerce(self) -> None:
        name = type(self).__name__
        for field in self.FLOATS:
            object.__setattr__(self, field, check_float(name, field, getattr(self, field)))
        start = self.start_epoch  # type: ignore[attr-defined]
        if start < 0:
            raise ValueError(f"{name}.start_epoch must be >= 0, got {start!r}")

    def _check_span(self) -> None:
        start, end = self.start_epoch, self.end_epoch  # type: ignore[attr-defined]
        if end <= start:
            raise ValueError(
                f"{type(self).__name__}.end_epoch must be > start_epoch ({start}), got {end!r}"
            )


def check_params(owner: str, value: object) -> str | tuple[str, ...]:
    if value == ALL_PRUNABLE:
        return ALL_PRUNABLE
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(
        f"{owner}.params must be {ALL_PRUNABLE!r} or a non-empty list of parameter names, "
        f"got {short_repr(value)}"
    )
