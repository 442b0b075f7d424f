"""Block geometry and per-unit kernels for the chunked norm block mask.

A :class:`BlockPlan` walks a data matrix in *units* of whole block rows (or, for
very wide matrices, of block columns within one block row). For each unit it
computes scores and block means into scratch buffers allocated once, and writes
the unit's part of the mask (:mod:`fsparse._src.engine.block_write`). Block means
are the same float sums in the same order as ``avg_pool2d(..., ceil_mode=True)``,
so they are bit-identical to the reference path's; units of whole blocks of 2, 4,
8 or 16 elements may leave them undivided (their sums, a power-of-2 multiple).
Keep flags go straight into the mask for ``(1, 1)`` blocks, else into one
``(nbh, nbw)`` bool array, counted once at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsparse._src.config import SparsityConfig
from fsparse._src.engine.block_write import (
    PAIRWISE_MAX,
    RankScratch,
    spread,
    write_ranked,
    write_sorted,
)
from fsparse._src.engine.unit_flags import padded_length

__all__ = ["DEFAULT_CHUNK", "SCORE_DTYPES", "BlockPlan", "Unit"]

# Elements per unit when none is given. Measured on 1M x 64 fp32 (2 threads): 1M-element
# units beat a few whole-tensor-sized ones quiet (82/135/144 ms against 112/175/316 ms
# for zpb 4, zpb 2, (1, 1)) and in 2 of 3 cases under a competing load.
DEFAULT_CHUNK = 1 << 20
_REWRITE_SLICE = 1 << 15  # blocks rewritten per slice
SCORE_DTYPES = {
    torch.float16: torch.float32,
    torch.bfloat16: torch.float32,
    torch.float32: torch.float32,
    torch.float64: torch.float64,
}


@dataclass(frozen=True)
class Unit:
    """Block rows ``[i0, i1)`` and block columns ``[j0, j1)``."""

    i0: int
    i1: int
    j0: int
    j1: int


@dataclass(frozen=True)
class _Region:
    """Part of a unit whose blocks share one (possibly edge-clipped) shape."""

    rows: slice
    cols: slice
    brows: slice
    bcols: slice
    shape: tuple[int, int]


class BlockPlan:
    """Geometry of one mask computation, its scratch buffers, and the per-unit steps."""

    def __init__(self, matrix: torch.Tensor, config: SparsityConfig, chunk: int | None) -> None:
        self.matrix = matrix
        self.height, self.width = matrix.shape
        self.block = bh, bw = config.sparse_block_shape
        self.zeros = config.zeros_per_block
        self.norm = config.norm
        self.dtype = SCORE_DTYPES[matrix.dtype]
        self.nbh, self.nbw = -(-self.height // bh), -(-self.width // bw)
        self.n_blocks = self.nbh * self.nbw
        area = bh * bw
        # Whole blocks of 2..PAIRWISE_MAX fp32/fp64 elements: means summed from data planes.
        self.lazy = (self.zeros >= area and 1 < area <= PAIRWISE_MAX
                     and matrix.dtype == self.dtype and matrix.is_contiguous())
        if chunk is None:
            chunk = DEFAULT_CHUNK
        if bh * self.width <= chunk:
            step = max(1, chunk // (bh * self.width))
            self.units = [Unit(i, min(i + step, self.nbh), 0, self.nbw)
                          for i in range(0, self.nbh, step)]
        else:
            step = max(1, chunk // (bh * bw))
            self.units = [Unit(i, i + 1, j, min(j + step, self.nbw))
                          for i in range(self.nbh) for j in range(0, self.nbw, step)]
        first = self.units[0]
        elems = (first.i1 - first.i0) * bh * (first.j1 - first.j0) * bw
        blocks = (first.i1 - first.i0) * (first.j1 - first.j0)
        device = matrix.device
        self.scores_buf = torch.empty(0 if self.lazy else elems, dtype=self.dtype, device=device)
        pooled = blocks if self.block != (1, 1) else 0  # (1, 1): the means are the scores
        self.means_buf = torch.empty(pooled * (1 + self.lazy), dtype=self.dtype, device=device)
        # candidate flags of a unit, in whole int64 words (see unit_flags.true_positions)
        self.candidate_buf = torch.zeros(padded_length(blocks), dtype=torch.bool, device=device)
        self.rank_scratch = RankScratch(elems if self.zeros < area else 0, device)
        self._keep: torch.Tensor | None = None

    def regions(self, unit: Unit) -> Iterator[_Region]:
        """The unit's full blocks, then its edge-clipped right column and bottom row."""
        bh, bw = self.block
        rows = min(unit.i1 * bh, self.height) - unit.i0 * bh
        cols = min(unit.j1 * bw, self.width) - unit.j0 * bw
        full_r, full_c = rows // bh, cols // bw
        row_parts = [(slice(0, full_r * bh), slice(0, full_r), bh)] if full_r else []
        if rows % bh:
            row_parts.append((slice(full_r * bh, rows), slice(full_r, full_r + 1), rows % bh))
        col_parts = [(slice(0, full_c * bw), slice(0, full_c), bw)] if full_c else []
        if cols % bw:
            col_parts.append((slice(full_c * bw, cols), slice(full_c, full_c + 1), cols % bw))
        for rs, brs, h in row_parts:
            for cs, bcs, w in col_parts:
                yield _Region(rs, cs, brs, bcs, (h, w))

    def window(self, tensor: torch.Tensor, unit: Unit) -> torch.Tensor:
        """The unit's rectangle of an ``(H, W)`` tensor."""
        bh, bw = self.block
        return tensor[unit.i0 * bh : unit.i1 * bh, unit.j0 * bw : unit.j1 * bw]

    def scores(self, unit: Unit) -> torch.Tensor:
        """``|x|`` or ``x * x`` over the unit, in the score dtype (a scratch view).

        In lazy mode (see ``__init__``) this is the unit's data itself, and
        :meth:`means` applies the norm plane by plane.
        """
        part = self.window(self.matrix, unit)
        if self.lazy:
            return part
        out = self.scores_buf[: part.numel()].view(part.shape)
        if part.dtype != self.dtype:
            out.copy_(part)
            part = out
        if self.norm == "L1":
            return torch.abs(part, out=out)
        return torch.mul(part, part, out=out)

    def sum_scale(self, unit: Unit) -> int:
        """The block area if :meth:`means` can leave the unit's means undivided: every block
        whole, of 2, 4, 8 or 16 elements (a mean is then its sum scaled by a power of 2); else 1."""
        bh, bw = self.block
        area = bh * bw
        if area == 1 or area > PAIRWISE_MAX or area & (area - 1):
            return 1
        rows = min(unit.i1 * bh, self.height) - unit.i0 * bh
        cols = min(unit.j1 * bw, self.width) - unit.j0 * bw
        return area if rows % bh == 0 and cols % bw == 0 else 1

    def means(self, unit: Unit, scores: torch.Tensor, divide: bool = True) -> torch.Tensor:
        """Block means, bit-identical to ``avg_pool2d(..., ceil_mode=True)`` (a scratch view);
        with ``divide=False``, the block sums, for a unit whose :meth:`sum_scale` is not 1."""
        shape = (unit.i1 - unit.i0, unit.j1 - unit.j0)
        if self.block == (1, 1):
            return scores
        n = shape[0] * shape[1]
        out = self.means_buf[:n].view(shape)
        norm = self.norm if self.lazy else None
        for region in self.regions(unit):
            target = out[region.brows, region.bcols]
            tmp = self.means_buf[n : n + target.numel()].view(target.shape) if norm else None
            _pool_into(_blocks4d(scores[region.rows, region.cols], region.shape), target,
                       norm, tmp, divide)
        return out

    def keep_out(self, mask: torch.Tensor, unit: Unit) -> torch.Tensor:
        """Where the unit's keep flags (``True``: the block is not selected) go: for ``(1, 1)``
        blocks the mask itself (then :meth:`write` has nothing left to do), else the unit's
        part of :meth:`kept`'s ``(nbh, nbw)`` flags."""
        if self.block == (1, 1):
            return self.window(mask, unit)
        if self._keep is None:
            self._keep = torch.empty(self.nbh, self.nbw, dtype=torch.bool, device=mask.device)
        return self._keep[unit.i0 : unit.i1, unit.j0 : unit.j1]

    def kept(self, mask: torch.Tensor) -> torch.Tensor:
        """Every unit's keep flags as :meth:`keep_out` wrote them (contiguous)."""
        return mask if self.block == (1, 1) or self._keep is None else self._keep

    def write(
        self, mask: torch.Tensor, unit: Unit, scores: torch.Tensor, keep: torch.Tensor
    ) -> None:
        """Write the unit's part of ``mask`` given which of its blocks are kept whole."""
        target = self.window(mask, unit)
        if self.block == (1, 1) and keep.data_ptr() == target.data_ptr():
            return  # keep_out gave the mask itself
        for region in self.regions(unit):
            h, w = region.shape
            out4 = _blocks4d(target[region.rows, region.cols], region.shape)
            kept = keep[region.brows, region.bcols]
            zeros = min(self.zeros, h * w)
            if zeros == h * w:
                spread(out4, kept)
                continue
            blocks = _blocks4d(scores[region.rows, region.cols], (h, w))
            if h * w <= PAIRWISE_MAX:
                write_ranked(out4, blocks, kept, zeros, self.rank_scratch)
            else:
                write_sorted(out4, blocks, kept, zeros)

    def keep_blocks(self, mask: torch.Tensor, blocks: torch.Tensor) -> None:
        """Set every element of the blocks with (row-major) indices ``blocks`` in ``mask``.

        ``mask`` must be contiguous. Works through the blocks in slices, so its
        temporaries stay small however many blocks there are.
        """
        flat = mask.view(-1)
        bh, bw = self.block
        if (bh, bw) == (1, 1):  # a block's index is its element's
            flat.index_fill_(0, blocks.to(mask.device), True)
            return
        edges = self.height % bh or self.width % bw
        for start in range(0, blocks.numel(), _REWRITE_SLICE):
            part = blocks[start : start + _REWRITE_SLICE].to(mask.device)
            rows, cols, valid = self.block_elements(part)
            where = (rows * self.width + cols)[valid] if edges else rows * self.width + cols
            flat.index_fill_(0, where.view(-1), True)

    def block_elements(self, blocks: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Row and column of each element of each block, clamped, and which are real."""
        bh, bw = self.block
        device = blocks.device
        offsets_r = torch.arange(bh, device=device).repeat_interleave(bw)
        offsets_c = torch.arange(bw, device=device).repeat(bh)
        rows = (blocks // self.nbw)[:, None] * bh + offsets_r
        cols = (blocks % self.nbw)[:, None] * bw + offsets_c
        valid = (rows < self.height) & (cols < self.width)
        return rows.clamp_(max=self.height - 1), cols.clamp_(max=self.width - 1), valid

    def gather_scores(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Scores at ``(rows, cols)`` in the score dtype."""
        if self.matrix.is_contiguous():
            flat = (rows * self.width + cols).reshape(-1)
            vals = self.matrix.reshape(-1).index_select(0, flat).view(rows.shape)
        else:
            vals = self.matrix[rows, cols]
        vals = vals.to(self.dtype)
        return vals.abs() if self.norm == "L1" else vals * vals


def _blocks4d(matrix: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """View an exactly tiled ``(a*h, b*w)`` matrix as ``(a, h, b, w)``."""
    h, w = shape
    return matrix.unflatten(0, (-1, h)).unflatten(2, (-1, w))


def _norm_into(plane: torch.Tensor, norm: str, out: torch.Tensor) -> torch.Tensor:
    if norm == "L1":
        return torch.abs(plane, out=out)
    return torch.mul(plane, plane, out=out)


def _pool_into(blocks: torch.Tensor, out: torch.Tensor, norm: str | None = None,
               tmp: torch.Tensor | None = None, divide: bool = True) -> None:  # fmt: skip
    """Mean of each ``(h, w)`` block, summed row-major from its first element as avg_pool2d does.

    With ``norm``, ``blocks`` holds data and each plane is scored on the way
    (into ``tmp``, shaped like ``out``): the same sums of the same scores.
    ``divide=False`` leaves the sums (blocks of up to ``PAIRWISE_MAX`` elements).
    """
    a, h, b, w = blocks.shape
    count = h * w
    if count > PAIRWISE_MAX:
        pooled = F.avg_pool2d(blocks.reshape(1, 1, a * h, b * w), (h, w))
        out.copy_(pooled[0, 0])
        return
    planes = [blocks[:, r, :, c] for r in range(h) for c in range(w)]
    if norm is not None and tmp is not None:  # count 1 too: the score alone
        _norm_into(planes[0], norm, out)
        for plane in planes[1:]:
            out.add_(_norm_into(plane, norm, tmp))
    elif count == 1:
        out.copy_(planes[0])
        return
    else:
        torch.add(planes[0], planes[1], out=out)
        for plane in planes[2:]:
            out.add_(plane)
    if divide:
        out.div_(count)
