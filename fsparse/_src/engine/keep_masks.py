"""Keep masks of the ``k`` lowest values over many pieces, in one pass over the values.

The bracket of :mod:`fsparse._src.engine.threshold` (``lo <= k-th <= hi``, from
a seeded sample) lets one pass write each piece's keep mask (``> hi``), count
those kept, and gather the candidates ``lo <= value <= hi`` with their
positions; the exact threshold is then found among the candidates, whose keep
bits are set from it (ties resolved among them, so no tie scan follows). The
pass reads the values in batches of about ``PASS_SLICE`` that span small pieces,
so per-op costs are paid per batch rather than per tensor. If the bracket
misses or is too crowded, the radix select of ``threshold`` answers instead.

NaN is found by the same pass: a NaN is neither below ``lo`` nor above ``hi``,
so it lands among the candidates (:class:`NaNScores` names its piece); the
other paths check for it before they select.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from fsparse._src.engine import mask_records, native_keep, pool
from fsparse._src.engine import threshold as kth  # its SLICE, SMALL: read at call time
from fsparse._src.engine.threshold import NaNScores, Piece, mark_ties
from fsparse._src.engine.unit_flags import count_true, true_positions

__all__ = ["PASS_SLICE", "NaNScores", "has_nan", "keep_masks"]

PASS_SLICE = 1 << 20  # elements per batch of the one pass (its buffers stay cached)


def has_nan(piece: Piece) -> bool:
    """Whether a live value of ``piece`` is NaN: ``amax`` propagates NaN (one read pass, no
    bool temporary, never NaN from ``+inf`` and ``-inf`` together); computed pieces check
    themselves."""
    if not isinstance(piece, torch.Tensor):
        return piece.has_nan()
    return piece.numel() > 0 and piece.is_floating_point() and bool(piece.amax().isnan())


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
    their positions; then the candidates' keep bits are set from the exact answer
    (``None``: the bracket missed or overflowed ``budget``; :class:`NaNScores`: a
    candidate is NaN).

    The values are read in batches of about ``PASS_SLICE`` (small pieces share one,
    so the per-op cost is paid per batch, not per piece). Ties are resolved among
    the candidates (every value equal to the threshold is one), so no tie scan
    follows. The compares write 0/1 into float buffers and are converted to bool
    (faster on CPU than a bool-output compare). With ``live``, places of computed
    pieces that are not live are neither kept nor candidates (``k``, ``n``: live).
    """
    device, step = pieces[0].device, min(kth.SLICE, PASS_SLICE)
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
        # neither below ``lo`` nor above ``hi``: ``lo <= part <= hi``, or NaN
        inside[:length].copy_(torch.lt(part, lo, out=inside_f[:length]))
        inside[:length] |= out
        inside[:length].logical_not_()
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
    cand = torch.cat(values) if len(values) != 1 else values[0]
    if cand.is_floating_point() and bool(cand.isnan().any()):
        spots = torch.cat(where) if len(where) != 1 else where[0]
        first = int(spots[cand.isnan()][0])
        raise NaNScores(sum(1 for offset in offsets[1:] if offset <= first))
    need = k - (n - n_kept - above)
    if not 0 <= need <= n_kept:
        return None
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


def _one_pass(
    pieces: Sequence[Piece], k: int, n: int, keep: Sequence[torch.Tensor], live: bool = False
) -> tuple[torch.Tensor, int] | None:
    """Bracket (``kth.bounds``), then :func:`_keep_pass`; ``None`` if either fails."""
    found = kth.bounds(pieces, k, n, live)
    return None if found is None else _keep_pass(pieces, k, n, keep, *found, live)


def keep_masks(pieces: Sequence[Piece], k: int) -> list[torch.Tensor]:
    """Flat bool masks of ``pieces``: ``False`` at the ``k`` lowest (``1 <= k <= total``).

    The complement of ``threshold.lowest_masks`` for ``kth_threshold``'s answer,
    in fresh tensors. Where :func:`native_keep.applies
    <fsparse._src.engine.native_keep.applies>`, any number of values: one fused native
    pass finds the threshold and writes the masks. Otherwise, many values: the torch
    one-pass path (:func:`_keep_pass`); few: one ``>=`` pass after the threshold.
    Computed pieces are read in batches on the one-pass path (and materialized
    otherwise). Raises :class:`NaNScores` if a live value is NaN.

    >>> keep_masks([torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0])], 2)
    [tensor([ True, False]), tensor([False,  True])]
    """
    n = sum(p.numel() for p in pieces)
    keep = [pool.empty((p.numel(),), torch.bool, p.device) for p in pieces]
    if native_keep.applies(pieces, keep) and native_keep.one_pass(pieces, k, keep):
        return keep  # fused natively: no count of pruned places, no batches (same masks)
    lives = [None if isinstance(p, torch.Tensor) else p.keep for p in pieces]
    pruned = sum(m.numel() - int(count_true(m)) for m in lives if m is not None)
    _torch_keep(pieces, k, n, keep, lives, pruned)
    mask_records.record_kept(keep, n - k)  # exact, as the native pass's (mask_records.py)
    if k >= pruned:  # every pruned place is among the k lowest: none comes back
        for mask, alive in zip(keep, lives):
            if alive is not None:
                mask_records.record_within(mask, alive)
    return keep


def _torch_keep(pieces: Sequence[Piece], k: int, n: int, keep: Sequence[torch.Tensor],
                lives: Sequence[torch.Tensor | None], pruned: int) -> None:
    """:func:`keep_masks` into ``keep`` on the torch path (``n`` values; ``pruned``: the
    places not in ``lives``)."""
    small = kth.SMALL
    if n > small and pruned == 0:
        if _one_pass(pieces, k, n, keep) is not None:
            return
    elif n > small and k > pruned and n - pruned > small:  # select among the live places
        if _one_pass(pieces, k - pruned, n - pruned, keep, True) is not None:
            return
    for i, piece in enumerate(pieces):  # the paths below do not see NaN themselves
        if has_nan(piece):
            raise NaNScores(i)
    if n > small and k == pruned:  # exactly the places not live (they are the lowest)
        for mask, alive in zip(keep, lives):
            mask.copy_(alive) if alive is not None else mask.fill_(True)
        return
    tensors = [p if isinstance(p, torch.Tensor) else p.materialize() for p in pieces]
    select = kth.radix_threshold if n > small else kth.small_threshold
    value, ties = select(tensors, k)
    for piece, mask in zip(tensors, keep):
        torch.ge(piece, value, out=mask)
        # the first ``ties`` values equal to the threshold are pruned too
        ties = mark_ties(piece, value, ties, mask, clear=True)
