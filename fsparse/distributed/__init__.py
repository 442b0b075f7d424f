"""fsparse on ``torch.distributed``: exact masks of row-sharded tensors, never gathered.

The engine's distributed form (see ``docs/distributed.md``). Data is either a
``DTensor`` (``Shard(0)`` or ``Replicate()`` on a 1-D mesh; the mask comes back
as a DTensor placed alike) or a plain local shard with its global
``row_offset`` and a process ``group`` (``None``: the default group). Every
rank of the group must call with its own shard; masks equal the matching
slice of the single-process mask of the whole tensor, bit for bit.

Importing this package registers its DTensor forms with the engine
(:mod:`fsparse._src.engine.dispatch`), so ``fsparse.select_mask``,
``fsparse.config_norm_mask``, ``fsparse.init`` / ``fsparse.step``, the pruners and
the drop-in accept DTensors; the engine imports it on the first DTensor it meets.
"""

from fsparse._src.engine.dispatch import DTENSOR, register
from fsparse.distributed.api import (
    config_norm_mask,
    global_levels,
    global_select_masks,
    norm_mask,
    select_count_mask,
    select_mask,
)
from fsparse.distributed.dtensor import global_extreme, is_dtensor, seeded_uniform
from fsparse.distributed.selection import BITS, distributed_lowest

__all__ = ["BITS", "config_norm_mask", "distributed_lowest", "global_levels",
           "global_select_masks", "is_dtensor", "norm_mask", "select_count_mask", "select_mask"]

for _name, _fn in (("select_mask", select_mask), ("select_count_mask", select_count_mask),
                   ("global_select_masks", global_select_masks),
                   ("config_norm_mask", config_norm_mask), ("seeded_uniform", seeded_uniform),
                   ("global_extreme", global_extreme), ("global_levels", global_levels)):
    register(DTENSOR, _name, _fn)
