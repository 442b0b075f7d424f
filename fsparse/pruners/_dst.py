"""Dynamic sparse training: SET (Mocanu et al. 2018) and RigL (Evci et al. 2020).

Sparse from the start: ``init`` draws a seeded random mask at each tensor's
target (uniform or ERK, as the RigL paper does). At every update step from
``start_step`` (every ``update_every`` steps, up to ``end_step`` if given) each
mask goes through :func:`fsparse.drop_and_grow` with drop score ``|w|`` and grow
score seeded noise (SET) or ``|g|`` (RigL), at ``drop_fraction(t)``. Weights
that come back to life restart at zero (new tensors); restart their optimizer
state with ``reset_optimizer_state(opt, params, pruner.resets(old, new))``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from fsparse._src.engine import NM, Pattern, Unstructured
from fsparse._src.engine.scoring import COMPUTED, Computed
from fsparse.pruners._common import Common, check_seed, lazy_random_scores, random_scores
from fsparse.pruners._drop_and_grow import exchange, exchange_computed
from fsparse.pruners._magnitude import Sparsity, abs_scores, lazy_abs_scores
from fsparse.pruners._protocol import (
    Params,
    Pruner,
    check_grads,
    check_params_fit,
    check_state,
)
from fsparse.pruners._ranked import selected_state, zero_activated
from fsparse.pruners._schedules import check_drop_fraction
from fsparse.pruners._state import PrunerState

__all__ = ["rigl", "set_"]

_INIT, _GROW = 2, 3  # purpose tags of the random scores
Scores = Mapping[str, torch.Tensor | Computed]
# (params, grads, step, lazy) -> grow scores; lazy: computed scores where the engine reads them
GrowFn = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, int, bool], Scores]


def _exchange(mask: torch.Tensor, drop: torch.Tensor | Computed, grow: torch.Tensor | Computed,
              fraction: float, pattern: Pattern) -> torch.Tensor:
    """:func:`exchange_computed` when both scores are computed, else :func:`exchange`."""
    if isinstance(drop, COMPUTED) and isinstance(grow, COMPUTED):
        return exchange_computed(mask, drop, grow, fraction)
    drop_t = drop.materialize().view(drop.shape) if isinstance(drop, COMPUTED) else drop
    grow_t = grow.materialize().view(grow.shape) if isinstance(grow, COMPUTED) else grow
    return exchange(mask, drop_t, grow_t, fraction, pattern)


def _describe(value: Any) -> Any:
    return value if isinstance(value, float) else getattr(value, "__name__", "schedule")


def _dst(name: str, grow: GrowFn, needs_grads: bool, sparsity: Sparsity, drop_fraction: Any,
         seed: int, distribution: Any, sparsity_type: Any, start_step: int,
         end_step: int | None, update_every: int, overrides: Mapping[str, float] | None
         ) -> Pruner:
    common = Common.make(sparsity, distribution, sparsity_type, start_step, end_step,
                         update_every, overrides, default_end="none")
    if isinstance(common.pattern, NM):
        raise ValueError(f"sparsity_type {common.pattern}: N:M fixes the count in every group, "
                         f"so {name} has nothing to drop and grow; use unstructured, block or "
                         "channel")
    fraction = check_drop_fraction(drop_fraction)
    base = check_seed(seed)
    steps = common.steps

    def init(params: Params) -> PrunerState:
        return selected_state(common, params,
                              lambda checked: lazy_random_scores(checked, base, 0, _INIT))

    def update(state: PrunerState, params: Params, *, grads: Params | None = None
               ) -> tuple[PrunerState, dict[str, torch.Tensor]]:
        state = check_state(state)
        checked = check_params_fit(state, params)
        t = state.step
        due = steps.is_update(t)
        grads_in = check_grads(grads, checked, name, needs_grads and due)
        if not due:
            return state.replace(step=t + 1), checked
        f = fraction(t)
        with torch.no_grad():
            lazy = isinstance(common.pattern, Unstructured)
            drop = lazy_abs_scores(checked) if lazy else abs_scores(checked)
            grow_scores = grow(checked, grads_in, t, lazy)
            masks = {n: _exchange(state.masks[n], drop[n], grow_scores[n], f, common.pattern)
                     for n in checked}
        new = state.replace(masks=masks, step=t + 1)
        return new, zero_activated(checked, state, new)

    hyper = {**common.describe(), "drop_fraction": _describe(drop_fraction), "seed": base}
    return Pruner(name, init, update, hyper, needs_grads=needs_grads)


def set_(sparsity: Sparsity, *, drop_fraction: Any = 0.3, seed: int = 0,
         distribution: Any = "uniform", sparsity_type: Any = "unstructured",
         start_step: int = 0, end_step: int | None = None, update_every: int = 100,
         overrides: Mapping[str, float] | None = None) -> Pruner:
    """SET: drop the lowest ``|w|``, grow at random (``pruners.set``).

    >>> pruner = set_(0.5, update_every=1)
    >>> state = pruner.init({"w": torch.randn(4, 4)})
    >>> state, _ = pruner.update(state, {"w": torch.randn(4, 4)})
    >>> int(state.masks["w"].sum())
    8
    """
    seed_base = check_seed(seed)

    def grow(params: dict[str, torch.Tensor], grads: object, t: int, lazy: bool) -> Scores:
        if lazy:
            return lazy_random_scores(params, seed_base, t, _GROW)
        return random_scores(params, seed_base, t, _GROW)

    return _dst("set", grow, False, sparsity, drop_fraction, seed_base, distribution,
                sparsity_type, start_step, end_step, update_every, overrides)


def rigl(sparsity: Sparsity, *, drop_fraction: Any = 0.3, seed: int = 0,
         distribution: Any = "uniform", sparsity_type: Any = "unstructured",
         start_step: int = 0, end_step: int | None = None, update_every: int = 100,
         overrides: Mapping[str, float] | None = None) -> Pruner:
    """RigL: drop the lowest ``|w|``, grow the highest ``|g|``; ``update`` needs ``grads``.

    ``drop_fraction`` may be a schedule, e.g. ``cosine_drop_fraction(0.3, end_step)``.
    Growth ranks the dense gradient, so the pruned weights need one: take ``grads``
    from a forward through ``apply_masks(..., straight_through=True)`` (with a plain
    masked forward their gradient is zero and growth has nothing to rank).

    >>> pruner = rigl(0.5, update_every=1)
    >>> w = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    >>> state = pruner.init({"w": w})
    >>> g = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    >>> state, new = pruner.update(state, {"w": w}, grads={"w": g})
    >>> int(state.masks["w"].sum())
    2
    """

    def grow(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor] | None, t: int,
             lazy: bool) -> Scores:
        assert grads is not None
        return lazy_abs_scores(grads) if lazy else abs_scores(grads)

    return _dst("rigl", grow, True, sparsity, drop_fraction, seed, distribution, sparsity_type,
                start_step, end_step, update_every, overrides)
