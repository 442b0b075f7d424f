"""Sparse-layout tensors (COO, CSR, CSC, BSR, BSC) in a checkpoint: checked, then passed through.

fsparse sparsifies dense tensors only. A sparse tensor in a state dict is kept
exactly as it is, but a file is untrusted: its invariants (index dtype and
range, compressed-index monotonicity, sizes) are checked when it is loaded,
without densifying it, so a malformed one is a clear error and never reaches
code that would read outside its buffers. Patterns may still name it.
"""

from __future__ import annotations

from typing import Any

import torch

from fsparse.cli.file_kinds import CheckpointError

__all__ = ["check_sparse", "selectable"]


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def check_sparse(name: str, tensor: torch.Tensor) -> None:
    """Check a sparse-layout tensor's invariants (indices in range, sizes) without densifying it;
    a ``CheckpointError`` naming ``name`` if they fail."""
    layout = tensor.layout
    try:
        if layout == torch.sparse_coo:
            torch._validate_sparse_coo_tensor_args(
                tensor._indices(), tensor._values(), tensor.shape
            )
        elif layout in (torch.sparse_csr, torch.sparse_bsr):
            torch._validate_sparse_compressed_tensor_args(
                tensor.crow_indices(), tensor.col_indices(), tensor.values(), tensor.shape, layout
            )
        elif layout in (torch.sparse_csc, torch.sparse_bsc):
            torch._validate_sparse_compressed_tensor_args(
                tensor.ccol_indices(), tensor.row_indices(), tensor.values(), tensor.shape, layout
            )
        else:
            raise ValueError(f"unsupported layout {layout}")
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise CheckpointError(
            f"{name}: not a valid sparse tensor ({layout}, shape {tuple(tensor.shape)}): "
            f"{_first_line(err)[:200]}"
        ) from None


def selectable(ckpt: Any) -> dict[str, torch.Tensor]:
    """The names selection sees: the dense tensors, and each sparse-layout tensor as an empty
    bool placeholder (patterns may name it; it is never selected, so it passes through)."""
    out: dict[str, torch.Tensor] = {}
    for name, value in ckpt.state_dict.items():
        if isinstance(value, torch.Tensor):
            dense = value.layout == torch.strided
            out[name] = value if dense else torch.empty(0, dtype=torch.bool)
    return out
