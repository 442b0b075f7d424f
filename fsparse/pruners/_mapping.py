"""The pruner state's read-only mappings: :class:`fsparse._src.readonly.ReadOnlyMapping`
with ``named_parameters``-style names (dots allowed), hashable for static metadata."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from fsparse._src.checks import check_instance, short_repr
from fsparse._src.readonly import ReadOnlyMapping, register_mapping_node

__all__ = ["ReadOnlyDict", "check_name"]

V = TypeVar("V")


def check_name(name: object, arg: str) -> str:
    """``name`` if it is a non-empty ``str`` (dots allowed: ``named_parameters`` names)."""
    if not isinstance(name, str):
        raise TypeError(f"{arg} names must be str, got {type(name).__name__} {short_repr(name)}")
    if not name:
        raise ValueError(f"{arg} names must be non-empty strings, got ''")
    return name


class ReadOnlyDict(ReadOnlyMapping[V]):
    """An immutable mapping with non-empty ``str`` keys (dots allowed), in insertion order."""

    __slots__ = ()

    def __init__(self, items: Mapping[str, V] | None = None, arg: str = "mapping") -> None:
        source = {} if items is None else check_instance(items, Mapping, arg)
        object.__setattr__(self, "_items", {check_name(k, arg): v for k, v in source.items()})

    def __hash__(self) -> int:  # only hashable when the values are (static metadata)
        return hash(tuple(self._items.items()))


register_mapping_node(ReadOnlyDict, "fsparse.pruners.ReadOnlyDict")
