"""SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be
Accurately Pruned in One-Shot"), as the authors' ``SparseGPT.fasterprune``
(IST-DASLab/sparsegpt, ``sparsegpt.py``), for one ``(out, in)`` weight.

1. Dead columns (``H_jj == 0``) get ``H_jj = 1`` and a zero weight.
2. ``damp = dampening * mean(diag H)`` is added to the diagonal.
3. ``U``: the upper Cholesky factor of ``H^-1``.
4. Columns are swept left to right in blocks of ``block_size``. At the start of
   each block the mask of the whole block is chosen from the current (already
   compensated) weights by ``w^2 / U_jj^2``; with ``n_m=(N, M)`` it is chosen
   instead per group of M columns when the sweep reaches the group, pruning the
   N lowest of each row.
5. Each column's error ``(w - q) / U_jj`` is propagated to the columns on its
   right (inside the block column by column, then to the rest in one product).

Masks come from the selection engine. Where the count differs from the
reference: the reference prunes the elements ``<=`` the ``int(numel_b *
sparsity)``-th smallest score of each block (one more than that, plus ties);
here exactly ``int(end * sparsity) - int(start * sparsity)`` elements are
pruned in the block covering flat elements ``[start, end)`` of the
column-major sweep, so the layer loses exactly ``int(numel * sparsity)``, ties
broken by index. N:M groups are the reference's ``topk`` (ties by position).
"""

from __future__ import annotations

import itertools

import torch

from fsparse._src.checks import check_finite, check_int, check_real, check_tensor, short_repr
from fsparse._src.engine import select_count_mask, select_mask
from fsparse.oneshot._args import (
    check_n_m,
    check_sparsity,
    check_weight,
    compute_dtype,
    keep_pattern,
)

__all__ = ["hessian_inverse_factor", "sparsegpt_prune"]


def _check_hessian(hessian: object, columns: int) -> torch.Tensor:
    hessian = check_tensor(hessian, "hessian")
    if tuple(hessian.shape) != (columns, columns):
        raise ValueError(
            f"hessian must be square ({columns}, {columns}) for a weight with {columns} input "
            f"columns, got shape {short_repr(tuple(hessian.shape))}"
        )
    return check_finite(hessian, "hessian")


def hessian_inverse_factor(
    hessian: torch.Tensor, dampening: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, dead)``: the upper Cholesky factor of the dampened ``H^-1`` and the dead columns.

    ``hessian`` is not modified. ``ValueError`` if ``H + damp I`` is not positive definite.
    """
    hessian = check_tensor(hessian, "hessian")
    _check_hessian(hessian, hessian.shape[0] if hessian.dim() else 0)
    dampening = check_real(dampening, "dampening", low=0.0)
    dtype = compute_dtype(hessian.dtype)
    h = hessian.detach().to(dtype, copy=True)
    diagonal = h.diagonal()
    dead = diagonal == 0
    diagonal[dead] = 1.0
    diagonal += dampening * diagonal.mean()
    lower, info = torch.linalg.cholesky_ex(h)
    if int(info) != 0:
        raise ValueError(
            f"hessian + dampening * mean(diag) * I is not positive definite (leading minor "
            f"{int(info)} fails); the Hessian must be symmetric positive semi-definite, or raise "
            f"dampening (got {short_repr(dampening)})"
        )
    upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
    if int(info) != 0:
        raise ValueError(f"hessian is too ill-conditioned to invert; raise dampening (got "
                         f"{short_repr(dampening)})")
    return upper, dead


def _block_counts(rows: int, columns: int, block_size: int, sparsity: float) -> list[int]:
    """Elements to prune per block: the cumulative ``int(elements * sparsity)`` differences."""
    ends = [min(i + block_size, columns) for i in range(0, columns, block_size)]
    marks = [0] + [int(rows * end * sparsity) for end in ends]
    return [b - a for a, b in itertools.pairwise(marks)]


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    *,
    n_m: tuple[int, int] | None = None,
    block_size: int = 128,
    dampening: float = 0.01,
) -> torch.Tensor:
    """The pruned, error-compensated copy of the ``(out, in)`` ``weight``.

    ``hessian`` is ``(in, in)``, proportional to ``X^T X`` of the layer's inputs
    (``2/n sum x x^T`` in the reference; its scale does not change the result).
    Neither input is modified. With ``n_m=(N, M)`` (``block_size`` a multiple of
    M), N of every M consecutive input columns are pruned in each row and
    ``sparsity`` only switches pruning on (``0`` prunes nothing). Time
    ``O(in^3 + out * in^2)``, memory ``O(in^2 + out * in)``.

    >>> w = torch.tensor([[1.0, 0.5, -2.0, 0.1]])
    >>> (sparsegpt_prune(w, torch.eye(4), 0.5) == 0).tolist()
    [[False, True, False, True]]
    """
    weight = check_weight(weight)
    rows, columns = weight.shape
    hessian = _check_hessian(hessian, columns)
    sparsity = check_sparsity(sparsity)
    pattern = check_n_m(n_m, columns)
    block_size = check_int(block_size, "block_size", low=1)
    if pattern is not None and block_size % pattern[1]:
        raise ValueError(f"block_size ({block_size}) must be a multiple of M={pattern[1]} "
                         f"(n_m={short_repr(tuple(pattern))})")
    upper, dead = hessian_inverse_factor(hessian, dampening)
    w = weight.detach().to(upper.dtype, copy=True)
    w[:, dead] = 0.0
    if weight.numel() == 0 or sparsity == 0.0:
        return w.to(weight.dtype)
    counts = _block_counts(rows, columns, block_size, sparsity)
    for b, i1 in enumerate(range(0, columns, block_size)):
        i2 = min(i1 + block_size, columns)
        u = upper[i1:i2, i1:i2]
        d = u.diagonal()
        block = w[:, i1:i2]
        errors = torch.zeros_like(block)
        if pattern is None:
            pruned = ~select_count_mask(block.square() / d.square(), counts[b])
        else:
            pruned = torch.zeros(block.shape, dtype=torch.bool, device=block.device)
        for i in range(i2 - i1):
            if pattern is not None and i % pattern[1] == 0:
                group = slice(i, i + pattern[1])
                scores = block[:, group].square() / d[group].square()
                pruned[:, group] = ~select_mask(scores, sparsity, keep_pattern(pattern))
            column = block[:, i]
            q = torch.where(pruned[:, i], torch.zeros_like(column), column)
            error = (column - q) / d[i]
            block[:, i:] -= error[:, None] * u[i, i:][None, :]
            block[:, i] = q
            errors[:, i] = error
        w[:, i2:] -= errors @ upper[i1:i2, i2:]
    return w.to(weight.dtype)
