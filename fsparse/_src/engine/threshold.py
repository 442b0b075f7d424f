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
* Masks (:func:`keep_masks`): the same bracket pass also writes the keep
  masks (``> hi``) and keeps the candidates' positions, so one pass over the
  values gives both the threshold and the masks; ties are resolved among the
  candidates (no tie scan).

NaN must be refused by the caller; ``+-inf`` are ordinary values.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch

from fsparse._src.engine.radix import digit_counts, keys_of, radix_select
from fsparse._src.engine.unit_flags import count_true, true_positions

__all__ = [
    "SLICE", "all_true", "bracket", "k_lowest", "keep_masks", "kth_threshold", "lowest_masks",
    "sample_size",
]

SLICE = 1 << 22  # elements per pass slice
PASS_SLICE = 1 << 20  # elements per slice of the one-pass keep masks (its buffers stay cached)
SMALL = 1 << 17  # up to this many values: kthvalue on a concatenated copy
_Z_SCORE = 5.0


class Computed(Protocol):
    """Scores computed on demand (:class:`~fsparse._src.engine.scoring.AbsScores`): a flat
    piece that :func:`keep_masks` reads slice by slice instead of as a tensor.

    ``keep`` (flat bool or ``None``): where it is ``False`` the value is below every
    other value (already pruned); :meth:`take` and :meth:`materialize` give those
    values, :meth:`part` gives the scores as if every place were live.
    """

    dtype: torch.dtype
    keep: torch.Tensor | None

    @property
    def device(self) -> torch.device: ...
    def numel(self) -> int: ...
    def part(self, start: int, stop: int, out: torch.Tensor) -> torch.Tensor: ...
    def take(self, index: torch.Tensor) -> torch.Tensor: ...
    def materialize(self) -> torch.Tensor: ...


Piece = torch.Tensor | Computed


def sample_size(n: int) -> int:
    """How many values the bracket estimate samples."""
    return min(max(n >> 8, 1 << 16), 1 << 20)


def _slices(pieces: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p[s : s + SLICE] for p in pieces for s in range(0, p.numel(), SLICE)]


def _small(pieces: Sequence[torch.Tensor], k: int) -> tuple[torch.Tensor, int]:
    values = pieces[0] if len(pieces) == 1 else torch.cat(list(pieces))
    threshold = values.kthvalue(k).values
    return threshold, k - int(torch.count_nonzero(values < threshold))


def _sample(pieces: Sequence[Piece], size: int, live: bool = False) -> torch.Tensor:
    """About ``size`` seeded random values, each piece's share in proportion to its size
    (stratified and jittered: a few small ops per piece, no pass over a global index).
    ``live``: only the drawn values at live places (``keep``) of computed pieces."""
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
    parts = []
    for piece, (first, last) in zip(pieces, bounds):
        if last <= first:
            continue
        local = where[first:last].to(piece.device)
        head = getattr(piece, "head", None)
        if isinstance(piece, torch.Tensor):
            taken = piece.index_select(0, local)
        elif head is not None:  # scores drawn in order: its first ones are a random sample
            taken = head(last - first)
            if live and piece.keep is not None:
                taken = taken[piece.keep[: taken.numel()]]
        else:
            if live and piece.keep is not None:  # only the live places' scores
                local = local[piece.keep.index_select(0, local)]
            taken = piece.take(local)
        parts.append(taken.cpu())
    return torch.cat(parts) if parts else torch.empty(0)


def bracket(sample: torch.Tensor, q: float) -> tuple[float, float]:
    """Sample quantiles around ``q``, wide enough to hold the true quantile (5 sigma)."""
    m = sample.numel()
    delta = _Z_SCORE * math.sqrt(q * (1 - q) / m) + 2 / m
    lo_rank, hi_rank = math.floor((q - delta) * m), math.ceil((q + delta) * m)
    lo = sample.kthvalue(lo_rank + 1).values.item() if lo_rank >= 0 else -math.inf
    hi = sample.kthvalue(hi_rank + 1).values.item() if hi_rank < m else math.inf
    return lo, hi


