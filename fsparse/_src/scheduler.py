"""Pure scheduling of one config parameter across a sparsifier state."""

from __future__ import annotations

from typing import Any, NamedTuple

from fsparse._src.config import make_config
from fsparse._src.schedules import Schedule
from fsparse._src.state import Entry, SparsifierState

__all__ = ["Scheduler", "SchedulerState", "schedule"]


class SchedulerState(NamedTuple):
    """``last_epoch`` is -1 before the first :func:`schedule` call, as in torch.ao.

    ``base_values`` holds each entry's value of the parameter when it was first seen.
    """

    last_epoch: int
    base_values: dict[str, Any]


class Scheduler(NamedTuple):
    """A schedule applied to the config key ``param`` of every entry.

    With ``relative=True`` the value is ``base_value * schedule(t)`` (torch.ao's
    multiplicative style); otherwise it is ``schedule(t)``.

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

    schedule: Schedule
    param: str = "sparsity_level"
    relative: bool = False

    def init(self, sparsifier_state: SparsifierState) -> SchedulerState:
        """Record each entry's current value of ``param`` as its base value."""
        bases = {
            name: _param_value(e, self.param, name) for name, e in sparsifier_state.entries.items()
        }
        return SchedulerState(-1, bases)


def _param_value(entry: Entry, param: str, name: str) -> Any:
    config = entry.config
    if hasattr(config, param) and param != "extras":
        return getattr(config, param)
    missing = object()
    value = config.extra(param, missing)
    if value is missing:
        raise KeyError(f"entry {name!r} has no config key {param!r} to schedule")
    return value


def schedule(
    scheduler: Scheduler, scheduler_state: SchedulerState, sparsifier_state: SparsifierState
) -> tuple[SchedulerState, SparsifierState]:
    """Advance one epoch and write the scheduled value into every entry's config.

    Entries added after ``scheduler.init`` take their current value as base.
    Masks are untouched: call :func:`fsparse.step` to apply the new configs.
    """
    epoch = scheduler_state.last_epoch + 1
    factor = scheduler.schedule(epoch)
    bases = dict(scheduler_state.base_values)
    entries = {}
    for name, entry in sparsifier_state.entries.items():
        if name not in bases:
            bases[name] = _param_value(entry, scheduler.param, name)
        value = bases[name] * factor if scheduler.relative else factor
        config = make_config(entry.config, **{scheduler.param: value})
        entries[name] = Entry(entry.data, entry.mask, config)
    return SchedulerState(epoch, bases), SparsifierState(entries, sparsifier_state.defaults)
