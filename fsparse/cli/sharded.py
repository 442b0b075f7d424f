"""Sharded Hugging Face checkpoints: a directory of shards and an index naming them.

``save_pretrained(..., max_shard_size=...)`` writes ``model-00001-of-00002.safetensors``
(or ``pytorch_model-00001-of-00002.bin``) shards, ``model.safetensors.index.json``
(or ``pytorch_model.bin.index.json``) mapping each tensor name to its shard, and
other files (``config.json``, tokenizer files...). :func:`sparsify_directory`
writes a sparsified copy of the whole directory: the selection is made once over
the names of every shard (so a pattern must match in at least one shard, not in
each), the shards are then loaded, sparsified and written one at a time (one
shard in memory), the index is rewritten and the other files are copied. The new
directory is built beside OUT under a temporary name and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from fsparse._src.checks import short_repr
from fsparse.cli import checkpoint_io as io
from fsparse.cli.atomic import atomic_outputs
from fsparse.cli.safetensors_stream import DTYPE_NAMES

__all__ = ["INDEX_NAMES", "ShardIndex", "read_index", "sparsify_directory"]

INDEX_NAMES: tuple[str, ...] = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_NAMES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
_MAX_INDEX_BYTES = 64 << 20
_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}


@dataclasses.dataclass(frozen=True)
class ShardIndex:
    """A sharded checkpoint's index: its file name, metadata, and ``name -> shard file``.

    A directory saved unsharded (one ``model.safetensors``) has no index: ``name`` is
    ``""`` and none is written.
    """

    root: Path
    name: str
    metadata: dict[str, Any]
    weight_map: dict[str, str]

    @property
    def shards(self) -> list[str]:
        """Shard file names, in the order the index first names them."""
        return list(dict.fromkeys(self.weight_map.values()))


def _plain_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and bool(value)
        and "/" not in value
        and "\\" not in value
        and value not in (".", "..")
        and not value.startswith(".")
    )


def read_index(root: Path) -> ShardIndex:
    """Read and check the index of the sharded checkpoint directory ``root`` (untrusted:
    every shard must be a plain file name inside ``root``)."""
    found = [name for name in INDEX_NAMES if (root / name).is_file()]
    single = [name for name in SINGLE_NAMES if (root / name).is_file()]
    if not found and single:
        keys = _placeholders(root / single[0])
        return ShardIndex(root, "", {}, dict.fromkeys(keys, single[0]))
    if not found:
        raise io.CheckpointError(
            f"{root}: not a file, and not a Hugging Face model directory "
            f"(it holds none of {', '.join(INDEX_NAMES + SINGLE_NAMES)})"
        )
    path = root / found[0]
    if path.stat().st_size > _MAX_INDEX_BYTES:
        raise io.CheckpointError(f"{path}: an index over {_MAX_INDEX_BYTES} bytes is refused")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise io.CheckpointError(f"{path}: not valid JSON ({err})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise io.CheckpointError(f"{path}: expected a JSON object with a 'weight_map'")
    for name, shard in weight_map.items():
        if not _plain_name(shard):
            raise io.CheckpointError(
                f"{path}: {short_repr(name)} maps to {short_repr(shard)}, not a file name in {root}"
            )
        if not (root / shard).is_file():
            raise io.CheckpointError(
                f"{path}: shard {short_repr(shard)} (of {short_repr(name)}) is missing"
            )
    metadata = doc.get("metadata")
    return ShardIndex(
        root, found[0], dict(metadata) if isinstance(metadata, dict) else {}, dict(weight_map)
    )


def _placeholders(path: Path) -> dict[str, torch.Tensor]:
    """Meta tensors of the right shape and dtype for every tensor of a shard (no data read
    for safetensors; a memory-mapped load for torch files)."""
    if io.sniff_format(path) == "safetensors":
        from safetensors import safe_open

        out: dict[str, torch.Tensor] = {}
        try:
            with safe_open(str(path), framework="pt") as f:  # type: ignore[no-untyped-call]
                for key in f.keys():
                    piece = f.get_slice(key)
                    dtype = _DTYPES.get(piece.get_dtype(), torch.uint8)
                    out[key] = torch.empty(piece.get_shape(), dtype=dtype, device="meta")
        except Exception as err:  # SafetensorError
            raise io.CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
        return out
    ckpt = io.load_checkpoint(path)
    return {
        k: torch.empty(v.shape, dtype=v.dtype, device="meta")
        for k, v in io.selectable(ckpt).items()
    }


def _restrict(selection: Any, names: set[str]) -> Any:
    """``selection`` (a ``Selection``) with only the entries named in ``names``."""
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(selection):
        value = getattr(selection, field.name)
        if isinstance(value, dict):
            changes[field.name] = {k: v for k, v in value.items() if k in names}
        elif isinstance(value, tuple):
            changes[field.name] = tuple(k for k in value if k in names)
    return dataclasses.replace(selection, **changes)


def _combine(results: list[Any]) -> Any:
    """One result (a ``SparsifyResult``) for all shards: names joined, byte totals summed."""
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(results[0]):
        values = [getattr(r, field.name) for r in results]
        if isinstance(values[0], tuple):
            changes[field.name] = tuple(dict.fromkeys(x for v in values for x in v))
        elif isinstance(values[0], int) and not isinstance(values[0], bool):
            changes[field.name] = sum(values)
    return dataclasses.replace(results[0], **changes)


def _inside(a: Path, b: Path) -> bool:
    a, b = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    return a == b or b in a.parents


def _copy_others(src: Path, dst: Path, skip: set[str]) -> None:
    for entry in sorted(src.iterdir()):
        if entry.name in skip or (entry.name.startswith(".") and ".fsparse-" in entry.name):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dst / entry.name)
        elif entry.is_file():
            shutil.copyfile(entry, dst / entry.name)


def sparsify_directory(
    src: Path,
    dst: Path,
    choose: Callable[[Mapping[str, torch.Tensor]], Any],
    sparsify_one: Callable[..., Any],
    *,
    fmt: str | None = None,
    packed_masks: bool = False,
    masks_file: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> Any:
    """Write a sparsified copy of the sharded checkpoint ``src`` to the directory ``dst``.

    ``choose`` makes the selection from ``{name: tensor}`` and ``sparsify_one``
    (``fsparse.cli.sparsify.sparsify_loaded``) sparsifies and writes one shard.
    """
    index = read_index(src)
    if _inside(dst, src) or _inside(src, dst):
        raise ValueError(f"OUT {dst} and IN {src} must not contain one another")
    if masks_file is not None and _inside(Path(masks_file), dst):
        raise ValueError(
            f"--masks-file {masks_file} must be outside OUT {dst} (it is replaced whole)"
        )
    placeholders: dict[str, torch.Tensor] = {}
    shard_of: dict[str, str] = {}
    for shard in index.shards:
        for name, tensor in _placeholders(src / shard).items():
            if name in shard_of:
                raise io.CheckpointError(
                    f"{src}: {short_repr(name)} is in both {shard_of[name]} and {shard}"
                )
            placeholders[name], shard_of[name] = tensor, shard
    selection = choose(placeholders)
    del placeholders
    results: list[Any] = []
    masks_out: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {}
    weight_map = dict(index.weight_map)
    with atomic_outputs() as tx:
        size = sum((src / s).stat().st_size for s in index.shards)
        tmp = tx.directory(dst, size)
        masks_tmp = tx.file(Path(masks_file), 0) if masks_file is not None else None
        for shard in index.shards:
            names = {n for n, s in shard_of.items() if s == shard}
            sub = _restrict(selection, names)
            if not sub.configs:
                shutil.copyfile(src / shard, tmp / shard)  # nothing to sparsify: the same bytes
                continue
            ckpt = io.load_checkpoint(src / shard, progress=show_progress)
            if fmt is not None and fmt != ckpt.format:
                raise ValueError(f"--format {fmt}: the shards of a directory keep their format")
            results.append(
                sparsify_one(
                    ckpt,
                    sub,
                    tmp / shard,
                    ckpt.format,
                    packed_masks=packed_masks,
                    show_progress=show_progress,
                    masks_out=masks_out,
                )
            )
            del ckpt
            if packed_masks:
                weight_map.update({n + io.MASK_SUFFIX: shard for n in sub.configs})
        added = sum(p.numel() for p, _ in masks_out.values()) if packed_masks else 0
        metadata = dict(index.metadata)
        if isinstance(metadata.get("total_size"), int):
            metadata["total_size"] += added
        if index.name:
            text = json.dumps({"metadata": metadata, "weight_map": weight_map}, indent=2)
            (tmp / index.name).write_text(text + "\n", encoding="utf-8")
        _copy_others(src, tmp, {index.name, *index.shards} - {""})
        if masks_tmp is not None and masks_file is not None:
            packed = {n: p for n, (p, _) in masks_out.items()}
            shapes = {n: s for n, (_, s) in masks_out.items()}
            obj, mfmt, header = io.masks_file_object(Path(masks_file), packed, shapes)
            io.write_file(masks_tmp, obj, mfmt, lambda n: None, header)
    result = _combine(results)
    return dataclasses.replace(result, below_2d=selection.below_2d)
