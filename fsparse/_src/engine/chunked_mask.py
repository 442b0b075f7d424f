"""The norm block mask for large tensors: exact, and lean in time and memory.

Same rule and same masks as the reference path in :mod:`fsparse._src.engine.norm_mask`;
only the evaluation differs. The data matrix is walked in *units* of whole
block rows (or, for very wide matrices, of block columns within one block row),
and every temporary is unit-sized and allocated once:

1. The means of a random sample of blocks bracket the ``k``-th smallest block
   mean in ``[lo, hi]``.
2. One pass computes each unit's block means (the same float sums in the same
   order as ``avg_pool2d``, so the values are bit-identical; or the sums of
   whole power-of-2 blocks, against bounds scaled where that is exact), marks
   the blocks below ``lo`` as selected, writes that unit's mask, and keeps the
   blocks inside the bracket as candidates (found eight flags at a time).
3. The exact threshold is selected among the candidates (ties by block index)
   and only the chosen candidate blocks are rewritten.

If the bracket misses, or ties crowd it, an exact radix select over the means'
bit patterns (16 bits per pass) finds the threshold and a final pass writes the
mask. Nothing sorts the whole tensor or repeats it per block element; inside a
block, the ``zeros_per_block`` smallest are found by pairwise comparisons.
"""

from __future__ import annotations

import math

import torch

from fsparse._src.config import SparsityConfig
from fsparse._src.engine import pool
from fsparse._src.engine.block_plan import SCORE_DTYPES, BlockPlan
from fsparse._src.engine.radix import digit_counts, radix_select
from fsparse._src.engine.scoring import as_matrix, fit_config, non_finite_error
from fsparse._src.engine.selection import pruned_count
from fsparse._src.engine.threshold import bracket, sample_size
from fsparse._src.engine.unit_flags import count_true, padded_length, true_positions

__all__ = ["chunked_norm_mask", "large_norm_mask"]

def _sample_means(plan: BlockPlan, size: int) -> torch.Tensor:
    """Means of ``size`` blocks drawn at random (an estimate: rounding may differ)."""
    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(plan.n_blocks, (size,), generator=generator)
    rows, cols, valid = plan.block_elements(blocks.to(plan.matrix.device))
    vals = plan.gather_scores(rows, cols).masked_fill_(~valid, 0)
    return vals.sum(1) / valid.sum(1)


def _radix_threshold(plan: BlockPlan, k: int) -> tuple[torch.Tensor, int]:
    """Exact ``k``-th smallest block mean (1-based) and how many means lie below it.

    The engine's :func:`radix_select`, its counts taken unit by unit. Means are
    non-negative, so their bit patterns are already the ordered keys.
    """
    int_dtype = torch.int32 if plan.dtype == torch.float32 else torch.int64

    def counts(level: int, shift: int, prefix: int) -> torch.Tensor:
        hist = torch.zeros(1 << 16, dtype=torch.int64)
        for unit in plan.units:
            keys = plan.means(unit, plan.scores(unit)).reshape(-1).view(int_dtype)
            hist += digit_counts(keys, level, shift, prefix, 16)
        return hist

    threshold, ties = radix_select(counts, k, wide=int_dtype == torch.int64)
    return threshold.to(plan.dtype).to(plan.matrix.device), k - ties


def _raise_non_finite(maxima: list[torch.Tensor], plan: BlockPlan) -> None:
    if not maxima or bool(torch.stack(maxima).isfinite().all()):
        return
    raise non_finite_error(plan.matrix, plan.norm, plan.dtype)


def _select(means: torch.Tensor, threshold: torch.Tensor, ties: int, out: torch.Tensor) -> int:
    """``out = means < threshold``, plus the first ``ties`` means equal to it; returns #equal."""
    torch.lt(means, threshold, out=out)
    if ties <= 0:
        return 0
    equal = means == threshold
    out |= equal & (equal.reshape(-1).cumsum(0).view(equal.shape) <= ties)
    return int(equal.sum().item())


def _keep(means: torch.Tensor, threshold: torch.Tensor, ties: int, keep: torch.Tensor) -> int:
    """``keep = means >= threshold``, less the first ``ties`` means equal to it; returns #equal."""
    torch.ge(means, threshold, out=keep)
    if ties <= 0:
        return 0
    equal = means == threshold
    keep &= ~(equal & (equal.reshape(-1).cumsum(0).view(equal.shape) <= ties))
    return int(equal.sum().item())


