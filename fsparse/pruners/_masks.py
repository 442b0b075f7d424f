"""``apply_masks``: the masked parameters a forward pass uses, differentiable.

``param * mask`` (as ``torch.where``, so a pruned ``inf`` gives 0, not NaN); its
gradient is ``mask * upstream``. With ``straight_through=True`` the forward value
is the same but the gradient reaches every dense weight unmasked (the
straight-through estimator, Bengio et al. 2013): ``where(mask, w, w - w.detach())``.
Both work under ``torch.func.functional_call``, ``torch.func.grad`` and ``vmap``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fsparse._src.checks import check_bool, check_instance, short_repr
from fsparse._src.engine.masked import masked
from fsparse.pruners._protocol import check_state
from fsparse.pruners._state import PrunerState

__all__ = ["apply_masks"]


def apply_masks(state: PrunerState, params: Mapping[str, torch.Tensor], *,
                straight_through: bool = False) -> dict[str, torch.Tensor]:
    """``{name: param * mask}`` for the state's names; other names pass through unchanged.

    >>> state = PrunerState({"w": torch.tensor([True, False])})
    >>> w = torch.tensor([2.0, 3.0], requires_grad=True)
    >>> out = apply_masks(state, {"w": w, "b": torch.ones(1)})
    >>> out["w"].tolist(), out["b"].tolist()
    ([2.0, 0.0], [1.0])
    >>> torch.autograd.grad(apply_masks(state, {"w": w}, straight_through=True)["w"].sum(), w)
    (tensor([1., 1.]),)
    """
    state = check_state(state)
    check_instance(params, Mapping, "params")
    check_bool(straight_through, "straight_through")
    missing = [n for n in state.masks if n not in params]
    if missing:
        raise ValueError(f"params lacks names the state masks: {short_repr(missing)}")
    out = dict(params)
    for name, mask in state.masks.items():
        p = check_instance(params[name], torch.Tensor, f"params[{short_repr(name)}]")
        if p.shape != mask.shape:
            raise ValueError(f"params[{short_repr(name)}] has shape {tuple(p.shape)}, but its "
                             f"mask has shape {tuple(mask.shape)}")
        if straight_through:
            out[name] = torch.where(mask, p, p - p.detach())
        else:
            out[name] = masked(p, mask, select=True)
    return out
