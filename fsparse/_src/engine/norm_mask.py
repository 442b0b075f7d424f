"""The norm block mask: the mask behind ``DataNormSparsifier``, as pure tensor functions.

Semantics (torch.ao's, made exact):

1. The data is viewed as a matrix: size-1 dims are dropped (as torch.ao's
   ``squeeze`` does), 0-D and 1-D data become one row ``(1, n)``, and N-D data
   becomes ``(shape[0], prod(shape[1:]))``. The mask is returned in the data's
   own shape.
2. Scores are ``|x|`` (``"L1"``) or ``x * x`` (``"L2"``), in float32 for
   16-bit data and in the data's dtype otherwise.
3. The matrix is tiled into ``sparse_block_shape`` blocks from index 0. Each
   block is ranked by its mean score over its valid elements (edge blocks are
   partial).
4. ``k = round(clamp(sparsity_level, 0, 1) * n_blocks)`` blocks with the lowest
   means are selected (Python ``round``; ties broken by block index, as a
   stable sort would).
5. Inside each selected block the ``min(zeros_per_block, valid)`` smallest
   scores are zeroed (ties by position); every other element is kept.

A block larger than the matrix is first cut down to the matrix's extent (and
``zeros_per_block`` to the cut block's size), which gives the same mask, so
work and memory are bounded by the data's size whatever the block shape.
No function here sorts the whole tensor or repeats it per block element. This
module holds the reference path: the threshold is found with ``kthvalue`` on the
block means; it is vmap- and compile-friendly, and the NaN/Inf check runs only
outside transforms. Large tensors (outside transforms) take the exact chunked
path in :mod:`fsparse._src.engine.chunked_mask` instead (same masks, fixed-size
temporaries, a sampled threshold refined exactly).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fsparse._src.checks import (
    check_instance,
    check_int,
    check_no_nan,
    check_tensor,
    short_repr,
)
from fsparse._src.config import SparsityConfig, make_config
from fsparse._src.engine import native, native_keep, pool
from fsparse._src.engine.chunked_mask import large_norm_mask
from fsparse._src.engine.dispatch import implementation, sharded_kind
from fsparse._src.engine.scoring import (
    AbsScores,
    as_matrix,
    block_means,
    check_finite,
    fit_config,
    norm_scores,
    pool_means,
    scores_of,
    under_transform,
)
from fsparse._src.engine.selection import pruned_count
from fsparse._src.engine.threshold import NaNScores, k_lowest

__all__ = ["block_means", "config_norm_mask", "norm_mask", "norm_scores", "select_k_smallest",
           "smallest_in_blocks", "to_elements"]


def select_k_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask over 1-D ``values`` marking the ``k`` smallest; ties go to lower indices.

    Uses ``kthvalue`` (selection, not sorting); the tie rule matches a stable sort.
    Leading dims are batch dims (each row selects its own ``k``). ``values``
    must not hold NaN (``ValueError``); ``k`` outside ``[0, n]`` is clamped.

    >>> select_k_smallest(torch.tensor([3.0, 1.0, 1.0, 2.0]), 1)
    tensor([False,  True, False, False])
    """
    check_tensor(values, "values")
    if values.dim() < 1:
        raise ValueError(f"values must have at least 1 dim, got {short_repr(values)}")
    check_int(k, "k")
    check_no_nan(values, "values")
    return k_lowest(values, k)


def smallest_in_blocks(scores: torch.Tensor, block: tuple[int, int], zeros: int) -> torch.Tensor:
    """Bool ``(..., nbh, nbw, bh*bw)``: the ``zeros`` smallest scores per block (padding last)."""
    *lead, height, width = scores.shape
    bh, bw = block
    nbh, nbw = math.ceil(height / bh), math.ceil(width / bw)
    padded = F.pad(scores, (0, nbw * bw - width, 0, nbh * bh - height), value=math.inf)
    blocks = padded.reshape(*lead, nbh, bh, nbw, bw).transpose(-3, -2)
    blocks = blocks.reshape(*lead, nbh, nbw, bh * bw)
    order = blocks.sort(dim=-1, stable=True).indices
    smallest = torch.zeros_like(blocks, dtype=torch.bool)
    return smallest.scatter(-1, order[..., :zeros], True)


def to_elements(
    per_block: torch.Tensor, block: tuple[int, int], shape: tuple[int, int]
) -> torch.Tensor:
    """Lay ``(..., nbh, nbw, bh*bw)`` block contents back out as ``(..., *shape)`` matrices."""
    *lead, nbh, nbw, _ = per_block.shape
    bh, bw = block
    full = per_block.reshape(*lead, nbh, nbw, bh, bw).transpose(-3, -2)
    full = full.reshape(*lead, nbh * bh, nbw * bw)
    return full[..., : shape[0], : shape[1]]


