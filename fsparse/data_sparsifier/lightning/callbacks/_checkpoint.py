"""Checks the checkpointed state of ``TrainingAwareDataSparsity`` before any of it is used.

A Lightning checkpoint is a file: it passes ``torch.load(weights_only=True)`` and can
still hold a sparse mask whose indices point outside its shape, or a scheduler state
that ``BaseDataScheduler.load_state_dict`` would copy into the scheduler's
``__dict__`` (``{"data_sparsifier": None}``) and that crashes only at the end of the
first resumed epoch. :func:`check_state` refuses all of that up front with a
``ValueError``/``TypeError``: it validates the masks with
:func:`fsparse._src.untrusted.load_mask`, then loads the state into a throwaway
sparsifier and scheduler and runs one trial epoch on them. None of it needs Lightning.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from fsparse._src.checks import check_int, short_repr
from fsparse._src.untrusted import load_mask
from fsparse.data_scheduler.base_data_scheduler import BaseDataScheduler
from fsparse.data_sparsifier.base_data_sparsifier import BaseDataSparsifier

__all__ = ["STATE_KEYS", "check_state"]

STATE_KEYS = ("epoch", "data_sparsifier_state_dict", "data_scheduler_state_dict")
_SPARSIFIER = "state_dict['data_sparsifier_state_dict']"
_SCHEDULER = "state_dict['data_scheduler_state_dict']"
_MAX_INT = 2**62


def check_state(
    state_dict: object,
    sparsifier_class: type[BaseDataSparsifier],
    sparsifier_args: Mapping[str, Any],
    scheduler_class: type[BaseDataScheduler],
    scheduler_args: Mapping[str, Any],
) -> dict[str, Any]:
    """``state_dict`` (the callback's :meth:`state_dict`) as a plain dict, once checked.

    A checkpoint saved before the first epoch ended holds no sparsifier state; its
    scheduler state (older fsparse saved one) is dropped, and the fit starts afresh.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    missing = [key for key in STATE_KEYS if key not in state_dict]
    if missing:
        raise ValueError(f"state_dict is missing the keys {missing}")
    epoch = check_int(state_dict["epoch"], "state_dict['epoch']", low=0, high=_MAX_INT)
    sparsifier_state = state_dict["data_sparsifier_state_dict"]
    scheduler_state = state_dict["data_scheduler_state_dict"]
    if sparsifier_state is None:
        if scheduler_state is not None and epoch != 0:
            raise ValueError(
                "state_dict must hold both the sparsifier and the scheduler state, or neither "
                f"(only a first-epoch checkpoint, epoch 0, may hold the scheduler alone); "
                f"got epoch {epoch}"
            )
        return {"epoch": epoch, STATE_KEYS[1]: None, STATE_KEYS[2]: None}
    if scheduler_state is None:
        raise ValueError(
            "state_dict must hold both the sparsifier and the scheduler state, or neither"
        )
    _check_masks(sparsifier_state)
    probe = sparsifier_class(**sparsifier_args)
    _trial(f"{_SPARSIFIER} does not load", probe.load_state_dict, sparsifier_state)
    _check_scheduler(scheduler_state, probe, scheduler_class, scheduler_args)
    return {"epoch": epoch, STATE_KEYS[1]: sparsifier_state, STATE_KEYS[2]: scheduler_state}


def _check_masks(sparsifier_state: object) -> None:
    """Dense data, and masks that are safe to densify, before the sparsifier sees them."""
    if not isinstance(sparsifier_state, Mapping):
        raise TypeError(f"{_SPARSIFIER} must be a dict, got {type(sparsifier_state).__name__}")
    states, tensors = sparsifier_state.get("state"), sparsifier_state.get("_container")
    if not isinstance(states, Mapping) or not isinstance(tensors, Mapping):
        raise TypeError(f"{_SPARSIFIER} 'state' and '_container' must be dicts")
    for key, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.layout != torch.strided:
            raise TypeError(
                f"{_SPARSIFIER}['_container'][{short_repr(key)}] must be a dense tensor, "
                f"got layout {value.layout}"
            )
    for name, entry in states.items():
        mask = entry.get("mask") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not isinstance(mask, torch.Tensor):
            continue  # the trial load names what is wrong
        data = tensors.get(f"parametrizations.{name}.original", tensors.get(name))
        shape = data.shape if isinstance(data, torch.Tensor) else mask.shape
        load_mask(mask, shape, f"{_SPARSIFIER}['state'][{short_repr(name)}]['mask']")


def _compatible(value: object, reference: object) -> bool:
    if isinstance(reference, bool):
        return isinstance(value, bool)
    if isinstance(reference, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(reference, Mapping):
        return isinstance(value, Mapping)
    if isinstance(reference, (list, tuple)):
        return isinstance(value, (list, tuple))
    return reference is None or isinstance(value, type(reference))


def _check_scheduler(
    state: object,
    probe: BaseDataSparsifier,
    scheduler_class: type[BaseDataScheduler],
    scheduler_args: Mapping[str, Any],
) -> None:
    """The scheduler attributes the callback's scheduler has, of their types, and working."""
    if not isinstance(state, Mapping):
        raise TypeError(f"{_SCHEDULER} must be a dict, got {type(state).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = scheduler_class(data_sparsifier=probe, **copy.deepcopy(dict(scheduler_args)))
    expected = scheduler.state_dict()
    unknown = [key for key in state if key not in expected]
    if unknown:
        raise ValueError(
            f"{_SCHEDULER} has keys {short_repr(unknown, 200)} that a "
            f"{scheduler_class.__name__} does not save (it saves {sorted(expected)})"
        )
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{_SCHEDULER} is missing the keys {missing}")
    for key, reference in expected.items():
        value = state[key]
        if not _compatible(value, reference):
            raise TypeError(
                f"{_SCHEDULER}[{key!r}] must be like {short_repr(reference)} "
                f"({type(reference).__name__}), got {short_repr(value)}"
            )
        if isinstance(value, (int, float)) and not (
            math.isfinite(value) if isinstance(value, float) else abs(value) <= _MAX_INT
        ):
            raise ValueError(f"{_SCHEDULER}[{key!r}] is out of range, got {short_repr(value)}")

    def trial_epoch() -> None:
        scheduler.load_state_dict(copy.deepcopy(dict(state)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe.step()
            scheduler.step()
            probe.step()  # the levels the scheduler wrote are usable

    _trial(f"{_SCHEDULER} does not work with the sparsifier state", trial_epoch)


def _trial(what: str, action: Any, *args: Any) -> None:
    """Run ``action``; any failure becomes a ``ValueError``/``TypeError`` saying ``what``."""
    try:
        action(*args)
    except TypeError as err:
        raise TypeError(f"{what}: {str(err)[:300]}") from None
    except Exception as err:  # a file must not leak RuntimeError, KeyError, RecursionError...
        raise ValueError(f"{what}: {type(err).__name__}: {str(err)[:300]}") from None
