"""Which weights ``fsparse.create`` prunes, and writing masks into them (the one mutation).

The masks themselves come from the pruners (:mod:`fsparse.create.pruning`).
DTensor weights (FSDP2) are written and counted shard by shard
(:mod:`fsparse.create.sharding`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fsparse._src.checks import short_repr
from fsparse._src.engine import native
from fsparse._src.engine.unit_flags import all_true
from fsparse.create.sharding import is_dtensor, kept_counts, local, same_placement

__all__ = ["PRUNABLE_TYPES", "apply_masks", "check_still_parameters", "keep_factors",
           "pruned_fractions", "prunable_parameters"]

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``name -> weight`` of every Linear and Conv layer (QAT subclasses included).

    >>> list(prunable_parameters(nn.Sequential(nn.Linear(2, 3), nn.ReLU())))
    ['0.weight']
    """
    found: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, PRUNABLE_TYPES) and isinstance(weight, nn.Parameter):
            if id(weight) not in seen:
                seen.add(id(weight))
                found[f"{module_name}.weight" if module_name else "weight"] = weight
    return found


def pruned_fractions(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """``name -> fraction of False elements`` of each whole mask (DTensors: every shard).

    A collective when some mask is a sharded DTensor (:func:`~fsparse.create.sharding.kept_counts`).

    >>> pruned_fractions({"w": torch.tensor([True, False, False, True])})
    {'w': 0.5}
    """
    kept = kept_counts(masks)
    return {n: (1.0 - kept[n] / m.numel()) if m.numel() else 0.0 for n, m in masks.items()}


def keep_factors(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
                 reuse: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """What :func:`apply_masks` multiplies each weight by, for the masks that prune something.

    Where the engine's native kernels can write the weight (a plain contiguous CPU
    float32/float64 tensor), that is the bool mask itself: no copy, and the write
    touches only the weights it zeroes. Elsewhere it is the mask as 0/1 in the
    weight's dtype (``masked_fill_`` with a bool mask is several times slower on CPU,
    ``benchmarks/create_speed.py``). For a DTensor weight the factor is the local
    shard's (its mask must be placed like it), and whether a mask prunes something
    is decided from the whole mask, so every rank keeps the same names. ``reuse``:
    the caller's previous factors, which it gives up; 0/1 factors are overwritten in
    place where they fit (a fresh full-size tensor costs several read passes in page
    faults on CPU).
    """
    for n, m in masks.items():
        if not same_placement(m, weights[n]):
            raise ValueError(f"the mask of {short_repr(n)} is not placed like its weight "
                             f"({type(m).__name__} vs {type(weights[n]).__name__})")
    # DTensors: counted over all shards (one collective); plain masks: any unset flag (a
    # mask that prunes something answers at once, with no pass over it)
    kept = kept_counts({n: m for n, m in masks.items() if is_dtensor(m)})
    out = {}
    for n, m in masks.items():
        if (kept[n] < m.numel()) if n in kept else not all_true(m):
            mine, old = local(m), (reuse or {}).get(n)
            if native.zero_applies(weights[n], mine):
                out[n] = mine
                continue
            fits = (old is not None and old.shape == mine.shape
                    and old.dtype == weights[n].dtype and old.device == mine.device)
            # a bool mask's bytes are 0/1: converting them as uint8 is vectorized (~6x
            # faster on CPU than the bool conversion), with the same values
            mine = mine.view(torch.uint8) if mine.dtype == torch.bool else mine
            out[n] = old.copy_(mine) if fits else mine.to(weights[n].dtype)  # type: ignore[union-attr]
    return out


def check_still_parameters(model: nn.Module, weights: Mapping[str, nn.Parameter]) -> None:
    """``ValueError`` if ``model``'s prunable weights are no longer the objects ``weights``
    holds (``fully_shard`` or another wrapper applied after ``initialize``): masks written
    into the old objects would silently do nothing.

    >>> model = nn.Linear(2, 2); weights = prunable_parameters(model)
    >>> model.weight = nn.Parameter(model.weight.detach().clone())
    >>> check_still_parameters(model, weights)
    Traceback (most recent call last):
    ...
    ValueError: model: its weights ['weight'] are no longer the parameters ...
    """
    now = prunable_parameters(model)
    stale = [n for n, w in weights.items() if now.get(n) is not w]
    if stale:
        raise ValueError(
            f"model: its weights {short_repr(stale, 200)} are no longer the parameters "
            "fsparse.create.initialize saw (was fully_shard or another wrapper applied "
            "after initialize?); wrap the model first, then call initialize")


def apply_masks(weights: Mapping[str, torch.Tensor], keep: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned elements of ``weights[name]`` in place: ``w *= keep[name]``.

    ``keep`` comes from :func:`keep_factors` (local shards for DTensor weights:
    each rank writes its own rows, no collective): bool masks are written by the
    native kernel (the same values as the multiply), 0/1 factors multiplied.
    Pruned weights are finite (the optimizer only ever moves them by finite
    steps), so ``w * 0`` is 0.
    """
    with torch.no_grad():
        native_pairs = []  # written in one native run: 21 small resnet18 weights as one
        for name, factor in keep.items():
            w = weights[name]
            if factor.dtype == torch.bool and native.zero_applies(w, factor):
                native_pairs.append((w, factor))
            else:
                (local(w) if is_dtensor(w) else w).mul_(factor)
        if native_pairs:
            native.zero_all_pruned_(native_pairs)
