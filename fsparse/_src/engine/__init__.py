"""The one selection engine: scores in, masks out.

* :mod:`~fsparse._src.engine.patterns`: sparsity patterns as value objects.
* :mod:`~fsparse._src.engine.scoring`: norm scores and block reduction.
* :mod:`~fsparse._src.engine.threshold`: the exact ``k``-th smallest over one or
  many tensors (``kthvalue`` for few values; sampled bracket, then radix, for many).
* :mod:`~fsparse._src.engine.keep_masks`: keep masks of the ``k`` lowest in one pass
  over the values (the bracket's candidates, ties and NaN found among them);
  :mod:`~fsparse._src.engine.native_keep` fuses it natively, and
  :mod:`~fsparse._src.engine.native` loads the C kernels (``kernels/``) and holds their
  flag-byte and masked-write helpers (``docs/native.md``).
* :mod:`~fsparse._src.engine.radix`: the one radix select, whose digit counts
  slices, chunked block means and ranks (``fsparse.distributed``) gather alike.
* :mod:`~fsparse._src.engine.chunked_mask` (with ``block_plan``, ``block_write``,
  ``unit_flags``): the norm block mask of large tensors, unit by unit.
* :mod:`~fsparse._src.engine.dispatch`: sharded forms (DTensor) of the entry points.
* :mod:`~fsparse._src.engine.mask_records`: masks the engine has shown to be on only where
  another is (the revival checks skip those pairs).
* :mod:`~fsparse._src.engine.selection`: masks for any score tensor and pattern,
  for one tensor or a global set.
"""

from fsparse._src.engine.patterns import NM, Block, Channel, Pattern, Unstructured, parse_pattern
from fsparse._src.engine.selection import global_select_masks, select_count_mask, select_mask

__all__ = [
    "NM",
    "Block",
    "Channel",
    "Pattern",
    "Unstructured",
    "global_select_masks",
    "parse_pattern",
    "select_count_mask",
    "select_mask",
]
