"""The engine's ``select_mask`` / ``select_count_mask`` / ``global_select_masks`` on row shards.

Every pattern of the engine (:mod:`fsparse._src.engine.patterns`) works on
``Shard(0)`` scores, with the engine's unit scores and tie rule:

* **Row-local patterns** (``"unstructured"``, ``"channel"``, ``"N:M"``): every unit
  lies inside one row (an element; a whole dim-0 slice; ``m`` consecutive weights
  along the input dim, which for 2-D and higher data runs within a row). Each rank
  computes its units' scores with the engine's :func:`unit_values` (row by row,
  so bit for bit those of the whole tensor), one distributed select over all
  ranks' units finds the global ``k`` lowest (ties by tensor order, then flat
  unit index), and the engine's :func:`pruned_elements` lays them out (inside a
  pruned N:M group, the ``m - n`` lowest scores by position). 1-D N:M groups
  run across rows and are refused.
* **Blocks** (``"HxW"``): the norm block mask machinery of
  :mod:`fsparse.distributed.shard_mask` with the scores used as they are
  (``raw``), blocks straddling shards included. The global form finds each
  tensor's pruned count with one distributed select, then masks each tensor
  with its count (the ``k_i`` lowest of tensor ``i`` are exactly its part).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

from fsparse._src.checks import check_int
from fsparse._src.config import SparsityConfig, make_config
from fsparse._src.engine.patterns import NM, Block, Pattern, Unstructured, parse_pattern
from fsparse._src.engine.selection import pruned_count, pruned_elements, pruned_units, unit_values
from fsparse.distributed.layout import Layout, exchange_layout
from fsparse.distributed.selection import SLICE, distributed_lowest
from fsparse.distributed.shard_mask import _mask, _owned_means, _plan, _Rows

__all__ = ["block_config", "shard_select_masks"]


def block_config(pattern: Block) -> SparsityConfig:
    """The whole-block config whose blocks are ``pattern``'s units."""
    return make_config(sparsity_level=0.0, sparse_block_shape=(pattern.height, pattern.width))


def _refuse_nan(pieces: Sequence[torch.Tensor], group: dist.ProcessGroup | None) -> None:
    """``ValueError`` on every rank if any rank's unit scores hold NaN."""
    nan = any(bool(s.amax().isnan()) for p in pieces for s in p.split(SLICE) if s.numel())
    flag = torch.tensor([int(nan)], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    if int(flag):
        raise ValueError("scores contain NaN (or their unit means are NaN) on some rank, which "
                         "cannot be ranked; clean them first")


def _layouts(shards: Mapping[str, torch.Tensor], row_offsets: Mapping[str, int],
             pattern: Pattern, group: dist.ProcessGroup | None) -> dict[str, Layout]:
    matrix = isinstance(pattern, Block)
    layouts = {}
    for name, shard in shards.items():
        arg = f"scores[{name!r}]"
        layout = exchange_layout(shard, row_offsets[name], group, arg, matrix=matrix)
        if isinstance(pattern, NM) and len(layout.shape) < 2:
            raise ValueError(f"sparsity_type {pattern}: {arg} is 1-D, so its groups run across "
                             "rows and shards; replicate 1-D scores instead")
        pattern.check(layout.shape, arg)  # the same global shape on every rank
        layouts[name] = layout
    return layouts


def shard_select_masks(
    shards: Mapping[str, torch.Tensor], row_offsets: Mapping[str, int], sparsity: float,
    pattern: Pattern | str, group: dist.ProcessGroup | None, *, is_global: bool,
    count: int | None = None,
) -> dict[str, torch.Tensor]:
    """This rank's keep masks: per tensor (``is_global=False``) or one threshold over all.

    ``count``: prune exactly that many units (of the single tensor, or of all
    together) instead of the count ``sparsity`` gives.
    """
    pattern = parse_pattern(pattern)
    layouts = _layouts(shards, row_offsets, pattern, group)
    if count is not None:  # the layouts agree on every rank: every rank raises alike
        check_int(count, "k", low=0, high=sum(pattern.units(la.shape) for la in layouts.values()))
    if isinstance(pattern, Block):
        return _block_masks(shards, layouts, sparsity, pattern, group, is_global, count)
    names = list(shards)
    values = [unit_values(shards[n], pattern) for n in names]
    _refuse_nan(values, group)
    totals = [pattern.units(layouts[n].shape) for n in names]
    orders = [layouts[n].order() for n in names]
    if is_global:
        k = pruned_units(pattern, sparsity, sum(totals)) if count is None else count
        units = distributed_lowest(values, k, orders, group)
    else:
        units = [distributed_lowest(
            [v], pruned_units(pattern, sparsity, t) if count is None else count, [o], group)[0]
                 for v, t, o in zip(values, totals, orders)]
    del values
    out = {}
    for name, unit in zip(names, units):
        shard = shards[name]
        if isinstance(pattern, Unstructured):  # a fresh mask: invert it in place
            out[name] = unit.logical_not_().view(shard.shape)
        else:
            out[name] = ~pruned_elements(shard, pattern, unit)
    return out


def _block_masks(
    shards: Mapping[str, torch.Tensor], layouts: Mapping[str, Layout], sparsity: float,
    pattern: Block, group: dist.ProcessGroup | None, is_global: bool, count: int | None,
) -> dict[str, torch.Tensor]:
    config = block_config(pattern)
    names = list(shards)
    counts: dict[str, int | None] = dict.fromkeys(names, count)
    if is_global and names:
        pieces, orders, totals = [], [], []
        for name in names:
            fitted, _, b0, b1, nbw = _plan(layouts[name], config)
            bh = fitted.sparse_block_shape[0]
            rows = _Rows(shards[name], layouts[name], None, bh, group)
            pieces.append(_owned_means(rows, b0, b1, fitted.sparse_block_shape))
            orders.append(layouts[name].order())
            totals.append(-(-layouts[name].shape[0] // bh) * nbw)
        _refuse_nan(pieces, group)
        k_all = pruned_count(sparsity, sum(totals)) if count is None else count
        selected = distributed_lowest(pieces, k_all, orders, group)
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
