"""Magnitude pruning of one layer: the baseline of the SparseGPT and Wanda papers.

As Wanda's ``prune_magnitude`` (locuslab/wanda, ``lib/prune.py``): the score is
``|W_ij|`` and one threshold covers the whole layer; with ``n_m`` the N lowest
of every M consecutive input columns are pruned in each row. The mask comes
from the selection engine (exactly ``int(numel * sparsity)`` pruned, ties by
flat index), where the reference's ``sort()[int(numel * sparsity)]`` threshold
with ``<=`` prunes one more (and every tie with it).
"""

from __future__ import annotations

import torch

from fsparse._src.engine import select_count_mask, select_mask
from fsparse.oneshot._args import check_n_m, check_sparsity, check_weight, keep_pattern

__all__ = ["magnitude_prune"]


def magnitude_prune(
    weight: torch.Tensor, sparsity: float, *, n_m: tuple[int, int] | None = None
) -> torch.Tensor:
    """``weight`` with its ``int(numel * sparsity)`` smallest-magnitude entries zeroed (a copy).

    With ``n_m=(N, M)`` the N smallest of every M consecutive input columns are
    zeroed in each row (the pattern fixes the ratio; ``sparsity=0`` prunes nothing).

    >>> magnitude_prune(torch.tensor([[1.0, -4.0, 2.0, 3.0]]), 0.5).tolist()
    [[0.0, -4.0, 0.0, 3.0]]
    """
    weight = check_weight(weight)
    sparsity = check_sparsity(sparsity)
    pattern = check_n_m(n_m, weight.shape[1])
    scores = weight.detach().abs()
    if pattern is None:
        keep = select_count_mask(scores, int(weight.numel() * sparsity))
    else:
        keep = select_mask(scores, sparsity, keep_pattern(pattern))
    return weight.detach() * keep
