"""The norm block mask (and global levels) of a row-sharded tensor, shard by shard.

Each rank holds rows ``[r0, r1)`` of the data's matrix view ``(H, W)`` (dim 0
is the row dim; see :mod:`fsparse.distributed.layout`). Blocks are tiled from
row 0 as in the single-process engine; a block *belongs* to the rank holding
its first row, which alone ranks it (so every block is counted once).

**Blocks across a shard boundary.** With block height ``bh > 1`` a block may
start on one rank and end on the next ones. Every rank all-gathers the first
and the last ``bh - 1`` rows of scores of every shard (``world x 2(bh-1) x W``
scores, independent of ``H``), so each rank has the full rows of every block
touching its shard and computes the same bit-identical block means, with the
engine's ``avg_pool2d`` over aligned block rows. After the selection each rank
all-gathers the selected flags of its last block row (``world x W/bw``
bytes), so the ranks sharing a straddling block agree on its mask even when it
sits among ties at the threshold.

The block means are computed slice by slice (bounded temporaries); this rank's
means are kept (``1/(bh*bw)`` of its shard) for the selection rounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

from fsparse._src.config import SparsityConfig
from fsparse._src.engine.norm_mask import smallest_in_blocks, to_elements
from fsparse._src.engine.scoring import fit_config, pool_means, score_dtype, scores_of
from fsparse._src.engine.selection import pruned_count
from fsparse.distributed.layout import Layout, exchange_layout
from fsparse.distributed.selection import distributed_lowest

__all__ = ["shard_global_levels", "shard_norm_mask"]

_SLICE_ELEMENTS = 1 << 20


def _scores(matrix: torch.Tensor, norm: str | None) -> torch.Tensor:
    """Norm scores of ``matrix``, or (``norm=None``) the values themselves as scores."""
    return matrix.to(score_dtype(matrix.dtype)) if norm is None else scores_of(matrix, norm)


class _Rows:
    """Scores of global rows near this shard: its own, and its neighbours' edge rows."""

    def __init__(self, local: torch.Tensor, layout: Layout, norm: str | None, bh: int,
                 group: dist.ProcessGroup | None) -> None:
        self.layout, self.norm, self.edge = layout, norm, bh - 1
        self.local = local.reshape(local.shape[0], layout.width)
        self.gathered: list[torch.Tensor] = []
        if self.edge and layout.world > 1:
            h, w = self.edge, layout.width
            edges = torch.zeros(2 * h, w, dtype=score_dtype(local.dtype))
            head, tail = self.local[:h], self.local[-h:]
            edges[: head.shape[0]] = _scores(head, norm)
            edges[h : h + tail.shape[0]] = _scores(tail, norm)
            self.gathered = [torch.empty_like(edges) for _ in range(layout.world)]
            dist.all_gather(self.gathered, edges, group=group)

    def _foreign(self, row: int) -> torch.Tensor:
        layout, h = self.layout, self.edge
        r = layout.owner(row)
        start, stop = layout.offsets[r], layout.offsets[r] + layout.rows[r]
        if row - start < h:  # in the owner's head rows
            return self.gathered[r][row - start]
        return self.gathered[r][2 * h - (stop - row)]  # in its tail rows (callers stay near)

    def get(self, g0: int, g1: int) -> torch.Tensor:
        """Scores of global rows ``[g0, g1)`` (rows off this shard within ``bh - 1`` of it)."""
        r0, r1 = self.layout.start, self.layout.stop
        parts = [self._foreign(g) for g in range(g0, min(g1, r0))]
        before = torch.stack(parts) if parts else None
        mine = _scores(self.local[max(g0, r0) - r0 : max(min(g1, r1) - r0, 0)], self.norm)
        parts = [self._foreign(g) for g in range(max(g0, r1), g1)]
        after = torch.stack(parts) if parts else None
        pieces = [p for p in (before, mine, after) if p is not None]
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]


