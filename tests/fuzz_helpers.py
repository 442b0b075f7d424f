"""Shared pieces of the pruner fuzz tests: hostile tensors, and checking inputs stay intact."""

from __future__ import annotations

import math
from typing import Any

import torch
from hypothesis import strategies as st


@st.composite
def hostile_tensors(draw: st.DrawFn, shapes: st.SearchStrategy[tuple[int, ...]],
                    dtypes: st.SearchStrategy[torch.dtype]) -> torch.Tensor:
    """Tensors of any drawn shape and dtype: random, with NaN/Inf, zeros, ties or huge values,
    sometimes transposed (non-contiguous)."""
    shape, dtype = draw(shapes), draw(dtypes)
    base = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))),
                       dtype=torch.float64)
    fill = draw(st.sampled_from(["randn", "nan", "inf", "zeros", "ties", "huge"]))
    if fill == "nan" and base.numel():
        base.view(-1)[0] = math.nan
    elif fill == "inf" and base.numel():
        base.view(-1)[-1] = math.inf
    elif fill == "zeros":
        base = torch.zeros(shape, dtype=torch.float64)
    elif fill == "ties":
        base = base.round()
    elif fill == "huge":
        base = base * 1e300
    if dtype == torch.bool:
        return base > 0
    if not dtype.is_floating_point and not dtype.is_complex:
        return base.nan_to_num().clamp(-9, 9).to(dtype)
    out = base.to(dtype)
    return out.transpose(0, -1) if out.dim() >= 2 and draw(st.booleans()) else out


def snapshot(value: Any) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
    """Every tensor in ``value`` (nested dicts, lists, tuples) with its version and a copy."""
    found: list[torch.Tensor] = []

    def walk(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)
    walk(value)
    return [(t, t._version, t.clone()) for t in found]


def _comparable(t: torch.Tensor) -> torch.Tensor:
    """NaN (also complex NaN) made equal to itself, so an untouched tensor compares equal."""
    return t.nan_to_num() if t.is_floating_point() or t.is_complex() else t


def intact(snaps: list[tuple[torch.Tensor, int, torch.Tensor]]) -> bool:
    """Whether every snapshotted tensor is unchanged: same version counter and values."""
    return all(t._version == v and torch.equal(_comparable(t), _comparable(c))
               for t, v, c in snaps)
