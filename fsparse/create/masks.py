"""Which weights ``fsparse.create`` prunes, and writing masks into them (the one mutation).

The masks themselves come from the pruners (:mod:`fsparse.create.pruning`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["PRUNABLE_TYPES", "apply_masks", "keep_factors", "prunable_parameters"]

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


def keep_factors(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """``mask`` as 0/1 in each weight's dtype, for the masks that prune something.

    Multiplying by these is one write pass; ``masked_fill_`` with a bool mask is
    several times slower on CPU (``benchmarks/create_speed.py``).
    """
    return {n: m.to(weights[n].dtype) for n, m in masks.items() if not bool(m.all())}


def apply_masks(weights: Mapping[str, torch.Tensor], keep: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned elements of ``weights[name]`` in place: ``w *= keep[name]``.

    ``keep`` comes from :func:`keep_factors`. Pruned weights are finite (the
    optimizer only ever moves them by finite steps), so ``w * 0`` is 0.
    """
    with torch.no_grad():
        for name, factor in keep.items():
            weights[name].mul_(factor)
