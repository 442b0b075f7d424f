"""Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models").

As the authors' ``prune_wanda`` (locuslab/wanda, ``lib/prune.py``, statistics in
``lib/layerwrapper.py``): the score of ``W_ij`` is ``|W_ij| * sqrt(s_j)``, where
``s_j`` is the mean squared value of input feature ``j`` over the calibration
tokens, and each output row loses its ``int(in * sparsity)`` lowest scores
(the reference's stable sort: ties by index). With ``n_m=(N, M)``, the N lowest
of every M consecutive input columns (the reference's ``topk``; here ties by
position). No weight is updated. Masks come from the selection engine.
"""

from __future__ import annotations

import torch

from fsparse._src.checks import check_finite, check_tensor, short_repr
from fsparse._src.engine import select_count_mask, select_mask
from fsparse.oneshot._args import (
    check_n_m,
    check_sparsity,
    check_weight,
    compute_dtype,
    keep_pattern,
    pruned_per_row,
)

__all__ = ["wanda_prune", "wanda_scores"]


def _check_norms(input_sq_norms: object, columns: int) -> torch.Tensor:
    norms = check_tensor(input_sq_norms, "input_sq_norms")
    if tuple(norms.shape) != (columns,):
        raise ValueError(
            f"input_sq_norms must have shape ({columns},) (one value per input column of "
            f"weight), got {short_repr(tuple(norms.shape))}"
        )
    check_finite(norms, "input_sq_norms")
    if bool((norms < 0).any()):
        raise ValueError("input_sq_norms must be >= 0 (mean squared inputs), got negative values")
    return norms


def wanda_scores(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * sqrt(s_j)`` in float32 (float64 for float64 weights)."""
    weight = check_weight(weight)
    norms = _check_norms(input_sq_norms, weight.shape[1])
    dtype = compute_dtype(weight.dtype)
    return weight.detach().to(dtype).abs() * norms.detach().to(dtype, copy=True).sqrt()


def wanda_prune(
    weight: torch.Tensor,
    input_sq_norms: torch.Tensor,
    sparsity: float,
    *,
    n_m: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``weight`` (a copy) with the lowest ``int(in * sparsity)`` Wanda scores of each row zeroed.

    ``input_sq_norms`` is ``(in,)``: each input feature's mean square over the
    calibration tokens (any common scale gives the same mask). With
    ``n_m=(N, M)``, N of every M consecutive input columns are pruned in each row.

    >>> w = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    >>> wanda_prune(w, torch.tensor([16.0, 1.0, 1.0, 1.0]), 0.5).tolist()  # scores 4, 2, 3, 4
    [[1.0, 0.0, 0.0, 4.0]]
    """
    scores = wanda_scores(weight, input_sq_norms)
    sparsity = check_sparsity(sparsity)
    pattern = check_n_m(n_m, weight.shape[1])
    if pattern is not None:
        keep = select_mask(scores, sparsity, keep_pattern(pattern))
    elif weight.numel() == 0:
        keep = torch.ones(weight.shape, dtype=torch.bool, device=weight.device)
    else:
        k = pruned_per_row(weight.shape[1], sparsity)
        keep = torch.vmap(lambda row: select_count_mask(row, k))(scores)
    return weight.detach() * keep
