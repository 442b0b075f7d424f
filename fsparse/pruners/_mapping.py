"""A read-only ``name -> value`` mapping, a pytree node (optree and torch's pytree).

The pruner state holds its masks, statistics and targets in these, so that
``state.masks["w"] = ...`` raises instead of silently mutating a state that
is meant to be immutable. Names are metadata; values are the children.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import optree
import optree.registry
import torch.utils._pytree as torch_pytree

from fsparse._src.checks import check_instance, short_repr

__all__ = ["ReadOnlyDict", "check_name"]

V = TypeVar("V")


def check_name(name: object, arg: str) -> str:
    """``name`` if it is a non-empty ``str`` (dots allowed: ``named_parameters`` names)."""
    if not isinstance(name, str):
        raise TypeError(f"{arg} names must be str, got {type(name).__name__} {short_repr(name)}")
    if not name:
        raise ValueError(f"{arg} names must be non-empty strings, got ''")
    return name


class ReadOnlyDict(Mapping[str, V]):
    """An immutable mapping with ``str`` keys, in insertion order; equal to any equal mapping."""

    __slots__ = ("_items",)
    _items: dict[str, V]

    def __init__(self, items: Mapping[str, V] | None = None, arg: str = "mapping") -> None:
        source = {} if items is None else check_instance(items, Mapping, arg)
        copied = {check_name(k, arg): v for k, v in source.items()}
        object.__setattr__(self, "_items", copied)

    @classmethod
    def _own(cls, items: dict[str, V]) -> ReadOnlyDict[V]:
        out = object.__new__(cls)
        object.__setattr__(out, "_items", items)
        return out

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("ReadOnlyDict is read-only")

    def __getitem__(self, name: str) -> V:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:
            return False

    def __hash__(self) -> int:  # only hashable when the values are (static metadata)
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return f"ReadOnlyDict({self._items!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReadOnlyDict, (dict(self._items),))


def _unflatten(names: tuple[str, ...], values: Iterable[Any]) -> ReadOnlyDict[Any]:
    return ReadOnlyDict._own(dict(zip(names, values, strict=True)))


optree.register_pytree_node(
    ReadOnlyDict,
    lambda m: (tuple(m.values()), tuple(m), tuple(m)),  # type: ignore[attr-defined]
    _unflatten,  # type: ignore[arg-type]
    namespace=optree.registry.__GLOBAL_NAMESPACE,  # type: ignore[attr-defined]
)
torch_pytree.register_pytree_node(
    ReadOnlyDict,
    lambda m: (list(m.values()), tuple(m)),
    lambda values, names: _unflatten(names, values),
    serialized_type_name="fsparse.pruners.ReadOnlyDict",
    flatten_with_keys_fn=lambda m: ([(torch_pytree.MappingKey(k), v) for k, v in m.items()],
                                    tuple(m)),
)