def _spans(b0: int, b1: int, bh: int, width: int) -> list[tuple[int, int]]:
    step = max(1, _SLICE_ELEMENTS // max(width * bh, 1))
    return [(b, min(b + step, b1)) for b in range(b0, b1, step)]


def _owned_means(rows: _Rows, b0: int, b1: int, block: tuple[int, int]) -> torch.Tensor:
    """Flat means of the blocks in block rows ``[b0, b1)``, written slice by slice."""
    height, width = rows.layout.shape[0], rows.layout.width
    bh, nbw = block[0], -(-width // block[1])
    means = torch.empty((b1 - b0) * nbw, dtype=score_dtype(rows.layout.dtype))
    for a, b in _spans(b0, b1, bh, width):
        pooled = pool_means(rows.get(a * bh, min(b * bh, height)), block).reshape(-1)
        means[(a - b0) * nbw : (b - b0) * nbw] = pooled
    return means


def _plan(layout: Layout, config: SparsityConfig) -> tuple[SparsityConfig, int, int, int, int]:
    """``(fitted config, first touched block row, first owned, end owned, n block cols)``."""
    config = fit_config(config, layout.shape[0], layout.width)
    bh, bw = config.sparse_block_shape
    r0, r1 = layout.start, layout.stop
    touched = r0 // bh
    b0 = -(-r0 // bh) if r1 > r0 else touched
    b1 = -(-r1 // bh) if r1 > r0 else touched
    return config, touched, b0, max(b1, b0), -(-layout.width // bw)


_NON_FINITE = ("data contains NaN or Inf (on some rank); fsparse refuses to rank non-finite "
               "values (clean the tensor, e.g. with torch.nan_to_num, before sparsifying)")


def _check_finite(means: torch.Tensor, local: torch.Tensor, config: SparsityConfig,
                  group: dist.ProcessGroup | None, raw: bool = False) -> None:
    """``ValueError`` on every rank if any rank's block means are not finite (raw: NaN)."""
    flag = 0
    parts = means.split(_SLICE_ELEMENTS)  # bounded temporaries
    if raw:
        flag = 3 if any(bool(p.isnan().any()) for p in parts) else 0
    elif not all(bool(torch.isfinite(p).all()) for p in parts):
        flag = 2 if not bool(torch.isfinite(local).all()) else 1
    reduced = torch.tensor([flag], dtype=torch.int64)
    dist.all_reduce(reduced, op=dist.ReduceOp.MAX, group=group)
    if int(reduced) == 3:
        raise ValueError("scores contain NaN (or their unit means are NaN) on some rank, which "
                         "cannot be ranked; clean them first")
    if int(reduced) == 2:
        raise ValueError(_NON_FINITE)
    if int(reduced) == 1:
        raise ValueError(f"norm {config.norm!r} overflows the block means of this finite data; "
                         "rescale the data, use norm='L1' or pass float64 data")


def shard_norm_mask(
    local: torch.Tensor, config: SparsityConfig, row_offset: int,
    group: dist.ProcessGroup | None, arg: str = "data",
) -> torch.Tensor:
    """This rank's slice of the single-process :func:`fsparse.norm_mask` of the whole tensor."""
    layout = exchange_layout(local, row_offset, group, arg)
    return _mask(local, layout, config, group)


def _mask(local: torch.Tensor, layout: Layout, config: SparsityConfig,
          group: dist.ProcessGroup | None, k: int | None = None, raw: bool = False
          ) -> torch.Tensor:
    """This rank's mask: ``k`` (default: from the level) lowest blocks; ``raw``: no norm."""
    if math.prod(layout.shape) == 0:
        return torch.ones(local.shape, dtype=torch.bool)
    config, touched, b0, b1, nbw = _plan(layout, config)
    bh, bw = config.sparse_block_shape
    units = -(-layout.shape[0] // bh) * nbw
    rows = _Rows(local, layout, None if raw else config.norm, bh, group)
    means = _owned_means(rows, b0, b1, (bh, bw))
    _check_finite(means, local, config, group, raw)  # before k == 0, as the engine does
    k = pruned_count(config.sparsity_level, units) if k is None else k
    if k == 0 or config.zeros_per_block == 0:
        return torch.ones(local.shape, dtype=torch.bool)
    selected = distributed_lowest([means], k, [layout.order()], group)[0].view(b1 - b0, nbw)
    del means
    straddles = b1 > b0 and b1 * bh > layout.stop
    last = selected[-1] if straddles else torch.zeros(nbw, dtype=torch.bool)
    table = [torch.empty(nbw, dtype=torch.uint8) for _ in range(layout.world)]
    if bh > 1 and layout.world > 1:
        dist.all_gather(table, last.to(torch.uint8), group=group)
    if touched < b0:  # the first block row starts on an earlier rank
        head = table[layout.owner(touched * bh)].bool()[None]
        selected = torch.cat([head, selected])
    return _write(rows, selected, touched, config, local.shape)


def _write(rows: _Rows, selected: torch.Tensor, first: int, config: SparsityConfig,
           shape: Sequence[int]) -> torch.Tensor:
    layout = rows.layout
    bh, bw = config.sparse_block_shape
    r0, r1, height = layout.start, layout.stop, layout.shape[0]
    out = torch.ones(r1 - r0, layout.width, dtype=torch.bool)
    whole = config.zeros_per_block == config.block_size
    for a, b in _spans(first, first + selected.shape[0], bh, layout.width):
        g0, g1 = a * bh, min(b * bh, height)
        chosen = selected[a - first : b - first]
        if whole:
            per_block = chosen[..., None].expand(*chosen.shape, bh * bw)
        else:
            scores = rows.get(g0, g1)
            per_block = smallest_in_blocks(scores, (bh, bw), config.zeros_per_block)
            per_block &= chosen[..., None]
        pruned = to_elements(per_block, (bh, bw), (g1 - g0, layout.width))
        lo, hi = max(g0, r0), min(g1, r1)
        out[lo - r0 : hi - r0] = ~pruned[lo - g0 : hi - g0]
    return out.reshape(tuple(shape))


def _channels_last(local: torch.Tensor) -> torch.Tensor:
    """The engine's channels-last view for global levels: ``(O, I, *k)`` as ``(O, *k, I)``."""
    return local.permute(0, *range(2, local.dim()), 1) if local.dim() >= 3 else local


def shard_global_levels(
    shards: Mapping[str, torch.Tensor], configs: Mapping[str, SparsityConfig], level: float,
    row_offsets: Mapping[str, int], group: dist.ProcessGroup | None,
) -> dict[str, float]:
    """:func:`fsparse.global_levels` of the whole tensors, from their row shards."""
    names = list(shards)
    views = {n: _channels_last(shards[n]) for n in names}
    layouts = [exchange_layout(views[n], row_offsets[n], group, f"data[{n!r}]") for n in names]
    pieces, orders, totals = [], [], []
    for name, layout in zip(names, layouts):
        config, _, b0, b1, nbw = _plan(layout, configs[name])
        rows = _Rows(views[name], layout, config.norm, config.sparse_block_shape[0], group)
        pieces.append(_owned_means(rows, b0, b1, config.sparse_block_shape))
        orders.append(layout.order())
        totals.append(-(-layout.shape[0] // config.sparse_block_shape[0]) * nbw)
    bad = torch.tensor([int(not all(bool(torch.isfinite(p).all()) for p in pieces))])
    dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=group)
    if int(bad):
        raise ValueError("data contains NaN or Inf (or its block means overflow); "
                         "cannot rank it for global pruning")
    total = sum(totals)
    k = pruned_count(level, total)
    masks = distributed_lowest(pieces, k, orders, group)
    counts = torch.tensor([int(m.sum()) for m in masks], dtype=torch.int64)
    dist.all_reduce(counts, group=group)
    return {n: (int(c) / t if t else 0.0) for n, c, t in zip(names, counts, totals)}
