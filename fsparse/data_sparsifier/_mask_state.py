"""torch.ao's ``sparsifier.state`` view, whose default masks are made when first read.

torch.ao gives every new entry a ``torch.ones_like(data)`` float mask: a full copy
of the data that nothing reads until a step replaces it. :class:`MaskState` keeps
such a mask *pending* instead: ``state[name]``, ``state.get``, ``items()``,
``values()``, ``dict(state)``, copies and pickles all make it first, so every
reader sees torch.ao's float-ones tensor (the same object as the parametrization's
``mask``). A step that replaces a pending mask never makes it.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from fsparse.data_sparsifier._container import FakeSparsity

__all__ = ["MaskState", "PendingOnes", "register"]


class PendingOnes:
    """Makes one entry's torch.ao float-ones mask on first read (by the view or the holder).

    The mask goes into the parametrization ``holder`` and into the sparsifier's
    ``state`` view in use at that moment. Weak references keep it out of reference
    cycles, so that dropped entries are freed without the cyclic GC.
    """

    __slots__ = ("_holder", "_owner", "name", "weight")

    def __init__(self, owner: Any, name: str, weight: torch.Tensor, holder: nn.Module) -> None:
        self._owner = weakref.ref(owner)
        self._holder = weakref.ref(holder)
        self.name = name
        self.weight = weight

    def __call__(self) -> torch.Tensor:
        made = torch.ones_like(self.weight)
        holder = self._holder()
        if holder is not None:
            holder.set_mask(made)  # type: ignore[operator]
        owner = self._owner()
        live = getattr(owner, "state", None)  # the view in use when the mask is first read
        if isinstance(live, MaskState) and live.pending.get(self.name) is self:
            del live.pending[self.name]
            live.raw(self.name)["mask"] = made
        return made


class MaskState(defaultdict):  # type: ignore[type-arg]
    """``name -> {"mask": tensor, ...}`` with pending (not yet made) float-ones masks.

    ``pending[name]`` makes the mask of ``name``, stores it here and in the
    parametrization, and returns it. Internal code reads the raw dict with
    :meth:`raw` and :meth:`raw_mask` (which never makes a pending mask).
    """

    def __init__(self) -> None:
        super().__init__(dict)
        self.pending: dict[str, Callable[[], torch.Tensor]] = {}

    # -- internal access (no mask is made) ------------------------------------------------
    def raw(self, name: str) -> dict[str, Any]:
        """The entry dict of ``name`` as stored (a pending mask is absent)."""
        return dict.__getitem__(self, name)  # type: ignore[no-any-return]

    def raw_mask(self, name: str) -> torch.Tensor | None:
        """The mask of ``name``, or ``None`` while it is pending."""
        return None if name in self.pending else self.raw(name).get("mask")

    def _make(self, name: object) -> None:
        make = self.pending.get(name) if isinstance(name, str) else None
        if make is not None:
            make()

    def _make_all(self) -> None:
        for name in list(self.pending):
            self._make(name)

    # -- the dict API: every reader sees the made mask ------------------------------------
    def __getitem__(self, name: Any) -> dict[str, Any]:
        self._make(name)
        return super().__getitem__(name)  # type: ignore[no-any-return]

    def get(self, name: Any, default: Any = None) -> Any:
        self._make(name)
        return super().get(name, default)

    def setdefault(self, name: Any, default: Any = None) -> Any:
        self._make(name)
        return super().setdefault(name, default)

    def pop(self, name: Any, *default: Any) -> Any:
        self._make(name)
        return super().pop(name, *default)

    def popitem(self) -> tuple[Any, Any]:
        self._make_all()
        return super().popitem()

    def __setitem__(self, name: Any, value: Any) -> None:
        self.pending.pop(name, None)  # a replaced entry dict drops its pending mask
        super().__setitem__(name, value)

    def __delitem__(self, name: Any) -> None:
        self.pending.pop(name, None)
        super().__delitem__(name)

    def clear(self) -> None:
        self.pending.clear()
        super().clear()

    def items(self) -> Any:
        self._make_all()
        return super().items()

    def values(self) -> Any:
        self._make_all()
        return super().values()

    def __iter__(self) -> Iterator[Any]:
        # Overriding __iter__ makes dict(state) and {**state} go through __getitem__.
        return super().__iter__()

    def __eq__(self, other: object) -> bool:
        self._make_all()
        if isinstance(other, MaskState):
            other._make_all()
        return super().__eq__(other)  # type: ignore[no-any-return]

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._make_all()
        return super().__repr__()

    def copy(self) -> defaultdict[str, dict[str, Any]]:  # type: ignore[override]
        """A plain ``defaultdict`` copy (masks made)."""
        return defaultdict(dict, self.items())

    __copy__ = copy  # type: ignore[assignment]

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Copies and pickles are plain defaultdicts holding the made masks.
        return (defaultdict, (dict,), None, None, iter(self.items()))


def register(owner: Any, container: nn.Module, state: MaskState, name: str,
             weight: torch.Tensor, mask: torch.Tensor | None, param_class: Any) -> None:
    """Register ``weight`` in ``container`` with its parametrization and its ``state``
    entry; ``mask=None``: a pending float-ones mask, made for ``owner`` when first read."""
    container.register_buffer(name, weight)
    holder = FakeSparsity(mask) if param_class is FakeSparsity else param_class(mask)
    if mask is not None:
        parametrize.register_parametrization(container, name, holder)
        state[name]["mask"] = mask
        return
    make = PendingOnes(owner, name, weight, holder)
    holder._first_read = make
    parametrize.register_parametrization(container, name, holder)
    state[name]  # the entry dict, without its mask yet
    state.pending[name] = make
