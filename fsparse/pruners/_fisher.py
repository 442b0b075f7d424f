"""Block-diagonal empirical Fisher inverses: oBERT's and M-FAC's, one interface.

For ``m`` gradients ``g_1..g_m`` (the rows of an ``(m, d)`` tensor) both give
``F^-1`` for ``F = damp * I + (1/m) * sum_i g_i g_i^T``, block-diagonal over
consecutive blocks of ``block_size`` coordinates (the last block may be
shorter; a ``block_size`` above ``d`` is one block of ``d``). Each step of the
recursion ``F_i = F_{i-1} + g_i g_i^T / m`` is one Sherman-Morrison update
``F_i^-1 = F_{i-1}^-1 - u u^T / (m + g_i^T u)``, ``u = F_{i-1}^-1 g_i``.

* :class:`FisherInverse` keeps every block of ``F^-1`` explicitly, as oBERT's
  ``EmpiricalBlockFisherInverse`` does (Kurtic et al. 2022).
* :class:`MFACInverse` keeps only the ``m`` vectors of M-FAC's recursive form
  ``F^-1 = I / damp - sum_i s_i s_i^T`` (per block; Frantar et al. 2021,
  ``HInvFastBatch``/``HInvFastBlock``), with ``s_i = u_i / sqrt(m + g_i^T u_i)``.

Both have ``diag()`` (the diagonal of ``F^-1``), ``mul(v)`` (``F^-1 v``) and
``submatrices(index)`` (the ``[F^-1]_U`` of index sets ``U``, used by block
OBS), plus ``state_dict()``/``from_state_dict`` (plain tensors and numbers that
``torch.load(weights_only=True)`` reads back). Computed in the grads' dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fsparse._src.checks import check_finite, check_instance, check_int, check_real, check_tensor

__all__ = ["FisherInverse", "MFACInverse"]


def _check_inputs(grads: object, damp: object, block_size: object
                  ) -> tuple[torch.Tensor, float, int]:
    g = check_tensor(grads, "grads")
    if g.dim() != 2 or g.shape[0] < 1 or g.shape[1] < 1:
        raise ValueError(f"grads must be an (m, d) tensor with m >= 1 and d >= 1, got shape "
                         f"{tuple(g.shape)}")
    check_finite(g, "grads")
    lam = check_real(damp, "damp")
    if lam <= 0:
        raise ValueError(f"damp must be > 0, got {lam!r}")
    size = check_int(block_size, "block_size", low=1)
    return g, lam, min(size, g.shape[1])


def _padded(g: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    """``g`` (``(..., d)``) zero-padded to whole blocks: ``(..., nb, block)``, and ``nb``."""
    d = g.shape[-1]
    nb = -(-d // block)
    if nb * block != d:
        g = torch.nn.functional.pad(g, (0, nb * block - d))
    return g.reshape(*g.shape[:-1], nb, block), nb


def _check_vector(v: object, d: int, dtype: torch.dtype) -> torch.Tensor:
    x = check_tensor(v, "v")
    if tuple(x.shape) != (d,):
        raise ValueError(f"v must have shape ({d},), got {tuple(x.shape)}")
    return x.to(dtype)


def _same_block(index: torch.Tensor, block: int) -> torch.Tensor:
    """``(U, u, u)`` bool: both coordinates valid (>= 0) and in the same Fisher block."""
    bid = torch.where(index >= 0, index // block, -1)
    valid = index >= 0
    return (bid[:, :, None] == bid[:, None, :]) & valid[:, :, None] & valid[:, None, :]


def _pad_identity(sub: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Padding coordinates (``index < 0``) get a 1 on the diagonal, so ``sub`` stays invertible."""
    pad = (index < 0).to(sub.dtype)
    return sub + torch.diag_embed(pad)


@dataclass(frozen=True)
class FisherInverse:
    """oBERT's explicit block inverse (Kurtic et al. 2022, ``EmpiricalBlockFisherInverse``).

    Memory ``O(d * block_size)`` (the ``ceil(d / B)`` blocks of ``B x B``);
    :meth:`from_grads` takes ``O(m * d * block_size)`` time, :meth:`mul`
    ``O(d * block_size)``, :meth:`diag` ``O(d)``.

    >>> g = torch.tensor([[1.0, 0.0, 2.0]])
    >>> finv = FisherInverse.from_grads(g, damp=1.0, block_size=2)
    >>> [round(x, 4) for x in finv.diag().tolist()]
    [0.5, 1.0, 0.2]
    """

    blocks: torch.Tensor  # (nb, B, B); the padding coordinates of the last block hold I / damp
    d: int
    damp: float

    @classmethod
    def from_grads(cls, grads: torch.Tensor, *, damp: float, block_size: int) -> FisherInverse:
        """Start each block at ``I / damp``; one Sherman-Morrison step per gradient (row)."""
        g, lam, block = _check_inputs(grads, damp, block_size)
        m, d = g.shape
        gb, nb = _padded(g, block)  # (m, nb, B)
        with torch.no_grad():  # finv is ours: built and updated in place (no full-size copies)
            finv = torch.zeros(nb, block, block, dtype=g.dtype, device=g.device)
            finv.diagonal(dim1=1, dim2=2).fill_(torch.ones((), dtype=g.dtype,
                                                           device=g.device) / lam)
            for i in range(m):
                u = torch.einsum("bij,bj->bi", finv, gb[i])
                alpha = (m + (gb[i] * u).sum(-1)).sqrt()
                u = u / alpha[:, None]
                finv.baddbmm_(u[:, :, None], u[:, None, :], alpha=-1.0)
        return cls(finv, d, lam)

    @property
    def block_size(self) -> int:
        return int(self.blocks.shape[-1])

    def diag(self) -> torch.Tensor:
        """The diagonal of ``F^-1``, shape ``(d,)``."""
        return self.blocks.diagonal(dim1=1, dim2=2).reshape(-1)[: self.d]

    def mul(self, v: torch.Tensor) -> torch.Tensor:
        """``F^-1 v`` for a ``(d,)`` vector."""
        x, _ = _padded(_check_vector(v, self.d, self.blocks.dtype), self.block_size)
        return torch.einsum("bij,bj->bi", self.blocks, x).reshape(-1)[: self.d]

    def submatrices(self, index: torch.Tensor) -> torch.Tensor:
        """``[F^-1]_U`` per row ``U`` of a ``(U, u)`` long tensor of coordinates (-1: padding)."""
        b = self.block_size
        safe = index.clamp_min(0)
        bid, loc = safe // b, safe % b
        sub = self.blocks[bid[:, :, None], loc[:, :, None], loc[:, None, :]]
        return _pad_identity(torch.where(_same_block(index, b), sub, 0.0), index)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "fisher", "blocks": self.blocks, "d": self.d, "damp": self.damp}

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any]) -> FisherInverse:
        check_instance(sd, Mapping, "state_dict")
        blocks = check_tensor(sd.get("blocks"), "state_dict['blocks']")
        d = check_int(sd.get("d"), "state_dict['d']", low=1)
        damp = check_real(sd.get("damp"), "state_dict['damp']")
        if blocks.dim() != 3 or blocks.shape[1] != blocks.shape[2] or \
                blocks.shape[0] != math.ceil(d / max(blocks.shape[1], 1)):
            raise ValueError(f"state_dict['blocks'] has shape {tuple(blocks.shape)}, which does "
                             f"not tile d={d}")
        return cls(blocks, d, damp)


