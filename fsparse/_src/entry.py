"""One named tensor (:class:`Entry`) and the read-only mapping of them (:class:`Entries`).

Both are pytree nodes (optree and ``torch.utils._pytree``): an entry's data and
mask are leaves, its config is static metadata; a mapping's names are metadata.
An entry checks its parts only when they are real tensors, so pytree rebuilds
under ``torch.func`` transforms and ``torch.compile`` (wrapped or fake leaves)
and with non-tensor leaves still work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import optree
import optree.dataclasses
import optree.registry
import torch
import torch.utils._pytree as torch_pytree
from torch import nn

from fsparse._src.checks import FLOAT_DTYPES, check_instance, check_tensor, short_repr
from fsparse._src.config import SparsityConfig, validate_name
from fsparse._src.readonly import ReadOnlyMapping, register_mapping_node

__all__ = ["Entries", "Entry", "check_mask", "check_mask_fits"]

# Dtypes a given mask may have (converted with ``!= 0``); complex is refused.
_MASK_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                *FLOAT_DTYPES)


def _checkable(*leaves: object) -> bool:
    """Whether the leaves are real tensors to validate (not wrapped by a transform)."""
    return (
        all(type(x) in (torch.Tensor, nn.Parameter) for x in leaves)
        and not any(
            torch._C._functorch.is_functorch_wrapped_tensor(x)  # type: ignore[arg-type]
            for x in leaves
        )
        and not torch.compiler.is_compiling()
    )


# optree's dataclass wraps the stdlib one; mypy only knows the stdlib signature.
@optree.dataclasses.dataclass(namespace="", frozen=True)  # type: ignore[call-overload]
class Entry:
    """One named tensor: its data (by reference), bool mask, and static config.

    When both leaves are real tensors (not inside a ``torch.func`` transform or
    ``torch.compile``), the data must be a dense floating-point tensor on a real
    device and the mask a bool tensor of its shape and device.
    """

    data: torch.Tensor
    mask: torch.Tensor
    config: SparsityConfig = optree.dataclasses.field(pytree_node=False)  # type: ignore[call-overload]

    def __post_init__(self) -> None:
        check_instance(self.config, SparsityConfig, "Entry.config")
        if not _checkable(self.data, self.mask):
            return
        check_tensor(self.data, "Entry.data")
        check_tensor(self.mask, "Entry.mask", dtypes=(torch.bool,))
        check_mask_fits(self.mask, self.data, "Entry.mask")

    @classmethod
    def _trusted(cls, data: torch.Tensor, mask: torch.Tensor, config: SparsityConfig) -> Entry:
        """An entry from parts already checked (the hot paths build many)."""
        entry = object.__new__(cls)
        object.__setattr__(entry, "data", data)
        object.__setattr__(entry, "mask", mask)
        object.__setattr__(entry, "config", config)
        return entry


class Entries(ReadOnlyMapping[Entry]):
    """A read-only name -> :class:`Entry` mapping, in insertion order.

    Built from any mapping (copied, names and values checked); a pytree node.
    """

    __slots__ = ()

    def __init__(self, entries: Mapping[str, Entry] | None = None) -> None:
        items = {} if entries is None else check_instance(entries, Mapping, "entries")
        copied: dict[str, Entry] = {}
        for name, entry in items.items():
            validate_name(name)
            copied[name] = check_instance(entry, Entry, f"entries[{short_repr(name)}]")
        object.__setattr__(self, "_items", copied)


def _entry_unflatten(leaves: Iterable[Any], config: SparsityConfig) -> Entry:
    data, mask = leaves
    return Entry(data, mask, config)


register_mapping_node(Entries, "fsparse.Entries")
torch_pytree.register_pytree_node(
    Entry,
    lambda e: ([e.data, e.mask], e.config),
    _entry_unflatten,
    serialized_type_name="fsparse.Entry",
)


def check_mask_fits(mask: torch.Tensor, data: torch.Tensor, what: str) -> None:
    if mask.shape != data.shape:
        raise ValueError(
            f"{what} has shape {tuple(mask.shape)} but the data has shape {tuple(data.shape)}"
        )
    if mask.device != data.device:
        raise ValueError(f"{what} is on {mask.device} but the data is on {data.device}")


def check_mask(value: object, data: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(value).__name__}")
    mask = check_tensor(value, what, dtypes=_MASK_DTYPES) if _checkable(data) else value
    check_mask_fits(mask, data, what)
    return mask if mask.dtype == torch.bool else mask != 0