def _bracketed(
    pieces: Sequence[Piece], k: int, n: int, keep: Sequence[torch.Tensor] | None = None,
    live: bool = False,
) -> tuple[torch.Tensor, int] | None:
    """The bracket pass; ``None`` when the bracket misses or is too crowded.

    With ``keep`` (one fresh flat bool tensor per piece), the same pass writes the
    keep masks (``True``: not among the ``k`` lowest), see :func:`_keep_pass`.
    ``live``: ``k`` and ``n`` count the live places of computed pieces only.
    """
    total = sum(p.numel() for p in pieces)  # live: n of them are live; draw n-sized samples
    sample = _sample(pieces, min(sample_size(n) * total // n, 4 * sample_size(n)), live)
    if not sample.numel():
        return None
    lo, hi = bracket(sample, k / n)
    crowd = float(((sample >= lo) & (sample <= hi)).float().mean())
    budget = min(int(4 * crowd * n) + 4096, max(n // 16, 1 << 16))
    dtype, device = pieces[0].dtype, pieces[0].device
    lo_t, hi_t = torch.tensor(lo, dtype=dtype), torch.tensor(hi, dtype=dtype)
    if keep is not None:
        return _keep_pass(pieces, k, n, keep, lo_t, hi_t, budget, live)
    assert all(isinstance(p, torch.Tensor) for p in pieces)
    below = torch.zeros((), dtype=torch.int64, device=device)
    kept, n_kept = [], 0
    for part in _slices(pieces):  # type: ignore[arg-type]
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


def all_true(mask: torch.Tensor) -> bool:
    """``bool(mask.all())`` of a bool tensor, counted 8 bools per int64 word when contiguous.

    >>> all_true(torch.ones(5000, dtype=torch.bool)), all_true(torch.arange(9) < 8)
    (True, False)
    """
    if type(mask) is not torch.Tensor or not mask.is_contiguous():
        return bool(mask.all())
    return int(count_true(mask.reshape(-1))) == mask.numel()


def _batches(pieces: Sequence[Piece], step: int) -> Iterator[list[tuple[int, int, int]]]:
    """Runs of about ``step`` consecutive values of the concatenation: lists of ``(piece,
    start, stop)`` segments (small pieces share a batch, large ones are cut)."""
    batch: list[tuple[int, int, int]] = []
    filled = 0
    for i, piece in enumerate(pieces):
        start, count = 0, piece.numel()
        while start < count:
            stop = min(count, start + step - filled)
            batch.append((i, start, stop))
            filled += stop - start
            start = stop
            if filled == step:
                yield batch
                batch, filled = [], 0
    if batch:
        yield batch


def _keep_pass(
    pieces: Sequence[Piece], k: int, n: int, keep: Sequence[torch.Tensor],
    lo: torch.Tensor, hi: torch.Tensor, budget: int, live: bool = False,
) -> tuple[torch.Tensor, int] | None:
    """One pass: ``keep = part > hi``, and the candidates ``lo <= part <= hi`` gathered with
    their positions; then the candidates' keep bits are set from the exact answer.

    The values are read in batches of about ``PASS_SLICE`` (small pieces share one,
    so the per-op cost is paid per batch, not per piece). Ties are resolved among
    the candidates (every value equal to the threshold is one), so no tie scan
    follows. The compares write 0/1 into float buffers and are converted to bool
    (faster on CPU than a bool-output compare). With ``live``, places of computed
    pieces that are not live are neither kept nor candidates (``k``, ``n``: live).
    """
    device, step = pieces[0].device, min(SLICE, PASS_SLICE)
    size = min(sum(p.numel() for p in pieces), step)
    values_buf = torch.empty(size, dtype=pieces[0].dtype, device=device)
    above_f, inside_f = torch.empty_like(values_buf), torch.empty_like(values_buf)
    keep_buf = torch.empty(size, dtype=torch.bool, device=device)
    alive_buf = torch.empty(size, dtype=torch.bool, device=device) if live else None
    inside = torch.zeros(-(-size // 8) * 8, dtype=torch.bool, device=device)
    above = 0
    values: list[torch.Tensor] = []
    where: list[torch.Tensor] = []  # candidate positions in the concatenation, ascending
    offsets, at = [], 0
    for piece in pieces:
        offsets.append(at)
        at += piece.numel()
    n_kept = 0
    for batch in _batches(pieces, step):
        length = sum(stop - start for _, start, stop in batch)
        i0, s0, _ = batch[0]
        single = len(batch) == 1
        if single and isinstance(pieces[i0], torch.Tensor):
            part = pieces[i0][s0 : s0 + length]  # type: ignore[index]
        else:
            part, off = values_buf[:length], 0
            for i, start, stop in batch:
                piece, seg = pieces[i], part[off : off + stop - start]
                if isinstance(piece, torch.Tensor):
                    seg.copy_(piece[start:stop])
                else:
                    piece.part(start, stop, seg)
                off += stop - start
        alive = None
        if alive_buf is not None:
            alive, off = alive_buf[:length], 0
            for i, start, stop in batch:
                piece = pieces[i]
                mine = None if isinstance(piece, torch.Tensor) else piece.keep
                if single and mine is not None:
                    alive = mine[start:stop]
                elif mine is not None:
                    alive[off : off + stop - start].copy_(mine[start:stop])
                else:
                    alive[off : off + stop - start].fill_(True)
                off += stop - start
        out = keep[i0][s0 : s0 + length] if single else keep_buf[:length]
        out.copy_(torch.gt(part, hi, out=above_f[:length]))
        # lo <= hi and no NaN: ``> hi`` implies ``>= lo``, so the xor is ``lo <= part <= hi``
        inside[:length].copy_(torch.ge(part, lo, out=inside_f[:length]))
        inside[:length] ^= out
        if alive is not None:
            out &= alive
            inside[:length] &= alive
        above += count_true(out)
        padded = -(-length // 8) * 8
        if padded != length:
            inside[length:padded] = False
        local = true_positions(inside[:padded])
        values.append(part.index_select(0, local))
        where.append(local.add_(offsets[i0] + s0))
        n_kept += local.numel()
        if n_kept > budget:
            return None
        if not single:
            off = 0
            for i, start, stop in batch:
                keep[i][start:stop].copy_(out[off : off + stop - start])
                off += stop - start
    need = k - (n - n_kept - above)
    if not 0 <= need <= n_kept:
        return None
    cand = torch.cat(values) if len(values) != 1 else values[0]
    if need == 0:
        threshold, ties = lo.to(device), 0
        lowest = torch.zeros(cand.shape, dtype=torch.bool, device=device)
    else:
        threshold = cand.kthvalue(need).values
        lowest = cand < threshold
        ties = need - int(torch.count_nonzero(lowest))
        if ties:  # the first ``ties`` candidates equal to the threshold (candidates in order)
            lowest[(cand == threshold).nonzero().view(-1)[:ties]] = True
    flags = lowest.logical_not_()
    spots = torch.cat(where) if len(where) != 1 else where[0]
    if spots.numel():
        bounds = torch.searchsorted(spots, torch.tensor([*offsets[1:], at], device=device))
        first = 0
        for mask, offset, last in zip(keep, offsets, bounds.tolist()):
            if last > first:
                mask.index_put_((spots[first:last] - offset,), flags[first:last])
            first = last
    return threshold, ties


def _radix(pieces: Sequence[torch.Tensor], k: int) -> tuple[torch.Tensor, int]:
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
        return _small(pieces, k)
    found = _bracketed(pieces, k, n)
    return found if found is not None else _radix(pieces, k)


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
        ties = _mark_ties(piece, threshold, ties, mask, clear=False)
        masks.append(mask)
    return masks


def _mark_ties(piece: torch.Tensor, threshold: torch.Tensor, ties: int, mask: torch.Tensor, *,
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


def keep_masks(pieces: Sequence[Piece], k: int) -> list[torch.Tensor]:
    """Flat bool masks of ``pieces``: ``False`` at the ``k`` lowest (``1 <= k <= total``).

    The complement of :func:`lowest_masks` for :func:`kth_threshold`'s answer, in
    fresh tensors. Many values: one pass finds the threshold and writes the
    masks (see :func:`_keep_pass`); otherwise one ``>=`` pass after the threshold.
    :class:`Computed` pieces are read slice by slice on the one-pass path (and
    materialized otherwise).

    >>> keep_masks([torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0])], 2)
    [tensor([ True, False]), tensor([False,  True])]
    """
    n = sum(p.numel() for p in pieces)
    keep = [torch.empty(p.numel(), dtype=torch.bool, device=p.device) for p in pieces]
    lives = [None if isinstance(p, torch.Tensor) else p.keep for p in pieces]
    pruned = sum(m.numel() - int(count_true(m)) for m in lives if m is not None)
    if n > SMALL and pruned == 0:
        if _bracketed(pieces, k, n, keep) is not None:
            return keep
    elif n > SMALL and k == pruned:  # exactly the places not live (they are the lowest)
        for mask, alive in zip(keep, lives):
            mask.copy_(alive) if alive is not None else mask.fill_(True)
        return keep
    elif n > SMALL and k > pruned and n - pruned > SMALL:  # select among the live places
        if _bracketed(pieces, k - pruned, n - pruned, keep, True) is not None:  # live places
            return keep
    tensors = [p if isinstance(p, torch.Tensor) else p.materialize() for p in pieces]
    threshold, ties = _radix(tensors, k) if n > SMALL else _small(tensors, k)
    for piece, mask in zip(tensors, keep):
        torch.ge(piece, threshold, out=mask)
        # the first ``ties`` values equal to the threshold are pruned too
        ties = _mark_ties(piece, threshold, ties, mask, clear=True)
    return keep
