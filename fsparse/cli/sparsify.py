"""Norm-block sparsify checkpoint tensors via the functional core (``fsparse sparsify``'s
work; its command line is :mod:`fsparse.cli.sparsify_command`)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fsparse._src.config import SparsityConfig
from fsparse._src.engine.norm_mask import config_norm_mask
from fsparse._src.packing import pack_mask
from fsparse._src.state import add, init, sparsity, squash
from fsparse.cli import checkpoint_io as io
from fsparse.cli.console import progress_bar
from fsparse.cli.selection import Selection, select
from fsparse.cli.tied_weights import tie_selection

__all__ = ["SparsifyResult", "TensorReport", "bitmap_bytes", "sparsify_checkpoint",
           "sparsify_loaded", "sparsify_tensor"]


@dataclasses.dataclass(frozen=True)
class TensorReport:
    """One sparsified tensor: target and mask sparsity, the zeros written, and its size
    dense and in a compact (bitmap) form."""

    name: str
    shape: tuple[int, ...]
    target: float
    achieved: float  # the mask's sparsity
    zeros: float  # fraction of exact zeros in the tensor written (zeros already there count)
    dense_bytes: int
    compressed_bytes: int  # a 1-bit mask plus the nonzero values, or dense if smaller


@dataclasses.dataclass(frozen=True)
class SparsifyResult:
    """What :func:`sparsify_checkpoint` did."""

    tensors: tuple[TensorReport, ...]
    passed_through: tuple[str, ...]
    dropped: tuple[str, ...]
    format: str
    total_dense_bytes: int
    total_compressed_bytes: int
    below_2d: tuple[str, ...] = ()  # matched by a glob, left dense by the 2+ dims rule
    sparse_layout: tuple[str, ...] = ()  # sparse COO/CSR/... tensors: passed through untouched
    tied: tuple[tuple[str, str], ...] = ()  # (alias, name): one tensor, sparsified once


def _dense_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def bitmap_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor`` stored as a 1-bit mask plus its nonzero values (or dense, if smaller).

    >>> bitmap_bytes(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    5
    """
    nonzero = int(tensor.count_nonzero()) if tensor.is_floating_point() else 0
    return _bitmap_bytes(tensor, nonzero)


def _bitmap_bytes(tensor: torch.Tensor, nonzero: int) -> int:
    dense = _dense_bytes(tensor)
    if not tensor.is_floating_point():
        return dense
    return min(dense, math.ceil(tensor.numel() / 8) + nonzero * tensor.element_size())


