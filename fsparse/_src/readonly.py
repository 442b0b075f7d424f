"""A read-only ``str -> value`` mapping that is a pytree node (optree and torch's pytree).

Immutable states hold their named parts in these, so ``state.entries["w"] = ...``
or ``state.masks["w"] = ...`` raises instead of silently mutating a state that is
meant to be immutable. Names are static metadata; the values are the children.
Subclasses check their names and values in ``__init__`` and register themselves
with :func:`register_mapping_node`.

>>> m = ReadOnlyMapping({"a": 1})
>>> m["a"], list(m), len(m)
(1, ['a'], 1)
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any, TypeVar

import optree
import optree.registry
import torch.utils._pytree as torch_pytree

from fsparse._src.checks import check_instance

__all__ = ["ReadOnlyMapping", "register_mapping_node"]

V = TypeVar("V")
M = TypeVar("M", bound="ReadOnlyMapping[Any]")


class ReadOnlyMapping(Mapping[str, V]):
    """An immutable mapping, in insertion order; equal to any equal mapping."""

    __slots__ = ("_items",)
    _items: dict[str, V]

    def __init__(self, items: Mapping[str, V] | None = None, arg: str = "mapping") -> None:
        source = {} if items is None else check_instance(items, Mapping, arg)
        object.__setattr__(self, "_items", dict(source))

    @classmethod
    def _own(cls: type[M], items: dict[str, Any]) -> M:
        """Wrap ``items`` (checked, and held by nobody else) without a copy."""
        out = object.__new__(cls)
        object.__setattr__(out, "_items", items)
        return out

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __getitem__(self, name: str) -> V:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:  # an unhashable name is simply absent
            return False

    # The dict's own views: faster than Mapping's mixins on hot paths.
    def get(self, name: str, default: Any = None) -> Any:
        return self._items.get(name, default)

    def keys(self) -> KeysView[str]:
        return self._items.keys()

    def values(self) -> ValuesView[V]:
        return self._items.values()

    def items(self) -> ItemsView[str, V]:
        return self._items.items()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self._items),))


def register_mapping_node(cls: type[ReadOnlyMapping[Any]], serialized_name: str) -> None:
    """Register ``cls`` with optree (global namespace) and torch's pytree."""

    def unflatten(names: tuple[str, ...], values: Iterable[Any]) -> ReadOnlyMapping[Any]:
        return cls._own(dict(zip(names, values, strict=True)))

    optree.register_pytree_node(
        cls,
        lambda m: (tuple(m.values()), tuple(m), tuple(m)),  # type: ignore[attr-defined]
        unflatten,  # type: ignore[arg-type]
        namespace=optree.registry.__GLOBAL_NAMESPACE,  # type: ignore[attr-defined]
    )
    torch_pytree.register_pytree_node(
        cls,
        lambda m: (list(m.values()), tuple(m)),
        lambda values, names: unflatten(names, values),
        serialized_type_name=serialized_name,
        flatten_with_keys_fn=lambda m: (
            [(torch_pytree.MappingKey(k), v) for k, v in m.items()],
            tuple(m),
        ),
    )
