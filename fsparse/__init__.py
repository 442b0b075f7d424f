"""fsparse: functional, immutable data sparsification for PyTorch.

The functional core lives in ``fsparse._src``; this module re-exports it.
The torch.ao-compatible classes live in ``fsparse.data_sparsifier`` and
``fsparse.data_scheduler``; recipes in ``fsparse.create``; the Lightning
callbacks in ``fsparse.lightning``.
"""

from fsparse._src.config import NORMS, MaskFn, SparsityConfig, make_config
from fsparse._src.engine import (
    NM,
    Block,
    Channel,
    Pattern,
    Unstructured,
    global_select_masks,
    parse_pattern,
    select_count_mask,
    select_mask,
)
from fsparse._src.engine.batching import stacked_norm_mask
from fsparse._src.engine.mask_types import (
    block_scores,
    channels_last_mask,
    existing_zeros_mask,
    global_levels,
)
from fsparse._src.engine.norm_mask import (
    block_means,
    config_norm_mask,
    norm_mask,
    norm_scores,
    select_k_smallest,
)
from fsparse._src.engine.pool import cached_memory, release_cached_memory
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
    "NM",
    "NORMS",
    "SUPPORTED_TYPES",
    "Block",
    "Channel",
    "Entry",
    "MaskFn",
    "Pattern",
    "Schedule",
    "Scheduler",
    "SchedulerState",
    "SparsifierState",
    "SparsityConfig",
    "Unstructured",
    "add",
    "block_means",
    "block_scores",
    "cached_memory",
    "channels_last_mask",
    "config_norm_mask",
    "cubic",
    "existing_zeros_mask",
    "extract_weight",
    "global_levels",
    "global_select_masks",
    "init",
    "lambda_sl",
    "linear",
    "load_masks",
    "make_config",
    "masks_state_dict",
    "norm_mask",
    "norm_scores",
    "pack_mask",
    "parse_pattern",
    "polynomial",
    "release_cached_memory",
    "remove",
    "schedule",
    "select_count_mask",
    "select_k_smallest",
    "select_mask",
    "sparsified",
    "sparsity",
    "squash",
    "stacked_norm_mask",
    "step",
    "step_sl",
    "unpack_mask",
]

# The pruners' distributions and drop-and-grow rule (fsparse.pruners), also public here.
from fsparse.pruners import drop_and_grow, erk_sparsities, uniform_sparsities

__all__ += ["drop_and_grow", "erk_sparsities", "uniform_sparsities"]
