"""Hypothesis strategies for fsparse: tensors, configs, sparsifier states, parameter dicts.

Every strategy takes keyword arguments that narrow what it draws. Data is drawn
from a seeded ``torch.Generator`` (the seed is the drawn value, so Hypothesis
shrinks towards small shapes and seed 0).

>>> from hypothesis import given
>>> @given(tensors(max_dims=2))
... def test(x): assert x.dim() <= 2
>>> test()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from hypothesis import strategies as st

import fsparse
from fsparse._src.config import NORMS, SparsityConfig, make_config

__all__ = ["FLOAT_DTYPES", "configs", "levels", "param_dicts", "shapes", "states", "tensors"]

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32,
                                         torch.float64)


def shapes(*, min_dims: int = 0, max_dims: int = 4, min_side: int = 1,
           max_side: int = 8) -> st.SearchStrategy[tuple[int, ...]]:
    """Tensor shapes with ``min_dims..max_dims`` dims of ``min_side..max_side`` each."""
    return st.lists(st.integers(min_side, max_side), min_size=min_dims,
                    max_size=max_dims).map(tuple)


def _huge(dtype: torch.dtype) -> float:
    """A large magnitude whose square still fits the score dtype (float32 for 16-bit data)."""
    if dtype == torch.float64:
        return 1e150
    return min(float(torch.finfo(dtype).max) / 4, 1e18)


def _tiny(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).tiny) * 4


@st.composite
def tensors(draw: st.DrawFn, *, shape: tuple[int, ...] | st.SearchStrategy[tuple[int, ...]]
            | None = None, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
            min_dims: int = 0, max_dims: int = 4, max_side: int = 8,
            contiguous: bool | None = None, ties: bool | None = None,
            zeros: bool | None = None, extremes: bool | None = None) -> torch.Tensor:
    """A finite floating tensor.

    ``shape`` fixes the shape (or draws it); else ``min_dims..max_dims`` dims of
    up to ``max_side``. ``contiguous=False`` forces a non-contiguous view (of a
    transposed or strided parent; N-D with some side > 1), ``None`` draws either.
    ``ties``, ``zeros`` and ``extremes`` (huge and tiny magnitudes) force a
    feature on (``True``), off (``False``) or draw it (``None``).
    """
    if shape is None:
        shape = shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side)
    size: tuple[int, ...] = draw(shape) if isinstance(shape, st.SearchStrategy) else tuple(shape)
    dtype = draw(st.sampled_from(list(dtypes)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    layout = "contiguous" if contiguous else draw(st.sampled_from(
        ["transposed", "strided"] if contiguous is False else
        ["contiguous", "transposed", "strided"]))
    values = torch.randn(size, generator=gen, dtype=torch.float64)
    if ties if ties is not None else draw(st.booleans()):
        values = torch.round(values * 2) / 2
    if zeros if zeros is not None else draw(st.booleans()):
        values = values * (torch.rand(size, generator=gen, dtype=torch.float64) > 0.3)
    if extremes if extremes is not None else draw(st.booleans()):
        pick = torch.randint(0, 3, size, generator=gen)
        scale = torch.tensor([_huge(dtype), _tiny(dtype), 1.0], dtype=torch.float64)[pick]
        values = values * scale
    limit = float(torch.finfo(dtype).max)  # a huge scale times a draw past ~4 sigma: finite
    data = values.clamp(-limit, limit).to(dtype)
    if layout == "transposed" and data.dim() >= 2:
        data = data.transpose(0, -1).contiguous().transpose(0, -1)
    if (layout == "strided" or (contiguous is False and data.is_contiguous())) and data.dim():
        dim = max([i for i, s in enumerate(size) if s > 1] or [data.dim() - 1])
        doubled = torch.zeros((*size[:dim], 2 * size[dim], *size[dim + 1:]), dtype=dtype)
        every_other = (slice(None),) * dim + (slice(None, None, 2),)
        doubled[every_other] = data
        data = doubled[every_other]
    return data


def levels(*, min_level: float = 0.0, max_level: float = 1.0,
           edges: bool = True) -> st.SearchStrategy[float]:
    """Sparsity levels in ``[min_level, max_level]``; ``edges`` weights 0, 1 and the bounds."""
    inner = st.floats(min_level, max_level, allow_nan=False, allow_infinity=False)
    if not edges:
        return inner
    ends = sorted({v for v in (0.0, 1.0, min_level, max_level) if min_level <= v <= max_level})
    return st.one_of(st.sampled_from(ends), inner)


@st.composite
def configs(draw: st.DrawFn, shape: tuple[int, ...] | None = None, *,
            block_shapes: Sequence[tuple[int, int]] | None = None, max_block_side: int = 5,
            zeros_per_block: bool = True, norms: Sequence[str] = NORMS,
            level: st.SearchStrategy[float] | None = None) -> SparsityConfig:
    """A valid :class:`~fsparse.SparsityConfig` (for ``shape``, when given).

    Blocks come from ``block_shapes`` or have sides up to ``max_block_side``
    (capped a little past the matrix of ``shape``, so edge blocks and blocks
    larger than the data both appear). ``zeros_per_block=False`` keeps whole
    blocks; else it draws 0 to the block size. ``level`` defaults to
    :func:`levels` (0 and 1 included).
    """
    if block_shapes is not None:
        block = draw(st.sampled_from(list(block_shapes)))
    else:
        rows, cols = max_block_side, max_block_side
        if shape is not None:
            squeezed = [d for d in shape if d != 1]
            height = 1 if len(squeezed) <= 1 else squeezed[0]
            width = math.prod(squeezed[1:]) if len(squeezed) > 1 else (
                squeezed[0] if squeezed else 1)
            rows, cols = min(rows, height + 1), min(cols, width + 1)
        block = (draw(st.integers(1, rows)), draw(st.integers(1, cols)))
    size = block[0] * block[1]
    zeros = draw(st.integers(0, size)) if zeros_per_block else size
    return make_config(sparsity_level=draw(level if level is not None else levels()),
                       sparse_block_shape=block, zeros_per_block=zeros,
                       norm=draw(st.sampled_from(list(norms))))


@st.composite
def states(draw: st.DrawFn, *, min_entries: int = 1, max_entries: int = 4,
           data: st.SearchStrategy[torch.Tensor] | None = None,
           stepped: bool | None = None) -> fsparse.SparsifierState:
    """A :class:`~fsparse.SparsifierState` of several entries, each with its own config.

    ``data`` draws each entry's tensor (default: 1-D to 3-D fp32/fp64). ``stepped``
    runs :func:`fsparse.step` once (``True``), never (``False``) or draws it.
    """
    strategy = data if data is not None else tensors(
        min_dims=1, max_dims=3, dtypes=(torch.float32, torch.float64))
    count = draw(st.integers(min_entries, max_entries))
    state = fsparse.init()
    for i in range(count):
        tensor = draw(strategy)
        config = draw(configs(tuple(tensor.shape)))
        state = fsparse.add(state, f"t{i}", tensor, sparsity_level=config.sparsity_level,
                            sparse_block_shape=config.sparse_block_shape,
                            zeros_per_block=config.zeros_per_block, norm=config.norm)
    if stepped if stepped is not None else draw(st.booleans()):
        state = fsparse.step(state)
    return state


_LAYERS = ("linear", "conv", "embedding")


def _layer_shapes(draw: st.DrawFn, kind: str, i: int, side: st.SearchStrategy[int],
                  bias: bool) -> dict[str, tuple[int, ...]]:
    found: dict[str, tuple[int, ...]] = {}
    if kind == "linear":
        out, inp = draw(side), draw(side)
        found[f"fc{i}.weight"] = (out, inp)
        prefix = f"fc{i}"
    elif kind == "conv":
        out, inp, k = draw(side), draw(side), draw(st.sampled_from([1, 3]))
        found[f"conv{i}.weight"] = (out, inp, k, k)
        prefix = f"conv{i}"
    else:
        return {f"emb{i}.weight": (draw(side), draw(side))}
    if bias:
        found[f"{prefix}.bias"] = (out,)
    return found


@st.composite
def param_dicts(draw: st.DrawFn, *, layers: Sequence[str] = _LAYERS, min_layers: int = 1,
                max_layers: int = 3, max_side: int = 12, multiple_of: int = 1,
                bias: bool = False, dtypes: Sequence[torch.dtype] = (torch.float32,),
                ties: bool | None = None, grads: bool = True
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """``(params, grads)``: name -> tensor dicts shaped like real layers.

    Layers are drawn from ``layers`` (``"linear"``: ``(out, in)``, ``"conv"``:
    ``(out, in, k, k)``, ``"embedding"``: ``(num, dim)``), each side a multiple of
    ``multiple_of`` up to ``max_side`` (e.g. 4 for 2:4 patterns); ``bias`` adds 1-D
    biases to linear and conv layers. ``grads`` is a matching dict, or ``None``
    when ``grads=False``.
    """
    step = max(1, multiple_of)
    side = st.integers(1, max(1, max_side // step)).map(lambda v: v * step)
    kinds = draw(st.lists(st.sampled_from(list(layers)), min_size=min_layers,
                          max_size=max_layers))
    found: dict[str, tuple[int, ...]] = {}
    for i, kind in enumerate(kinds):
        found.update(_layer_shapes(draw, kind, i, side, bias))
    params: dict[str, Any] = {}
    grad_dict: dict[str, torch.Tensor] = {}
    for name, size in found.items():
        params[name] = draw(tensors(shape=size, dtypes=dtypes, contiguous=True, ties=ties,
                                    zeros=False, extremes=False))
        grad_dict[name] = draw(tensors(shape=size, dtypes=dtypes, contiguous=True, ties=False,
                                       zeros=False, extremes=False))
    return params, (grad_dict if grads else None)
