"""The one edge that mutates: restarting a ``torch.optim`` optimizer's state for revived weights.

jaxpruner and RigL restart the momentum and Adam moments of weights that come
back to life at zero. :func:`reset_optimizer_state` does that for any
``torch.optim.Optimizer``: for each named parameter object and its bool mask, it
zeroes the masked entries of every per-parameter state tensor shaped like the
parameter (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``, ...), leaving
scalars such as Adam's ``step`` alone. Everything is checked first; then written.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fsparse._src.checks import check_instance, check_tensor, short_repr
from fsparse.pruners._common import whole

__all__ = ["reset_optimizer_state"]


def reset_optimizer_state(optimizer: torch.optim.Optimizer,
                          params: Mapping[str, torch.Tensor],
                          masks: Mapping[str, torch.Tensor]) -> int:
    """Zero ``optimizer.state[params[name]][key][masks[name]]`` in place; returns entries zeroed.

    ``params`` maps names to the parameter objects the optimizer holds (e.g.
    ``dict(model.named_parameters())``); ``masks`` maps some of those names to
    bool tensors of the parameter's shape (``True`` = restart), e.g.
    ``pruner.resets(old_state, new_state)``.

    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    >>> w.grad = torch.ones(3); opt.step()
    >>> reset_optimizer_state(opt, {"w": w}, {"w": torch.tensor([True, False, True])})
    2
    >>> opt.state[w]["momentum_buffer"].tolist()
    [0.0, 1.0, 0.0]
    """
    check_instance(optimizer, torch.optim.Optimizer, "optimizer")
    check_instance(params, Mapping, "params")
    check_instance(masks, Mapping, "masks")
    plan: list[tuple[torch.Tensor, torch.Tensor]] = []
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"masks names {short_repr(name)}, which params lacks")
        p = check_instance(params[name], torch.Tensor, f"params[{short_repr(name)}]")
        mask = check_tensor(mask, f"masks[{short_repr(name)}]", dtypes=(torch.bool,))
        if mask.shape != p.shape:
            raise ValueError(f"masks[{short_repr(name)}] has shape {tuple(mask.shape)}, but the "
                             f"parameter has shape {tuple(p.shape)}")
        for value in optimizer.state.get(p, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                plan.append((value, mask.to(value.device)))
    zeroed = 0
    with torch.no_grad():
        for value, mask in plan:
            value.masked_fill_(mask, 0)
            zeroed += int(whole(mask.sum()))  # a DTensor's count over every rank
    return zeroed
