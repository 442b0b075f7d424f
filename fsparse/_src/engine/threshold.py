"""Exact ``k``-th smallest value over one or many 1-D tensors, without sorting.

The values are the concatenation of ``pieces`` in order (ties are broken by
that order, as a stable sort would). The answer is a pair ``(threshold, ties)``:
the ``k`` lowest values are those ``< threshold`` plus the first ``ties`` equal
to it (:func:`lowest_masks`).

* Few values (or under ``torch.func`` transforms): ``kthvalue`` on them all.
* Many values: the ``k``-th is bracketed in ``[lo, hi]`` by quantiles of a
  seeded random sample; one pass counts the values below ``lo`` and keeps those
  inside the bracket, among which ``kthvalue`` finds the exact threshold. If the
  bracket misses (or ties crowd it), an exact radix select over the values'
  order-preserving bit patterns (16 bits per pass) finds it. Passes work on
  slices of ``SLICE`` elements, so temporaries stay bounded.

Keep masks in one pass over the values are :mod:`fsparse._src.engine.keep_masks`'s.
NaN must be refused by the caller; ``+-inf`` are ordinary values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from fsparse._src.engine.radix import digit_counts, keys_of, radix_select

__all__ = [
    "SLICE", "SMALL", "ComputedPiece", "NaNScores", "Piece", "bounds", "bracket", "k_lowest",
    "kth_threshold", "lowest_masks", "mark_ties", "radix_threshold", "sample_size",
    "small_threshold",
]

SLICE = 1 << 22  # elements per pass slice
SMALL = 1 << 17  # up to this many values: kthvalue on a concatenated copy
_Z_SCORE = 5.0


class ComputedPiece(Protocol):
    """Scores computed on demand (:class:`~fsparse._src.engine.scoring.AbsScores`): a flat
    piece that ``keep_masks`` reads in batches instead of as a tensor.

    ``keep`` (flat bool or ``None``): where it is ``False`` the value is below every
    other value (already pruned); :meth:`materialize` gives those values (``-1``),
    :meth:`part` and :meth:`take` give the scores as if every place were live.
    """

    dtype: torch.dtype
    keep: torch.Tensor | None

    @property
    def device(self) -> torch.device: ...
    def numel(self) -> int: ...
    def part(self, start: int, stop: int, out: torch.Tensor) -> torch.Tensor: ...
    def take(self, index: torch.Tensor) -> torch.Tensor: ...
    def materialize(self) -> torch.Tensor: ...
    def has_nan(self) -> bool: ...


Piece = torch.Tensor | ComputedPiece
Draw = Callable[[Sequence[Piece], int, bool], torch.Tensor]  # (pieces, size, live) -> sample
Select = Callable[[torch.Tensor, Sequence[int]], list[float]]  # (values, ranks from 1)
Between = Callable[[torch.Tensor, float, float], int]  # (values, lo, hi) -> count in [lo, hi]


class NaNScores(ValueError):
    """A live value of ``pieces[index]`` is NaN; the caller names it in its own error."""

    def __init__(self, index: int) -> None:
        super().__init__(f"piece {index} has a NaN value")
        self.index = index


def sample_size(n: int) -> int:
    """How many values the bracket estimate samples."""
    return min(max(n >> 8, 1 << 16), 1 << 20)


def _slices(pieces: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p[s : s + SLICE] for p in pieces for s in range(0, p.numel(), SLICE)]


def small_threshold(pieces: Sequence[torch.Tensor], k: int) -> tuple[torch.Tensor, int]:
    """:func:`kth_threshold` by ``kthvalue`` on all values (concatenated)."""
    values = pieces[0] if len(pieces) == 1 else torch.cat(list(pieces))
    threshold = values.kthvalue(k).values
    return threshold, k - int(torch.count_nonzero(values < threshold))


def _sample(pieces: Sequence[Piece], size: int, live: bool = False) -> torch.Tensor:
    """About ``size`` seeded random values, each piece's share in proportion to its size
    (stratified and jittered: a few small ops per piece, no pass over a global index).
    Computed pieces are read as if every place were live; ``live``: only the drawn
    values at live places (``keep``) are kept. Without it, no place is pruned."""
    uniform = torch.rand(size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    n = sum(p.numel() for p in pieces)  # the strata are places, live or not
    bounds, start = [], 0
    for piece in pieces:
        bounds.append((start * size // n, (start + piece.numel()) * size // n))
        start += piece.numel()
    counts = torch.tensor([p.numel() for p in pieces], dtype=torch.float64)
    draws = torch.tensor([last - first for first, last in bounds], dtype=torch.int64)
    # jittered: a piece's draw ``j`` of ``m`` falls uniformly in the ``j``-th of ``m`` equal
    # strata of it; ascending positions make the gathers stream. One op for all pieces.
    firsts = torch.tensor([first for first, _ in bounds], dtype=torch.float64)
    rank = torch.arange(size, dtype=torch.float64) - firsts.repeat_interleave(draws)
    stride = (counts / draws.clamp(min=1)).repeat_interleave(draws)
    limit = (counts - 1).repeat_interleave(draws)
    where = torch.minimum((uniform + rank) * stride, limit).long()
    parts, alive, filtered = [], [], False
    for piece, (first, last) in zip(pieces, bounds):
        if last <= first:
            continue
        local = where[first:last].to(piece.device)
        live_at = None
        if isinstance(piece, torch.Tensor):
            taken = piece.index_select(0, local)
        else:
            taken = piece.take(local)
            live_at = None if piece.keep is None else piece.keep.index_select(0, local)
        parts.append(taken.cpu())
        if live:
            filtered |= live_at is not None
            alive.append(torch.ones(taken.numel(), dtype=torch.bool) if live_at is None
                         else live_at.cpu())
    if filtered:  # one filter for all pieces
        return torch.cat(parts)[torch.cat(alive)]
    return torch.cat(parts) if parts else torch.empty(0)


def _between(values: torch.Tensor, lo: float, hi: float) -> int:
    return int(torch.count_nonzero((values >= lo) & (values <= hi)))


def _kthvalue(values: torch.Tensor, ranks: Sequence[int]) -> list[float]:
    return [float(values.kthvalue(rank).values.item()) for rank in ranks]


def bracket(sample: torch.Tensor, q: float, select: Select = _kthvalue) -> tuple[float, float]:
    """Sample quantiles around ``q``, wide enough to hold the true quantile (5 sigma);
    ``select(values, ranks)`` gives the ``rank``-th smallest (1-based) of each rank, in one
    call (the native one selects them at once, on the threads)."""
    m = sample.numel()
    delta = _Z_SCORE * math.sqrt(q * (1 - q) / m) + 2 / m
    lo_rank, hi_rank = math.floor((q - delta) * m), math.ceil((q + delta) * m)
    ranks = [rank + 1 for rank in (lo_rank, hi_rank) if 0 <= rank < m]
    found = iter(select(sample, ranks) if ranks else [])
    lo = next(found) if lo_rank >= 0 else -math.inf
    hi = next(found) if hi_rank < m else math.inf
    return lo, hi


def bounds(
    pieces: Sequence[Piece], k: int, n: int, live: bool = False, *,
    draw: Draw | None = None, select: Select = _kthvalue, between: Between = _between,
) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """``(lo, hi, budget)``: a sampled bracket of the ``k``-th of ``n`` values, and how many
    values inside it a pass may keep before it gives up (``None``: nothing to sample).

    ``live``: ``k`` and ``n`` count the live places of computed pieces only. ``draw``
    (``_sample``'s signature), ``select`` (:func:`bracket`'s) and ``between`` (how many
    sample values lie in the bracket) replace the torch ones.
    """
    total = sum(p.numel() for p in pieces)  # live: n of them are live
    # live: about an n-sized sample of live values, but never more draws than a sample of
    # all the places takes (a draw costs the same live or not; with as many draws, the
    # live values bracket at least as tightly as all of them would)
    size = min(sample_size(n) * total // n, 4 * sample_size(n), sample_size(total))
    sample = (draw or _sample)(pieces, size, live)
    if not sample.numel():
        return None
    lo, hi = bracket(sample, k / n, select)
    crowd = between(sample, lo, hi) / sample.numel()
    # at most a 16th of the places the pass reads, live or not (its buffers' share); ties
    # among few live values can crowd the bracket, and the fallback costs far more
    budget = min(int(4 * crowd * n) + 4096, max(total // 16, 1 << 16))
    dtype = pieces[0].dtype
    return torch.tensor(lo, dtype=dtype), torch.tensor(hi, dtype=dtype), budget


def _bracketed(pieces: Sequence[torch.Tensor], k: int, n: int) -> tuple[torch.Tensor, int] | None:
    """The bracket pass; ``None`` when the bracket misses or is too crowded."""
    found = bounds(pieces, k, n)
    if found is None:
        return None
    lo_t, hi_t, budget = found
    device = pieces[0].device
    below = torch.zeros((), dtype=torch.int64, device=device)
    kept, n_kept = [], 0
    for part in _slices(pieces):
        under = part < lo_t
        below += torch.count_nonzero(under)  # no int64 copy of the bools, unlike .sum()
        # lo <= hi and no NaN: ``under`` implies ``<= hi``, so xor is ``lo <= part <= hi``
        inside = part[torch.le(part, hi_t).logical_xor_(under)]
        n_kept += inside.numel()
        if n_kept > budget:
            return None
        kept.append(inside)
    need = k - int(below)
    if not 0 <= need <= n_kept:
        return None
    if need == 0:
        return lo_t.to(device), 0
    cand = torch.cat(kept)
    threshold = cand.kthvalue(need).values
    return threshold, need - int(torch.count_nonzero(cand < threshold))


def radix_threshold(pieces: Sequence[torch.Tensor], k: int) -> tuple[torch.Tensor, int]:
    """:func:`kth_threshold` by the exact radix select (no sample), slice by slice."""
    def counts(level: int, shift: int, prefix: int) -> torch.Tensor:
        hist = torch.zeros(1 << 16, dtype=torch.int64)
        for part in _slices(pieces):
            hist += digit_counts(keys_of(part), level, shift, prefix, 16)
        return hist

    value, ties = radix_select(counts, k, wide=pieces[0].dtype == torch.float64)
    return value.to(pieces[0].dtype).to(pieces[0].device), ties


def k_lowest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` lowest of each row of ``values`` (ties to lower indices), tensor ops only.

    Safe under ``vmap`` and ``compile``; leading dims are batch dims.
    """
    n = values.shape[-1]
    if k <= 0:
        return torch.zeros_like(values, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(values, dtype=torch.bool)
    threshold = values.kthvalue(k, dim=-1, keepdim=True).values
    below = values < threshold
    at = values == threshold
    wanted = k - below.sum(-1, keepdim=True)
    return below | (at & (at.cumsum(-1) <= wanted))


def kth_threshold(
    pieces: Sequence[torch.Tensor], k: int, *, exact_small: bool = False
) -> tuple[torch.Tensor, int]:
    """``(threshold, ties)`` for the ``k`` lowest (``1 <= k <= total``) values of ``pieces``.

    ``pieces`` are 1-D tensors of one dtype on one device. ``exact_small``
    forces the ``kthvalue`` path (for ``torch.func`` transforms).

    >>> kth_threshold([torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0])], 2)
    (tensor(1.), 2)
    """
    n = sum(p.numel() for p in pieces)
    if exact_small or n <= SMALL:
        return small_threshold(pieces, k)
    found = _bracketed(pieces, k, n)
    return found if found is not None else radix_threshold(pieces, k)


def lowest_masks(
    pieces: Sequence[torch.Tensor], threshold: torch.Tensor, ties: int
) -> list[torch.Tensor]:
    """Bool masks of ``pieces``: ``< threshold``, plus the first ``ties`` equal to it in order.

    >>> lowest_masks([torch.tensor([1.0, 0.0, 1.0])], torch.tensor(1.0), 1)
    [tensor([ True,  True, False])]
    """
    masks = []
    for piece in pieces:
        mask = piece < threshold
        ties = mark_ties(piece, threshold, ties, mask, clear=False)
        masks.append(mask)
    return masks


def mark_ties(piece: torch.Tensor, threshold: torch.Tensor, ties: int, mask: torch.Tensor, *,
               clear: bool) -> int:  # fmt: skip
    """Set (``clear``: unset) ``mask`` at the first ``ties`` values of ``piece`` equal to
    ``threshold``, slice by slice; returns how many ties are left for later pieces."""
    for start in range(0, piece.numel(), SLICE):
        if ties <= 0:
            break
        equal = piece[start : start + SLICE] == threshold
        count = int(torch.count_nonzero(equal))
        if count:
            if count > ties:
                equal &= equal.cumsum(0) <= ties
            target = mask[start : start + SLICE]
            if clear:
                target ^= equal  # those places are True (``>= threshold``): clear them
            else:
                target |= equal
            ties -= min(count, ties)
    return ties
