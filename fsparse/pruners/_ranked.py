"""Ranked pruners: a scoring rule on the cubic ramp, masks from the selection engine.

Every mask here comes from :mod:`fsparse._src.engine` (``select_mask`` per tensor,
``global_select_masks`` for one threshold over all tensors); nothing here ranks
or sorts. With ``monotone`` (gradual pruning), weights already pruned get the key
``-1``, below every score (scores are ``>= 0``), so they stay pruned as the ramp
rises. With ``every_step`` (straight-through pruners) masks are recomputed from
the dense weights at every update from ``start_step`` on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from fsparse._src.engine import mask_records, native
from fsparse._src.engine.scoring import COMPUTED, Computed, Lazy
from fsparse._src.engine.selection import select_scores
from fsparse._src.engine.unit_flags import all_true
from fsparse.pruners._common import Common, filled
from fsparse.pruners._protocol import (
    Params,
    Pruner,
    activated,
    check_grads,
    check_params,
    check_params_fit,
    check_state,
)
from fsparse.pruners._state import PrunerState

__all__ = ["any_revives", "dense_state", "ranked", "revives", "select", "selected_state",
           "zero_activated"]

_WORDS = 1 << 17  # int64 mask words per slice of revives (1 MiB)

# (params, grads, t) -> scores: new tensors the pruner owns (it may key them in place), or
# AbsScores that the engine reads slice by slice.
ScoreFn = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, int],
                   Mapping[str, torch.Tensor | Computed]]


ScoreKeys = Callable[[dict[str, torch.Tensor]], Mapping[str, torch.Tensor | Computed]]


def no_resets(old: PrunerState, new: PrunerState) -> dict[str, torch.Tensor]:
    """Straight-through pruners keep training every dense weight: nothing restarts."""
    return {}


def dense_state(common: Common, params: object) -> tuple[dict[str, torch.Tensor], PrunerState]:
    """Checked params and a state with all-ones masks and the solved targets."""
    checked = check_params(params)
    targets = common.targets(checked)
    masks = {n: filled(p, True, torch.bool) for n, p in checked.items()}
    return checked, PrunerState(masks, 0, {}, targets)


def selected_state(common: Common, params: object, keys: ScoreKeys) -> PrunerState:
    """A state at step 0 whose masks are selected at the solved targets by the scores
    ``keys(checked params)`` (no all-ones masks made first)."""
    checked = check_params(params)
    targets = common.targets(checked)
    with torch.no_grad():
        masks = select(common, keys(checked), targets)
    return PrunerState(masks, 0, {}, targets)


def select(common: Common, keys: Mapping[str, torch.Tensor | Lazy],
           sparsities: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """Masks from the engine: per tensor, or one threshold over the non-overridden tensors.

    ``keys`` may be computed scores (``AbsScores``, ``RandomScores``: read slice by slice).
    """
    pattern = common.pattern
    if not common.is_global:
        out = {}
        for n, k in keys.items():
            out.update(select_scores({n: k}, sparsities[n], pattern))
        return out
    shared = [n for n in keys if n not in common.overrides]
    out = {}
    if shared:
        level = sparsities[shared[0]]
        out.update(select_scores({n: keys[n] for n in shared}, level, pattern, shared=True))
    for n in keys:
        if n in common.overrides:
            out.update(select_scores({n: keys[n]}, sparsities[n], pattern))
    return {n: out[n] for n in keys}


def zero_activated(params: dict[str, torch.Tensor], old: PrunerState, new: PrunerState
                   ) -> dict[str, torch.Tensor]:
    """``params`` with every weight whose mask turned on set to 0 (new tensors only there)."""
    out = dict(params)
    with torch.no_grad():
        for name, mask in new.masks.items():
            if name not in old.masks or not revives(old.masks[name], mask):
                continue
            fused = native.zero_revived(params[name], old.masks[name], mask)
            if fused is not None:  # one native pass into the fresh tensor, the same bits
                out[name] = fused
                continue
            on = torch.gt(mask, old.masks[name])  # mask & ~old, in one op and one new tensor
            out[name] = torch.where(on, torch.zeros((), dtype=params[name].dtype,
                                                    device=on.device), params[name])
    return out


def revives(old: torch.Tensor, new: torch.Tensor) -> bool:
    """Whether ``new`` is on somewhere ``old`` is off: ``(new & ~old).any()``, as ``new & old
    != new`` over int64 words (8 mask bytes each) when both are plain contiguous tensors
    (one ``and`` and one ``equal`` per slice: fast on CPU). No search where the engine
    has recorded that ``new`` is on only where ``old`` is (``engine/mask_records.py``)."""
    if old is new or mask_records.within(new, old):  # kept masks, or what the engine has shown
        return False
    fast = native.gains(old, new)
    if fast is not None:
        return fast
    plain = type(old) is torch.Tensor and type(new) is torch.Tensor
    if (plain and old.shape == new.shape and old.numel() % 8 == 0 and old.is_contiguous()
            and new.is_contiguous() and old.storage_offset() % 8 == 0
            and new.storage_offset() % 8 == 0):
        words_old, words_new = old.view(-1).view(torch.int64), new.view(-1).view(torch.int64)
        buf = torch.empty(min(words_old.numel(), _WORDS), dtype=torch.int64, device=old.device)
        for start in range(0, words_old.numel(), _WORDS):  # one small buffer, no full-size temps
            part = words_new[start : start + _WORDS]
            both = torch.bitwise_and(part, words_old[start : start + _WORDS],
                                     out=buf[: part.numel()])
            if not torch.equal(both, part):  # new & old == new: new is on only where old is
                return True
        return False
    return bool((new & ~old).any())


def any_revives(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Whether :func:`revives` holds for some ``(old, new)`` pair: one native search over
    them all where the kernels apply to every pair, else pair by pair.

    >>> on, off = torch.tensor([True, True]), torch.tensor([True, False])
    >>> any_revives([(on, off), (on, on)]), any_revives([(on, off), (off, on)])
    (False, True)
    """
    pairs = [(old, new) for old, new in pairs
             if old is not new and not mask_records.within(new, old)]
    fast = native.any_gains(pairs) if pairs else False
    return fast if fast is not None else any(revives(old, new) for old, new in pairs)


