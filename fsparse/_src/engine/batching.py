"""Norm block masks for many same-shaped tensors at once.

Computing small masks one by one is dominated by per-call overhead. Entries with
the same shape, dtype, device and mask settings are stacked and masked in one
batch by the reference path, which gives each item exactly the mask
:func:`~fsparse._src.engine.norm_mask.config_norm_mask` gives it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch

from fsparse._src.checks import check_instance, check_tensor, short_repr
from fsparse._src.config import MaskFn, SparsityConfig
from fsparse._src.engine.norm_mask import CHUNKED_MIN_NUMEL, config_norm_mask, keep_mask
from fsparse._src.engine.scoring import as_matrix, check_finite, fit_config, pool_means, scores_of
from fsparse._src.engine.selection import pruned_count

__all__ = ["MAX_BATCH_ELEMENTS", "batched_norm_masks", "stacked_norm_mask"]

MAX_BATCH_ELEMENTS = 1 << 19  # elements per batch: bounds the stacked copy, stays in cache


class _EntryLike(Protocol):
    @property
    def data(self) -> torch.Tensor: ...

    @property
    def config(self) -> SparsityConfig: ...


def stacked_norm_mask(stack: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    """Masks of every ``stack[i]``, equal to ``config_norm_mask(stack[i], config)``.

    Raises ``ValueError`` naming the first item with NaN or Inf.

    >>> from fsparse import make_config
    >>> stack = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    >>> stacked_norm_mask(stack, make_config(sparse_block_shape=(1, 2))).int()
    tensor([[0, 0, 1, 1],
            [1, 1, 0, 0]], dtype=torch.int32)
    """
    check_tensor(stack, "stack")
    check_instance(config, SparsityConfig, "config")
    if stack.dim() < 1:
        raise ValueError(f"stack must have a batch dim, got {short_repr(stack)}")
    if stack.numel() == 0:
        return torch.ones_like(stack, dtype=torch.bool)
    height, width = as_matrix(torch.empty(stack.shape[1:], device="meta")).shape
    config = fit_config(config, height, width)
    scores = scores_of(stack.reshape(stack.shape[0], height, width), config.norm)
    means = pool_means(scores, config.sparse_block_shape)
    finite = means.flatten(1).isfinite().all(1)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        try:
            check_finite(means[bad], stack[bad], config.norm)
        except ValueError as err:
            raise ValueError(f"stack[{bad}]: {err}") from None
    k = pruned_count(config.sparsity_level, means[0].numel())
    if k == 0 or config.zeros_per_block == 0:
        return torch.ones_like(stack, dtype=torch.bool)
    return keep_mask(scores, means, config, k).reshape(stack.shape)


def _batch_key(data: torch.Tensor, config: SparsityConfig) -> tuple[Any, ...]:
    """Entries with equal keys can share a batch: the mask depends on nothing else."""
    return (
        tuple(data.shape),
        data.dtype,
        data.device,
        config.sparsity_level,
        config.sparse_block_shape,
        config.zeros_per_block,
        config.norm,
    )


def batched_norm_masks(
    entries: Mapping[str, _EntryLike], mask_fn: MaskFn | None = None
) -> dict[str, torch.Tensor]:
    """Masks for the entries that can be batched; the others are left out.

    An entry is batched when its mask function (``mask_fn``, else its config's,
    else the norm mask) is the norm mask, it is smaller than the chunked path's
    threshold, and at least one other entry shares its shape, dtype, device and
    mask settings. A batch holding NaN or Inf is left out too, so that the
    caller's per-entry path raises with the entry's name.

    >>> import fsparse
    >>> state = fsparse.init({"a": torch.randn(8, 8), "b": torch.randn(8, 8), "c": torch.randn(4)})
    >>> sorted(batched_norm_masks(state.entries))
    ['a', 'b']
    """
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, entry in entries.items():
        fn = mask_fn if mask_fn is not None else (entry.config.mask_fn or config_norm_mask)
        data = entry.data
        if fn is not config_norm_mask or not data.is_floating_point():
            continue
        if not 0 < data.numel() < CHUNKED_MIN_NUMEL:
            continue
        groups.setdefault(_batch_key(data, entry.config), []).append(name)
    masks: dict[str, torch.Tensor] = {}
    for names in groups.values():
        if len(names) < 2:
            continue
        per_batch = max(2, MAX_BATCH_ELEMENTS // entries[names[0]].data.numel())
        for start in range(0, len(names), per_batch):
            batch = names[start : start + per_batch]
            stack = torch.stack([entries[n].data.detach() for n in batch])
            try:
                stacked = stacked_norm_mask(stack, entries[batch[0]].config)
            except ValueError:
                continue
            masks.update((n, m.clone()) for n, m in zip(batch, stacked))
    return masks
