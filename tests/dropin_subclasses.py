"""A user's torch.ao-style sparsifier subclass, built on both libraries (shared by tests)."""

from __future__ import annotations

from typing import Any

import torch
from torch.ao.pruning._experimental import data_sparsifier as ao_sparse

from fsparse import data_sparsifier as fs_sparse


def update_mask_in_place(self: Any, name: str, data: torch.Tensor, **kwargs: Any) -> None:
    """torch.ao's own test subclass: zero the first row in place, count the steps."""
    mask = self.get_mask(name)
    mask[0] = 0
    entry = self.state[name]
    entry["step_count"] = entry.get("step_count", 0) + 1


class FsImplemented(fs_sparse.BaseDataSparsifier):
    update_mask = update_mask_in_place


class AoImplemented(ao_sparse.BaseDataSparsifier):
    update_mask = update_mask_in_place
