"""torch.ao-compatible ``BaseDataSparsifier``, a thin wrapper over the functional core.

The entries live in an immutable :class:`fsparse.SparsifierState` (data by reference,
bool mask, config). torch.ao's mutable views mirror it: ``data_groups`` (name -> config
dict), ``state`` (name -> ``{"mask": tensor, ...}``) and ``_container`` (an ``nn.Module``
whose parametrization multiplies each tensor by its mask). Those views are where torch.ao
code mutates, so :meth:`BaseDataSparsifier.step` reads them back into the core.
"""

from __future__ import annotations

import abc
import copy
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from fsparse._src.config import SparsityConfig, validate_name
from fsparse._src.state import (
    EMBEDDING_TYPES,
    SUPPORTED_TYPES,
    Entry,
    SparsifierState,
    extract_weight,
    remove,
)
from fsparse.data_sparsifier._container import (
    FakeSparsity,
    _Container,
    check_shape,
    parse_entry,
    put,
)

__all__ = ["EMBEDDING_TYPES", "SUPPORTED_TYPES", "BaseDataSparsifier", "FakeSparsity"]

_STATE_DICT_KEYS = ("state", "data_groups", "_container")
_VIEWS = frozenset({"state", "data_groups", "_container", "_core", "step"})


class BaseDataSparsifier(abc.ABC):
    r"""Base class of data sparsifiers, with torch.ao's API.

    Subclasses implement ``update_mask(name, data, **config)``: either mutate
    ``self.get_mask(name)`` in place (torch.ao style) or return the new mask.

    >>> class Zero1st(BaseDataSparsifier):
    ...     def update_mask(self, name, data, **config):
    ...         return torch.arange(data.numel()).reshape(data.shape) != 0
    >>> sp = Zero1st([("w", torch.ones(2, 2))], note="any key")
    >>> sp.step()
    >>> sp.get_data("w", return_original=False), sp.data_groups["w"]
    (tensor([[0., 1.],
            [1., 1.]]), {'note': 'any key'})
    """

    def __init__(self, data_list: Iterable[tuple[str, Any]] | None = None, **defaults: Any):
        self.defaults: dict[str, Any] = defaults
        self.state: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        self.enable_mask_update = True
        self._container = _Container()
        self.data_groups: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        self._core = SparsifierState({}, self._config_from_group(self.defaults))
        for name, data in data_list or ():
            self.add_data(name, data, **self.defaults)

    # -- hooks -------------------------------------------------------------------------
    def _config_from_group(self, group: Mapping[str, Any]) -> SparsityConfig:
        """The core config of one data group; the base class keeps every key as an extra."""
        return SparsityConfig(extras=tuple(sorted(group.items())))

    @abc.abstractmethod
    def update_mask(self, name: str, data: torch.Tensor, **kwargs: Any) -> torch.Tensor | None:
        """Update ``self.get_mask(name)`` in place, or return the new mask."""

    def prepare(self, model: Any, config: Any) -> None:
        raise NotImplementedError("this function is undefined for this class")

    def _extract_weight(self, data: Any) -> torch.Tensor:
        return extract_weight(data)

    # -- entries -----------------------------------------------------------------------
    @property
    def core_state(self) -> SparsifierState:
        """The entries as an immutable :class:`fsparse.SparsifierState`, synced from the views."""
        self._sync_configs()
        for name in self._core.names:
            self._sync_mask(name)
        return self._core

    def _is_squashed(self, name: str) -> bool:
        return not parametrize.is_parametrized(self._container, name)

    def _known(self, name: object) -> str:
        if not isinstance(name, str) or name not in self._core:
            raise ValueError(f"no data named {name!r}; known names: {list(self._core.names)}")
        return name

    def add_data(
        self, name: str, data: Any, reuse_mask: bool = True, **config: Any
    ) -> torch.Tensor:
        """Attach ``data`` (by reference) under ``name``; return it times its mask.

        Replacing a name warns, keeps its config (updated by ``config``), and keeps its
        mask object when ``reuse_mask`` (the shapes must then match). The old mask is
        never applied to the old tensor.
        """
        validate_name(name)
        replacing = name in self._core
        if not replacing and (hasattr(nn.ModuleDict, name) or hasattr(self._container, name)):
            raise ValueError(
                f"name {name!r} clashes with an attribute of the nn.Module container that "
                "holds the parametrizations; choose another name"
            )
        weight = extract_weight(data)
        local_args = copy.deepcopy(self.defaults)
        local_args.update(config)
        group = copy.deepcopy(self.data_groups[name]) if replacing else local_args
        if replacing:
            group.update(config)
        core_config = self._config_from_group(group)
        if replacing and reuse_mask:
            old = self._core[name].data
            if weight.shape != old.shape:
                raise ValueError(
                    f"reuse_mask=True needs the new data for {name!r} to have the old shape "
                    f"{tuple(old.shape)}, got {tuple(weight.shape)}"
                )
            mask = self.get_mask(name)
        else:
            given = local_args.get("mask")
            mask = torch.ones_like(weight) if given is None else given
            check_shape(mask, weight, f"mask for {name!r}")
        param_class = local_args.get("parametrization", FakeSparsity)
        promoted = torch.promote_types(mask.dtype, weight.dtype)
        if param_class is FakeSparsity and promoted != weight.dtype:
            raise TypeError(f"mask dtype {mask.dtype} would turn {name!r} into {promoted}")
        if replacing:
            warnings.warn(
                "Replacing existing data of the same name. - Did you mean a different name?",
                stacklevel=2,
            )
            self._delete_data(name)
        self._container.register_buffer(name, weight)
        parametrize.register_parametrization(self._container, name, param_class(mask))
        self.state[name]["mask"] = mask
        self.data_groups[name] = group
        self._core = put(self._core, name, Entry(weight, mask != 0, core_config))
        return getattr(self._container, name)  # type: ignore[no-any-return]

    def _delete_data(self, name: str) -> None:
        if not self._is_squashed(name):
            parametrize.remove_parametrizations(self._container, name, leave_parametrized=False)
        delattr(self._container, name)
        self.state.pop(name, None)
        self.data_groups.pop(name, None)
        self._core = remove(self._core, name)

    def get_data(self, name: str, return_original: bool = True) -> torch.Tensor:
        """The data (``return_original=True``) or the data times its mask."""
        self._known(name)
        if not return_original:
            return getattr(self._container, name)  # type: ignore[no-any-return]
        if self._is_squashed(name):
            raise ValueError(f"mask squashed for {name!r} - original mask value does not exist")
        return getattr(self._container.parametrizations, name).original  # type: ignore[no-any-return]

    def get_mask(self, name: str) -> torch.Tensor:
        """The mask of ``name``: float ones at first, int8 after a ``DataNormSparsifier`` step."""
        return self.state[self._known(name)]["mask"]  # type: ignore[no-any-return]

    # -- masks -------------------------------------------------------------------------
    def _sync_configs(self) -> None:
        unknown = [n for n in self.data_groups if n not in self._core]
        if unknown:
            raise ValueError(f"data_groups has names with no data: {unknown}")
        configs = {n: self._config_from_group(g) for n, g in self.data_groups.items()}
        entries = {n: Entry(e.data, e.mask, configs[n]) for n, e in self._core.entries.items()}
        self._core = SparsifierState(entries, self._core.defaults)

    def _sync_mask(self, name: str) -> None:
        """Read the visible mask of ``name`` back into the core (adopting a rebound one)."""
        mask = check_shape(self.state[name]["mask"], self._core[name].data, f"mask of {name!r}")
        if not self._is_squashed(name):
            holder = getattr(self._container.parametrizations, name)[0]
            if getattr(holder, "mask", mask) is not mask:
                holder.mask = mask
        entry = self._core[name]
        self._core = put(self._core, name, Entry(entry.data, mask != 0, entry.config))

    def _set_mask(self, name: str, returned: object) -> None:
        what = f"mask returned by update_mask for {name!r}"
        new = check_shape(returned, self._core[name].data, what)
        stored = new.to(torch.int8) if new.dtype == torch.bool else new.detach().clone()
        self.get_mask(name).data = stored

    def step(self) -> None:
        """Call ``update_mask(name, data, **config)`` for every entry (if enabled).

        Raises ``ValueError`` before changing anything if a config is invalid or a
        mask was squashed.
        """
        if not self.enable_mask_update:
            return
        self._sync_configs()
        squashed = [n for n in self.data_groups if self._is_squashed(n)]
        if squashed:
            raise ValueError(f"mask squashed for {squashed}; re-add the data to step it again")
        with torch.no_grad():
            for name, config in self.data_groups.items():
                new = self.update_mask(name, self.get_data(name), **config)
                if new is not None:
                    self._set_mask(name, new)
                self._sync_mask(name)

    def squash_mask(
        self,
        *args: Any,
        leave_parametrized: bool = True,
        names: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Drop the masks of ``names`` (default: every masked entry).

        With ``leave_parametrized`` the data times its mask is written into the data
        tensor in place (same object, same storage); otherwise the data is untouched.
        """
        if names is None:
            todo = [n for n in self.data_groups if not self._is_squashed(n)]
        elif isinstance(names, str):
            raise TypeError(f"names must be a list of names, not the str {names!r}")
        else:
            todo = list(dict.fromkeys(names))
            for name in todo:
                self._known(name)
            squashed = [n for n in todo if self._is_squashed(n)]
            if squashed:
                raise ValueError(f"mask already squashed for {squashed}")
        for name in todo:
            with torch.no_grad():
                sparse = getattr(self._container, name) if leave_parametrized else None
            parametrize.remove_parametrizations(self._container, name, leave_parametrized=False)
            if sparse is not None:
                with torch.no_grad():
                    getattr(self._container, name).copy_(sparse)

    # -- serialisation -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch.ao's format (masks as sparse COO) in plain containers only.

        It loads with ``torch.load(weights_only=True)`` when the configs hold plain values.
        """
        state = {
            name: {
                key: value.to_sparse_coo() if key == "mask" else copy.deepcopy(value)
                for key, value in entry.items()
            }
            for name, entry in self.state.items()
        }
        return {
            "state": state,
            "data_groups": {name: copy.deepcopy(dict(g)) for name, g in self.data_groups.items()},
            "_container": dict(self._container.state_dict()),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Restore from :meth:`state_dict` (fsparse's or torch.ao's).

        ``strict=True`` replaces every entry; ``strict=False`` keeps the current entries,
        which win over loaded ones of the same name. The data become copies from
        ``state_dict``. Raises ``ValueError`` for a malformed dict and changes nothing.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        missing = [key for key in _STATE_DICT_KEYS if key not in state_dict]
        if missing:
            raise ValueError(f"state_dict is missing the keys {missing}")
        self._load(state_dict["state"], state_dict["data_groups"], state_dict["_container"], strict)

    def _load(
        self,
        states: Mapping[str, Any],
        groups: Mapping[str, Any],
        tensors: Mapping[str, Any],
        strict: bool,
    ) -> None:
        if not all(isinstance(part, Mapping) for part in (states, groups, tensors)):
            raise TypeError("state_dict 'state', 'data_groups' and '_container' must be dicts")
        if set(states) != set(groups):
            raise ValueError(
                f"state_dict 'state' names {sorted(states)} differ from its "
                f"'data_groups' names {sorted(groups)}"
            )
        kept = {} if strict else dict(self._core.entries)
        loaded = {
            name: parse_entry(name, states[name], groups[name], tensors, self._config_from_group)
            for name in states
            if name not in kept
        }
        container = _Container() if strict else self._container
        new_state: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        new_groups: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        entries: dict[str, Entry] = {}
        for name in [*states, *(n for n in kept if n not in states)]:
            if name in kept:  # torch.ao: current entries win when not strict
                new_state[name], new_groups[name] = self.state[name], self.data_groups[name]
                entries[name] = kept[name]
                continue
            item = loaded[name]
            container.register_buffer(name, item.data)
            if item.parametrized:
                param_class = item.group.get("parametrization", FakeSparsity)
                parametrize.register_parametrization(container, name, param_class(item.mask))
            new_state[name] = {**item.extras, "mask": item.mask}
            new_groups[name] = item.group
            entries[name] = Entry(item.data, item.mask != 0, item.config)
        self._container, self.state, self.data_groups = container, new_state, new_groups
        self._core = SparsifierState(entries, self._core.defaults)

    def __getstate__(self) -> dict[str, Any]:
        saved = {k: v for k, v in self.__dict__.items() if k not in _VIEWS}
        return {**saved, **self.state_dict()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        states, groups, tensors = (state.pop(key) for key in _STATE_DICT_KEYS)
        self.__dict__.update(state)
        self.__dict__.setdefault("enable_mask_update", True)
        self._container = _Container()
        self.state, self.data_groups = defaultdict(dict), defaultdict(dict)
        self._core = SparsifierState({}, self._config_from_group(self.defaults))
        self._load(states, groups, tensors, strict=True)

    def __repr__(self) -> str:
        text = self.__class__.__name__ + " ("
        for name, sparse_args in self.data_groups.items():
            text += f"\n\tData Group\n\t    name: {name}\n"
            for key in sorted(sparse_args.keys()):
                if key != "data":
                    text += f"\t    {key}: {sparse_args[key]}\n"
        return text + ")"
