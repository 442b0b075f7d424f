"""Which weights ``fsparse.create`` prunes, and writing masks into them (the one mutation).

The masks themselves come from the pruners (:mod:`fsparse.create.pruning`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["PRUNABLE_TYPES", "apply_masks", "prunable_parameters"]

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


def apply_masks(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the masked-out elements of ``weights[name]`` in place (``False`` = pruned)."""
    with torch.no_grad():
        for name, mask in masks.items():
            if not bool(mask.all()):
                weights[name].masked_fill_(~mask, 0)
