"""Parse and check a sparsifier state dict (fsparse's or torch.ao's) before any of it is used.

A state dict may come from a file: every tensor in it is checked (sparse masks by
:func:`fsparse._src.untrusted.load_mask`, whose index checks stop an out-of-range
index from writing outside the mask's buffer), every name and config validated,
and a custom parametrization tried on copies, so that loading can then commit
without failing half-way.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.utils import parametrize

from fsparse._src.checks import check_tensor, short_repr
from fsparse._src.config import SparsityConfig
from fsparse._src.engine.dispatch import sharded_kind
from fsparse._src.untrusted import load_mask
from fsparse.data_sparsifier._container import (
    FakeSparsity,
    _Container,
    check_free_name,
    check_mask,
)
from fsparse.data_sparsifier._mask_state import MaskState, register

__all__ = ["STATE_DICT_KEYS", "Loaded", "load_into", "parse_state_dict", "state_dict_of",
           "state_dict_parts", "try_parametrization"]

STATE_DICT_KEYS = ("state", "data_groups", "_container")


def state_dict_parts(state_dict: object) -> tuple[Any, Any, Any]:
    """``(state, data_groups, _container)`` of a sparsifier state dict, unchecked inside.

    >>> state_dict_parts({"state": {}, "data_groups": {}, "_container": {}})
    ({}, {}, {})
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    missing = [key for key in STATE_DICT_KEYS if key not in state_dict]
    if missing:
        raise ValueError(f"state_dict is missing the keys {missing}")
    return state_dict["state"], state_dict["data_groups"], state_dict["_container"]


class Loaded(NamedTuple):
    """One entry parsed from a state dict, before anything is changed."""

    data: torch.Tensor
    parametrized: bool
    mask: torch.Tensor
    extras: dict[str, Any]
    group: dict[str, Any]
    config: SparsityConfig
    param_class: Any


def try_parametrization(
    param_class: Any, mask: torch.Tensor, weight: torch.Tensor, name: str
) -> None:
    """Register ``param_class(mask)`` on copies, in a scratch container; ``ValueError`` if it fails.

    ``FakeSparsity`` is not tried: :func:`check_mask` covers everything it needs.
    """
    if param_class is FakeSparsity:
        return
    if not callable(param_class):
        raise TypeError(
            f"parametrization for {short_repr(name)} must be a class (callable), got "
            f"{type(param_class).__name__}"
        )
    scratch = _Container()
    scratch.register_buffer(name, weight.detach().clone())
    try:
        holder = param_class(mask.clone())
        parametrize.register_parametrization(scratch, name, holder)
    except Exception as err:  # a user's class may raise anything; the message says which
        raise ValueError(
            f"parametrization {short_repr(param_class)} cannot be registered for "
            f"{short_repr(name)}: {type(err).__name__}: {str(err)[:200]}"
        ) from None


def _entry(
    name: str,
    entry_state: Any,
    group: Any,
    tensors: Mapping[str, Any],
    config_from_group: Callable[[Mapping[str, Any]], SparsityConfig],
) -> Loaded:
    shown = short_repr(name)
    if not isinstance(entry_state, Mapping) or "mask" not in entry_state:
        raise ValueError(f"state_dict 'state' entry {shown} has no 'mask'")
    if not isinstance(group, Mapping):
        raise TypeError(f"state_dict 'data_groups' entry {shown} must be a dict")
    bad_keys = [k for k in list(group) + list(entry_state) if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"state_dict entry {shown} has non-str keys {short_repr(bad_keys)}")
    original = f"parametrizations.{name}.original"
    parametrized = name not in tensors
    key = original if parametrized else name
    data = tensors.get(key)
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"state_dict '_container' has no tensor {shown} or {short_repr(original)}")
    check_tensor(data, f"state_dict '_container' tensor {short_repr(key)}")
    what = f"state_dict mask for {shown}"
    raw_mask = entry_state["mask"]
    load_mask(raw_mask, data.shape, what)  # dtype, layout, shape and sparse indices checked
    dense = raw_mask.to_dense() if raw_mask.layout == torch.sparse_coo else raw_mask.clone()
    group = copy.deepcopy(dict(group))
    param_class = group.get("parametrization", FakeSparsity)
    mask = check_mask(dense, data, what, param_class is FakeSparsity)
    try:
        config = config_from_group(group)
    except (TypeError, ValueError) as err:
        raise type(err)(f"state_dict 'data_groups' entry {shown}: {err}") from None
    data = data.detach().clone()
    try_parametrization(param_class, mask, data, name)
    extras = {k: copy.deepcopy(v) for k, v in entry_state.items() if k != "mask"}
    return Loaded(data, parametrized, mask, extras, group, config, param_class)


