"""The torch.ao-shaped container pieces behind ``BaseDataSparsifier``.

``FakeSparsity`` and ``_Container`` reproduce what torch.ao registers, so that code
reaching into ``sparsifier._container`` keeps working. The checks here run before
anything is registered, so a refused entry leaves the container as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fsparse._src.checks import check_tensor, short_repr
from fsparse._src.config import validate_name

__all__ = [
    "FakeSparsity",
    "check_data",
    "check_free_name",
    "check_mask",
    "check_shape",
]


class FakeSparsity(nn.Module):
    """Parametrization returning ``mask * x``; like torch.ao's, it saves no state.

    A sparsifier may register it with a *pending* all-ones mask: ``mask`` is then
    made (``torch.ones_like`` of the data, torch.ao's initial mask) when first read,
    and until then ``forward`` returns ``x * 1`` (the same values, no mask tensor).
    """

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self._first_read: Callable[[], torch.Tensor] | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "mask":
            make = self.__dict__.get("_first_read")
            if make is not None and self._buffers.get("mask") is None:
                return make()
        return super().__getattr__(name)

    def set_mask(self, mask: torch.Tensor) -> None:
        """Hold ``mask`` (no longer pending)."""
        self._first_read = None
        self.mask = mask

    @property
    def pending(self) -> bool:
        """Whether the mask is still an unmade all-ones mask."""
        return self.__dict__.get("_first_read") is not None and self._buffers.get("mask") is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self._buffers.get("mask")
        if mask is None:
            if self.__dict__.get("_first_read") is None:
                raise ValueError("FakeSparsity has no mask")
            return x * 1  # an all-ones mask, not made
        if mask.shape != x.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != data shape {tuple(x.shape)}")
        return mask * x

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {}

    def __getstate__(self) -> dict[str, Any]:
        if self.pending:
            self.mask  # noqa: B018  # made before copying: copies hold a real mask
        state = dict(self.__dict__)
        state["_first_read"] = None
        return state


class _Container(nn.Module):
    """Holds each data tensor as a buffer (or parameter) with its parametrization."""


def check_shape(mask: object, data: torch.Tensor, what: str) -> torch.Tensor:
    """``mask`` if it is a tensor of ``data``'s shape, else ``TypeError``/``ValueError``."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.shape != data.shape:
        raise ValueError(f"{what} has shape {tuple(mask.shape)}, expected {tuple(data.shape)}")
    return mask


def check_data(weight: torch.Tensor, what: str) -> torch.Tensor:
    """``weight`` if it is dense floating data a parametrization can hold."""
    check_tensor(weight, what)
    if weight.is_inference():
        raise TypeError(
            f"{what} is an inference tensor (made under torch.inference_mode()), which "
            "cannot be parametrized; pass a clone made outside inference mode"
        )
    return weight


def check_mask(mask: object, weight: torch.Tensor, what: str, fake_sparsity: bool) -> torch.Tensor:
    """``mask`` if it is a dense real tensor of ``weight``'s shape that keeps its dtype."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(mask).__name__}")
    check_tensor(mask, what, floating=False)
    if mask.is_complex():
        raise TypeError(f"{what} must be real (bool, integer or float), got dtype {mask.dtype}")
    check_shape(mask, weight, what)
    promoted = torch.promote_types(mask.dtype, weight.dtype)
    if fake_sparsity and promoted != weight.dtype:
        raise TypeError(f"{what} has dtype {mask.dtype}, which would turn the data into {promoted}")
    return mask


def check_free_name(container: nn.Module, name: object) -> str:
    """``name`` if it is a valid data name that no container attribute uses."""
    if isinstance(name, str) and len(name) > 200:
        raise ValueError(f"name must be at most 200 characters, got {short_repr(name)}")
    validate_name(name)
    assert isinstance(name, str)
    if name == "parametrizations" or hasattr(nn.ModuleDict, name) or hasattr(container, name):
        raise ValueError(
            f"name {short_repr(name)} clashes with an attribute of the nn.Module container "
            "that holds the parametrizations; choose another name"
        )
    return name

