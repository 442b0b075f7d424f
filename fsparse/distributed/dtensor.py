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
from fsparse._src.engine import counter_rng

__all__ = ["Unpacked", "global_extreme", "is_dtensor", "seeded_uniform", "unpack"]


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


def seeded_uniform(source: DTensor, key: int) -> DTensor:
    """This rank's part of stream ``key``'s first ``source.numel()`` values
    (:func:`~fsparse._src.engine.counter_rng.uniform`), shaped and placed like ``source``.

    A counter-based stream: each rank computes only its own rows, in time and memory of
    its shard, with no communication, and the scores equal the single-process ones.
    """
    parts = unpack(source, None, "source")
    row = math.prod(source.shape[1:]) if source.dim() else 1
    start = 0 if parts.replicated else parts.row_offset * row
    local = counter_rng.uniform(key, start, parts.local.numel(), device=parts.local.device)
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
