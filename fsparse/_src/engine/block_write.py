"""Writers of the chunked norm mask: one unit's blocks, given which blocks are kept.

The mask region is a bool ``(a, h, b, w)`` view (block ``(i, j)`` is
``[i, :, j, :]``). A kept block is all ``True``; a selected one loses its
``zeros`` smallest scores (ties by position), found by pairwise comparisons for
blocks of up to ``PAIRWISE_MAX`` elements and by a stable sort beyond.
Contiguous block rows of 1, 2, 4 or 8 bytes are written one integer at a time.
"""

from __future__ import annotations

import torch

__all__ = ["PAIRWISE_MAX", "spread", "write_ranked", "write_sorted"]

PAIRWISE_MAX = 16  # blocks up to this size: unrolled sums and pairwise ranks
_SPREAD = {
    1: (torch.uint8, 0x01),
    2: (torch.int16, 0x0101),
    4: (torch.int32, 0x01010101),
    8: (torch.int64, 0x0101010101010101),
}


def _word_viewable(out: torch.Tensor) -> bool:
    """Whether each block row of the ``(a, h, b, w)`` bool view is one aligned integer."""
    w = out.shape[3]
    return w in _SPREAD and out.stride(3) == 1 and out.stride(2) == w and (
        out.stride(0) % w == 0 and out.stride(1) % w == 0 and out.storage_offset() % w == 0
    )


def _pack(byte_values: list[int]) -> int:
    """Little-endian integer with the given bytes (all below 128, so it stays positive)."""
    return sum(v << (8 * i) for i, v in enumerate(byte_values))


def spread(out: torch.Tensor, values: torch.Tensor) -> None:
    """Set block ``(i, :, j, :)`` of the bool ``(a, h, b, w)`` view ``out`` to ``values[i, j]``.

    Contiguous blocks of width 2, 4 or 8 are written one integer per block row,
    in one pass (a broadcasting copy would go element by element).
    """
    if _word_viewable(out) and out.shape[3] > 1:
        int_dtype, ones = _SPREAD[out.shape[3]]
        words = out.view(int_dtype)[..., 0]
        factor = torch.tensor(ones, dtype=int_dtype, device=out.device)  # int_dtype arithmetic
        torch.mul(values[:, None, :].expand(words.shape), factor, out=words)
        return
    out.copy_(values[:, None, :, None].expand_as(out))


def write_sorted(out: torch.Tensor, blocks: torch.Tensor, keep: torch.Tensor, zeros: int) -> None:
    """Like :func:`write_ranked`, by a stable sort of each block (any block size)."""
    a, h, b, w = blocks.shape
    flat = blocks.permute(0, 2, 1, 3).reshape(a, b, h * w)
    order = flat.sort(dim=-1, stable=True).indices[..., :zeros]
    pruned = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device)
    pruned.scatter_(-1, order, True)
    pruned = pruned.view(a, b, h, w).permute(0, 2, 1, 3)
    pruned &= ~keep[:, None, :, None]
    torch.logical_not(pruned, out=out)


class RankScratch:
    """Zeroed byte buffers of ``size`` bytes, one per (block width, distance); in each, the
    comparison bytes of the distance's lanes are rewritten and the other lanes stay 0."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.size, self.device = size, device
        self._lanes: dict[tuple[int, int], torch.Tensor] = {}
        self._flags: torch.Tensor | None = None

    def lanes(self, w: int, d: int) -> torch.Tensor:
        key = (w, d)
        if key not in self._lanes:
            self._lanes[key] = torch.zeros(self.size, dtype=torch.bool, device=self.device)
        return self._lanes[key]

    def flags(self, n: int) -> torch.Tensor:
        if self._flags is None:
            self._flags = torch.empty(self.size, dtype=torch.bool, device=self.device)
        return self._flags[:n]


def write_ranked(
    out: torch.Tensor, blocks: torch.Tensor, keep: torch.Tensor, zeros: int,
    scratch: RankScratch,
) -> None:  # fmt: skip
    """Keep all of a block if ``keep``, else all but its ``zeros`` smallest (ties by position).

    Ranks are counted by pairwise comparisons in the mask's own bytes, one byte
    per element, a block row's bytes packed in one integer where the layout
    allows. Byte value ``rank + 64 - zeros`` (plus 32 for kept blocks) has bit 6
    set exactly when the element stays. Within a packed row, the pairs ``(c, c +
    d)`` at one distance ``d`` are compared in one pass, their results laid in
    the lanes ``c`` of a scratch word ``v``: they add ``v * (2**(8 d) - 1)`` to
    the row's word.
    """
    a, h, b, w = blocks.shape
    width = w if _word_viewable(out) else 1
    int_dtype, ones = _SPREAD[width]
    words = out.view(int_dtype if width > 1 else torch.uint8).view(a, h, b, w // width)
    cells = [(r, c) for r in range(h) for c in range(w)]
    pairs = [(p, q) for i, p in enumerate(cells) for q in cells[i + 1 :]]
    packed = width > 1  # then every pair inside a row is handled by distance
    base = [[64 - zeros] * w for _ in range(h)]
    for (rp, cp), (rq, cq) in pairs:
        if (rp, cp // width) == (rq, cq // width):
            base[rp][cp] += 1  # p ranks above q, unless s_p <= s_q moves the one to q
    for r in range(h):
        for j in range(w // width):
            value = _pack(base[r][j * width : (j + 1) * width])
            if not packed:
                words[:, r, :, j].fill_(value)
                continue
            first = torch.tensor(value, dtype=int_dtype, device=out.device)
            for d in range(w - 1, 0, -1):
                lanes = scratch.lanes(w, d)[: a * b * w].view(a, b, w)
                for c in range(w - d):  # 2-D passes: a 3-D one would loop over w - d lanes
                    torch.le(blocks[:, r, :, c], blocks[:, r, :, c + d], out=lanes[:, :, c])
                row = words[:, r, :, 0]
                torch.add(first if d == w - 1 else row, lanes.view(int_dtype)[..., 0],
                          alpha=(1 << 8 * d) - 1, out=row)  # fmt: skip
    before = scratch.flags(a * b).view(a, b)
    for (rp, cp), (rq, cq) in pairs:
        if packed and rp == rq:
            continue
        torch.le(blocks[:, rp, :, cp], blocks[:, rq, :, cq], out=before)
        word_p = words[:, rp, :, cp // width]
        word_q = words[:, rq, :, cq // width]
        if (rp, cp // width) == (rq, cq // width):
            word_q.add_(before, alpha=(1 << 8 * (cq % width)) - (1 << 8 * (cp % width)))
        else:
            word_q.add_(before, alpha=1 << 8 * (cq % width))
            word_p.add_(before.logical_not_(), alpha=1 << 8 * (cp % width))
    words.add_(keep[:, None, :, None], alpha=32 * ones)
    words.bitwise_right_shift_(6).bitwise_and_(ones)