def ranked(name: str, common: Common, score: ScoreFn, hyperparams: dict[str, Any], *,
           needs_grads: bool = False, monotone: bool = True, every_step: bool = False) -> Pruner:
    """A pruner whose masks at an update step ``t`` prune ``target * ramp(t)`` by ``score``."""
    steps = common.steps

    def init(params: Params) -> PrunerState:
        return dense_state(common, params)[1]

    def update(state: PrunerState, params: Params, *, grads: Params | None = None
               ) -> tuple[PrunerState, dict[str, torch.Tensor]]:
        state = check_state(state)
        checked = check_params_fit(state, params)
        t = state.step
        recompute = t >= steps.start and (every_step or steps.is_update(t))
        grads_in = check_grads(grads, checked, name, needs_grads and recompute)
        if not recompute:
            return state.replace(step=t + 1), checked
        ramp = steps.ramp(t)
        sparsities = {n: state.targets[n] * ramp for n in checked}
        with torch.no_grad():
            scores = dict(score(checked, grads_in, t))
            if monotone:  # fresh score tensors are keyed in place; AbsScores carry the masks
                for n, s in scores.items():
                    if isinstance(s, COMPUTED):
                        scores[n] = s.keyed(state.masks[n])
                    elif not all_true(state.masks[n]):
                        s.masked_fill_(~state.masks[n], -1.0)
            masks = select(common, scores, sparsities)
        new = state.replace(masks=masks, step=t + 1)
        return new, (checked if every_step or monotone else zero_activated(checked, state, new))

    return Pruner(name, init, update, {**common.describe(), **hyperparams},
                  needs_grads=needs_grads, straight_through=every_step,
                  resets=no_resets if every_step else activated)
