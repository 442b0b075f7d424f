"""Checking a pruner state read from a checkpoint against the state this run would hold.

A checkpoint is untrusted: :func:`check_pruner_state` reads it with
``pruners.load_state_dict`` (types), then requires the fresh state's structure:
the same mask names, shapes and devices, the same statistics (names, kinds,
shapes, dtypes), the same targets, and the step the run would be at. Under
FSDP2 the fresh state's tensors are DTensors: the checkpoint's must be
DTensors on the same mesh with the same placements and local shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fsparse import pruners
from fsparse._src.checks import short_repr
from fsparse.create.sharding import is_dtensor, same_placement

__all__ = ["check_pruner_state"]


def _like(value: torch.Tensor, fresh: torch.Tensor, arg: str) -> torch.Tensor:
    if value.shape != fresh.shape or value.dtype != fresh.dtype:
        raise ValueError(f"{arg} must have shape {tuple(fresh.shape)} and dtype {fresh.dtype}, "
                         f"got {tuple(value.shape)} {value.dtype}")
    if value.layout != torch.strided:
        raise TypeError(f"{arg} must be a dense tensor, got layout {value.layout}")
    if not same_placement(value, fresh):
        kind = "a DTensor placed like" if is_dtensor(fresh) else "a plain tensor, as"
        raise ValueError(f"{arg} must be {kind} this run's weight, got a "
                         f"{type(value).__name__}")
    return value.to(fresh.device)


def check_pruner_state(sd: object, fresh: pruners.PrunerState, arg: str,
                       step: int | None) -> pruners.PrunerState:
    """The checked :class:`PrunerState` of ``sd``, on ``fresh``'s devices; raises on any misfit."""
    if not isinstance(sd, Mapping):
        raise ValueError(f"{arg} must be a pruner state dict, got {short_repr(sd)}")
    try:
        loaded = pruners.load_state_dict(sd)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{arg}: {err}") from None
    if list(loaded.masks) != list(fresh.masks):
        raise ValueError(f"{arg} masks must be for {short_repr(list(fresh.masks), 400)}")
    masks = {n: _like(m, fresh.masks[n], f"{arg} masks[{short_repr(n)}]")
             for n, m in loaded.masks.items()}
    if set(loaded.stats) != set(fresh.stats):
        raise ValueError(f"{arg} stats must have keys {sorted(fresh.stats)}, got "
                         f"{short_repr(sorted(loaded.stats))}")
    stats: dict[str, Any] = {}
    for key, want in fresh.stats.items():
        got, where = loaded.stats[key], f"{arg} stats[{short_repr(key)}]"
        if isinstance(want, Mapping):
            if not isinstance(got, Mapping) or list(got) != list(want):
                raise ValueError(f"{where} must map {short_repr(list(want), 200)} to tensors")
            stats[key] = {n: _like(got[n], want[n], f"{where}[{short_repr(n)}]") for n in want}
        else:
            if not isinstance(got, torch.Tensor):
                raise ValueError(f"{where} must be a tensor, got {short_repr(got)}")
            stats[key] = _like(got, want, where)
    if dict(loaded.targets) != dict(fresh.targets):
        raise ValueError(f"{arg} targets differ from this recipe's: "
                         f"{short_repr(dict(loaded.targets), 300)}")
    if step is not None and loaded.step != step:
        raise ValueError(f"{arg} step must be {step} at this checkpoint's step, got {loaded.step}")
    return pruners.PrunerState(masks, loaded.step, stats, fresh.targets)
