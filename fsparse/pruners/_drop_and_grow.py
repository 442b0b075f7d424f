"""Drop and grow (SET, Mocanu et al. 2018; RigL, Evci et al. 2020), as jaxpruner's ``SET``.

:func:`drop_and_grow` is the rule as a pure function on one mask. It keeps the
live count exact with two count selections by the engine: drop keys put the dead
units below every live drop score; grow keys put the survivors above every grow
score. Both keys stay finite for finite scores. The pruners' unstructured masks use
:func:`exchange_computed`, the same rule on scores computed in batches.
"""

from __future__ import annotations

import torch

from fsparse._src.checks import check_finite, check_real, check_tensor, short_repr
from fsparse._src.engine import NM, Pattern, Unstructured, parse_pattern, select_count_mask
from fsparse._src.engine.scoring import Computed
from fsparse._src.engine.selection import select_count_scores, unit_values
from fsparse._src.engine.unit_flags import count_true
from fsparse.pruners._common import extreme, whole

__all__ = ["above", "below", "drop_and_grow", "dropped_count", "exchange", "exchange_computed",
           "live_units"]


def below(scores: torch.Tensor) -> torch.Tensor:
    """A value strictly below every (finite) score: ``min - (|min| + 1)``."""
    low = extreme(scores, False) if scores.numel() else scores.new_zeros(())
    return low - (low.abs() + 1)


def above(scores: torch.Tensor) -> torch.Tensor:
    """A value strictly above every (finite) score: ``max + (|max| + 1)``."""
    high = extreme(scores, True) if scores.numel() else scores.new_zeros(())
    return high + (high.abs() + 1)


def dropped_count(live: int, fraction: float) -> int:
    """How many of ``live`` units a drop of ``fraction`` removes: ``live - round(live * (1 -
    fraction))`` (the rule's one count, for :func:`exchange` and :func:`exchange_computed`).

    >>> dropped_count(8, 0.3)
    2
    """
    return live - round(live * (1.0 - fraction))


def live_units(mask: torch.Tensor, pattern: Pattern, arg: str = "mask") -> tuple[int, int]:
    """``(live, total)`` units of a mask made of whole units of ``pattern``."""
    if isinstance(pattern, Unstructured):
        return int(whole(mask.sum())), mask.numel()
    means = unit_values(mask.to(torch.float32), pattern)
    live = int(whole((means == 1).sum()))
    if live + int(whole((means == 0).sum())) != means.numel():
        raise ValueError(f"{arg} is not made of whole {pattern} units (some are partly pruned)")
    return live, means.numel()


def drop_and_grow(mask: torch.Tensor, drop_score: torch.Tensor, grow_score: torch.Tensor,
                  drop_fraction: float, *, pattern: Pattern | str = "unstructured"
                  ) -> torch.Tensor:
    """Drop the lowest ``drop_score`` of the live units, grow back as many by ``grow_score``.

    With ``L`` live units, ``L - round(L * (1 - drop_fraction))`` of them are
    dropped (dead units count as lowest); then the same number are grown among
    all the others by the highest ``grow_score`` (the survivors count as
    highest), so exactly ``L`` stay live. A dropped unit may be grown back.

    >>> mask = torch.tensor([True, True, False, False])
    >>> drop_and_grow(mask, torch.tensor([1.0, 2.0, 0.0, 0.0]),
    ...               torch.tensor([0.0, 0.0, 5.0, 1.0]), 0.5).tolist()
    [False, True, True, False]
    """
    mask = check_tensor(mask, "mask", dtypes=(torch.bool,))
    pattern = parse_pattern(pattern, "pattern")
    if isinstance(pattern, NM):
        raise ValueError(f"pattern {pattern}: N:M fixes the count in every group, so there is "
                         "nothing to drop and grow; use unstructured, block or channel")
    for arg, score in (("drop_score", drop_score), ("grow_score", grow_score)):
        check_tensor(score, arg)
        if score.shape != mask.shape or score.device != mask.device:
            raise ValueError(f"{arg} must have the mask's shape {tuple(mask.shape)} and device "
                             f"{mask.device}, got {short_repr(score)} on {score.device}")
        check_finite(score, arg)
    fraction = check_real(drop_fraction, "drop_fraction", low=0.0, high=1.0)
    pattern.check(tuple(mask.shape), "mask")
    with torch.no_grad():
        return exchange(mask, drop_score.clone(), grow_score.clone(), fraction, pattern)


def exchange(mask: torch.Tensor, drop: torch.Tensor, grow: torch.Tensor, fraction: float,
             pattern: Pattern) -> torch.Tensor:
    """:func:`drop_and_grow` on checked input; ``drop`` and ``grow`` are keyed in place."""
    live, total = live_units(mask, pattern)
    dropped = dropped_count(live, fraction)
    # Python-number fill values (exact: the keys are in the scores' dtype): with a 0-d tensor
    # value, DTensor's masked_fill_ turns a Shard(0) DTensor with an empty shard Replicate()
    drop.masked_fill_(~mask, float(below(drop)))
    survivors = select_count_mask(drop, total - live + dropped, pattern)
    grow.masked_fill_(survivors, float(above(grow)))
    return select_count_mask(grow, total - live, pattern)


def exchange_computed(mask: torch.Tensor, drop: Computed, grow: Computed, fraction: float
                      ) -> torch.Tensor:
    """:func:`exchange` for an unstructured ``mask`` with computed scores (``|w|``, ``|g|``,
    seeded noise): the same mask, read in batches, with no full-size score tensor.

    The survivors are what drop keeps of ``drop.keyed(mask)`` (the dead lowest); the grown
    are what a selection keeps of ``grow.keyed(~survivors)`` pruning every survivor (keyed
    lowest) and all but ``dropped`` of the rest: the highest ``dropped`` non-survivors,
    ties broken as :func:`exchange` breaks them. A NaN score anywhere raises ``ValueError``.
    """
    for what, scores in (("drop scores (|w|)", drop), ("grow scores", grow)):
        if scores.has_nan():  # anywhere, as exchange's keys refuse it (one read pass)
            raise ValueError(f"the {what} contain NaN, which cannot be ranked; clean them first")
    live, total = count_true(mask), mask.numel()
    dropped = dropped_count(live, fraction)
    survivors = select_count_scores(drop.keyed(mask), total - live + dropped)
    others = survivors.logical_not_()  # fresh masks, ours: in place (no page-faulting copies)
    grown = select_count_scores(grow.keyed(others), total - dropped)
    return grown.logical_or_(others.logical_not_())
