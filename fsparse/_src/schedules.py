"""Schedules: plain ``step -> value`` functions, each closing over its hyperparameters.

A schedule gives either an absolute value (``cubic``, ``polynomial``, ``linear``)
or, with ``relative=True`` in :class:`fsparse.Scheduler`, a factor applied to
each entry's base value (``step_sl``, ``lambda_sl``). Hyperparameters are
checked when a schedule is made, the step ``t`` (an int) when it is called;
bad values raise ``TypeError``/``ValueError``, never ``OverflowError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from fsparse._src.checks import check_callable, check_int, check_real, short_repr

__all__ = ["Schedule", "cubic", "lambda_sl", "linear", "polynomial", "step_sl"]

Schedule = Callable[[int], float]


def _positive_int(name: str, value: object) -> int:
    return check_int(value, name, low=1)


def _finite(name: str, value: object) -> float:
    return check_real(value, name)


def _step(t: object) -> int:
    return check_int(t, "t (the schedule step)")


def _fraction(t: int, begin: int, steps: int) -> float:
    """``clamp((t - begin) / steps, 0, 1)``, without float overflow for huge ints."""
    done = t - begin
    if done <= 0:
        return 0.0
    if done >= steps:
        return 1.0
    return done / steps


def _power(gamma: float, exponent: int) -> float:
    """``gamma ** exponent``, signed ``inf`` where it overflows a float."""
    try:
        return gamma**exponent
    except OverflowError:
        sign = -1.0 if gamma < 0 and exponent % 2 else 1.0
        return sign * math.inf


def step_sl(gamma: float, step_size: int = 1, init_value: float = 1.0) -> Schedule:
    """``value(t) = init_value * gamma ** (t // step_size)``; no clamping.

    A power past the float range is ``inf`` (what repeated multiplication gives);
    ``init_value=0`` stays 0.

    >>> [step_sl(2.0, step_size=2)(t) for t in range(5)]
    [1.0, 1.0, 2.0, 2.0, 4.0]
    """
    gamma = _finite("gamma", gamma)
    step_size = _positive_int("step_size", step_size)
    init_value = _finite("init_value", init_value)

    def value(t: int) -> float:
        if init_value == 0:
            return init_value
        return init_value * _power(gamma, _step(t) // step_size)

    return value


def polynomial(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """``value(t) = end + (init - end) * (1 - f) ** power``.

    ``f = clamp((t - transition_begin) / transition_steps, 0, 1)``; ``power >= 0``.

    >>> polynomial(1.0, 0.0, power=2, transition_steps=4)(2)
    0.25
    """
    init_value, end_value = _finite("init_value", init_value), _finite("end_value", end_value)
    power = _finite("power", power)
    if power < 0:
        raise ValueError(f"power must be >= 0 (0 ** power is undefined), got {short_repr(power)}")
    transition_steps = _positive_int("transition_steps", transition_steps)
    transition_begin = check_int(transition_begin, "transition_begin")

    def value(t: int) -> float:
        frac = _fraction(_step(t), transition_begin, transition_steps)
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
    begin_step = check_int(begin_step, "begin_step")
    num_updates = _positive_int("num_updates", num_updates)
    update_every = _positive_int("update_every", update_every)
    span = num_updates * update_every

    def value(t: int) -> float:
        held = begin_step + update_every * ((_step(t) - begin_step) // update_every)
        frac = _fraction(held, begin_step, span)
        return s_f + (s_i - s_f) * (1.0 - frac) ** 3

    return value


def lambda_sl(fn: Callable[[int], float]) -> Schedule:
    """A schedule from a user function ``fn(t)``, as ``LambdaLR`` uses one (a factor).

    ``fn(t)`` must return a real number that is not NaN (``TypeError``/``ValueError``).

    >>> lambda_sl(lambda t: 0.9 ** t)(2)
    0.81
    """
    check_callable(fn, "fn")

    def value(t: int) -> float:
        out = fn(t)
        if isinstance(out, torch.Tensor) and out.numel() == 1 and out.dtype.is_floating_point:
            out = out.item()  # a one-element tensor, as float() would take it
        return check_real(out, f"fn({short_repr(t)})", finite=False)

    return value
