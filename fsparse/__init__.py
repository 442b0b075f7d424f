"""fsparse: functional, immutable data sparsification for PyTorch.

The functional core lives in ``fsparse._src``; this module re-exports it.
The torch.ao-compatible classes live in ``fsparse.data_sparsifier`` and
``fsparse.data_scheduler``; recipes in ``fsparse.create``; the Lightning
callbacks in ``fsparse.lightning``.
"""

from fsparse._src.batching import stacked_norm_mask
from fsparse._src.config import NORMS, MaskFn, SparsityConfig, make_config
from fsparse._src.mask_types import (
    block_scores,
    channels_last_mask,
    existing_zeros_mask,
    global_levels,
)
from fsparse._src.norm_mask import (
    block_means,
    config_norm_mask,
    norm_mask,
    norm_scores,
    select_k_smallest,
)
from fsparse._src.packing import load_masks, masks_state_dict, pack_mask, unpack_mask
from fsparse._src.scheduler import Scheduler, SchedulerState, schedule
from fsparse._src.schedules import Schedule, cubic, lambda_sl, linear, polynomial, step_sl
from fsparse._src.state import (
    EMBEDDING_TYPES,
    SUPPORTED_TYPES,
    Entry,
    SparsifierState,
    add,
    extract_weight,
    init,
    remove,
    sparsified,
    sparsity,
    squash,
    step,
)

__version__ = "0.1.0"

__all__ = [
    "EMBEDDING_TYPES",
    "NORMS",
    "SUPPORTED_TYPES",
    "Entry",
    "MaskFn",
    "Schedule",
    "Scheduler",
    "SchedulerState",
    "SparsifierState",
    "SparsityConfig",
    "add",
    "block_means",
    "block_scores",
    "channels_last_mask",
    "config_norm_mask",
    "cubic",
    "existing_zeros_mask",
    "extract_weight",
    "global_levels",
    "init",
    "lambda_sl",
    "linear",
    "load_masks",
    "make_config",
    "masks_state_dict",
    "norm_mask",
    "norm_scores",
    "pack_mask",
    "polynomial",
    "remove",
    "schedule",
    "select_k_smallest",
    "sparsified",
    "sparsity",
    "squash",
    "stacked_norm_mask",
    "step",
    "step_sl",
    "unpack_mask",
]
