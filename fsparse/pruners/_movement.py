"""Movement pruning, hard variant (Sanh et al. 2020), as SparseML's movement modifier.

The state keeps an accumulated score per weight, ``S += -g * w`` at every
update, where only live weights accumulate (pruned ones keep their ``S``). At
the mask update steps of the cubic ramp, the masks prune the lowest ``S`` of
each tensor (``target * ramp(t)``). ``S`` is ``state.stats["movement"][name]``
(float32 for 16-bit data). A pruned weight whose ``S`` later ranks high again
comes back, restarting at zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fsparse._src.engine.movement_scores import MovementScores, moved_scores
from fsparse._src.engine.scoring import score_dtype
from fsparse.pruners._common import Common, filled
from fsparse.pruners._magnitude import Sparsity
from fsparse.pruners._protocol import Params, Pruner, check_grads, check_params_fit, check_state
from fsparse.pruners._ranked import dense_state, select, zero_activated
from fsparse.pruners._state import PrunerState

__all__ = ["movement"]

STAT = "movement"


def movement(sparsity: Sparsity, *, distribution: Any = "uniform",
             sparsity_type: Any = "unstructured", start_step: int = 0,
             end_step: int | None = None, update_every: int = 1,
             overrides: Mapping[str, float] | None = None) -> Pruner:
    """Hard movement pruning; ``update`` needs ``grads`` at every step.

    >>> pruner = movement(0.5, start_step=1)
    >>> w = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    >>> state = pruner.init(w)
    >>> state, _ = pruner.update(state, w, grads={"w": torch.tensor([1.0, -1.0, 0.5, -2.0])})
    >>> state.stats["movement"]["w"].tolist()
    [-1.0, 1.0, -0.5, 2.0]
    >>> state, _ = pruner.update(state, w, grads={"w": torch.zeros(4)})
    >>> state.masks["w"].tolist()
    [False, True, False, True]
    """
    common = Common.make(sparsity, distribution, sparsity_type, start_step, end_step,
                         update_every, overrides)
    steps = common.steps

    def init(params: Params) -> PrunerState:
        checked, state = dense_state(common, params)
        scores = {n: filled(p, 0.0, score_dtype(p.dtype)) for n, p in checked.items()}
        return state.replace(stats={STAT: scores})

    def update(state: PrunerState, params: Params, *, grads: Params | None = None
               ) -> tuple[PrunerState, dict[str, torch.Tensor]]:
        state = check_state(state)
        checked = check_params_fit(state, params)
        grads_in = check_grads(grads, checked, "movement", True)
        assert grads_in is not None
        old = state.stats.get(STAT)
        if not isinstance(old, Mapping) or set(old) != set(checked):
            raise ValueError("state has no movement scores for these params: make it with "
                             "movement(...).init(params)")
        t = state.step
        due = steps.is_update(t)
        sparsities = {n: state.targets[n] * steps.ramp(t) for n in checked} if due else {}
        with torch.no_grad():
            if all(type(x) is torch.Tensor for n, p in checked.items()
                   for x in (old[n], grads_in[n], p, state.masks[n])):
                # the engine computes S' (natively: in the pass that selects on it)
                moving = {n: MovementScores(old[n], grads_in[n], p, state.masks[n])
                          for n, p in checked.items()}
                masks = select(common, moving, sparsities) if due else dict(state.masks)
                scores = {n: m.result() for n, m in moving.items()}
            else:  # DTensors: the same operations on the shards
                scores = {n: moved_scores(old[n], grads_in[n], p, state.masks[n])
                          for n, p in checked.items()}
                masks = select(common, scores, sparsities) if due else dict(state.masks)
        new = state.replace(masks=masks, step=t + 1, stats={**state.stats, STAT: scores})
        return new, zero_activated(checked, state, new)

    return Pruner("movement", init, update, common.describe(), needs_grads=True)
