"""AC/DC: alternating compressed / decompressed training (Peste et al. 2021).

Phases, by step ``t`` (counting from 0):

* ``t < init_dense_steps``: dense (all-ones masks);
* then, until ``final_sparse_start``, cycles of ``sparse_steps`` sparse steps
  followed by ``dense_steps`` dense steps;
* from ``final_sparse_start`` on: sparse to the end (a sparse phase already
  running then simply continues).

At the first step of each sparse phase the masks are the magnitude masks of the
current weights at each tensor's target; they hold through the phase. Weights
coming back in a dense phase restart at zero (as hard pruning would leave them).
With ``reset_optimizer=True``, ``pruner.resets`` restarts the whole optimizer
state of every tensor at each phase change; otherwise only the revived weights'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fsparse._src.checks import check_bool, check_int, short_repr
from fsparse.pruners._common import Common
from fsparse.pruners._magnitude import Sparsity, lazy_abs_scores
from fsparse.pruners._protocol import Params, Pruner, activated, check_params_fit, check_state
from fsparse.pruners._ranked import dense_state, select, zero_activated
from fsparse.pruners._state import PrunerState

__all__ = ["acdc"]


def acdc(sparsity: Sparsity, init_dense_steps: int, final_sparse_start: int, sparse_steps: int,
         dense_steps: int, *, distribution: Any = "uniform", sparsity_type: Any = "unstructured",
         reset_optimizer: bool = False, overrides: Mapping[str, float] | None = None) -> Pruner:
    """AC/DC masks: dense, then sparse/dense cycles, then sparse from ``final_sparse_start``.

    >>> pruner = acdc(0.5, init_dense_steps=1, final_sparse_start=4, sparse_steps=1,
    ...               dense_steps=1)
    >>> [pruner.hyperparams["phase"](t) for t in range(6)]
    ['dense', 'sparse', 'dense', 'sparse', 'sparse', 'sparse']
    """
    first = check_int(init_dense_steps, "init_dense_steps", low=0)
    final = check_int(final_sparse_start, "final_sparse_start", low=0)
    if final < first:
        raise ValueError(f"final_sparse_start must be >= init_dense_steps ({first}), got "
                         f"{short_repr(final)}")
    n_sparse = check_int(sparse_steps, "sparse_steps", low=1)
    n_dense = check_int(dense_steps, "dense_steps", low=1)
    reset = check_bool(reset_optimizer, "reset_optimizer")
    common = Common.make(sparsity, distribution, sparsity_type, 0, None, 1, overrides)

    def is_sparse(t: int) -> bool:
        if t < first:
            return False
        if t >= final:
            return True
        return (t - first) % (n_sparse + n_dense) < n_sparse

    def phase(t: int) -> str:
        return "sparse" if is_sparse(t) else "dense"

    def init(params: Params) -> PrunerState:
        return dense_state(common, params)[1]

    def update(state: PrunerState, params: Params, *, grads: Params | None = None
               ) -> tuple[PrunerState, dict[str, torch.Tensor]]:
        state = check_state(state)
        checked = check_params_fit(state, params)
        t = state.step
        now, before = is_sparse(t), t > 0 and is_sparse(t - 1)
        if now == before:
            return state.replace(step=t + 1), checked
        if now:
            with torch.no_grad():
                masks = select(common, lazy_abs_scores(checked), state.targets)
        else:
            masks = {n: torch.ones_like(m) for n, m in state.masks.items()}
        new = state.replace(masks=masks, step=t + 1)
        return new, zero_activated(checked, state, new)

    def resets(old: PrunerState, new: PrunerState) -> dict[str, torch.Tensor]:
        t = old.step
        if reset and is_sparse(t) != (t > 0 and is_sparse(t - 1)):
            return {n: torch.ones_like(m) for n, m in new.masks.items()}
        return activated(old, new)

    hyper = {**common.describe(), "init_dense_steps": first, "final_sparse_start": final,
             "sparse_steps": n_sparse, "dense_steps": n_dense, "reset_optimizer": reset,
             "phase": phase}
    return Pruner("acdc", init, update, hyper, resets=resets)
