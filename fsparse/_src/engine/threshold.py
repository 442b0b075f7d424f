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

NaN must be refused by the caller; ``+-inf`` are ordinary values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["SLICE", "bracket", "k_lowest", "kth_threshold", "lowest_masks", "sample_size"]

SLICE = 1 << 22  # elements per pass slice
SMALL = 1 << 17  # up to this many values: kthvalue on a concatenated copy
_Z_SCORE = 5.0


def sample_size(n: int) -> int:
    """How many values the bracket estimate samples."""
    return min(max(n >> 8, 1 << 16), 1 << 20)


def _slices(pieces: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p[s : s + SLICE] for p in pieces for s in range(0, p.numel(), SLICE)]


def _small(pieces: Sequence[torch.Tensor], k: int) -> tuple[torch.Tensor, int]:
    values = pieces[0] if len(pieces) == 1 else torch.cat(list(pieces))
    threshold = values.kthvalue(k).values
    return threshold, k - int(torch.count_nonzero(values < threshold))


def _sample(pieces: Sequence[torch.Tensor], n: int, size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    index = torch.randint(n, (size,), generator=generator)
    parts, start = [], 0
    for piece in pieces:
        local = index[(index >= start) & (index < start + piece.numel())] - start
        parts.append(piece.index_select(0, local.to(piece.device)).cpu())
        start += piece.numel()
    return torch.cat(parts)


def bracket(sample: torch.Tensor, q: float) -> tuple[float, float]:
    """Sample quantiles around ``q``, wide enough to hold the true quantile (5 sigma)."""
    m = sample.numel()
    delta = _Z_SCORE * math.sqrt(q * (1 - q) / m) + 2 / m
    lo_rank, hi_rank = math.floor((q - delta) * m), math.ceil((q + delta) * m)
    lo = sample.kthvalue(lo_rank + 1).values.item() if lo_rank >= 0 else -math.inf
    hi = sample.kthvalue(hi_rank + 1).values.item() if hi_rank < m else math.inf
    return lo, hi


def _bracketed(
    pieces: Sequence[torch.Tensor], k: int, n: int
) -> tuple[torch.Tensor, int] | None:
    """The bracket pass; ``None`` when the bracket misses or is too crowded."""
    sample = _sample(pieces, n, sample_size(n))
    lo, hi = bracket(sample, k / n)
    crowd = float(((sample >= lo) & (sample <= hi)).float().mean())
    budget = min(int(4 * crowd * n) + 4096, max(n // 16, 1 << 16))
    dtype, device = pieces[0].dtype, pieces[0].device
    lo_t, hi_t = torch.tensor(lo, dtype=dtype), torch.tensor(hi, dtype=dtype)
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


def _keys(part: torch.Tensor) -> torch.Tensor:
    """Integers ordered like the float values (``-0.0`` made ``+0.0``)."""
    if part.dtype == torch.float64:
        bits, mask = (part + 0.0).view(torch.int64), 0x7FFFFFFFFFFFFFFF
        return bits ^ ((bits >> 63) & mask)
    bits, mask32 = (part.float() + 0.0).view(torch.int32), 0x7FFFFFFF
    return bits ^ ((bits >> 31) & mask32)


def _radix(pieces: Sequence[torch.Tensor], k: int) -> tuple[torch.Tensor, int]:
    wide = pieces[0].dtype == torch.float64
    int_dtype, n_digits = (torch.int64, 4) if wide else (torch.int32, 2)
    prefix, below, remaining = 0, 0, k
    for level in range(n_digits):
        shift = 16 * (n_digits - 1 - level)
        hist = torch.zeros(1 << 16, dtype=torch.int64)
        for part in _slices(pieces):
            keys = _keys(part)
            if level:
                keys = keys[(keys >> (shift + 16)) == prefix]
                digits = (keys >> shift) & 0xFFFF
            else:
                digits = (keys >> shift) + (1 << 15)
            hist += torch.bincount(digits.long(), minlength=1 << 16).cpu()
        cum = hist.cumsum(0)
        digit = int(torch.searchsorted(cum, torch.tensor([remaining])))
        skipped = int(cum[digit] - hist[digit])
        below += skipped
        remaining -= skipped
        prefix = (prefix << 16) | digit if level else digit - (1 << 15)
    key = torch.tensor([prefix], dtype=int_dtype)
    key = key ^ ((key >> (63 if wide else 31)) & (0x7FFFFFFFFFFFFFFF if wide else 0x7FFFFFFF))
    value = key.view(torch.float64 if wide else torch.float32)[0]
    return value.to(pieces[0].dtype).to(pieces[0].device), k - below


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
        if ties > 0:
            for start in range(0, piece.numel(), SLICE):
                part = piece[start : start + SLICE]
                equal = part == threshold
                count = int(torch.count_nonzero(equal))
                if count:
                    if count > ties:
                        equal &= equal.cumsum(0) <= ties
                    mask[start : start + SLICE] |= equal
                    ties -= min(count, ties)
                if ties <= 0:
                    break
        masks.append(mask)
    return masks
