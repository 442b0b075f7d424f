"""Bit-packed masks: 8 mask elements per byte, for state dicts and files.

Bit ``i`` of byte ``j`` holds element ``8 * j + i`` of the flattened mask
(``numpy.packbits(..., bitorder="little")`` order). Masks stay ``bool`` in
memory; packing is for storage only. A packed state dict holds only tensors,
so ``torch.load(path, weights_only=True)`` reads it back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from fsparse._src.state import SparsifierState, add

__all__ = ["load_masks", "masks_state_dict", "pack_mask", "unpack_mask"]

_np: Any
try:  # numpy packs ~10x faster than the torch fallback below; it is optional
    import numpy as _np
except ImportError:  # pragma: no cover - numpy is there wherever the tests run
    _np = None


def _use_numpy(tensor: torch.Tensor) -> bool:
    return _np is not None and tensor.device.type == "cpu"


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A 1-D ``uint8`` tensor of ``ceil(mask.numel() / 8)`` bytes holding ``mask``'s bits.

    >>> pack_mask(torch.tensor([True, False, True]))
    tensor([5], dtype=torch.uint8)
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}")
    flat = mask.detach().reshape(-1)
    if _use_numpy(flat):
        return torch.from_numpy(_np.packbits(flat.numpy(), bitorder="little"))
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    bits = flat.view(-1, 8).view(torch.uint8)
    packed = bits[:, 0].clone()
    for i in range(1, 8):
        packed |= bits[:, i] << i
    return packed


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: the bool mask of ``shape``.

    >>> unpack_mask(torch.tensor([5], dtype=torch.uint8), (3,))
    tensor([ True, False,  True])
    """
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 1:
        raise TypeError("packed must be a 1-D uint8 tensor from pack_mask")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise ValueError(f"shape must be non-negative ints, got {tuple(shape)}")
    numel = math.prod(shape)
    if packed.numel() != math.ceil(numel / 8):
        raise ValueError(
            f"packed has {packed.numel()} bytes but shape {tuple(shape)} "
            f"needs {math.ceil(numel / 8)}"
        )
    if _use_numpy(packed):
        unpacked = _np.unpackbits(packed.numpy(), count=numel, bitorder="little")
        return torch.from_numpy(unpacked).view(torch.bool).reshape(shape)
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed[:, None] >> shifts) & 1
    return bits.reshape(-1)[:numel].bool().reshape(shape)


def masks_state_dict(state: SparsifierState) -> dict[str, dict[str, torch.Tensor]]:
    """Every entry's mask, bit-packed: ``{name: {"bits": uint8, "shape": int64}}``.

    >>> import fsparse
    >>> state = fsparse.step(fsparse.init({"w": torch.randn(4, 16)}, sparsity_level=0.5))
    >>> packed = masks_state_dict(state)
    >>> packed["w"]["bits"].numel(), packed["w"]["shape"].tolist()
    (8, [4, 16])
    >>> bool(load_masks(state, packed)["w"].mask.equal(state["w"].mask))
    True
    """
    return {
        name: {
            "bits": pack_mask(entry.mask),
            "shape": torch.tensor(entry.mask.shape, dtype=torch.int64),
        }
        for name, entry in state.entries.items()
    }


def load_masks(
    state: SparsifierState, packed: Mapping[str, Mapping[str, torch.Tensor]]
) -> SparsifierState:
    """``state`` with the masks of the named entries replaced by the packed ones.

    Raises ``KeyError`` for a name the state lacks, ``ValueError`` for a mask
    whose shape differs from its entry's data. ``state`` is left unchanged.
    """
    new = state
    for name, item in packed.items():
        entry = state[name]
        if not isinstance(item, Mapping) or set(item) != {"bits", "shape"}:
            raise ValueError(f"packed[{name!r}] must be a mapping with keys 'bits' and 'shape'")
        shape = tuple(int(d) for d in item["shape"].tolist())
        if shape != tuple(entry.data.shape):
            raise ValueError(
                f"packed mask for {name!r} has shape {shape} but the data has shape "
                f"{tuple(entry.data.shape)}"
            )
        new = add(new, name, entry.data, mask=unpack_mask(item["bits"], shape))
    return new
