"""Public entry points of :mod:`fsparse.distributed` (argument checks, DTensor dispatch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from fsparse._src.checks import check_instance, check_int, check_real, check_tensor, short_repr
from fsparse._src.config import SparsityConfig, make_config
from fsparse._src.engine.mask_types import global_levels as local_global_levels
from fsparse._src.engine.norm_mask import config_norm_mask as local_norm_mask
from fsparse._src.engine.patterns import Pattern, parse_pattern
from fsparse._src.engine.selection import global_select_masks as local_global_select
from fsparse._src.engine.selection import select_count_mask as local_count_select
from fsparse._src.engine.selection import select_mask as local_select
from fsparse.distributed.dtensor import is_dtensor, unpack
from fsparse.distributed.scores import shard_select_masks
from fsparse.distributed.shard_mask import shard_global_levels, shard_norm_mask

__all__ = ["config_norm_mask", "global_levels", "global_select_masks", "norm_mask",
           "select_count_mask", "select_mask"]


def _group(group: object) -> dist.ProcessGroup | None:
    if group is not None:
        check_instance(group, dist.ProcessGroup, "group")
    return group  # type: ignore[return-value]


def config_norm_mask(
    data: torch.Tensor, config: SparsityConfig, *,
    row_offset: int | None = None, group: dist.ProcessGroup | None = None,
) -> Any:
    """This rank's part of :func:`fsparse.config_norm_mask` of the whole sharded tensor.

    ``data``: a DTensor (``row_offset`` must be ``None``; the mask is a DTensor
    placed alike) or this rank's local rows (``row_offset``: the global index
    of its first row). A collective: every rank of ``group`` calls it.
    """
    check_instance(config, SparsityConfig, "config")
    group = _group(group)
    if is_dtensor(data):
        if row_offset is not None:
            raise ValueError(f"row_offset must be None for DTensor data (the DTensor knows its "
                             f"place), got {short_repr(row_offset)}")
        parts = unpack(data, group, "data")  # type: ignore[arg-type]
        check_tensor(parts.local, "data")
        if parts.replicated:
            return parts.wrap(local_norm_mask(parts.local, config))
        return parts.wrap(shard_norm_mask(parts.local, config, parts.row_offset, parts.group))
    check_tensor(data, "data")
    if row_offset is None:
        raise ValueError("row_offset is required for a plain local shard (the global index of "
                         "its first row); pass a DTensor to have it computed")
    check_int(row_offset, "row_offset", low=0)
    return shard_norm_mask(data, config, row_offset, group)


def norm_mask(
    data: torch.Tensor, sparsity_level: float = 0.5,
    sparse_block_shape: tuple[int, int] = (1, 4), zeros_per_block: int | None = None,
    norm: str = "L1", *, row_offset: int | None = None, group: dist.ProcessGroup | None = None,
) -> Any:
    """:func:`fsparse.norm_mask` of a sharded tensor (see :func:`config_norm_mask`)."""
    config = make_config(sparsity_level=sparsity_level, sparse_block_shape=sparse_block_shape,
                         zeros_per_block=zeros_per_block, norm=norm)
    return config_norm_mask(data, config, row_offset=row_offset, group=group)


def global_levels(
    data: Mapping[str, torch.Tensor], configs: Mapping[str, SparsityConfig], level: float, *,
    row_offsets: Mapping[str, int] | None = None, group: dist.ProcessGroup | None = None,
) -> dict[str, float]:
    """:func:`fsparse.global_levels` over sharded tensors: the same levels on every rank.

    All DTensors (``row_offsets`` ``None``) or all plain shards (``row_offsets``
    names every tensor). Feed the levels to :func:`config_norm_mask` per tensor.
    """
    check_instance(data, Mapping, "data")
    check_instance(configs, Mapping, "configs")
    level = check_real(level, "level", finite=False)
    group = _group(group)
    if data.keys() != configs.keys():
        raise ValueError(f"data and configs must have the same names, got "
                         f"{short_repr(list(data))} and {short_repr(list(configs))}")
    for name in data:
        check_instance(configs[name], SparsityConfig, f"configs[{short_repr(name)}]")
    kinds = {is_dtensor(t) for t in data.values()}
    if len(kinds) > 1:
        raise ValueError("data must be all DTensors or all plain shards, not a mix")
    if kinds == {True}:
        if row_offsets is not None:
            raise ValueError("row_offsets must be None for DTensor data")
        parts = {n: unpack(t, group, f"data[{short_repr(n)}]") for n, t in data.items()}  # type: ignore[arg-type]
        if all(p.replicated for p in parts.values()):
            return local_global_levels({n: p.local for n, p in parts.items()}, configs, level)
        if any(p.replicated for p in parts.values()):
            raise ValueError("data must be all Shard(0) or all Replicate() DTensors, not a mix")
        groups = {tuple(dist.get_process_group_ranks(p.group)) for p in parts.values()}
        if len(groups) > 1:
            raise ValueError(f"data's DTensors live on different meshes {short_repr(groups)}")
        locals_ = {n: p.local for n, p in parts.items()}
        offsets = {n: p.row_offset for n, p in parts.items()}
        return shard_global_levels(locals_, configs, level, offsets,
                                   next(iter(parts.values())).group if parts else group)
    for name, tensor in data.items():
        check_tensor(tensor, f"data[{short_repr(name)}]")
    if row_offsets is None or not isinstance(row_offsets, Mapping) or \
            row_offsets.keys() != data.keys():
        raise ValueError(f"row_offsets must map every name of data to its shard's first row, "
                         f"got {short_repr(row_offsets)}")
    for name, offset in row_offsets.items():
        check_int(offset, f"row_offsets[{short_repr(name)}]", low=0)
    return shard_global_levels(dict(data), configs, level, dict(row_offsets), group)


def _unpack_all(
    scores: Mapping[str, Any], offsets: Mapping[str, int] | None, group: Any
) -> tuple[dict[str, torch.Tensor], dict[str, int], Any, dict[str, Any]]:
    """Local shards (detached), offsets, group and (for DTensors) the unpacked sources.

    All-``Replicate()`` DTensors come back with offsets ``None`` (no collective needed).
    """
    kinds = {is_dtensor(t) for t in scores.values()}
    if len(kinds) > 1:
        raise ValueError("scores must be all DTensors or all plain shards, not a mix")
    if kinds == {True}:
        if offsets is not None:
            raise ValueError("row_offset(s) must be None for DTensor scores")
        parts = {n: unpack(t, group, f"scores[{short_repr(n)}]") for n, t in scores.items()}
        for name, part in parts.items():
            check_tensor(part.local, f"scores[{short_repr(name)}]")
        replicated = {p.replicated for p in parts.values()}
        if len(replicated) > 1:
            raise ValueError("scores must be all Shard(0) or all Replicate() DTensors, not a mix")
        groups = {tuple(dist.get_process_group_ranks(p.group)) for p in parts.values()}
        if len(groups) > 1:
            raise ValueError(f"scores' DTensors live on different meshes {short_repr(groups)}")
        first = next(iter(parts.values()))
        locals_ = {n: p.local.detach() for n, p in parts.items()}
        if replicated == {True}:
            return locals_, None, first.group, parts  # type: ignore[return-value]
        return locals_, {n: p.row_offset for n, p in parts.items()}, first.group, parts
    for name, tensor in scores.items():
        check_tensor(tensor, f"scores[{short_repr(name)}]")
    if offsets is None or not isinstance(offsets, Mapping) or offsets.keys() != scores.keys():
        raise ValueError(f"row_offset(s) must give every shard's first row, got "
                         f"{short_repr(offsets)}")
    for name, offset in offsets.items():
        check_int(offset, f"row_offsets[{short_repr(name)}]", low=0)
    return {n: t.detach() for n, t in scores.items()}, dict(offsets), group, {}


def _select(
    scores: Mapping[str, Any], offsets: Mapping[str, int] | None, group: Any, sparsity: float,
    pattern: Pattern | str, is_global: bool, count: int | None = None,
) -> dict[str, Any]:
    pattern = parse_pattern(pattern)
    local, offs, grp, parts = _unpack_all(scores, offsets, _group(group))
    if parts and offs is None:  # replicated: the single-process selection of the local copy
        if is_global:
            masks = local_global_select(local, sparsity, pattern)
        elif count is not None:
            masks = {n: local_count_select(t, count, pattern) for n, t in local.items()}
        else:
            masks = {n: local_select(t, sparsity, pattern) for n, t in local.items()}
    else:
        masks = shard_select_masks(local, offs, sparsity, pattern, grp, is_global=is_global,
                                   count=count)
    return {n: parts[n].wrap(m) if parts else m for n, m in masks.items()}


def select_mask(
    scores: torch.Tensor, sparsity: float, pattern: Pattern | str = "unstructured", *,
    row_offset: int | None = None, group: dist.ProcessGroup | None = None,
) -> Any:
    """:func:`fsparse.select_mask` of a sharded score tensor (any pattern; see ``scores``)."""
    sparsity = check_real(sparsity, "sparsity", finite=False)
    offsets = None if row_offset is None else {"scores": row_offset}
    return _select({"scores": scores}, offsets, group, sparsity, pattern, False)["scores"]


def select_count_mask(
    scores: torch.Tensor, k: int, pattern: Pattern | str = "unstructured", *,
    row_offset: int | None = None, group: dist.ProcessGroup | None = None,
) -> Any:
    """:func:`fsparse.select_count_mask` of a sharded score tensor: exactly ``k`` units pruned."""
    check_int(k, "k", low=0)
    offsets = None if row_offset is None else {"scores": row_offset}
    return _select({"scores": scores}, offsets, group, 0.0, pattern, False, count=k)["scores"]


def global_select_masks(
    scores: Mapping[str, torch.Tensor], sparsity: float, pattern: Pattern | str = "unstructured",
    *, row_offsets: Mapping[str, int] | None = None, group: dist.ProcessGroup | None = None,
) -> dict[str, Any]:
    """:func:`fsparse.global_select_masks` over sharded score tensors (global magnitude)."""
    check_instance(scores, Mapping, "scores")
    sparsity = check_real(sparsity, "sparsity", finite=False)
    if not scores:
        return {}
    return _select(scores, row_offsets, group, sparsity, pattern, True)
