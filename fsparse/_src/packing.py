"""Bit-packed masks: 8 mask elements per byte, for state dicts and files.

Bit ``i`` of byte ``j`` holds element ``8 * j + i`` of the flattened mask
(``numpy.packbits(..., bitorder="little")`` order).
"""

from __future__ import annotations

import math

import torch

__all__ = ["pack_mask", "unpack_mask"]


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A 1-D ``uint8`` tensor of ``ceil(mask.numel() / 8)`` bytes holding ``mask``'s bits.

    >>> pack_mask(torch.tensor([True, False, True]))
    tensor([5], dtype=torch.uint8)
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}")
    flat = mask.reshape(-1)
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
    numel = math.prod(shape)
    if packed.numel() != math.ceil(numel / 8):
        need = math.ceil(numel / 8)
        raise ValueError(f"packed has {packed.numel()} bytes but shape {tuple(shape)} needs {need}")
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed[:, None] >> shifts) & 1
    return bits.reshape(-1)[:numel].bool().reshape(shape)
