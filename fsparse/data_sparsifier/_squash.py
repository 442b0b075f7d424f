"""``squash_mask``'s writes: every entry checked first, then each mask dropped.

With ``leave_parametrized`` the data times its mask goes into the data tensor's own
storage (``mul_`` for a ``FakeSparsity``, so no data-sized temporary); data whose
elements share memory cannot take such a write and is refused before anything changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch.nn.utils import parametrize

from fsparse._src.checks import short_repr
from fsparse.data_sparsifier._container import FakeSparsity

__all__ = ["overlaps", "squash", "squash_names"]


def overlaps(tensor: torch.Tensor) -> bool:
    """Whether two elements of ``tensor`` may share memory (an expanded or as_strided view).

    Conservative: sorted by stride, each dim must step past everything the smaller
    dims reach, which every non-overlapping view made by slicing or permuting does.
    """
    dims = sorted((abs(st), size) for size, st in zip(tensor.shape, tensor.stride()) if size > 1)
    reach = 0
    for stride, size in dims:
        if stride <= reach:
            return True
        reach += (size - 1) * stride
    return False


def squash_names(sp: Any, names: Iterable[str] | None) -> list[str]:
    """``squash_mask``'s ``names`` checked: each known and not squashed (``None``: every
    masked entry of ``sp``), duplicates dropped."""
    if names is None:
        return [n for n in sp.data_groups if not sp._is_squashed(n)]
    if isinstance(names, str):
        raise TypeError(f"names must be a list of names, not the str {short_repr(names)}")
    todo = list(dict.fromkeys(names))
    for name in todo:
        sp._known(name)
    squashed = [n for n in todo if sp._is_squashed(n)]
    if squashed:
        raise ValueError(f"mask already squashed for {short_repr(squashed)}")
    return todo


def squash(sp: Any, names: Sequence[str], leave_parametrized: bool) -> None:
    """Drop the parametrizations of ``names`` (known, not squashed) from ``sp``."""
    if leave_parametrized:
        for name in names:
            original = sp.get_data(name)
            if overlaps(original):
                raise ValueError(
                    f"data {name!r} has elements that share memory (stride "
                    f"{original.stride()}, e.g. an expanded view): squash_mask cannot "
                    "write into it; pass leave_parametrized=False or add a clone"
                )
            if isinstance(sp._holder(name), FakeSparsity):
                sp._sync_mask(name)
    for name in names:
        _squash_one(sp._container, name, leave_parametrized)


def _squash_one(container: Any, name: str, leave_parametrized: bool) -> None:
    chain = getattr(container.parametrizations, name)
    holder = chain[0]
    if not leave_parametrized or not isinstance(holder, FakeSparsity) or len(chain) != 1:
        with torch.no_grad():
            sparse = getattr(container, name) if leave_parametrized else None
        parametrize.remove_parametrizations(container, name, leave_parametrized=False)
        if sparse is not None:
            with torch.no_grad():
                getattr(container, name).copy_(sparse)
        return
    mask = None if holder.pending else holder._buffers["mask"]
    parametrize.remove_parametrizations(container, name, leave_parametrized=False)
    if mask is not None:  # an unmade mask is all ones: the data stays as it is
        with torch.no_grad():
            getattr(container, name).mul_(mask)
