"""The engine's one radix select: the exact ``k``-th lowest value, 16 (or 8) bits at a time.

Floats map to signed integers ordered like them (:func:`keys_of`); each round
histograms the next digit of the keys that share the prefix found so far
(:func:`digit_counts`), and the counts fix the digit holding the ``k``-th value
(:func:`radix_select`). Who gathers the counts is the caller's: slices of one
tensor (:mod:`fsparse._src.engine.threshold`), block means unit by unit
(:mod:`fsparse._src.engine.chunked_mask`), or ranks that ``all_reduce`` them
(:mod:`fsparse.distributed.selection`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["DigitCounter", "digit_counts", "keys_of", "radix_select"]


def keys_of(part: torch.Tensor) -> torch.Tensor:
    """Signed integers ordered like the float values (``-0.0`` made ``+0.0``): int64 for
    float64, int32 otherwise.

    >>> keys_of(torch.tensor([-1.0, 0.0, 2.0])).argsort().tolist()
    [0, 1, 2]
    """
    if part.dtype == torch.float64:
        bits, mask = (part + 0.0).view(torch.int64), 0x7FFFFFFFFFFFFFFF
        return bits ^ ((bits >> 63) & mask)
    bits, mask32 = (part.float() + 0.0).view(torch.int32), 0x7FFFFFFF
    return bits ^ ((bits >> 31) & mask32)


# (level, shift, prefix) -> int64 counts, on the CPU, of the 2**bits digits (see radix_select)
DigitCounter = Callable[[int, int, int], torch.Tensor]


def digit_counts(
    keys: torch.Tensor, level: int, shift: int, prefix: int, bits: int
) -> torch.Tensor:
    """CPU int64 histogram of the digit ``(keys >> shift)`` of ``bits`` bits, over the keys that
    share ``prefix`` above it (level 0: all keys, digits offset to be non-negative)."""
    if level:
        keys = keys[(keys >> (shift + bits)) == prefix]
        digits = (keys >> shift) & ((1 << bits) - 1)
    else:
        digits = (keys >> shift) + (1 << (bits - 1))
    return torch.bincount(digits.long(), minlength=1 << bits).cpu()


def radix_select(
    counts: DigitCounter, k: int, *, wide: bool, bits: int = 16
) -> tuple[torch.Tensor, int]:
    """``(threshold, ties)`` of the ``k``-th lowest value (``1 <= k <= total``), digit by digit.

    The one radix select of the engine: local passes, chunked block means and
    ranks that ``all_reduce`` their counts all drive it. ``counts(level,
    shift, prefix)`` returns the histogram of :func:`digit_counts` over every
    value's :func:`keys_of`, however the caller gathers it. ``wide``: float64
    keys. The threshold is float64 (``wide``) or float32, on the CPU.

    >>> keys = keys_of(torch.tensor([3.0, 1.0, 2.0, 1.0]))
    >>> radix_select(lambda *a: digit_counts(keys, *a, bits=16), 2, wide=False)
    (tensor(1.), 2)
    """
    width = 64 if wide else 32
    rounds = width // bits
    prefix, remaining = 0, k
    for level in range(rounds):
        hist = counts(level, bits * (rounds - 1 - level), prefix)
        cum = hist.cumsum(0)
        digit = int(torch.searchsorted(cum, torch.tensor([remaining])))
        remaining -= int(cum[digit] - hist[digit])
        prefix = (prefix << bits) | digit if level else digit - (1 << (bits - 1))
    int_dtype, float_dtype = (torch.int64, torch.float64) if wide else (torch.int32, torch.float32)
    key = torch.tensor([prefix], dtype=int_dtype)
    key = key ^ ((key >> (width - 1)) & ((1 << (width - 1)) - 1))
    return key.view(float_dtype)[0], remaining