@dataclass(frozen=True)
class MFACInverse:
    """M-FAC's recursive form (Frantar et al. 2021): ``F^-1 = I / damp - sum s_i s_i^T``.

    Stores only the ``(m, d)`` vectors ``s_i`` (never a ``d x d`` or block
    matrix): memory ``O(m * d)``; :meth:`from_grads` takes ``O(m^2 * d)`` time
    (M-FAC's static algorithm), :meth:`mul` and :meth:`diag` ``O(m * d)``.

    >>> g = torch.tensor([[1.0, 0.0, 2.0]])
    >>> finv = MFACInverse.from_grads(g, damp=1.0, block_size=2)
    >>> [round(x, 4) for x in finv.diag().tolist()]
    [0.5, 1.0, 0.2]
    """

    vectors: torch.Tensor  # (m, nb * B): s_i, zero on the padding of the last block
    block: int
    d: int
    damp: float

    @classmethod
    def from_grads(cls, grads: torch.Tensor, *, damp: float, block_size: int) -> MFACInverse:
        """``s_i = (g_i / damp - sum_{j<i} (s_j . g_i) s_j) / sqrt(m + g_i . u_i)`` per block."""
        g, lam, block = _check_inputs(grads, damp, block_size)
        m, d = g.shape
        gb, nb = _padded(g, block)  # (m, nb, B)
        with torch.no_grad():
            s = torch.zeros_like(gb)
            for i in range(m):
                u = gb[i] / lam
                if i:
                    dots = torch.einsum("jbk,bk->jb", s[:i], gb[i])
                    u = u - torch.einsum("jb,jbk->bk", dots, s[:i])
                alpha = (m + (gb[i] * u).sum(-1)).sqrt()
                s[i] = u / alpha[:, None]
        return cls(s.reshape(m, nb * block), block, d, lam)

    def _blocks(self) -> torch.Tensor:
        return self.vectors.reshape(self.vectors.shape[0], -1, self.block)

    def diag(self) -> torch.Tensor:
        """The diagonal of ``F^-1``, shape ``(d,)``."""
        return (1.0 / self.damp - (self.vectors ** 2).sum(0))[: self.d]

    def mul(self, v: torch.Tensor) -> torch.Tensor:
        """``F^-1 v`` for a ``(d,)`` vector."""
        x, _ = _padded(_check_vector(v, self.d, self.vectors.dtype), self.block)
        s = self._blocks()
        dots = torch.einsum("jbk,bk->jb", s, x)
        return (x / self.damp - torch.einsum("jb,jbk->bk", dots, s)).reshape(-1)[: self.d]

    def submatrices(self, index: torch.Tensor) -> torch.Tensor:
        """``[F^-1]_U`` per row ``U`` of a ``(U, u)`` long tensor of coordinates (-1: padding)."""
        cols = self.vectors[:, index.clamp_min(0)]  # (m, U, u)
        sub = -torch.einsum("kui,kuj->uij", cols, cols)
        eye = (index[:, :, None] == index[:, None, :]).to(sub.dtype) / self.damp
        return _pad_identity(torch.where(_same_block(index, self.block), sub + eye, 0.0), index)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "mfac", "vectors": self.vectors, "block": self.block, "d": self.d,
                "damp": self.damp}

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any]) -> MFACInverse:
        check_instance(sd, Mapping, "state_dict")
        vectors = check_tensor(sd.get("vectors"), "state_dict['vectors']")
        block = check_int(sd.get("block"), "state_dict['block']", low=1)
        d = check_int(sd.get("d"), "state_dict['d']", low=1)
        damp = check_real(sd.get("damp"), "state_dict['damp']")
        if vectors.dim() != 2 or vectors.shape[1] != math.ceil(d / block) * block:
            raise ValueError(f"state_dict['vectors'] has shape {tuple(vectors.shape)}, which "
                             f"does not tile d={d} in blocks of {block}")
        return cls(vectors, block, d, damp)
