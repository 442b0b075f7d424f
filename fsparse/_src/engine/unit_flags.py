"""Flag bytes of the chunked norm mask, read eight at a time as int64 words.

A bool tensor is one byte (0 or 1) per flag, so its bytes viewed as int64 words
can be summed without carries between bytes for up to 255 words; each such
partial sum then holds its byte counts, and a sum of those bytes is the exact
count. The few set flags of a sparse flag array are found with ``nonzero`` over
its words, then inside the words that hit. Both are a small number of passes
over an eighth of the elements, where ``count_nonzero`` and ``nonzero`` walk
every byte.
"""

from __future__ import annotations

import torch

from fsparse._src.engine import native

__all__ = ["all_true", "count_true", "padded_length", "true_positions"]

_LANES = 255  # words summed at most into one partial sum: byte lanes stay below 256


def padded_length(n: int) -> int:
    """``n`` rounded up to whole int64 words of flag bytes."""
    return -(-n // 8) * 8


def count_true(flags: torch.Tensor) -> int:
    """Number of set flags of the contiguous bool tensor ``flags``.

    >>> count_true(torch.arange(1000) % 3 == 0)
    334
    """
    counted = native.count_true(flags)
    if counted is not None:
        return counted
    flat = flags.reshape(-1)
    head = min((-flat.storage_offset()) % 8, flat.numel())
    words = (flat.numel() - head) // 8
    total = 0
    if words:
        body = flat[head : head + 8 * words].view(torch.int64)
        rows = max(1, min(_LANES, words // 64))
        whole = words // rows * rows
        parts = [body[:whole].view(rows, -1).sum(0)]
        if whole < words:
            parts.append(body[whole:].sum(0, keepdim=True))
        total = int(torch.cat(parts).view(torch.uint8).sum(dtype=torch.int64).item())
    rest = torch.cat([flat[:head], flat[head + 8 * words :]])
    return total + (int(torch.count_nonzero(rest).item()) if rest.numel() else 0)


def true_positions(flags: torch.Tensor) -> torch.Tensor:
    """Ascending indices of the set flags of the 1-D bool ``flags``.

    ``flags`` must be contiguous, with a length that is a multiple of 8 and a
    storage offset aligned to 8 (see :func:`padded_length`): it is read as int64
    words, and only the words holding a set flag are looked into.

    >>> true_positions(torch.tensor([0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]).bool())
    tensor([ 2,  9, 15])
    """
    hit = flags.view(torch.int64).nonzero().squeeze(1)
    if hit.numel() == 0:
        return hit
    inner = flags.view(-1, 8).index_select(0, hit).nonzero()
    return hit.index_select(0, inner[:, 0]) * 8 + inner[:, 1]


def all_true(mask: torch.Tensor) -> bool:
    """``bool(mask.all())`` of a bool tensor: natively where the kernels apply (stopping at
    the first unset flag), else counted 8 bools per int64 word when contiguous.

    >>> all_true(torch.ones(5000, dtype=torch.bool)), all_true(torch.arange(9) < 8)
    (True, False)
    """
    if type(mask) is not torch.Tensor or not mask.is_contiguous() or mask.dtype != torch.bool:
        return bool(mask.all())
    fast = native.all_true(mask)
    if fast is not None:
        return fast
    return int(count_true(mask.reshape(-1))) == mask.numel()
