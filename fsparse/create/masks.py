"""Pruning modifiers on the fsparse core: which weights, which config, which masks.

Every mask comes from the core (:func:`fsparse.step` with the norm block mask,
:func:`fsparse.channels_last_mask` or :func:`fsparse.existing_zeros_mask`);
global pruning only picks per-layer levels with :func:`fsparse.global_levels`.
Writing masks into the model's weights (:func:`apply_masks`) is the one mutation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fsparse._src.checks import short_repr
from fsparse._src.config import MaskFn
from fsparse._src.engine.mask_types import channels_last_mask, existing_zeros_mask, global_levels
from fsparse._src.state import SparsifierState, add, init, step
from fsparse.create.modifiers import ALL_PRUNABLE, ConstantPruning, GradualPruning
from fsparse.create.recipe_variables import parse_mask_type
from fsparse.create.schedules import pruning_level

__all__ = [
    "PRUNABLE_TYPES",
    "apply_masks",
    "init_pruning",
    "prunable_parameters",
    "state_name",
    "update_masks",
]

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def state_name(param_name: str) -> str:
    """The core state's name for a parameter (core names may not contain ``.``).

    >>> state_name("features.0.weight")
    'features/0/weight'
    """
    return param_name.replace(".", "/")


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


def _config_for(mask_type: str) -> dict[str, Any]:
    width, zeros, _ = parse_mask_type(mask_type)
    mask_fn: MaskFn | None = None if width == 1 else channels_last_mask
    return {"sparse_block_shape": (1, width), "zeros_per_block": zeros, "mask_fn": mask_fn}


def _eligible(weight: torch.Tensor, width: int) -> bool:
    """Blocks along input channels need ``weight.shape[1]`` to be a multiple of the width."""
    return width == 1 or (weight.dim() >= 2 and weight.shape[1] % width == 0)


def init_pruning(
    modifier: GradualPruning | ConstantPruning, prunable: dict[str, nn.Parameter]
) -> tuple[SparsifierState, tuple[str, ...]]:
    """Core state for ``modifier``'s weights (all-ones masks), and the names left out.

    Block-4 and N:M masks skip layers whose input channels are not a multiple of
    the block width; named params that are not prunable raise ``ValueError``.
    """
    owner = type(modifier).__name__
    if modifier.params == ALL_PRUNABLE:
        chosen = dict(prunable)
    else:
        unknown = [n for n in modifier.params if n not in prunable]
        if unknown:
            raise ValueError(
                f"{owner}.params names {short_repr(unknown, 200)}, which are not prunable "
                f"weights of the model; prunable: {short_repr(sorted(prunable), 400)}"
            )
        chosen = {n: prunable[n] for n in modifier.params}
    mask_type = modifier.mask_type if isinstance(modifier, GradualPruning) else "unstructured"
    config = _config_for(mask_type)
    width = config["sparse_block_shape"][1]
    skipped = tuple(n for n, w in chosen.items() if not _eligible(w, width))
    if skipped and modifier.params != ALL_PRUNABLE:
        raise ValueError(
            f"{owner}.params {list(skipped)} have input channels that are not a multiple of "
            f"{width}, as mask_type {mask_type!r} needs"
        )
    named = {state_name(n): w for n, w in chosen.items() if n not in skipped}
    if not named:
        raise ValueError(f"{owner} has no prunable weights to act on in this model")
    return init(named, sparsity_level=0.0, **config), skipped


def _block_level(modifier: GradualPruning, level: float) -> float:
    """Element sparsity -> fraction of blocks; N:M blocks are only partly zero."""
    width, zeros, _ = parse_mask_type(modifier.mask_type)
    return level * width / zeros


def update_masks(
    state: SparsifierState,
    modifier: GradualPruning | ConstantPruning,
    step_index: int,
    steps_per_epoch: int,
) -> SparsifierState:
    """New masks for ``modifier`` at ``step_index`` (configs updated, then :func:`fsparse.step`)."""
    if isinstance(modifier, ConstantPruning):
        return step(state, mask_fn=existing_zeros_mask)
    level = _block_level(modifier, pruning_level(modifier, step_index, steps_per_epoch))
    if modifier.global_sparsity:
        data = {name: e.data for name, e in state.entries.items()}
        configs = {name: e.config for name, e in state.entries.items()}
        levels = global_levels(data, configs, level)
    else:
        levels = dict.fromkeys(state.entries, level)
    for name, value in levels.items():
        state = add(state, name, state[name].data, sparsity_level=value)
    return step(state)


def apply_masks(state: SparsifierState) -> None:
    """Zero the masked-out elements of the weights in place."""
    with torch.no_grad():
        for entry in state.entries.values():
            entry.data.masked_fill_(~entry.mask, 0)
