"""Unpacking ``DTensor`` inputs and packing masks back with the same placement.

Supported: 1-D device meshes with ``Shard(0)`` (row-wise, as row-sharded
embedding tables and FSDP2 parameters) or ``Replicate()``. Anything else raises
``ValueError`` before any collective runs (every rank sees the same metadata,
so every rank raises alike).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

from fsparse._src.checks import short_repr

__all__ = ["Unpacked", "global_extreme", "is_dtensor", "seeded_rand", "unpack"]


def is_dtensor(value: object) -> bool:
    """Whether ``value`` is a ``torch.distributed.tensor.DTensor``."""
    return isinstance(value, DTensor)


@dataclass(frozen=True)
class Unpacked:
    """A DTensor's local shard, where it sits, and how to wrap a mask like it."""

    local: torch.Tensor
    row_offset: int
    group: dist.ProcessGroup
    replicated: bool
    source: Any  # the DTensor

    def wrap(self, mask: torch.Tensor) -> DTensor:
        """``mask`` (of the local shard's shape) as a DTensor placed like the source."""
        src = self.source
        shape = src.shape
        stride = torch.empty(shape, device="meta").stride()
        return DTensor.from_local(mask, src.device_mesh, src.placements, run_check=False,
                                  shape=shape, stride=stride)


def _same_group(group: dist.ProcessGroup, mesh_group: dist.ProcessGroup) -> bool:
    if group is mesh_group:
        return True
    return dist.get_process_group_ranks(group) == dist.get_process_group_ranks(mesh_group)


def unpack(data: DTensor, group: dist.ProcessGroup | None, arg: str) -> Unpacked:
    """Check ``data``'s mesh, placement and ``group`` (``None``: the mesh's own)."""
    mesh = data.device_mesh
    if mesh.ndim != 1:
        raise ValueError(f"{arg}: only 1-D device meshes are supported, got a {mesh.ndim}-D mesh "
                         f"{short_repr(tuple(mesh.shape))}")
    placement = data.placements[0]
    mesh_group = mesh.get_group()
    if group is not None and not _same_group(group, mesh_group):
        raise ValueError(
            f"group (ranks {short_repr(dist.get_process_group_ranks(group))}) does not match "
            f"{arg}'s device mesh (ranks {short_repr(mesh.mesh.flatten().tolist())})"
        )
    if isinstance(placement, Replicate):
        return Unpacked(data.to_local(), 0, mesh_group, True, data)
    if not (isinstance(placement, Shard) and placement.dim == 0) or data.dim() == 0:
        raise ValueError(f"{arg}: unsupported DTensor placement {placement!r}; fsparse.distributed "
                         "supports Shard(0) (row-wise) and Replicate() on a 1-D mesh")
    _, offset = compute_local_shape_and_global_offset(data.shape, mesh, data.placements)
    return Unpacked(data.to_local(), int(offset[0]), mesh_group, False, data)


_RAND_SLICE = 1 << 20  # values drawn per slice: temporaries stay bounded


def seeded_rand(source: DTensor, generator: torch.Generator) -> DTensor:
    """This rank's part of ``torch.rand(source.shape, generator=...)``, placed like ``source``.

    Every rank runs the same stream (a CPU generator gives the same values drawn in
    slices as drawn at once) and keeps only its own rows, so the scores equal the
    single-process ones without communication, in memory of the shard plus one
    slice. Time: the stream up to the end of this rank's rows.
    """
    parts = unpack(source, None, "source")
    row = math.prod(source.shape[1:]) if source.dim() else 1
    total = math.prod(source.shape)
    start = 0 if parts.replicated else parts.row_offset * row
    stop = total if parts.replicated else start + parts.local.numel()
    local = torch.empty(stop - start, dtype=torch.float32, device=parts.local.device)
    for lo in range(0, stop, _RAND_SLICE):
        hi = min(lo + _RAND_SLICE, stop)
        drawn = torch.rand(hi - lo, generator=generator, dtype=torch.float32,
                           device=parts.local.device)
        if hi > start:
            keep = max(start, lo)
            local[keep - start : hi - start] = drawn[keep - lo :]
    return parts.wrap(local.view(parts.local.shape))


def global_extreme(data: DTensor, largest: bool) -> torch.Tensor:
    """``data``'s max (``largest``) or min over all ranks, as a plain 0-d tensor on every rank.

    Unlike ``DTensor.min()``, empty local shards are fine (``data`` must not be empty).
    """
    parts = unpack(data, None, "data")
    local = parts.local.detach()
    fill = -math.inf if largest else math.inf
    value = (local.amax() if largest else local.amin()) if local.numel() else \
        torch.tensor(fill, dtype=local.dtype, device=local.device)
    if not parts.replicated:
        dist.all_reduce(value, op=dist.ReduceOp.MAX if largest else dist.ReduceOp.MIN,
                        group=parts.group)
    return value
