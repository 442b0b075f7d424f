"""Masks beside the weights: packed ``NAME.fsparse_mask`` keys, or a masks file of their own.

``fsparse sparsify --packed-masks`` stores each bit-packed mask
(:func:`fsparse.pack_mask` bytes) in the weights file under ``NAME + MASK_SUFFIX``;
:func:`split_masks` takes them out again. Those extra keys make a strict
``load_state_dict`` (and ``from_pretrained``) complain, so ``--masks-file PATH``
writes the same packed masks to a file of their own instead, committed together
with OUT: a ``.safetensors`` file of ``{name: packed bytes}`` whose header records
each mask's shape under :data:`SHAPES_KEY`, or a torch file
``{"state_dict": {name: packed}, SHAPES_KEY: {name: [dims]}}``.
:func:`fsparse.cli.checkpoint_io.load_masks_file` reads either back as bool
masks, checking every size (a file is untrusted).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fsparse._src.checks import short_repr
from fsparse._src.packing import pack_mask, unpack_mask
from fsparse.cli.file_kinds import CheckpointError

__all__ = [
    "MASK_SUFFIX",
    "SHAPES_KEY",
    "masks_file_format",
    "masks_file_object",
    "masks_from_checkpoint",
    "split_masks",
    "with_masks",
    "with_packed_masks",
]

MASK_SUFFIX = ".fsparse_mask"
SHAPES_KEY = "fsparse_mask_shapes"
_MAX_DIMS = 64


def split_masks(
    state_dict: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Take the packed masks out of a state dict: ``(weights, {name: bool mask})``.

    >>> mask = torch.tensor([False, True])
    >>> sd = {"w": torch.tensor([0.0, 2.0]), "w" + MASK_SUFFIX: pack_mask(mask)}
    >>> weights, masks = split_masks(sd)
    >>> list(weights), masks["w"]
    (['w'], tensor([False,  True]))
    """
    weights = {k: v for k, v in state_dict.items() if not k.endswith(MASK_SUFFIX)}
    masks: dict[str, torch.Tensor] = {}
    for key, packed in state_dict.items():
        if not key.endswith(MASK_SUFFIX):
            continue
        name = key[: -len(MASK_SUFFIX)]
        weight = weights.get(name)
        if not isinstance(weight, torch.Tensor):
            raise CheckpointError(
                f"packed mask {short_repr(key)} has no weight named {short_repr(name)} beside it"
            )
        masks[name] = unpack_mask(packed, weight.shape)
    return weights, masks


def with_masks(state_dict: Mapping[str, Any], masks: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``state_dict`` with each mask packed under ``NAME + MASK_SUFFIX``, right after ``NAME``.

    >>> list(with_masks({"w": torch.ones(3), "b": torch.ones(1)}, {"w": torch.ones(3) > 0}))
    ['w', 'w.fsparse_mask', 'b']
    """
    return with_packed_masks(state_dict, {name: pack_mask(m) for name, m in masks.items()})


def with_packed_masks(
    state_dict: Mapping[str, Any], packed: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """:func:`with_masks` for masks already packed by :func:`fsparse.pack_mask`."""
    out: dict[str, Any] = {}
    for name, value in state_dict.items():
        out[name] = value
        if name in packed:
            key = name + MASK_SUFFIX
            if key in state_dict:
                raise CheckpointError(
                    f"cannot store the mask of {short_repr(name)}: {short_repr(key)} already exists"
                )
            out[key] = packed[name]
    return out


def masks_file_format(path: Path) -> str:
    """``"safetensors"`` for a ``.safetensors`` name, else ``"pt"``."""
    return "safetensors" if Path(path).suffix == ".safetensors" else "pt"


def masks_file_object(
    path: Path, packed: Mapping[str, torch.Tensor], shapes: Mapping[str, Sequence[int]]
) -> tuple[Any, str, dict[str, str]]:
    """``(object, format, header metadata)`` to write as the masks file ``path``."""
    dims = {name: [int(d) for d in shapes[name]] for name in packed}
    fmt = masks_file_format(path)
    if fmt == "safetensors":
        return dict(packed), fmt, {"format": "pt", SHAPES_KEY: json.dumps(dims)}
    return {"state_dict": dict(packed), SHAPES_KEY: dims}, fmt, {}


def _shape(value: object, where: str) -> tuple[int, ...]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) > _MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)
    ):
        raise CheckpointError(f"{where}: a mask shape must be a list of non-negative ints")
    return tuple(value)


def masks_from_checkpoint(ckpt: Any, path: Path) -> dict[str, torch.Tensor]:
    """The bool masks held by a loaded masks file ``ckpt`` (a ``Checkpoint``), every size
    checked against its recorded shape."""
    if ckpt.format == "safetensors":
        try:
            raw = json.loads(ckpt.metadata.get(SHAPES_KEY, ""))
        except ValueError:
            raw = None
    else:
        raw = (ckpt.wrapper or {}).get(SHAPES_KEY)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: not an fsparse masks file (no mask shapes recorded)")
    masks: dict[str, torch.Tensor] = {}
    for name, value in ckpt.state_dict.items():
        where = f"{path}: {short_repr(name)}"
        if name not in raw:
            raise CheckpointError(f"{where}: no shape recorded for this mask")
        shape = _shape(raw[name], where)
        if not isinstance(value, torch.Tensor) or math.prod(shape) > 8 * max(value.numel(), 1):
            raise CheckpointError(f"{where}: packed bytes do not match shape {shape}")
        try:
            masks[name] = unpack_mask(value, shape)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{where}: {err}") from None
    return masks
