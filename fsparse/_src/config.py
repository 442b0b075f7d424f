"""Immutable per-tensor sparsity configuration and its validation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from fsparse._src.checks import check_instance, check_real, short_repr

__all__ = ["NORMS", "MaskFn", "SparsityConfig", "make_config", "validate_name"]

NORMS: tuple[str, ...] = ("L1", "L2")

# A mask function maps (data, config) to a bool mask of the data's shape.
MaskFn = Callable[[torch.Tensor, "SparsityConfig"], torch.Tensor]

_KNOWN_KEYS = frozenset(
    {"sparsity_level", "sparse_block_shape", "zeros_per_block", "norm", "mask_fn"}
)


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid data name, else raise.

    A name is a non-empty ``str`` without ``.`` (torch module attribute rules).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__} {short_repr(name)}")
    if not name or "." in name:
        raise ValueError(
            f"name must be non-empty and must not contain '.', got {short_repr(name)}"
        )
    return name


def _validate_block_shape(shape: object) -> tuple[int, int]:
    ok = (
        isinstance(shape, (tuple, list))
        and len(shape) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    )
    if not ok:
        raise ValueError(
            f"sparse_block_shape must be a pair of positive ints, got {short_repr(shape)}"
        )
    return (int(shape[0]), int(shape[1]))  # type: ignore[index]


def _validate_level(level: object) -> float:
    # +-Inf is kept (schedules may push the level there; masks clamp it to [0, 1]).
    return check_real(level, "sparsity_level", finite=False)


@dataclasses.dataclass(frozen=True)
class SparsityConfig:
    """How one tensor is sparsified.

    ``sparsity_level`` is the fraction of blocks to zero; it is stored as given
    (schedules may push it past 1) and clamped to [0, 1] when a mask is computed.
    ``zeros_per_block`` is the number of zeros inside each selected block; it is
    resolved to the whole block when ``None`` is passed to :func:`make_config`.
    ``extras`` holds any further user keys, sorted by key.

    >>> cfg = make_config(sparsity_level=0.7, sparse_block_shape=(1, 4))
    >>> cfg.zeros_per_block, cfg.norm
    (4, 'L1')
    """

    sparsity_level: float = 0.5
    sparse_block_shape: tuple[int, int] = (1, 4)
    zeros_per_block: int = 4
    norm: str = "L1"
    mask_fn: MaskFn | None = None
    extras: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _validate_level(self.sparsity_level)
        block = _validate_block_shape(self.sparse_block_shape)
        size = block[0] * block[1]
        zpb = self.zeros_per_block
        if isinstance(zpb, bool) or not isinstance(zpb, int):
            raise TypeError(f"zeros_per_block must be an int or None, got {short_repr(zpb)}")
        if not 0 <= zpb <= size:
            raise ValueError(
                f"zeros_per_block must be in [0, {short_repr(size)}] for sparse_block_shape "
                f"{short_repr(block)}, got {short_repr(zpb)}"
            )
        if not isinstance(self.norm, str) or self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {short_repr(self.norm)}")
        if self.mask_fn is not None and not callable(self.mask_fn):
            raise TypeError(f"mask_fn must be callable or None, got {short_repr(self.mask_fn)}")
        if not isinstance(self.extras, tuple) or not all(
            isinstance(kv, tuple) and len(kv) == 2 and isinstance(kv[0], str) for kv in self.extras
        ):
            raise TypeError(f"extras must be a tuple of (str, value) pairs, got "
                            f"{short_repr(self.extras)}")
        object.__setattr__(self, "sparse_block_shape", block)

    @property
    def block_size(self) -> int:
        """Number of elements in one block."""
        return self.sparse_block_shape[0] * self.sparse_block_shape[1]

    def replace(self, **changes: Any) -> SparsityConfig:
        """Return a new config with ``changes`` applied; unknown keys go to ``extras``."""
        return make_config(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The torch.ao-style flat dict: known keys (``norm`` excluded) plus extras."""
        out: dict[str, Any] = {
            "sparsity_level": self.sparsity_level,
            "sparse_block_shape": self.sparse_block_shape,
            "zeros_per_block": self.zeros_per_block,
        }
        out.update(self.extras)
        return out

    def extra(self, key: str, default: Any = None) -> Any:
        """Value of the user key ``key``, or ``default``."""
        return dict(self.extras).get(key, default)


def make_config(base: SparsityConfig | None = None, **overrides: Any) -> SparsityConfig:
    """Build a validated config from ``base`` (or the defaults) and ``overrides``.

    ``zeros_per_block=None`` means the whole block. A changed block shape with no
    explicit ``zeros_per_block`` keeps "whole block" if the base had it.

    >>> make_config(sparse_block_shape=(2, 2)).zeros_per_block
    4
    """
    if base is None:
        base = SparsityConfig()
    check_instance(base, SparsityConfig, "base")
    fields: dict[str, Any] = {
        "sparsity_level": base.sparsity_level,
        "sparse_block_shape": base.sparse_block_shape,
        "norm": base.norm,
        "mask_fn": base.mask_fn,
    }
    whole_block = base.zeros_per_block == base.block_size
    zpb: Any = None if whole_block else base.zeros_per_block
    extras = dict(base.extras)
    for key, value in overrides.items():
        if key == "zeros_per_block":
            zpb = value
        elif key in _KNOWN_KEYS:
            fields[key] = value
        else:
            extras[key] = value
    block = _validate_block_shape(fields["sparse_block_shape"])
    if zpb is None:
        zpb = block[0] * block[1]
    return SparsityConfig(
        zeros_per_block=zpb, extras=tuple(sorted(extras.items())), **fields
    )


def config_from_mapping(mapping: Mapping[str, Any]) -> SparsityConfig:
    """Build a config from a torch.ao-style flat dict."""
    check_instance(mapping, Mapping, "config")
    bad = [k for k in mapping if not isinstance(k, str)]
    if bad:
        raise TypeError(f"config keys must be str, got {short_repr(bad)}")
    return make_config(**dict(mapping))
