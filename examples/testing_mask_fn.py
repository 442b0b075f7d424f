"""Property-test your own mask function with fsparse.testing (needs `fsparse[testing]`).

``row_mask`` prunes whole rows by L2 norm; its zero count is not the norm block
rule's, so the check gets a count function. A buggy variant (off by one row)
shows the shrunk failing example that check_mask_fn reports.

Run: python examples/testing_mask_fn.py
"""

import torch

import fsparse
from fsparse.testing import MaskCheckError, check_mask_fn, tensors


def row_mask(data: torch.Tensor, config: fsparse.SparsityConfig) -> torch.Tensor:
    """Prune the ``sparsity_level`` fraction of rows with the smallest L2 norm."""
    if not bool(torch.isfinite(data).all()):
        raise ValueError("data must be finite")
    rows = data.reshape(data.shape[0], -1).float().norm(dim=1)
    level = min(max(config.sparsity_level, 0.0), 1.0)
    pruned = fsparse.select_k_smallest(rows, round(level * data.shape[0]))
    return (~pruned)[:, None].expand(data.shape[0], data[0].numel()).reshape(data.shape)


def expected_zeros(data: torch.Tensor, config: fsparse.SparsityConfig) -> int:
    level = min(max(config.sparsity_level, 0.0), 1.0)
    return round(level * data.shape[0]) * data[0].numel()


# The checks: ten lines.
matrices = tensors(min_dims=2, max_dims=3)
check_mask_fn(row_mask, data=matrices, count=expected_zeros, monotone=True)()
check_mask_fn(fsparse.config_norm_mask)()  # the built-in mask passes the defaults


def buggy(data: torch.Tensor, config: fsparse.SparsityConfig) -> torch.Tensor:
    return row_mask(data, config.replace(sparsity_level=config.sparsity_level + 0.34))


try:
    check_mask_fn(buggy, data=matrices, count=expected_zeros)()
except MaskCheckError as error:
    print("caught:", str(error).splitlines()[0])
else:
    raise SystemExit("the off-by-one mask function was not caught")
print("row_mask passes check_mask_fn")
