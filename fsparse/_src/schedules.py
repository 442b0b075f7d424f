"""Schedules: plain ``step -> value`` functions, each closing over its hyperparameters.

A schedule gives either an absolute value (``cubic``, ``polynomial``, ``linear``)
or, with ``relative=True`` in :class:`fsparse.Scheduler`, a factor applied to
each entry's base value (``step_sl``, ``lambda_sl``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["Schedule", "cubic", "lambda_sl", "linear", "polynomial", "step_sl"]

Schedule = Callable[[int], float]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def step_sl(gamma: float, step_size: int = 1, init_value: float = 1.0) -> Schedule:
    """``value(t) = init_value * gamma ** (t // step_size)``; no clamping.

    >>> [step_sl(2.0, step_size=2)(t) for t in range(5)]
    [1.0, 1.0, 2.0, 2.0, 4.0]
    """
    gamma = _finite("gamma", gamma)
    step_size = _positive_int("step_size", step_size)
    init_value = _finite("init_value", init_value)
    return lambda t: init_value * gamma ** (t // step_size)


def polynomial(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """``value(t) = end + (init - end) * (1 - f) ** power``.

    ``f = clamp((t - transition_begin) / transition_steps, 0, 1)``.

    >>> polynomial(1.0, 0.0, power=2, transition_steps=4)(2)
    0.25
    """
    init_value, end_value = _finite("init_value", init_value), _finite("end_value", end_value)
    power = _finite("power", power)
    transition_steps = _positive_int("transition_steps", transition_steps)

    def value(t: int) -> float:
        frac = min(max((t - transition_begin) / transition_steps, 0.0), 1.0)
        return end_value + (init_value - end_value) * (1.0 - frac) ** power

    return value


def linear(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """:func:`polynomial` with power 1: a straight line from ``init_value`` to ``end_value``.

    >>> linear(0.0, 1.0, transition_steps=4)(1)
    0.25
    """
    return polynomial(init_value, end_value, 1.0, transition_steps, transition_begin)


def cubic(
    initial_sparsity: float,
    final_sparsity: float,
    begin_step: int = 0,
    num_updates: int = 10,
    update_every: int = 1,
) -> Schedule:
    """Zhu & Gupta (2017) gradual pruning, updated every ``update_every`` (Δt) steps.

    ``s_t = s_f + (s_i - s_f) * (1 - (t' - t0) / (n * Δt)) ** 3`` where
    ``t' = t0 + Δt * floor((t - t0) / Δt)`` is clamped to ``[t0, t0 + n * Δt]``:
    ``s_i`` before ``t0``, ``s_f`` from ``t0 + n * Δt`` on, and held between updates.

    >>> sched = cubic(0.0, 0.8, begin_step=0, num_updates=4, update_every=1)
    >>> round(sched(2), 4), sched(4)
    (0.7, 0.8)
    """
    s_i = _finite("initial_sparsity", initial_sparsity)
    s_f = _finite("final_sparsity", final_sparsity)
    num_updates = _positive_int("num_updates", num_updates)
    update_every = _positive_int("update_every", update_every)
    span = num_updates * update_every

    def value(t: int) -> float:
        held = begin_step + update_every * ((t - begin_step) // update_every)
        frac = min(max((held - begin_step) / span, 0.0), 1.0)
        return s_f + (s_i - s_f) * (1.0 - frac) ** 3

    return value


def lambda_sl(fn: Callable[[int], float]) -> Schedule:
    """A schedule from a user function ``fn(t)``, as ``LambdaLR`` uses one (a factor).

    >>> lambda_sl(lambda t: 0.9 ** t)(2)
    0.81
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    return lambda t: float(fn(t))
