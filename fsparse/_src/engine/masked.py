"""Masked data for a forward pass: ``data * mask`` and ``where(mask, data, 0)``, differentiable.

:func:`masked` is the one place a forward pass applies a bool mask: ``fsparse.sparsified``
(the product, as torch.ao's ``X * mask``) and ``fsparse.pruners.apply_masks`` (the
select, so a pruned ``inf`` gives 0, not NaN) both call it. Where the native kernels
apply (plain contiguous CPU float32/float64 data and a bool mask of its shape, outside
``torch.func`` transforms and ``torch.compile``), one pass reads the data and the mask
bytes and writes the result, in the forward and again in the backward (the gradient is
the upstream gradient masked the same way). Elsewhere it is the torch expression. Both
give the same values bit for bit: the product multiplies by 0.0 or 1.0, so ``-0.0`` and
NaN come out as the multiply gives them.

The torch product converts the mask to the data's dtype first, which writes a fresh
float tensor the size of the data at every forward: on the embedding-bag training step
of ``benchmarks/cases.py`` that step took 1.14x a dense one, against 1.10x with this
pass (best of 60 interleaved rounds; ``docs/native.md``).
"""

from __future__ import annotations

from typing import Any

import torch

from fsparse._src.engine import native, pool

__all__ = ["masked"]


def _applies(data: torch.Tensor, mask: torch.Tensor) -> bool:
    if native.KERNELS is None or data.dtype not in (torch.float32, torch.float64):
        return False
    if torch.compiler.is_compiling() or torch._C._functorch.peek_interpreter_stack() is not None:
        return False  # traced by torch.compile, or inside a torch.func transform
    # the kernel reads the values only: a Parameter's detached view is a plain tensor
    return (native.plain(data.detach(), data.dtype) and native.plain(mask, torch.bool)
            and mask.shape == data.shape)


class _Masked(torch.autograd.Function):
    """The native pass; its backward masks the upstream gradient the same way."""

    @staticmethod
    def forward(data: torch.Tensor, mask: torch.Tensor, select: bool) -> torch.Tensor:
        assert native.KERNELS is not None
        out = pool.empty(data.shape, data.dtype)
        native.KERNELS.fsp_masked(data.data_ptr(), mask.data_ptr(), out.data_ptr(), data.numel(),
                                  int(data.dtype == torch.float64), int(select),
                                  native.threads(data.numel()))
        return out

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.save_for_backward(inputs[1])
        ctx.select = inputs[2]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (mask,) = ctx.saved_tensors
        return masked(grad, mask, select=ctx.select), None, None


def masked(data: torch.Tensor, mask: torch.Tensor, *, select: bool = False) -> torch.Tensor:
    """``data * mask`` (the mask as 0 or 1), or with ``select`` ``where(mask, data, 0)``: a
    fresh tensor, differentiable with respect to ``data``. ``mask`` is bool and
    broadcasts to ``data``.

    >>> w = torch.tensor([2.0, -3.0, float("inf")], requires_grad=True)
    >>> keep = torch.tensor([True, False, False])
    >>> masked(w, keep).tolist(), masked(w, keep, select=True).tolist()
    ([2.0, -0.0, nan], [2.0, 0.0, 0.0])
    >>> torch.autograd.grad(masked(w, keep).sum(), w)[0].tolist()
    [1.0, 0.0, 0.0]
    """
    if _applies(data, mask):
        return _Masked.apply(data, mask, select)
    if select:
        return torch.where(mask, data, torch.zeros((), dtype=data.dtype, device=data.device))
    return data * mask.to(data.dtype)
