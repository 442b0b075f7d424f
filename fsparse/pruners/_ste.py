"""Straight-through and static sparse pruners (jaxpruner's ``ste`` and ``StaticRandomSparse``).

* :func:`ste_magnitude`, :func:`ste_random`: masks recomputed from the dense
  weights at every update from ``start_step`` on (sparsity on the cubic ramp),
  never forcing pruned weights to stay pruned; train with
  ``apply_masks(state, params, straight_through=True)`` so every dense weight
  gets its gradient (Bengio et al. 2013; jaxpruner ``SteMagnitudePruning``).
* :func:`static_random`: a seeded random mask at each tensor's target, drawn at
  ``init``, that never changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fsparse._src.engine.scoring import RandomScores
from fsparse.pruners._common import Common, check_seed, lazy_random_scores
from fsparse.pruners._magnitude import Sparsity, lazy_abs_scores
from fsparse.pruners._protocol import Params, Pruner, check_params_fit, check_state
from fsparse.pruners._ranked import ranked, selected_state
from fsparse.pruners._state import PrunerState

__all__ = ["static_random", "ste_magnitude", "ste_random"]

_STE_RANDOM, _STATIC = 4, 5  # purpose tags of the random scores


def ste_magnitude(sparsity: Sparsity, *, distribution: Any = "uniform",
                  sparsity_type: Any = "unstructured", start_step: int = 0,
                  end_step: int | None = None, update_every: int = 1,
                  overrides: Mapping[str, float] | None = None) -> Pruner:
    """Magnitude masks of the dense weights, recomputed at every update (straight-through).

    >>> pruner = ste_magnitude(0.5)
    >>> state = pruner.init({"w": torch.tensor([1.0, 2.0])})
    >>> state, _ = pruner.update(state, {"w": torch.tensor([1.0, 2.0])})
    >>> state, _ = pruner.update(state, {"w": torch.tensor([3.0, 2.0])})  # 1 grew back
    >>> state.masks["w"].tolist(), pruner.straight_through
    ([True, False], True)
    """
    common = Common.make(sparsity, distribution, sparsity_type, start_step, end_step,
                         update_every, overrides)
    return ranked("ste_magnitude", common, lazy_abs_scores, {}, monotone=False, every_step=True)


def ste_random(sparsity: Sparsity, *, seed: int = 0, distribution: Any = "uniform",
               sparsity_type: Any = "unstructured", start_step: int = 0,
               end_step: int | None = None, update_every: int = 1,
               overrides: Mapping[str, float] | None = None) -> Pruner:
    """A fresh seeded random mask at every update (straight-through), as jaxpruner's.

    >>> pruner = ste_random(0.5, seed=0)
    >>> state = pruner.init({"w": torch.ones(8)})
    >>> first, _ = pruner.update(state, {"w": torch.ones(8)})
    >>> again, _ = pruner.update(state, {"w": torch.ones(8)})  # the same step, the same mask
    >>> int(first.masks["w"].sum()), torch.equal(first.masks["w"], again.masks["w"])
    (4, True)
    """
    base = check_seed(seed)
    common = Common.make(sparsity, distribution, sparsity_type, start_step, end_step,
                         update_every, overrides)

    def scores(params: dict[str, torch.Tensor], grads: object, t: int
               ) -> dict[str, torch.Tensor | RandomScores]:
        return lazy_random_scores(params, base, t, _STE_RANDOM)

    return ranked("ste_random", common, scores, {"seed": base}, monotone=False, every_step=True)


def static_random(sparsity: Sparsity, *, seed: int = 0, distribution: Any = "uniform",
                  sparsity_type: Any = "unstructured",
                  overrides: Mapping[str, float] | None = None) -> Pruner:
    """A seeded random mask at every tensor's target, drawn at ``init``; ``update`` keeps it.

    >>> pruner = static_random(0.5, seed=3)
    >>> state = pruner.init({"w": torch.ones(4, 4)})
    >>> int((~state.masks["w"]).sum()), pruner.update(state, {"w": torch.ones(4, 4)})[0].step
    (8, 1)
    """
    base = check_seed(seed)
    common = Common.make(sparsity, distribution, sparsity_type, 0, None, 1, overrides)

    def init(params: Params) -> PrunerState:
        return selected_state(common, params,
                              lambda checked: lazy_random_scores(checked, base, 0, _STATIC))

    def update(state: PrunerState, params: Params, *, grads: Params | None = None
               ) -> tuple[PrunerState, dict[str, torch.Tensor]]:
        state = check_state(state)
        checked = check_params_fit(state, params)
        return state.replace(step=state.step + 1), checked

    return Pruner("static_random", init, update, {**common.describe(), "seed": base})
