"""Pure scheduling of one config parameter across a sparsifier state."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

from fsparse._src.checks import (
    check_bool,
    check_callable,
    check_instance,
    check_int,
    check_real,
    short_repr,
)
from fsparse._src.config import SparsityConfig, make_config
from fsparse._src.schedules import Schedule
from fsparse._src.state import Entry, SparsifierState

__all__ = ["Scheduler", "SchedulerState", "schedule"]

# Config fields a schedule may not drive: "extras" is the user-key store itself.
_FIELDS = frozenset(f.name for f in dataclasses.fields(SparsityConfig)) - {"extras"}


class SchedulerState(NamedTuple):
    """``last_epoch`` is -1 before the first :func:`schedule` call, as in torch.ao.

    ``base_values`` holds each entry's value of the parameter when it was first seen.
    """

    last_epoch: int
    base_values: dict[str, Any]


class _SchedulerFields(NamedTuple):
    schedule: Schedule
    param: str = "sparsity_level"
    relative: bool = False


class Scheduler(_SchedulerFields):
    """A schedule applied to the config key ``param`` of every entry.

    With ``relative=True`` the value is ``base_value * schedule(t)`` (torch.ao's
    multiplicative style); otherwise it is ``schedule(t)``. ``schedule`` must be
    callable and ``param`` a config field (not ``extras``) or a user key: not
    another attribute of :class:`fsparse.SparsityConfig` such as ``block_size``.

    >>> from fsparse._src.schedules import step_sl
    >>> from fsparse._src.state import init
    >>> import torch
    >>> sp = init({"w": torch.randn(4, 4)}, sparsity_level=0.2)
    >>> sched = Scheduler(step_sl(gamma=2.0), relative=True)
    >>> st = sched.init(sp)
    >>> st, sp = schedule(sched, st, sp)
    >>> st, sp = schedule(sched, st, sp)
    >>> sp["w"].config.sparsity_level
    0.4
    """

    __slots__ = ()

    def __new__(
        cls, schedule: Schedule, param: str = "sparsity_level", relative: bool = False
    ) -> Scheduler:
        check_callable(schedule, "schedule")
        check_instance(param, str, "param")
        if param not in _FIELDS and (hasattr(SparsityConfig, param) or not param):
            raise ValueError(
                f"param must be a config field ({', '.join(sorted(_FIELDS))}) or a user key, "
                f"got {short_repr(param)}"
            )
        check_bool(relative, "relative")
        return super().__new__(cls, schedule, param, relative)

    def init(self, sparsifier_state: SparsifierState) -> SchedulerState:
        """Record each entry's current value of ``param`` as its base value."""
        check_instance(sparsifier_state, SparsifierState, "sparsifier_state")
        bases = {
            name: _param_value(e, self.param, name) for name, e in sparsifier_state.entries.items()
        }
        return SchedulerState(-1, bases)


def _param_value(entry: Entry, param: str, name: str) -> Any:
    config = entry.config
    if param in _FIELDS:
        return getattr(config, param)
    missing = object()
    value = config.extra(param, missing)
    if value is missing:
        raise KeyError(
            f"entry {short_repr(name)} has no config key {short_repr(param)} to schedule"
        )
    return value


def _scheduled(base: Any, factor: Any, name: str, param: str) -> Any:
    """``base * factor``, refusing a base that is no number and a NaN product."""
    check_real(base, f"base value of {short_repr(param)} for {short_repr(name)}", finite=False)
    if base == 0 and not math.isfinite(factor):
        return 0.0  # 0 times an overflowed factor stays 0, as repeated multiplication does
    value = base * factor
    if math.isnan(value):
        raise ValueError(
            f"{short_repr(param)} for {short_repr(name)} would be NaN "
            f"({short_repr(base)} * {short_repr(factor)})"
        )
    return value


_Made = dict[tuple[int, type, Any], SparsityConfig]


def _replaced(
    config: SparsityConfig, param: str, value: Any, made: _Made
) -> SparsityConfig:
    """``make_config(config, param=value)``, made once per (config object, value)."""
    try:
        key = (id(config), type(value), value)
        hash(key)
    except TypeError:  # an unhashable scheduled value
        return make_config(config, **{param: value})
    if key not in made:
        made[key] = make_config(config, **{param: value})
    return made[key]


def schedule(
    scheduler: Scheduler, scheduler_state: SchedulerState, sparsifier_state: SparsifierState
) -> tuple[SchedulerState, SparsifierState]:
    """Advance one epoch and write the scheduled value into every entry's config.

    Entries added after ``scheduler.init`` take their current value as base.
    Masks are untouched: call :func:`fsparse.step` to apply the new configs.
    A schedule value that is no real number, or NaN, raises and changes nothing.
    """
    check_instance(scheduler, Scheduler, "scheduler")
    check_instance(scheduler_state, SchedulerState, "scheduler_state")
    check_instance(sparsifier_state, SparsifierState, "sparsifier_state")
    epoch = check_int(scheduler_state.last_epoch, "scheduler_state.last_epoch", low=-1) + 1
    check_instance(scheduler_state.base_values, Mapping, "scheduler_state.base_values")
    factor = scheduler.schedule(epoch)
    what = f"schedule({epoch}) for {short_repr(scheduler.param)}"
    if scheduler.relative or (isinstance(factor, numbers.Real) and not isinstance(factor, bool)):
        check_real(factor, what, finite=False)  # a number, not NaN; make_config checks the rest
    bases = dict(scheduler_state.base_values)
    entries = {}
    made: _Made = {}  # entries sharing a config share the new one
    for name, entry in sparsifier_state.entries.items():
        if name not in bases:
            bases[name] = _param_value(entry, scheduler.param, name)
        if scheduler.relative:
            value = _scheduled(bases[name], factor, name, scheduler.param)
        else:
            value = factor
        entries[name] = Entry._trusted(
            entry.data, entry.mask, _replaced(entry.config, scheduler.param, value, made)
        )
    return SchedulerState(epoch, bases), SparsifierState._own(entries, sparsifier_state.defaults)