def keep_mask(
    scores: torch.Tensor, means: torch.Tensor, config: SparsityConfig, k: int
) -> torch.Tensor:
    """Bool ``(..., H, W)``: ``False`` in the ``k`` lowest-mean blocks' pruned elements.

    ``scores`` is ``(..., H, W)`` and ``means`` its :func:`block_means`; each
    leading index is one independent matrix.
    """
    block, zeros = config.sparse_block_shape, config.zeros_per_block
    selected = k_lowest(means.flatten(-2), k).view(means.shape)
    if zeros == config.block_size:
        per_block = selected[..., None].expand(*selected.shape, config.block_size)
    else:
        per_block = smallest_in_blocks(scores, block, zeros) & selected[..., None]
    return ~to_elements(per_block, block, (scores.shape[-2], scores.shape[-1]))


# From this many elements on, masks are computed unit by unit (fsparse._src.engine.chunked_mask).
CHUNKED_MIN_NUMEL = 1 << 14


def config_norm_mask(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    """:func:`norm_mask` with its arguments taken from ``config``.

    Large tensors outside ``torch.func`` transforms and ``torch.compile`` take the
    chunked path; everything else the vectorised reference path. Both give the
    same mask. ``data`` must be a dense floating-point tensor on a real device
    (``TypeError`` otherwise). DTensor data: the sharded form (``fsparse.distributed``).
    """
    if kind := sharded_kind(data):
        return implementation(kind, "config_norm_mask")(data, config)  # type: ignore[no-any-return]
    check_tensor(data, "data")
    check_instance(config, SparsityConfig, "config")
    if (
        data.numel() >= CHUNKED_MIN_NUMEL
        and data.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
        and not under_transform(data)
    ):
        if (whole := _whole_row_blocks(data, config)) is not None:
            return whole
        return large_norm_mask(data, config)
    return reference_norm_mask(data, config)


def _whole_row_blocks(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor | None:
    """Blocks ``(1, w)`` (``w`` 1, 2, 4, 8 or 16) that tile the rows exactly: the mask is
    the selection of the block means, spread over each block. One element per block: its
    score (``|x|`` or ``x * x``) is its mean. Otherwise the fused native pass computes the
    means as the chunked path does (the same sums in the same order, then the division),
    and a pruned block loses its ``zeros_per_block`` smallest scores, ranked as the
    chunked path ranks them (ties by position), so the masks are the same: float32 by the
    pass itself as it reads each block, float64 by a second pass. ``None`` where
    this does not apply, where nothing is pruned, where the pass meets a NaN or infinite
    mean (the chunked path then answers or raises), or if the bracket misses."""
    height, width = config.sparse_block_shape
    zeros = config.zeros_per_block
    if height != 1 or width not in (1, 2, 4, 8, 16) or not native_keep.reads(data):
        return None
    matrix = as_matrix(data)
    if matrix.shape[1] % width or matrix.shape[1] < width:
        return None
    blocks = data.numel() // width
    k = pruned_count(config.sparsity_level, blocks)
    if k == 0 or zeros == 0:  # the chunked path still checks the data (NaN, overflow)
        return None
    fused = width > 1 and data.dtype == torch.float32  # the pass writes the element mask
    keep = pool.empty((data.numel() if fused else blocks,), torch.bool)
    flat = data.detach().reshape(-1)
    means: AbsScores | native_keep.BlockMeans = (
        native_keep.BlockMeans(flat, width, config.norm, zeros if fused else None)
        if width > 1 else AbsScores(flat) if config.norm == "L1" else AbsScores(flat, factor=flat))
    try:  # the pass finds a NaN or infinite mean (overflowing sums too): the chunked
        if not native_keep.one_pass([means], k, [keep], finite=True):  # path answers
            return None
    except NaNScores:
        return None
    if width == 1 or fused:
        return keep.view(data.shape)
    ranked = (flat, config.norm, zeros) if zeros < width else None
    return native.spread(keep, width, ranked).view(data.shape)


def reference_norm_mask(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    """The whole-tensor path of :func:`config_norm_mask`; safe under vmap and compile."""
    if data.numel() == 0:
        return torch.ones_like(data, dtype=torch.bool)
    scores = scores_of(as_matrix(data), config.norm)
    config = fit_config(config, scores.shape[0], scores.shape[1])
    means = pool_means(scores, config.sparse_block_shape)
    check_finite(means, data, config.norm)
    k = pruned_count(config.sparsity_level, means.numel())
    if k == 0 or config.zeros_per_block == 0:
        return torch.ones_like(data, dtype=torch.bool)
    return keep_mask(scores, means, config, k).reshape(data.shape)


def norm_mask(
    data: torch.Tensor,
    sparsity_level: float = 0.5,
    sparse_block_shape: tuple[int, int] = (1, 4),
    zeros_per_block: int | None = None,
    norm: str = "L1",
) -> torch.Tensor:
    """Bool mask of ``data``'s shape: ``False`` where the norm block rule prunes.

    ``zeros_per_block=None`` zeroes whole blocks. Raises ``ValueError`` for bad
    arguments and for data containing NaN or Inf.

    >>> x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    >>> norm_mask(x, sparsity_level=0.5, sparse_block_shape=(1, 2)).int()
    tensor([[0, 0, 0, 0],
            [1, 1, 1, 1]], dtype=torch.int32)
    """
    check_tensor(data, "data")
    config = make_config(
        sparsity_level=sparsity_level,
        sparse_block_shape=sparse_block_shape,
        zeros_per_block=zeros_per_block,
        norm=norm,
    )
    return config_norm_mask(data, config)
