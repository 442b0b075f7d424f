"""The torch.ao-shaped container pieces behind ``BaseDataSparsifier``.

``FakeSparsity`` and ``_Container`` reproduce what torch.ao registers, so that code
reaching into ``sparsifier._container`` keeps working; ``parse_entry`` checks one
entry of a state dict (fsparse's or torch.ao's) before anything is loaded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from fsparse._src.config import SparsityConfig, validate_name
from fsparse._src.state import Entry, SparsifierState

__all__ = ["FakeSparsity", "Loaded", "check_shape", "parse_entry", "put"]


class FakeSparsity(nn.Module):
    """Parametrization returning ``mask * x``; like torch.ao's, it saves no state."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    mask: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask.shape != x.shape:
            raise ValueError(f"mask shape {tuple(self.mask.shape)} != data shape {tuple(x.shape)}")
        return self.mask * x

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {}


class _Container(nn.Module):
    """Holds each data tensor as a buffer (or parameter) with its parametrization."""


class Loaded(NamedTuple):
    """One entry parsed from a state dict, before anything is changed."""

    data: torch.Tensor
    parametrized: bool
    mask: torch.Tensor
    extras: dict[str, Any]
    group: dict[str, Any]
    config: SparsityConfig


def put(state: SparsifierState, name: str, entry: Entry) -> SparsifierState:
    """``state`` with ``entry`` under ``name`` (added last, or replaced in place)."""
    return SparsifierState({**state.entries, name: entry}, state.defaults)


def check_shape(mask: object, data: torch.Tensor, what: str) -> torch.Tensor:
    """``mask`` if it is a tensor of ``data``'s shape, else ``TypeError``/``ValueError``."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.shape != data.shape:
        raise ValueError(f"{what} has shape {tuple(mask.shape)}, expected {tuple(data.shape)}")
    return mask


def parse_entry(
    name: str,
    entry_state: Any,
    group: Any,
    tensors: Mapping[str, Any],
    config_from_group: Callable[[Mapping[str, Any]], SparsityConfig],
) -> Loaded:
    """Check and copy one entry of a state dict; raise before anything is changed."""
    validate_name(name)
    if not isinstance(entry_state, Mapping) or "mask" not in entry_state:
        raise ValueError(f"state_dict 'state' entry {name!r} has no 'mask'")
    if not isinstance(group, Mapping):
        raise TypeError(f"state_dict 'data_groups' entry {name!r} must be a dict")
    original = f"parametrizations.{name}.original"
    parametrized = name not in tensors
    data = tensors.get(original if parametrized else name)
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"state_dict '_container' has no tensor {name!r} or {original!r}")
    mask = check_shape(entry_state["mask"], data, f"state_dict mask for {name!r}")
    extras = {k: copy.deepcopy(v) for k, v in entry_state.items() if k != "mask"}
    group = copy.deepcopy(dict(group))
    return Loaded(
        data.detach().clone(),
        parametrized,
        mask.to_dense().clone(),
        extras,
        group,
        config_from_group(group),
    )
