"""How a tensor is laid out over ranks: rows ``[offset, offset + rows)`` per rank.

The first collective of every distributed mask: each rank sends one small
int64 vector (its row offset, row count, trailing shape and dtype
flag) and all ranks check the same gathered table, so bad input raises the same
``ValueError`` on every rank (no rank waits on a collective another left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fsparse._src.checks import short_repr

__all__ = ["Layout", "exchange_layout"]

_MAX_TRAILING = 8
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Layout:
    """The gathered layout of one row-sharded tensor, as every rank sees it."""

    rank: int  # this rank's index in the group
    offsets: tuple[int, ...]  # global row offset of each rank's shard
    rows: tuple[int, ...]  # row count of each rank's shard
    shape: tuple[int, ...]  # global shape
    dtype: torch.dtype

    @property
    def world(self) -> int:
        return len(self.offsets)

    @property
    def start(self) -> int:
        return self.offsets[self.rank]

    @property
    def stop(self) -> int:
        return self.offsets[self.rank] + self.rows[self.rank]

    @property
    def width(self) -> int:
        """Matrix width: the product of the trailing dims."""
        return math.prod(self.shape[1:])

    def order(self) -> list[int]:
        """Ranks in global row order (empty shards by rank)."""
        return sorted(range(self.world), key=lambda r: (self.offsets[r], self.rows[r] > 0, r))

    def owner(self, row: int) -> int:
        """The rank holding global ``row``."""
        for r in range(self.world):
            if self.offsets[r] <= row < self.offsets[r] + self.rows[r]:
                return r
        raise AssertionError(f"row {row} is on no rank")


def group_rank(group: dist.ProcessGroup | None) -> tuple[int, int]:
    """``(rank, world)`` of this process in ``group`` (``None``: the default group)."""
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("torch.distributed is not initialized; call init_process_group first")
    return dist.get_rank(group), dist.get_world_size(group)


def _meta(local: torch.Tensor, row_offset: int) -> torch.Tensor:
    if local.dim() - 1 > _MAX_TRAILING:
        raise ValueError(f"data has too many dims ({local.dim()}); at most {_MAX_TRAILING + 1}")
    trailing = list(local.shape[1:]) + [-1] * (_MAX_TRAILING - (local.dim() - 1))
    code = _DTYPES.index(local.dtype) if local.dtype in _DTYPES else -1
    values = [row_offset, local.shape[0], local.dim(), code, 0, *trailing]
    return torch.tensor(values, dtype=torch.int64)


def exchange_layout(
    local: torch.Tensor, row_offset: int, group: dist.ProcessGroup | None, arg: str,
    *, matrix: bool = True,
) -> Layout:
    """Gather every rank's shard description and check that the shards tile one tensor.

    Raises ``ValueError`` (on every rank alike) for shards whose offsets do not
    tile ``[0, total_rows)``, trailing shapes or dtypes that differ, unsupported
    dtypes, or (``matrix``: for block units) a matrix view that does not keep dim 0
    as rows.
    """
    rank, world = group_rank(group)
    if local.dim() == 0:
        raise ValueError(f"{arg} must have at least 1 dim to be sharded by rows, got a 0-d tensor")
    mine = _meta(local, row_offset)
    table = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(table, mine, group=group)
    rows_of = [t.tolist() for t in table]
    if any(r[2:4] + r[5:] != rows_of[0][2:4] + rows_of[0][5:] for r in rows_of):
        described = [tuple(r[:2]) + tuple(d for d in r[5:] if d >= 0) for r in rows_of]
        raise ValueError(f"{arg}: shards differ in trailing shape or dtype across ranks "
                         f"(offset, rows, *trailing per rank: {short_repr(described)})")
    if rows_of[0][3] < 0:
        raise ValueError(f"{arg} must be floating point ({_DTYPES}), got {local.dtype}")
    offsets = tuple(r[0] for r in rows_of)
    rows = tuple(r[1] for r in rows_of)
    cursor = 0
    for r in sorted((r for r in range(world) if rows[r] > 0), key=lambda r: offsets[r]):
        if offsets[r] != cursor:
            raise ValueError(
                f"{arg}: shard row offsets do not tile the tensor: (offset, rows) per rank "
                f"{short_repr(list(zip(offsets, rows)))}; rank {r} starts at {offsets[r]}, "
                f"expected {cursor}"
            )
        cursor += rows[r]
    shape = (cursor, *local.shape[1:])
    squeezed = [d for d in shape if d != 1]
    if matrix and cursor > 0 and (shape[0] == 1 or len(squeezed) < 2):
        raise ValueError(
            f"{arg}: global shape {shape} has a matrix view that does not keep dim 0 as its "
            "rows (dim 0 of size 1, or 1-D data); shard such data replicated instead"
        )
    return Layout(rank, offsets, rows, shape, local.dtype)
