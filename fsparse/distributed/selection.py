"""Exact selection of the ``k`` lowest values held as shards on many ranks.

The engine's rule (:mod:`fsparse._src.engine.threshold`) over values it never
gathers. The values are the concatenation, in *global order*, of every
tensor's units: tensor by tensor, and inside a tensor by global unit index
(each rank holds one contiguous run, so the order is the ranks sorted by
their row offset). The ``k`` lowest are those ``< threshold`` plus the first
``ties`` equal to it in that order, exactly as a stable sort would choose.

1. **Radix select.** Values are mapped to integers ordered like the floats
   (the engine's keys; ``-0.0`` is ``+0.0``). Each round histograms one
   8-bit digit of the keys that still match the prefix found so far and
   ``all_reduce``-s the 256 counts (int64): 4 rounds for float32, 8 for
   float64. The counts fix the digit that holds the ``k``-th value. Two
   rounds pass over all values; the later ones only over this rank's keys
   matching the first digit (when few: at most 1/16 of its values).
2. **Tie-break by global index.** Each rank counts its values equal to the
   threshold per tensor; one ``all_gather`` of those ``world x tensors`` counts
   gives every rank the number of equal values before its own run, hence how
   many of its ties it prunes.

Communication per selection: ``rounds x 256 x 8`` bytes all-reduced (8 KiB for
float32), plus ``world x tensors x 8`` bytes gathered: independent of the
tensor's size. Local work: two passes over the values, in slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from fsparse._src.engine.radix import digit_counts, keys_of, radix_select
from fsparse._src.engine.threshold import lowest_masks

__all__ = ["BITS", "distributed_lowest"]

BITS = 8  # bits of the key per radix round
SLICE = 1 << 20  # values per pass slice (temporaries of a few MiB)
_BINS = 1 << BITS


def _slices(pieces: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p[s : s + SLICE] for p in pieces for s in range(0, p.numel(), SLICE)]


def _radix(
    pieces: Sequence[torch.Tensor], k: int, wide: bool, group: dist.ProcessGroup | None
) -> tuple[torch.Tensor, int]:
    """``(threshold, ties)`` of the global ``k``-th lowest (``1 <= k <= total``).

    The engine's :func:`radix_select` with 8-bit digits, each round's counts
    summed over this rank's values, then ``all_reduce``-d. Round 0 passes over all
    values; from round 1 on, a pass also collects this rank's keys that match the
    prefix found so far, as long as they stay few (at most 1/16 of the values, so
    this memory is bounded: collecting stops as soon as they are more), and the
    later rounds see only those.
    """
    n_local = sum(p.numel() for p in pieces)
    limit = max(n_local // 16, 1)
    kept: list[torch.Tensor] | None = None

    def counts(level: int, shift: int, prefix: int) -> torch.Tensor:
        nonlocal kept
        hist = torch.zeros(_BINS, dtype=torch.int64)
        if kept is not None:
            for keys in kept:
                hist += digit_counts(keys, level, shift, prefix, BITS)
        else:
            collect: list[torch.Tensor] | None = [] if level else None
            size = 0
            for part in _slices(pieces):
                keys = keys_of(part)
                hist += digit_counts(keys, level, shift, prefix, BITS)
                if collect is not None:
                    match = keys[(keys >> (shift + BITS)) == prefix]
                    size += match.numel()
                    if size <= limit:
                        collect.append(match)
                    else:  # too many to keep: later rounds pass over all values again
                        collect = None
            kept = collect
        dist.all_reduce(hist, group=group)
        return hist

    return radix_select(counts, k, wide=wide, bits=BITS)


def distributed_lowest(
    pieces: Sequence[torch.Tensor],
    k: int,
    orders: Sequence[Sequence[int]],
    group: dist.ProcessGroup | None,
) -> list[torch.Tensor]:
    """Bool masks of this rank's ``pieces``: its share of the global ``k`` lowest.

    ``pieces[t]`` is this rank's contiguous run of tensor ``t``'s units (1-D,
    floating point, no NaN: callers check); ``orders[t]`` lists the ranks in
    tensor ``t``'s global order. ``k`` and the totals must agree on all ranks.
    """
    rank = dist.get_rank(group)
    wide = any(p.dtype == torch.float64 for p in pieces)
    dtype = torch.float64 if wide else torch.float32
    pieces = [p.to(dtype) for p in pieces]
    total = torch.tensor([sum(p.numel() for p in pieces)], dtype=torch.int64)
    dist.all_reduce(total, group=group)
    n = int(total)
    if k <= 0 or n == 0:
        return [torch.zeros(p.shape, dtype=torch.bool) for p in pieces]
    if k >= n:
        return [torch.ones(p.shape, dtype=torch.bool) for p in pieces]
    threshold, ties = _radix(pieces, k, wide, group)
    counts = torch.tensor([sum(int((s == threshold).sum()) for s in p.split(SLICE))
                           for p in pieces], dtype=torch.int64)
    table = [torch.empty_like(counts) for _ in range(dist.get_world_size(group))]
    dist.all_gather(table, counts, group=group)
    masks = []
    for t, piece in enumerate(pieces):
        before = sum(int(table[r][u]) for u in range(t) for r in orders[u])
        before += sum(int(table[r][t]) for r in orders[t][: list(orders[t]).index(rank)])
        take = min(max(ties - before, 0), int(counts[t]))
        masks.append(lowest_masks([piece], threshold, take)[0])
    return masks
