"""torch.ao-compatible ``BaseDataSparsifier``, a thin wrapper over the functional core.

Each entry is its data (by reference) and a validated core config. torch.ao's mutable
views hold the rest: ``data_groups`` (name -> config dict), ``state`` (name ->
``{"mask": tensor, ...}``) and ``_container`` (an ``nn.Module`` whose parametrization
multiplies each tensor by its mask). :attr:`BaseDataSparsifier.core_state` reads them
into an immutable :class:`fsparse.SparsifierState`. Every call checks everything
first and then commits, so a refused call changes nothing.
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

from fsparse._src.checks import short_repr
from fsparse._src.config import SparsityConfig, validate_name
from fsparse._src.state import (
    EMBEDDING_TYPES,
    SUPPORTED_TYPES,
    Entry,
    SparsifierState,
    extract_weight,
)
from fsparse.data_sparsifier import _state_dict as saved
from fsparse.data_sparsifier._configs import parse_groups
from fsparse.data_sparsifier._container import (
    FakeSparsity,
    _Container,
    check_data,
    check_free_name,
    check_mask,
    check_shape,
)
from fsparse.data_sparsifier._mask_state import MaskState, register
from fsparse.data_sparsifier._squash import squash, squash_names
from fsparse.data_sparsifier._state_dict import STATE_DICT_KEYS, load_into, state_dict_of

__all__ = ["EMBEDDING_TYPES", "SUPPORTED_TYPES", "BaseDataSparsifier", "FakeSparsity"]

_VIEWS = frozenset({"state", "data_groups", "_container", "_data", "_configs", "step"})


def _ones_bool(data: torch.Tensor) -> torch.Tensor:
    """An all-true bool mask of ``data``'s shape that allocates no data-sized memory."""
    return torch.ones((), dtype=torch.bool, device=data.device).expand(data.shape)


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
        self.state: MaskState = MaskState()
        self.enable_mask_update = True
        self._container = _Container()
        self.data_groups: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        self._data: dict[str, torch.Tensor] = {}
        self._configs: dict[str, tuple[dict[str, Any], SparsityConfig]] = {}
        self._config_from_group(self.defaults)  # validates the defaults
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
        """The entries as an immutable :class:`fsparse.SparsifierState`, read from the views.

        Masks are bool: ``mask != 0`` of each visible mask (an unmade all-ones mask
        is an expanded all-true view).
        """
        configs = self._sync_configs()
        entries = {}
        for name, data in self._data.items():
            mask = self._sync_mask(name)
            core_mask = _ones_bool(data) if mask is None else mask
            if core_mask.dtype != torch.bool:
                core_mask = core_mask != 0
            entries[name] = Entry(data, core_mask, configs[name])
        return SparsifierState(entries, self._config_from_group(self.defaults))

    def _adopt_state(self) -> MaskState:
        """``self.state`` as a :class:`MaskState` (a user may have rebound it to a dict)."""
        if not isinstance(self.state, MaskState):
            adopted = MaskState()
            for name, entry in dict(self.state).items():
                dict.__setitem__(adopted, name, entry)
            self.state = adopted
        return self.state

    def _is_squashed(self, name: str) -> bool:
        return not parametrize.is_parametrized(self._container, name)

    def _known(self, name: object) -> str:
        if not isinstance(name, str) or name not in self._data:
            raise ValueError(f"no data named {short_repr(name)}; "
                             f"known names: {short_repr(list(self._data))}")
        return name

    def _holder(self, name: str) -> nn.Module:
        return getattr(self._container.parametrizations, name)[0]  # type: ignore[no-any-return]

    def add_data(
        self, name: str, data: Any, reuse_mask: bool = True, **config: Any
    ) -> torch.Tensor:
        """Attach ``data`` (by reference) under ``name``; return it times its mask.

        Replacing a name warns, keeps its config (updated by ``config``), and keeps its
        mask object when ``reuse_mask`` (the shapes must then match). The old mask is
        never applied to the old tensor. A refused call changes nothing. A new default
        mask (float ones, as in torch.ao) is only made when something reads it.
        """
        self._adopt_state()
        replacing = isinstance(name, str) and name in self._data
        if replacing:
            validate_name(name)
        else:
            check_free_name(self._container, name)
        weight = check_data(extract_weight(data), "data")
        local_args = copy.deepcopy(self.defaults)
        local_args.update(config)
        group = copy.deepcopy(self.data_groups[name]) if replacing else local_args
        if replacing:
            group.update(config)
        core_config = self._config_from_group(group)
        param_class = local_args.get("parametrization", FakeSparsity)
        fake = param_class is FakeSparsity
        mask: torch.Tensor | None
        if replacing and reuse_mask:
            old = self._data[name]
            if weight.shape != old.shape:
                raise ValueError(
                    f"reuse_mask=True needs the new data for {name!r} to have the old shape "
                    f"{tuple(old.shape)}, got {tuple(weight.shape)}"
                )
            mask = self._sync_mask(name)
            if mask is not None:
                check_mask(mask, weight, f"mask of {name!r}", fake)
        else:
            given = local_args.get("mask")
            mask = None if given is None else check_mask(given, weight, f"mask for {name!r}", fake)
        if not fake:
            mask = torch.ones_like(weight) if mask is None else mask
            saved.try_parametrization(param_class, mask, weight, name)
        if replacing:
            warnings.warn(
                "Replacing existing data of the same name. - Did you mean a different name?",
                stacklevel=2,
            )
            self._delete_data(name)
        register(self, self._container, self.state, name, weight, mask, param_class)
        self.data_groups[name] = group
        self._data[name] = weight
        self._configs[name] = (dict(group), core_config)
        return getattr(self._container, name)  # type: ignore[no-any-return]

    def _delete_data(self, name: str) -> None:
        if not self._is_squashed(name):
            parametrize.remove_parametrizations(self._container, name, leave_parametrized=False)
        delattr(self._container, name)
        self.state.pending.pop(name, None)
        dict.pop(self.state, name, None)
        self.data_groups.pop(name, None)
        self._data.pop(name, None)
        self._configs.pop(name, None)

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
    def _sync_configs(self) -> dict[str, SparsityConfig]:
        """Each entry's config, parsed from ``data_groups`` (only groups that changed)."""
        self._adopt_state()
        return parse_groups(self.data_groups, self._configs, self._config_from_group,
                            names=self._data)

    def _sync_mask(self, name: str) -> torch.Tensor | None:
        """The visible mask of ``name`` (``None`` while pending), adopted by the parametrization."""
        if name in self.state.pending:
            return None
        entry = self.state.raw(name) if name in self.state else {}
        if "mask" not in entry:
            raise ValueError(f"state[{name!r}] has no 'mask'")
        mask = check_shape(entry["mask"], self._data[name], f"mask of {name!r}")
        if not self._is_squashed(name):
            holder = self._holder(name)
            if isinstance(holder, FakeSparsity):
                if holder.pending or holder._buffers.get("mask") is not mask:
                    holder.set_mask(mask)
            elif getattr(holder, "mask", mask) is not mask:
                holder.mask = mask
        return mask

    def _put_mask(self, name: str, value: torch.Tensor) -> None:
        """Make ``value`` the mask's contents (torch.ao: ``mask.data = value``).

        The parametrization already holds the visible mask (:meth:`_sync_mask`).
        """
        if name in self.state.pending:  # never read: ``value`` becomes the mask object
            del self.state.pending[name]
            self.state.raw(name)["mask"] = value
            holder = self._holder(name)
            if isinstance(holder, FakeSparsity):
                holder.set_mask(value)
            else:
                holder.mask = value
            return
        self.state.raw(name)["mask"].data = value

    def _set_mask(self, name: str, returned: object) -> None:
        what = f"mask returned by update_mask for {name!r}"
        new = check_shape(returned, self._data[name], what)
        stored = new.to(torch.int8) if new.dtype == torch.bool else new.detach().clone()
        self._put_mask(name, stored)

    def _check_step(self) -> dict[str, SparsityConfig]:
        """Configs and masks checked, no entry squashed: else raise before any change."""
        configs = self._sync_configs()
        squashed = [n for n in self.data_groups if self._is_squashed(n)]
        if squashed:
            raise ValueError(
                f"mask squashed for {short_repr(squashed)}; re-add the data to step it again"
            )
        for name in self._data:
            self._sync_mask(name)
        return configs

    def step(self) -> None:
        """Call ``update_mask(name, data, **config)`` for every entry (if enabled).

        Raises ``ValueError`` before changing anything if a config is invalid or a
        mask was squashed.
        """
        if not self.enable_mask_update:
            return
        self._check_step()
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
        Data whose elements share memory (expanded or ``as_strided`` views) is refused.
        """
        self._adopt_state()
        squash(self, squash_names(self, names), leave_parametrized)

    # -- serialisation -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch.ao's format (masks as sparse COO) in plain containers only.

        It loads with ``torch.load(weights_only=True)`` when the configs hold plain values.
        """
        return state_dict_of(self)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Restore from :meth:`state_dict` (fsparse's or torch.ao's).

        ``strict=True`` replaces every entry; ``strict=False`` keeps the current entries,
        which win over loaded ones of the same name. The data become copies from
        ``state_dict``. Every tensor is checked (sparse mask indices included) before
        use; a malformed dict raises ``TypeError``/``ValueError`` and changes nothing.
        """
        self._load(*saved.state_dict_parts(state_dict), strict)

    def _load(self, states: Any, groups: Any, tensors: Any, strict: bool) -> None:
        self._adopt_state()
        load_into(self, states, groups, tensors, strict)

    def __getstate__(self) -> dict[str, Any]:
        saved = {k: v for k, v in self.__dict__.items() if k not in _VIEWS}
        return {**saved, **self.state_dict()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        states, groups, tensors = (state.pop(key, None) for key in STATE_DICT_KEYS)
        self.__dict__.update(state)
        self.__dict__.setdefault("enable_mask_update", True)
        self._container = _Container()
        self.state, self.data_groups = MaskState(), defaultdict(dict)
        self._data, self._configs = {}, {}
        self._load(states, groups, tensors, strict=True)

    def __repr__(self) -> str:
        text = self.__class__.__name__ + " ("
        for name, sparse_args in self.data_groups.items():
            text += f"\n\tData Group\n\t    name: {name}\n"
            for key in sorted(sparse_args.keys()):
                if key != "data":
                    text += f"\t    {key}: {sparse_args[key]}\n"
        return text + ")"