def _threshold_pass(
    plan: BlockPlan, mask: torch.Tensor, threshold: torch.Tensor, ties: int
) -> None:
    """Write the mask selecting the means below ``threshold`` and the first ``ties`` equal to it."""
    maxima = []
    for unit in plan.units:
        scores = plan.scores(unit)
        means = plan.means(unit, scores)
        maxima.append(means.amax())
        keep = plan.keep_out(mask, unit)
        ties -= _keep(means, threshold, ties, keep)
        plan.write(mask, unit, scores, keep)
    _raise_non_finite(maxima, plan)


def _single_unit(plan: BlockPlan, mask: torch.Tensor, k: int) -> None:
    """Select exactly on the means of a matrix that fits in one unit, then write it."""
    unit = plan.units[0]
    scores = plan.scores(unit)
    means = plan.means(unit, scores)
    _raise_non_finite([means.amax()], plan)
    threshold = means.reshape(-1).kthvalue(k).values
    keep = plan.keep_out(mask, unit)
    _keep(means, threshold, k - int((means < threshold).sum().item()), keep)
    plan.write(mask, unit, scores, keep)


def _candidates(
    plan: BlockPlan, means: torch.Tensor, lo: float, above: torch.Tensor
) -> torch.Tensor:
    """Positions (row-major in the unit) of the means ``>= lo`` not ``above`` ``hi``."""
    n = means.numel()
    padded = plan.candidate_buf[: padded_length(n)]
    inside = padded[:n].view(means.shape)
    torch.ge(means, lo, out=inside)
    inside ^= above  # above hi implies >= lo; NaN is neither
    if padded.numel() > n:
        padded[n:].fill_(False)
    return true_positions(padded)


def _scaled(bound: float, scale: int, dtype: torch.dtype) -> float | None:
    """``scale * bound`` where comparing a block sum with it is comparing its mean with ``bound``.

    A sum over ``scale`` (a power of 2) is the mean scaled exactly, except where the mean
    is subnormal and rounded; so ``mean >= b`` is ``sum >= scale * b`` for ``b`` zero,
    infinite or above the smallest normal number (``scale * b`` overflowing to ``inf``
    included). ``None`` otherwise: the means are then divided as usual.
    """
    if bound == 0 or math.isinf(bound):
        return bound
    if bound <= torch.finfo(dtype).tiny:
        return None
    return float(torch.tensor(bound, dtype=dtype) * scale)


