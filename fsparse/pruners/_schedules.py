"""When masks change and how far the ramp has got: the common step arguments.

A pruner updates its masks at steps ``start, start + every, ...`` up to ``end``,
and at ``end`` itself. A gradual pruner's sparsity at step ``t`` is its target
times the cubic ramp of Zhu & Gupta (2017), taken at the last update step
``t' <= t`` (:meth:`Steps.ramp`): ``1 - (1 - (t' - start) / (end - start)) ** 3``,
``0`` before ``start`` and ``1`` from ``end`` on (``1`` from ``start`` on when
``end == start``: one-shot). It is :func:`fsparse.polynomial` from 0 to 1, power 3.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from fsparse._src.checks import check_callable, check_int, check_real, short_repr
from fsparse._src.schedules import Schedule, polynomial

__all__ = ["Steps", "check_drop_fraction", "cosine_drop_fraction"]


@dataclass(frozen=True)
class Steps:
    """``start``, ``end`` (``None``: no end) and ``every`` of a pruner's mask updates."""

    start: int
    end: int | None
    every: int

    @classmethod
    def make(cls, start_step: object, end_step: object, update_every: object,
             default_end: str = "start") -> Steps:
        start = check_int(start_step, "start_step", low=0)
        every = check_int(update_every, "update_every", low=1)
        if end_step is None:
            return cls(start, start if default_end == "start" else None, every)
        end = check_int(end_step, "end_step")
        if end < start:
            raise ValueError(f"end_step must be >= start_step ({start}), got {short_repr(end)}")
        return cls(start, end, every)

    def is_update(self, t: int) -> bool:
        """Whether the masks for step ``t`` are recomputed."""
        if t < self.start or (self.end is not None and t > self.end):
            return False
        return (t - self.start) % self.every == 0 or t == self.end

    def held(self, t: int) -> int:
        """The last update step at or before ``t`` (``t`` itself before ``start``)."""
        if t < self.start:
            return t
        if self.end is not None and t >= self.end:
            return self.end
        return self.start + self.every * ((t - self.start) // self.every)

    def ramp(self, t: int) -> float:
        """The cubic ramp (0 -> 1) at the last update step ``t' <= t``."""
        if t < self.start:
            return 0.0
        if self.end is None or self.end == self.start:
            return 1.0
        return _cubic(self.start, self.end)(self.held(t))


def _cubic(start: int, end: int) -> Schedule:
    return polynomial(0.0, 1.0, 3.0, transition_steps=end - start, transition_begin=start)


def cosine_drop_fraction(initial: float, end_step: int) -> Schedule:
    """RigL's cosine decay: ``f(t) = initial / 2 * (1 + cos(pi * min(t, end_step) / end_step))``.

    >>> f = cosine_drop_fraction(0.3, 100)
    >>> f(0), round(f(50), 6), f(100), f(200)
    (0.3, 0.15, 0.0, 0.0)
    """
    f0 = check_real(initial, "initial", low=0.0, high=1.0)
    end = check_int(end_step, "end_step", low=1)

    def value(t: int) -> float:
        done = min(max(check_int(t, "t (the step)"), 0), end)
        out = f0 / 2 * (1 + math.cos(math.pi * (done / end)))  # int / int: no overflow
        return 0.0 if done == end else out

    return value


def check_drop_fraction(value: object) -> Callable[[int], float]:
    """``drop_fraction`` as a schedule: a float in [0, 1] or a callable ``t -> float``."""
    if callable(value):
        fn = check_callable(value, "drop_fraction")

        def checked(t: int) -> float:
            return check_real(fn(t), f"drop_fraction({t})", low=0.0, high=1.0)

        return checked
    constant = check_real(value, "drop_fraction", low=0.0, high=1.0)
    return lambda t: constant
