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

from fsparse._src.checks import check_instance, check_shape, check_tensor, short_repr
from fsparse._src.entry import Entry, check_mask_fits
from fsparse._src.state import SparsifierState

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
    check_tensor(mask, "mask", dtypes=(torch.bool,))
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
    check_tensor(packed, "packed", dtypes=(torch.uint8,))
    if packed.dim() != 1:
        raise TypeError(f"packed must be a 1-D uint8 tensor from pack_mask, got {packed.dim()}-D")
    shape = check_shape(shape, "shape")
    numel = math.prod(shape)
    needed = -(-numel // 8)
    if packed.numel() != needed:
        raise ValueError(
            f"packed has {packed.numel()} bytes but shape {short_repr(shape)} needs {needed}"
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
    check_instance(state, SparsifierState, "state")
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
    whose shape differs from its entry's data, ``TypeError`` for a shape that is
    not integers (a float shape is refused, not truncated). ``state`` is left
    unchanged. Linear in the entries.
    """
    check_instance(state, SparsifierState, "state")
    check_instance(packed, Mapping, "packed")
    entries = dict(state.entries.items())
    for name, item in packed.items():
        entry = state[name]
        what = f"packed[{short_repr(name)}]"
        if not isinstance(item, Mapping) or set(item) != {"bits", "shape"}:
            raise ValueError(f"{what} must be a mapping with keys 'bits' and 'shape'")
        shape = check_shape(item["shape"], f"{what}['shape']")
        if shape != tuple(entry.data.shape):
            raise ValueError(
                f"packed mask for {short_repr(name)} has shape {short_repr(shape)} but the data "
                f"has shape {tuple(entry.data.shape)}"
            )
        mask = unpack_mask(check_tensor(item["bits"], f"{what}['bits']", dtypes=(torch.uint8,)),
                           shape).to(entry.data.device)
        check_mask_fits(mask, entry.data, f"{what} mask")
        entries[name] = Entry._trusted(entry.data, mask, entry.config)
    return SparsifierState._own(entries, state.defaults)
