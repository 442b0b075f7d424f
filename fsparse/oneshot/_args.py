"""Argument checks shared by the one-shot layer functions (on top of the one checker)."""

from __future__ import annotations

import torch

from fsparse._src.checks import check_finite, check_int, check_real, check_tensor, short_repr
from fsparse._src.engine import NM

__all__ = ["check_n_m", "check_sparsity", "check_weight", "compute_dtype", "keep_pattern",
           "pruned_per_row"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_weight(weight: object) -> torch.Tensor:
    """``weight`` if it is a finite 2-D ``(out, in)`` float tensor."""
    weight = check_tensor(weight, "weight")
    if weight.dim() != 2:
        raise ValueError(
            f"weight must be a 2-D (out, in) tensor (view conv weights as (out, in*kh*kw)), "
            f"got shape {short_repr(tuple(weight.shape))}"
        )
    return check_finite(weight, "weight")


def check_sparsity(sparsity: object) -> float:
    """``sparsity`` as a float in ``[0, 1)``."""
    value = check_real(sparsity, "sparsity")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {short_repr(sparsity)}")
    return value


def check_n_m(n_m: object, columns: int) -> tuple[int, int] | None:
    """``None`` or ``(N, M)``: N pruned in every M consecutive input columns, ``0 <= N < M``."""
    if n_m is None:
        return None
    if not isinstance(n_m, (tuple, list)) or len(n_m) != 2:
        raise TypeError(f"n_m must be None or a pair (N, M) of ints, got {short_repr(n_m)}")
    m = check_int(n_m[1], "n_m[1] (M)", low=1)
    n = check_int(n_m[0], "n_m[0] (N)", low=0, high=m - 1)
    if columns % m:
        raise ValueError(
            f"n_m={short_repr(tuple(n_m))}: the input dim ({columns} columns) is not divisible "
            f"by M={m}"
        )
    return n, m


def keep_pattern(n_m: tuple[int, int]) -> NM:
    """The engine's pattern for ``n_m``: the engine's ``NM(n, m)`` counts KEPT weights."""
    n, m = n_m
    return NM(m - n, m)


def pruned_per_row(columns: int, sparsity: float) -> int:
    """``int(columns * sparsity)``, the references' count (floor)."""
    return int(columns * sparsity)