def parse_state_dict(
    states: Any,
    groups: Any,
    tensors: Any,
    container: nn.Module,
    skip: Collection[str],
    config_from_group: Callable[[Mapping[str, Any]], SparsityConfig],
) -> dict[str, Loaded]:
    """Every entry of ``states`` not in ``skip``, parsed; all checked; raise before any change.

    ``container`` is the one the entries will be registered in: their names must
    not clash with its attributes.
    """
    if not all(isinstance(part, Mapping) for part in (states, groups, tensors)):
        raise TypeError("state_dict 'state', 'data_groups' and '_container' must be dicts")
    if set(states) != set(groups):
        raise ValueError(
            f"state_dict 'state' names {short_repr(sorted(map(str, states)))} differ from its "
            f"'data_groups' names {short_repr(sorted(map(str, groups)))}"
        )
    loaded = {}
    for name in states:
        if name not in skip:  # a skipped (kept) name is in the container already
            check_free_name(container, name)
        entry = _entry(name, states[name], groups[name], tensors, config_from_group)
        if name not in skip:  # skipped entries are checked too: the file is suspect
            loaded[name] = entry
    return loaded


def state_dict_of(sp: Any) -> dict[str, Any]:
    """``sp.state_dict()``: torch.ao's format, plain containers, masks as sparse COO
    (DTensor masks: dense DTensors, as ``torch.distributed.checkpoint`` saves them).

    A pending (unmade) mask is saved as the COO of ones it stands for, and stays pending.
    """
    state = {}
    for name in sp._adopt_state():
        entry = sp.state.raw(name)
        mask = entry.get("mask")
        if name in sp.state.pending:
            mask = torch.ones_like(sp._data[name])
        out = {} if mask is None else {"mask": _saved(mask)}
        out.update({k: copy.deepcopy(v) for k, v in entry.items() if k != "mask"})
        state[name] = out
    return {
        "state": state,
        "data_groups": {name: copy.deepcopy(dict(g)) for name, g in sp.data_groups.items()},
        "_container": dict(sp._container.state_dict()),
    }


def _saved(mask: torch.Tensor) -> torch.Tensor:
    """torch.ao's sparse COO; a DTensor mask (no sparse DTensors) stays dense, placed alike."""
    return mask.clone() if sharded_kind(mask) else mask.to_sparse_coo()


def load_into(sp: Any, states: Any, groups: Any, tensors: Any, strict: bool) -> None:
    """Check every entry of a state dict, then register them into ``sp`` in one go.

    ``strict=False`` keeps ``sp``'s entries (they win over loaded ones of the same
    name) and registers the others into its live container.
    """
    kept = () if strict else tuple(sp._data)
    container = _Container() if strict else sp._container
    loaded = parse_state_dict(states, groups, tensors, container, kept, sp._config_from_group)
    new_state = MaskState()
    new_groups: defaultdict[str, dict[str, Any]] = defaultdict(dict)
    new_data: dict[str, torch.Tensor] = {}
    registered: list[str] = []
    try:
        for name in [*(n for n in states if n not in kept), *kept]:
            if name in kept:  # torch.ao: current entries win when not strict
                if name in sp.state.pending:
                    new_state.pending[name] = sp.state.pending[name]
                dict.__setitem__(new_state, name, sp.state.raw(name))
                new_groups[name], new_data[name] = sp.data_groups[name], sp._data[name]
                continue
            item = loaded[name]
            if item.parametrized:
                register(sp, container, new_state, name, item.data, item.mask, item.param_class)
            else:
                container.register_buffer(name, item.data)
                new_state[name]["mask"] = item.mask
            new_state.raw(name).update(item.extras)
            registered.append(name)
            new_groups[name], new_data[name] = item.group, item.data
    except BaseException:
        if not strict:  # cannot happen after the checks; undo anyway
            for name in registered:
                if parametrize.is_parametrized(container, name):
                    parametrize.remove_parametrizations(container, name, False)
                delattr(container, name)
        raise
    sp._container, sp.state, sp.data_groups = container, new_state, new_groups
    sp._data = new_data
    sp._configs = {n: (dict(loaded[n].group), loaded[n].config) for n in loaded}
