"""The engine's ``select_mask`` / ``global_select_masks`` over row-sharded score tensors.

For the patterns whose units are elements or blocks (``"unstructured"``, ``"HxW"``):
units are ranked by their own score or their block mean (scores used as they are,
negative and ``+-inf`` included; NaN refused), the ``k`` lowest pruned whole, ties by
(tensor order, flat index). The global form finds each tensor's pruned count with
one distributed select over all tensors, then masks each tensor with its count
(the ``k_i`` lowest of tensor ``i`` are exactly its part of the global ``k``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist

from fsparse._src.config import SparsityConfig, make_config
from fsparse._src.engine.patterns import Block, Pattern, Unstructured, parse_pattern
from fsparse._src.engine.selection import pruned_count
from fsparse.distributed.layout import exchange_layout
from fsparse.distributed.selection import distributed_lowest
from fsparse.distributed.shard_mask import _check_finite, _mask, _owned_means, _plan, _Rows

__all__ = ["block_config", "shard_select_masks"]


def block_config(pattern: Pattern | str) -> SparsityConfig:
    """The whole-block config whose blocks are ``pattern``'s units (``ValueError`` otherwise)."""
    pattern = parse_pattern(pattern)
    if isinstance(pattern, Unstructured):
        return make_config(sparsity_level=0.0, sparse_block_shape=(1, 1))
    if isinstance(pattern, Block):
        return make_config(sparsity_level=0.0, sparse_block_shape=(pattern.height, pattern.width))
    raise ValueError(f"sparsity_type {pattern!r} is not supported on sharded tensors yet; "
                     "use 'unstructured' or a block pattern 'HxW'")


def shard_select_masks(
    shards: Mapping[str, torch.Tensor], row_offsets: Mapping[str, int], sparsity: float,
    pattern: Pattern | str, group: dist.ProcessGroup | None, *, is_global: bool,
) -> dict[str, torch.Tensor]:
    """This rank's masks: per tensor (``is_global=False``) or one threshold over all."""
    config = block_config(pattern)
    names = list(shards)
    layouts = {n: exchange_layout(shards[n], row_offsets[n], group, f"scores[{n!r}]")
               for n in names}
    counts: dict[str, int | None] = dict.fromkeys(names)
    if is_global and names:
        pieces, orders, totals = [], [], []
        for name in names:
            fitted, _, b0, b1, nbw = _plan(layouts[name], config)
            bh = fitted.sparse_block_shape[0]
            rows = _Rows(shards[name], layouts[name], None, bh, group)
            pieces.append(_owned_means(rows, b0, b1, fitted.sparse_block_shape))
            orders.append(layouts[name].order())
            totals.append(-(-layouts[name].shape[0] // bh) * nbw)
        _check_finite(torch.cat(pieces), shards[names[0]], config, group, raw=True)
        selected = distributed_lowest(pieces, pruned_count(sparsity, sum(totals)), orders, group)
        reduced = torch.tensor([int(m.sum()) for m in selected], dtype=torch.int64)
        dist.all_reduce(reduced, group=group)
        counts = {n: int(c) for n, c in zip(names, reduced)}
    out = {}
    for name in names:
        layout = layouts[name]
        k = counts[name]
        if k is None:
            fitted = _plan(layout, config)[0]
            bh, bw = fitted.sparse_block_shape
            k = pruned_count(sparsity, -(-layout.shape[0] // bh) * -(-layout.width // bw))
        out[name] = _mask(shards[name], layout, config, group, k=k, raw=True)
    return out
