"""Property-based testing for fsparse users: Hypothesis strategies and invariant checks.

Needs the ``testing`` extra (``pip install fsparse[testing]``: Hypothesis);
``import fsparse`` never imports it. See ``docs/testing.md``.

>>> import fsparse
>>> check_mask_fn(fsparse.config_norm_mask, max_examples=3)()
"""

from fsparse.testing.dropin_checks import DropinCheckError, check_dropin_sparsifier
from fsparse.testing.mask_checks import (
    MaskCheckError,
    block_zero_counts,
    check_mask_fn,
    matrix_view_shape,
    rule_zero_counts,
)
from fsparse.testing.pruner_checks import (
    PrunerCheckError,
    check_pruner,
    cubic_ramp,
    pruned_units,
)
from fsparse.testing.strategies import (
    FLOAT_DTYPES,
    configs,
    levels,
    param_dicts,
    shapes,
    states,
    tensors,
)

__all__ = [
    "FLOAT_DTYPES",
    "DropinCheckError",
    "MaskCheckError",
    "PrunerCheckError",
    "block_zero_counts",
    "check_dropin_sparsifier",
    "check_mask_fn",
    "check_pruner",
    "configs",
    "cubic_ramp",
    "levels",
    "matrix_view_shape",
    "param_dicts",
    "pruned_units",
    "rule_zero_counts",
    "shapes",
    "states",
    "tensors",
]