def sparsify_tensor(
    tensor: torch.Tensor, config: SparsityConfig
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(sparsified tensor, bool mask, achieved sparsity)`` via the functional core.

    A bad tensor or config raises the core's ``ValueError``/``TypeError``, whose
    message the caller prefixes with the tensor's name.
    """
    mask = config_norm_mask(tensor.detach(), config)
    state = add(init(defaults=config), "t", tensor, mask=mask)
    return squash(state)["t"], mask, sparsity(state)["t"]


def _config_record(config: SparsityConfig) -> dict[str, Any]:
    return {
        "sparsity_level": config.sparsity_level,
        "sparse_block_shape": list(config.sparse_block_shape),
        "zeros_per_block": config.zeros_per_block,
        "norm": config.norm,
    }


def sparsify_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    base: SparsityConfig,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    per_tensor: Sequence[tuple[str, Mapping[str, Any]]] = (),
    fmt: str | None = None,
    packed_masks: bool = False,
    show_progress: bool = False,
    allow_1d: bool = False,
    masks_file: str | os.PathLike[str] | None = None,
) -> SparsifyResult:
    """Sparsify ``src`` into ``dst`` (written atomically); ``src`` is only read.

    ``fmt`` defaults to ``"safetensors"`` for a ``.safetensors`` ``dst``, else ``"pt"``.
    A directory ``src`` is a sharded checkpoint (see :mod:`fsparse.cli.sharded`).
    ``masks_file`` also writes the packed masks to a file of their own.
    Bad input raises ``ValueError`` (or :class:`~fsparse.cli.checkpoint_io.CheckpointError`).
    """
    dst = Path(dst)

    def choose(tensors: Mapping[str, torch.Tensor]) -> Selection:
        return select(tensors, base, include, exclude, per_tensor, allow_1d=allow_1d)

    if Path(src).is_dir():
        from fsparse.cli.sharded import sparsify_directory

        return sparsify_directory(
            Path(src),
            dst,
            choose,
            sparsify_loaded,
            fmt=fmt,
            packed_masks=packed_masks,
            masks_file=masks_file,
            show_progress=show_progress,
        )
    fmt = fmt or ("safetensors" if dst.suffix == ".safetensors" else "pt")
    ckpt = io.load_checkpoint(src, progress=show_progress)
    return sparsify_loaded(
        ckpt,
        choose(io.selectable(ckpt)),
        dst,
        fmt,
        packed_masks=packed_masks,
        show_progress=show_progress,
        masks_file=masks_file,
    )


def sparsify_loaded(
    ckpt: io.Checkpoint,
    selection: Selection,
    dst: Path,
    fmt: str,
    *,
    packed_masks: bool = False,
    show_progress: bool = False,
    masks_file: str | os.PathLike[str] | None = None,
    masks_out: dict[str, tuple[torch.Tensor, tuple[int, ...]]] | None = None,
) -> SparsifyResult:
    """Sparsify the loaded ``ckpt`` by ``selection`` and write ``dst`` as ``fmt``.

    Tied names (shared storage) are sparsified once and must agree. The packed
    masks go to ``masks_file`` (written with ``dst``, all or nothing), or into
    ``masks_out`` (name -> (packed, shape)) for a caller that writes them.
    """
    configs, tied = tie_selection(ckpt.state_dict, selection.configs)
    selection = dataclasses.replace(selection, configs=configs)
    keep_masks = packed_masks or masks_file is not None or masks_out is not None
    out: dict[str, Any] = {  # old masks of re-sparsified tensors are stale: drop them
        k: v
        for k, v in ckpt.state_dict.items()
        if not (k.endswith(io.MASK_SUFFIX) and k[: -len(io.MASK_SUFFIX)] in selection.configs)
    }
    packed: dict[str, torch.Tensor] = {}  # --packed-masks: 1 bit per element, not a bool byte
    reports: dict[str, TensorReport] = {}
    # between the load and write bars, in bytes like them: one tensor can hold most of them
    with progress_bar(disable=not show_progress, in_bytes=True) as bar:
        total = sum(_dense_bytes(ckpt.state_dict[name]) for name in selection.configs)
        task = bar.add_task("sparsifying", total=max(total, 1))
        for name, config in selection.configs.items():
            bar.update(task, description=f"sparsifying {name}")
            tensor = ckpt.state_dict[name]
            try:
                out[name], mask, achieved = sparsify_tensor(tensor, config)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{name}: {err}") from err
            if keep_masks:
                packed[name] = pack_mask(mask)
            nonzero = int(out[name].count_nonzero())  # one pass: zeros written and bitmap size
            reports[name] = TensorReport(
                name=name,
                shape=tuple(tensor.shape),
                target=config.sparsity_level,
                achieved=achieved,
                zeros=1.0 - nonzero / max(tensor.numel(), 1),
                dense_bytes=_dense_bytes(tensor),
                compressed_bytes=_bitmap_bytes(out[name], nonzero),
            )
            bar.advance(task, reports[name].dense_bytes)
    # The totals count the weights written, not masks (the bitmap size already holds
    # one); the sparsified tensors reuse their rows' figures instead of a second pass.
    rows = tuple(reports.values())
    passed_through = tuple(k for k in selection.passed_through if k in out)  # not stale masks
    passed = [
        v
        for k, v in out.items()
        if isinstance(v, torch.Tensor)
        and v.layout == torch.strided
        and k not in reports
        and k not in tied.aliases
        and not k.endswith(io.MASK_SUFFIX)
    ]
    tied.retie(out)
    if packed_masks:
        out = io.with_packed_masks(out, packed)
    out = io.like_state_dict(out, ckpt.state_dict)
    records = {name: _config_record(cfg) for name, cfg in selection.configs.items()}
    shapes = {name: reports[name].shape for name in packed}
    if masks_out is not None:
        masks_out.update({name: (packed[name], shapes[name]) for name in packed})
    extra = {}
    if masks_file is not None:
        extra[Path(masks_file)] = io.masks_file_object(Path(masks_file), packed, shapes)
    dropped = io.save_checkpoint(
        dst,
        out,
        fmt,
        like=ckpt,
        metadata=io.metadata_json(records),
        extra=extra,
        progress=show_progress,
    )
    return SparsifyResult(
        rows,
        passed_through,
        tuple(dropped),
        fmt,
        sum(r.dense_bytes for r in rows) + sum(_dense_bytes(t) for t in passed),
        sum(r.compressed_bytes for r in rows) + sum(bitmap_bytes(t) for t in passed),
        selection.below_2d,
        ckpt.sparse_layout,
        tuple(tied.aliases.items()),
    )
