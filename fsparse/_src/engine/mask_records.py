"""What the engine has shown about masks it wrote, kept while the masks stay as they were.

Two facts cost a pass over masks to find, and the engine often knows them already:

* **within:** ``new`` is on only where ``old`` is. Whoever restarts the weights an
  update brought back (``fsparse.pruners``' revival checks, ``fsparse.create``'s
  optimizer resets) otherwise searches ``new & ~old`` over both masks (resnet18:
  ~0.7 ms of a ~7 ms global update). The native pass keeps nothing where a piece's
  ``keep`` is off, and movement's pass counts the weights it keeps where ``live`` is
  off: :func:`record_within` notes it, :func:`within` answers without the search.
* **kept:** how many places a group of masks keeps in all. The native selection writes
  exactly ``n - k`` keep flags over its pieces; the next update of a gradual pruner
  reads those masks as its pruned places and would count them (a 64M-flag mask: ~2.5 ms).
  :func:`record_kept` notes it, :func:`kept` gives it back for the same group.

A record holds weak references to the masks' storages, with their version counters.
It says nothing once a storage is freed or a mask is written in place (a write
through any view bumps the counter the views share), and it is matched on the exact
memory (the same storage object, data pointer and element count), so another tensor
at a reused address does not match it. Writes that bypass the version counter (through
``.data``, a NumPy view or a raw pointer) are not seen: a state's masks are immutable,
and the engine writes only its fresh outputs, before it records them.

>>> old, new = torch.tensor([True, True, False]), torch.tensor([True, False, False])
>>> record_within(new, old); within(new, old)
True
>>> record_kept([new, old], 3); kept([new, old]), kept([old])
(3, None)
>>> _ = new.fill_(True); within(new, old), kept([new, old])  # written: nothing is known
(False, None)
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch

__all__ = ["kept", "record_kept", "record_within", "within"]

_wrapped = torch._C._functorch.is_functorch_wrapped_tensor  # traced by torch.func
# one mask's memory: (its storage, data pointer, element count, version when recorded)
_Mask = tuple["weakref.ref[torch.UntypedStorage]", int, int, int]
_WITHIN: dict[tuple[int, int], tuple[_Mask, _Mask]] = {}  # new's (address, numel) -> record
_KEPT: dict[tuple[tuple[int, int], ...], tuple[tuple[_Mask, ...], int]] = {}


def _version(t: torch.Tensor) -> int | None:
    try:
        return int(t._version)
    except RuntimeError:  # inference tensors keep no version counter
        return None


def _plain(t: torch.Tensor) -> bool:
    """A contiguous plain CPU tensor with memory of its own: not a subclass (the fake
    tensors of ``torch.compile``), not wrapped by ``torch.func`` (no data pointer)."""
    return (type(t) is torch.Tensor and not _wrapped(t) and t.device.type == "cpu"
            and t.is_contiguous())


def _mask(t: torch.Tensor, forget: Callable[[object], None] | None = None) -> _Mask | None:
    """The record of the :func:`_plain` ``t`` (``None`` without a version counter)."""
    version = _version(t)
    if version is None:
        return None
    return weakref.ref(t.untyped_storage(), forget), t.data_ptr(), t.numel(), version


def _same(t: torch.Tensor, mask: _Mask) -> bool:
    """Whether the :func:`_plain` ``t`` is the memory ``mask`` records, as it was."""
    store, address, numel, version = mask
    return (store() is t.untyped_storage() and t.data_ptr() == address
            and t.numel() == numel and _version(t) == version)


def record_within(new: torch.Tensor, old: torch.Tensor) -> None:
    """Note that ``new`` is on only where ``old`` is on (both bool, the same element
    count; plain contiguous CPU tensors with version counters, else nothing is noted)."""
    if not (_plain(new) and _plain(old) and new.numel() == old.numel()):
        return
    key = (new.data_ptr(), new.numel())

    def forget(_: object, key: tuple[int, int] = key) -> None:
        _WITHIN.pop(key, None)

    inner, outer = _mask(new, forget), _mask(old)
    if inner is not None and outer is not None:
        _WITHIN[key] = (inner, outer)


def within(new: torch.Tensor, old: torch.Tensor) -> bool:
    """Whether a :func:`record_within` still shows that ``new`` is on only where ``old``
    is (views of the recorded masks' memory match; ``False``: not known, not "no")."""
    if not (_plain(new) and _plain(old)):
        return False
    entry = _WITHIN.get((new.data_ptr(), new.numel()))
    return entry is not None and _same(new, entry[0]) and _same(old, entry[1])


def record_kept(masks: Sequence[torch.Tensor], count: int) -> None:
    """Note that ``masks`` keep ``count`` places in all (as :func:`within`, or nothing)."""
    if not all(_plain(m) for m in masks):
        return
    key = tuple((m.data_ptr(), m.numel()) for m in masks)

    def forget(_: object, key: tuple[tuple[int, int], ...] = key) -> None:
        _KEPT.pop(key, None)

    found = [_mask(m, forget) for m in masks]
    if masks and all(f is not None for f in found):
        _KEPT[key] = (tuple(f for f in found if f is not None), count)


def kept(masks: Sequence[torch.Tensor]) -> int | None:
    """How many places ``masks`` keep in all, if :func:`record_kept` noted exactly this
    group (in this order) and it is as it was; else ``None``."""
    if not all(_plain(m) for m in masks):
        return None
    entry = _KEPT.get(tuple((m.data_ptr(), m.numel()) for m in masks))
    if entry is None or not all(_same(m, r) for m, r in zip(masks, entry[0])):
        return None
    return entry[1]