def _bracket_pass(
    plan: BlockPlan, mask: torch.Tensor, k: int, bounds: tuple[float, float], budget: int
) -> bool:
    """One pass with the bracket ``[lo, hi]``; ``False`` if it missed (the mask is then junk)."""
    lo, hi = bounds
    scaled = {a: (_scaled(lo, a, plan.dtype), _scaled(hi, a, plan.dtype)) for a in (2, 4, 8, 16)}
    maxima: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    blocks: list[torch.Tensor] = []
    n_cand = 0
    for unit in plan.units:
        scores = plan.scores(unit)
        scale = plan.sum_scale(unit)
        unit_lo, unit_hi = scaled.get(scale, (None, None))
        if unit_lo is None or unit_hi is None:
            scale, unit_lo, unit_hi = 1, lo, hi
        means = plan.means(unit, scores, divide=scale == 1)  # or sums: ``scale`` times the means
        maxima.append(means.amax())
        # Candidates are written as selected: the ones not chosen are refilled at the end.
        keep = torch.gt(means, unit_hi, out=plan.keep_out(mask, unit))
        local = _candidates(plan, means, unit_lo, keep)
        n_cand += local.numel()
        if n_cand > budget:
            _raise_non_finite(maxima, plan)
            return False
        width = unit.j1 - unit.j0
        picked = means.reshape(-1).index_select(0, local)
        values.append(picked if scale == 1 else picked.div_(scale))
        if width == plan.nbw:
            blocks.append(local + unit.i0 * plan.nbw)
        else:
            blocks.append((local // width + unit.i0) * plan.nbw + local % width + unit.j0)
        del local
        plan.write(mask, unit, scores, keep)
    _raise_non_finite(maxima, plan)
    need = k - (plan.n_blocks - count_true(plan.kept(mask)) - n_cand)
    if not 0 <= need <= n_cand:
        return False
    if need < n_cand:
        cand = torch.cat(values)
        chosen = torch.zeros_like(cand, dtype=torch.bool)
        if need:
            threshold = cand.kthvalue(need).values
            _select(cand, threshold, need - int((cand < threshold).sum().item()), chosen)
        plan.keep_blocks(mask, torch.cat(blocks)[~chosen])
    return True


def chunked_norm_mask(
    matrix: torch.Tensor,
    config: SparsityConfig,
    k: int,
    chunk_elements: int | None = None,
) -> torch.Tensor:
    """Bool mask of the 2-D ``matrix`` with the ``k`` lowest-mean blocks pruned per ``config``.

    ``1 <= k <= n_blocks``. Temporaries are about ``chunk_elements`` in size
    (``None``: ``block_plan.DEFAULT_CHUNK``).
    Raises ``ValueError`` for NaN/Inf data.

    >>> from fsparse import make_config
    >>> x = torch.arange(1.0, 9.0).reshape(2, 4)
    >>> chunked_norm_mask(x, make_config(sparse_block_shape=(1, 2)), 2, 4).int()
    tensor([[0, 0, 0, 0],
            [1, 1, 1, 1]], dtype=torch.int32)
    """
    if matrix.dim() != 2 or matrix.dtype not in SCORE_DTYPES or matrix.numel() == 0:
        raise ValueError(
            f"matrix must be a non-empty 2-D float16/bfloat16/float32/float64 tensor, "
            f"got shape {tuple(matrix.shape)} and dtype {matrix.dtype}"
        )
    if chunk_elements is not None and chunk_elements < 1:
        raise ValueError(f"chunk_elements must be positive, got {chunk_elements}")
    plan = BlockPlan(matrix, fit_config(config, *matrix.shape), chunk_elements)
    if not 1 <= k <= plan.n_blocks:
        raise ValueError(f"k must be in [1, {plan.n_blocks}], got {k}")
    mask = pool.empty(matrix.shape, torch.bool, matrix.device)
    m = sample_size(plan.n_blocks)
    if k == plan.n_blocks:
        _threshold_pass(plan, mask, torch.tensor(math.inf, dtype=plan.dtype), 0)
    elif len(plan.units) == 1 and plan.n_blocks <= 4 * m:
        _single_unit(plan, mask, k)
    elif plan.n_blocks <= m:
        means = torch.cat([plan.means(u, plan.scores(u)).flatten().clone() for u in plan.units])
        _raise_non_finite([means.amax()], plan)
        threshold = means.kthvalue(k).values
        _threshold_pass(plan, mask, threshold, k - int((means < threshold).sum().item()))
    else:
        sample = _sample_means(plan, m)
        bounds = bracket(sample, k / plan.n_blocks)
        crowd = float(((sample >= bounds[0]) & (sample <= bounds[1])).float().mean().item())
        cap = max(plan.n_blocks // 32, m)
        budget = min(int(4 * crowd * plan.n_blocks) + 4096, cap)
        if not (crowd * plan.n_blocks < cap and _bracket_pass(plan, mask, k, bounds, budget)):
            threshold, below = _radix_threshold(plan, k)
            _threshold_pass(plan, mask, threshold, k - below)
    return mask


def large_norm_mask(
    data: torch.Tensor, config: SparsityConfig, chunk_elements: int | None = None
) -> torch.Tensor:
    """``config_norm_mask(data, config)`` computed unit by unit (same mask, lean temporaries).

    >>> from fsparse import make_config
    >>> x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    >>> large_norm_mask(x, make_config(sparse_block_shape=(1, 2)), chunk_elements=2).int()
    tensor([[0, 0, 0, 0],
            [1, 1, 1, 1]], dtype=torch.int32)
    """
    matrix = as_matrix(data.detach())
    if matrix.numel() == 0:
        return torch.ones_like(data, dtype=torch.bool)
    config = fit_config(config, *matrix.shape)
    bh, bw = config.sparse_block_shape
    n_blocks = -(-matrix.shape[0] // bh) * -(-matrix.shape[1] // bw)
    k = pruned_count(config.sparsity_level, n_blocks)
    if k == 0 or config.zeros_per_block == 0:
        plan = BlockPlan(matrix, config, chunk_elements)
        _raise_non_finite([plan.means(u, plan.scores(u)).amax() for u in plan.units], plan)
        return torch.ones_like(data, dtype=torch.bool)
    return chunked_norm_mask(matrix, config, k, chunk_elements).view(data.shape)
