"""``fsparse.create`` on FSDP2 models: DTensor weights, counted and written shard by shard.

Under ``torch.distributed.fsdp.fully_shard`` every weight is a ``DTensor``
placed ``Shard(0)`` (rows split over the ranks of a 1-D mesh). The masks the
pruners return for them are DTensors placed alike, so everything ``create``
does besides selection is local to each shard:

* writing a mask into a weight multiplies the local shards (no collective);
* counting a mask's kept elements counts each rank's shard and sums the counts
  with one ``all_reduce`` of a small int64 vector (one entry per mask), never a
  gather of the mask;
* a check that may fail on one rank only (a checkpoint) ends with
  :func:`agree`, so that every rank raises alike and none is left waiting.

``torch.distributed.tensor`` is never imported here: a DTensor can exist only
once it is in ``sys.modules``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from fsparse._src.checks import short_repr
from fsparse._src.engine.dispatch import sharded_kind
from fsparse._src.engine.unit_flags import count_true
from fsparse.create.modifiers import Distillation, OBSPruning, Quantization
from fsparse.create.recipe import Recipe

__all__ = ["agree", "check_fsdp_support", "check_layouts", "check_row_views", "is_dtensor",
           "kept_counts", "local", "same_placement"]


def is_dtensor(value: object) -> bool:
    """Whether ``value`` is a ``torch.distributed.tensor.DTensor`` (the engine's test)."""
    return sharded_kind(value) is not None


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (sharing its storage), or ``t`` itself."""
    return t.to_local() if is_dtensor(t) else t  # type: ignore[attr-defined]


def _placement(t: Any) -> str:
    return ", ".join(repr(p) for p in t.placements)


def check_layouts(weights: Mapping[str, torch.Tensor], arg: str = "model") -> Any:
    """The process group of the DTensor ``weights`` (``None`` when there are none).

    Each DTensor weight must be placed ``Shard(0)`` (FSDP2) or ``Replicate()``
    on a 1-D mesh, all on the same mesh; anything else raises ``ValueError``
    naming ``arg`` and the weight (from metadata every rank shares, so every
    rank raises alike, before any collective).
    """
    mesh: Any = None
    first = ""
    for name, w in weights.items():
        if not is_dtensor(w):
            continue
        where = f"{arg} parameter {short_repr(name)}"
        m = w.device_mesh  # type: ignore[attr-defined]
        if m.ndim != 1:
            raise ValueError(f"{where} is a DTensor on a {m.ndim}-D device mesh; fsparse.create "
                             "supports 1-D meshes (fully_shard(model, mesh=init_device_mesh("
                             "device, (world,))))")
        (p,) = w.placements  # type: ignore[attr-defined]
        if not (p.is_replicate() or (p.is_shard() and p.dim == 0)):
            raise ValueError(f"{where} is a DTensor placed ({_placement(w)}); fsparse.create "
                             "supports Shard(0) (row-wise, as FSDP2's fully_shard) and "
                             "Replicate()")
        if mesh is None:
            mesh, first = m, name
        elif m != mesh:
            raise ValueError(f"{where} lives on device mesh {short_repr(m)}, but "
                             f"{short_repr(first)} on {short_repr(mesh)}; fsparse.create needs "
                             "one mesh for all its weights")
    return None if mesh is None else mesh.get_group()


def check_fsdp_support(group: Any, recipe: Recipe, teacher: Any) -> None:
    """``ValueError`` for what a recipe cannot do on DTensor (FSDP2) weights (``group``
    not ``None``): QAT, self-distillation (``teacher`` ``None``) and OBS/M-FAC.

    >>> from fsparse.create.template import create_recipe
    >>> check_fsdp_support(None, create_recipe(), None)  # no DTensor weights: anything goes
    >>> check_fsdp_support(object(), create_recipe(), None)
    Traceback (most recent call last):
    ...
    ValueError: quantization: QAT is not supported on a model with DTensor (FSDP2) weights; ...
    """
    if group is None:
        return
    if recipe.of_type(Quantization):
        raise ValueError("quantization: QAT is not supported on a model with DTensor "
                         "(FSDP2) weights; pass quantization=False or a recipe without "
                         "Quantization")
    if teacher is None and recipe.of_type(Distillation):
        raise ValueError("distillation: self-distillation deep-copies the model, which "
                         "FSDP2 does not support; pass distillation_teacher (a model of "
                         "its own) or distillation=False")
    second_order = recipe.of_type(OBSPruning)
    if second_order:
        assert isinstance(second_order[0], OBSPruning)
        mode = second_order[0].MODE
        raise ValueError(f"pruning: mode {mode!r} (second-order, block Fisher inverses) is "
                         "not supported on DTensor (FSDP2) weights; use True, 'movement', "
                         "'acdc', 'rigl' or 'set'")


def check_row_views(names: Iterable[str], weights: Mapping[str, torch.Tensor], why: str,
                    arg: str = "model") -> None:
    """``ValueError`` unless each ``Shard(0)`` weight of ``names`` splits its rows evenly.

    Block and N:M masks see a conv weight ``(O, I, *k)`` as its channels-last
    matrix ``(O * prod(k), I)``; a DTensor keeps that view sharded by rows only
    when ``O`` is a multiple of the mesh size (``why``: the mask type asking).
    """
    for name in names:
        w: Any = weights[name]
        if is_dtensor(w) and w.placements[0].is_shard() and w.shape[0] % w.device_mesh.size():
            raise ValueError(
                f"{arg} parameter {short_repr(name)}: {why} views this conv weight as a "
                f"channels-last matrix, which a DTensor can shard only when its "
                f"{w.shape[0]} output channels are a multiple of the {w.device_mesh.size()} "
                "ranks; use a mesh size that divides them, or mask_type='unstructured'")


def same_placement(value: torch.Tensor, like: torch.Tensor) -> bool:
    """Whether ``value`` is placed as ``like``: both plain tensors, or DTensors on the same
    mesh with the same placements and the same local shape."""
    if is_dtensor(value) != is_dtensor(like):
        return False
    if not is_dtensor(like):
        return True
    v: Any = value
    w: Any = like
    return bool(v.device_mesh == w.device_mesh and tuple(v.placements) == tuple(w.placements)
                and v.to_local().shape == w.to_local().shape)


def _count(mask: torch.Tensor) -> int:
    """True elements of a plain bool mask: 8 per int64 word when it is large and contiguous
    (several times faster on CPU than ``count_nonzero``)."""
    if mask.dtype == torch.bool and mask.numel() >= 1 << 16 and mask.is_contiguous():
        return count_true(mask)
    return int(mask.count_nonzero())


def kept_counts(masks: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """``name -> number of True elements`` of each whole mask (DTensors: all ranks' shards).

    Sharded masks are counted locally and summed with one ``all_reduce`` per
    process group (``len(masks)`` int64 values); replicated and plain masks are
    counted as they are. A collective when some mask is sharded: call it on
    every rank.
    """
    out: dict[str, int] = {}
    groups: dict[Any, list[str]] = {}
    for name, m in masks.items():
        if is_dtensor(m) and any(p.is_shard() for p in m.placements):  # type: ignore[attr-defined]
            groups.setdefault(m.device_mesh.get_group(), []).append(name)  # type: ignore[attr-defined]
        else:
            out[name] = _count(local(m))
    if groups:
        import torch.distributed as dist

        for group, names in groups.items():
            counts = torch.stack([local(masks[n]).count_nonzero() for n in names]).to(torch.int64)
            dist.all_reduce(counts, group=group)
            out.update(zip(names, counts.tolist()))
    return {n: out[n] for n in masks}


def agree(error: Exception | None, group: Any, device: torch.device | None = None) -> None:
    """Raise on every rank of ``group`` when some rank met ``error`` (``None``: no group).

    The rank that met it re-raises its own error; the others raise ``ValueError``
    saying another rank refused. A collective (one int64 ``all_reduce``) when
    ``group`` is not ``None``, on ``device`` (the weights' device; CPU by default).
    """
    if group is None:
        if error is not None:
            raise error
        return
    import torch.distributed as dist

    flag = torch.tensor([int(error is not None)], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    if error is not None:
        raise error
    if int(flag):
        raise ValueError("state_dict was refused on another rank (see that rank's error); "
                         "nothing was changed")
