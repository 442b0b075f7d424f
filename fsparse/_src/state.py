"""Immutable sparsifier state and the pure functions over it.

A :class:`SparsifierState` maps names to :class:`Entry` values (data, bool mask,
config). Tensors are pytree leaves; configs are static metadata. Every function
here returns a new state and never mutates its inputs or their tensors.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import optree
import optree.dataclasses
import optree.registry
import torch
import torch.utils._pytree as torch_pytree
from torch import nn

from fsparse._src.checks import (
    check_bool,
    check_callable,
    check_instance,
    check_tensor,
    short_repr,
)
from fsparse._src.config import MaskFn, SparsityConfig, make_config, validate_name
from fsparse._src.engine.batching import batched_norm_masks
from fsparse._src.engine.dispatch import sharded_kind
from fsparse._src.engine.masked import masked
from fsparse._src.engine.norm_mask import config_norm_mask
from fsparse._src.entry import Entries, Entry, check_mask

__all__ = [
    "EMBEDDING_TYPES",
    "SUPPORTED_TYPES",
    "Entries",
    "Entry",
    "SparsifierState",
    "add",
    "extract_weight",
    "init",
    "remove",
    "sparsified",
    "sparsity",
    "squash",
    "step",
]

EMBEDDING_TYPES: frozenset[type] = frozenset({nn.Embedding, nn.EmbeddingBag})
SUPPORTED_TYPES: frozenset[type] = frozenset({torch.Tensor, nn.Parameter, *EMBEDDING_TYPES})

Data = torch.Tensor | nn.Embedding | nn.EmbeddingBag


@optree.dataclasses.dataclass(namespace="", frozen=True)  # type: ignore[call-overload]
class SparsifierState:
    """Named entries plus the default config that new entries start from.

    ``entries`` is a read-only :class:`Entries` mapping; a plain mapping given
    here is copied into one (its names and values checked).

    >>> state = init({"w": torch.ones(2, 4)}, sparsity_level=0.5)
    >>> state["w"].mask.dtype, state.names
    (torch.bool, ('w',))
    """

    entries: Mapping[str, Entry]
    defaults: SparsityConfig = optree.dataclasses.field(  # type: ignore[call-overload]
        default=SparsityConfig(), pytree_node=False
    )

    def __post_init__(self) -> None:
        if type(self.entries) is not Entries:
            object.__setattr__(self, "entries", Entries(self.entries))
        check_instance(self.defaults, SparsityConfig, "defaults")

    @classmethod
    def _own(cls, items: dict[str, Entry], defaults: SparsityConfig) -> SparsifierState:
        return cls(Entries._own(items), defaults)

    @property
    def names(self) -> tuple[str, ...]:
        """Entry names, in insertion order."""
        return tuple(self.entries)

    def __getitem__(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except (KeyError, TypeError):
            known = short_repr(tuple(itertools.islice(self.entries, 8)))
            raise KeyError(
                f"no data named {short_repr(name)}; {len(self)} known names: {known}"
            ) from None

    def __contains__(self, name: object) -> bool:
        try:
            return name in self.entries
        except TypeError:  # an unhashable name
            return False

    def __len__(self) -> int:
        return len(self.entries)


def _state_unflatten(children: Iterable[Any], defaults: SparsityConfig) -> SparsifierState:
    (entries,) = children
    return SparsifierState(entries, defaults)


torch_pytree.register_pytree_node(
    SparsifierState,
    lambda s: ([s.entries], s.defaults),
    _state_unflatten,
    serialized_type_name="fsparse.SparsifierState",
)


def extract_weight(data: object) -> torch.Tensor:
    """The tensor behind supported data: the tensor itself, or an embedding's weight.

    A ``DTensor`` (``Shard(0)`` or ``Replicate()``: see ``fsparse.distributed``) is
    data too. Raises ``TypeError`` for any other type (subclasses included, as in torch.ao).
    """
    if type(data) in EMBEDDING_TYPES:
        return data.weight  # type: ignore[attr-defined, no-any-return]
    if type(data) in (torch.Tensor, nn.Parameter) or sharded_kind(data):
        return data  # type: ignore[return-value]
    names = sorted(t.__name__ for t in SUPPORTED_TYPES)
    raise TypeError(f"data must be one of {names}, got {type(data).__name__}")


def _check_state(state: object) -> SparsifierState:
    return check_instance(state, SparsifierState, "state")  # type: ignore[no-any-return]


def _weight(data: object, what: str) -> torch.Tensor:
    try:
        weight = extract_weight(data)
    except TypeError as err:
        raise TypeError(f"{what}: {err}") from None
    return check_tensor(weight, what)


def _new_entry(
    old: Entry | None,
    defaults: SparsityConfig,
    name: str,
    data: Data,
    reuse_mask: bool,
    mask: torch.Tensor | None,
    config: dict[str, Any],
) -> Entry:
    """The entry that :func:`add` stores under ``name`` (``old``: the one it replaces)."""
    validate_name(name)
    weight = _weight(data, f"data for {short_repr(name)}")
    check_bool(reuse_mask, "reuse_mask")
    base = old.config if old is not None else defaults
    new_config = make_config(base, **config) if config else base  # make_config(base) == base
    if mask is not None:
        new_mask = check_mask(mask, weight, "mask")
    elif old is not None and reuse_mask:
        if old.data.shape != weight.shape:
            raise ValueError(
                f"reuse_mask=True needs the new data for {short_repr(name)} to have the old shape "
                f"{tuple(old.data.shape)}, got {tuple(weight.shape)}"
            )
        new_mask = old.mask
    else:
        new_mask = torch.ones_like(weight, dtype=torch.bool)
    return Entry._trusted(weight, new_mask, new_config)


def _pairs(data: object) -> Iterable[tuple[Any, Any]]:
    if isinstance(data, Mapping):
        return data.items()
    if isinstance(data, (str, bytes, torch.Tensor)) or not isinstance(data, Iterable):
        raise TypeError(
            "data must be a mapping or an iterable of (name, tensor) pairs, got "
            f"{type(data).__name__} {short_repr(data)}"
        )

    def checked() -> Iterator[tuple[Any, Any]]:
        for i, item in enumerate(data):  # type: ignore[attr-defined]
            if not isinstance(item, tuple) or len(item) != 2:
                raise TypeError(f"data[{i}] must be a (name, tensor) pair, got {short_repr(item)}")
            yield item

    return checked()


def init(
    data: Mapping[str, Data] | Iterable[tuple[str, Data]] = (),
    *,
    defaults: SparsityConfig | None = None,
    **config: Any,
) -> SparsifierState:
    """New state holding ``data`` (name -> tensor) with all-ones masks.

    ``config`` keys (``sparsity_level``, ``sparse_block_shape``, ``zeros_per_block``,
    ``norm``, ``mask_fn`` or any user key) override ``defaults`` for every entry.
    A name given twice is replaced as :func:`add` would. Linear in the entries.

    >>> init([("a", torch.zeros(3))], sparsity_level=0.2)["a"].config.sparsity_level
    0.2
    """
    if defaults is not None:
        check_instance(defaults, SparsityConfig, "defaults")
    base = make_config(defaults, **config)
    entries: dict[str, Entry] = {}
    for name, value in _pairs(data):
        entries[name] = _new_entry(entries.get(name), base, name, value, True, None, {})
    return SparsifierState._own(entries, base)


def add(
    state: SparsifierState,
    name: str,
    data: Data,
    *,
    reuse_mask: bool = True,
    mask: torch.Tensor | None = None,
    **config: Any,
) -> SparsifierState:
    """Add ``data`` under ``name``, or replace the entry of that name.

    A new entry gets ``state.defaults`` updated by ``config``. A replaced entry
    keeps its old config updated by ``config``, and keeps its old mask when
    ``reuse_mask`` (the shapes must then match). An explicit ``mask`` wins.
    """
    _check_state(state)
    old = state.entries.get(name) if isinstance(name, str) else None
    entry = _new_entry(old, state.defaults, name, data, reuse_mask, mask, config)
    entries = dict(state.entries.items())
    entries[name] = entry
    return SparsifierState._own(entries, state.defaults)


def remove(state: SparsifierState, name: str) -> SparsifierState:
    """State without the entry ``name`` (``KeyError`` if absent)."""
    _check_state(state)
    validate_name(name)
    state[name]  # raises a KeyError naming the known names
    entries = {k: v for k, v in state.entries.items() if k != name}
    return SparsifierState._own(entries, state.defaults)


def _mask_for(entry: Entry, name: str, mask_fn: MaskFn | None) -> torch.Tensor:
    fn = mask_fn if mask_fn is not None else (entry.config.mask_fn or config_norm_mask)
    try:
        mask = fn(entry.data.detach(), entry.config)
    except ValueError as err:
        raise ValueError(f"{short_repr(name)}: {err}") from err
    return check_mask(mask, entry.data, f"mask_fn result for {short_repr(name)}")


def step(state: SparsifierState, mask_fn: MaskFn | None = None) -> SparsifierState:
    """Recompute every mask from the current data.

    Each entry uses ``mask_fn`` if given, else its config's ``mask_fn``, else the
    norm block mask. A mask function maps ``(data, config)`` to a mask of the
    data's shape; non-bool results are converted with ``!= 0``. Small same-shaped
    entries on the norm mask are computed together in batches (same masks).
    """
    _check_state(state)
    check_callable(mask_fn, "mask_fn", optional=True)
    with torch.no_grad():
        whole = {n: e for n, e in state.entries.items() if not sharded_kind(e.data)}
        batched = batched_norm_masks(whole, mask_fn)
        entries = {
            name: Entry._trusted(
                e.data, batched[name] if name in batched else _mask_for(e, name, mask_fn), e.config
            )
            for name, e in state.entries.items()
        }
    return SparsifierState._own(entries, state.defaults)


def sparsified(state: SparsifierState) -> dict[str, torch.Tensor]:
    """``data * mask`` per name; differentiable with respect to the data."""
    _check_state(state)
    return {name: masked(e.data, e.mask) for name, e in state.entries.items()}


def squash(state: SparsifierState) -> dict[str, torch.Tensor]:
    """The sparsified tensors, detached, with the masks dropped."""
    _check_state(state)
    with torch.no_grad():
        return {name: masked(e.data.detach(), e.mask) for name, e in state.entries.items()}


def sparsity(state: SparsifierState) -> dict[str, float]:
    """Fraction of masked-out elements per name."""
    _check_state(state)
    return {name: 1.0 - _kept(e.mask) / max(e.mask.numel(), 1)
            for name, e in state.entries.items()}


def _kept(mask: torch.Tensor) -> int:
    count = mask.count_nonzero()
    if sharded_kind(count):  # a DTensor's count is a partial sum per rank: reduce it
        count = count.full_tensor()  # type: ignore[attr-defined]
    return int(count.item())
