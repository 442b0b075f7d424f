"""The pruner protocol (optax-style): a frozen object holding pure ``init`` and ``update``.

``init(params) -> state`` and ``update(state, params, *, grads=None) -> (state, params)``
never mutate their inputs. ``update`` returns the very tensor objects it was given
for every weight it leaves alone, and new tensors where it changes weights (e.g.
regrown weights restart at zero). ``resets(old, new)`` names the entries of the
optimizer state to restart (see :func:`fsparse.pruners.reset_optimizer_state`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from fsparse._src.checks import check_instance, check_tensor, short_repr
from fsparse.pruners._mapping import ReadOnlyDict, check_name
from fsparse.pruners._state import PrunerState

__all__ = ["Params", "Pruner", "UpdateFn", "activated", "check_grads", "check_params",
           "check_params_fit",
           "check_state"]

Params = Mapping[str, torch.Tensor]


class UpdateFn(Protocol):
    def __call__(
        self, state: PrunerState, params: Params, *, grads: Params | None = None
    ) -> tuple[PrunerState, dict[str, torch.Tensor]]: ...


def activated(old: PrunerState, new: PrunerState) -> dict[str, torch.Tensor]:
    """``new & ~old`` per name: the weights an update brought back to life.

    >>> old = PrunerState({"w": torch.tensor([True, False, False])})
    >>> activated(old, PrunerState({"w": torch.tensor([False, True, False])}))["w"].tolist()
    [False, True, False]
    """
    return {n: new.masks[n] & ~old.masks[n] for n in new.masks if n in old.masks}


@dataclass(frozen=True)
class Pruner:
    """A sparse-training algorithm: pure ``init`` and ``update`` closing over hyperparameters.

    ``name`` and ``hyperparams`` describe it; ``needs_grads`` says whether
    ``update`` requires ``grads``; ``straight_through`` whether its masks are
    meant for ``apply_masks(..., straight_through=True)``.

    >>> def init(params): return PrunerState({n: torch.ones_like(p, dtype=torch.bool)
    ...                                       for n, p in params.items()})
    >>> def update(state, params, *, grads=None): return state.replace(step=state.step + 1), params
    >>> dense = Pruner("dense", init, update)
    >>> dense.update(dense.init({"w": torch.ones(2)}), {"w": torch.ones(2)})[0].step
    1
    """

    name: str
    init: Callable[[Params], PrunerState] = field(repr=False)
    update: UpdateFn = field(repr=False)
    hyperparams: Mapping[str, Any] = field(default_factory=dict)
    needs_grads: bool = False
    straight_through: bool = False
    resets: Callable[[PrunerState, PrunerState], dict[str, torch.Tensor]] = field(
        default=activated, repr=False)

    def __post_init__(self) -> None:
        if type(self.hyperparams) is not ReadOnlyDict:
            object.__setattr__(self, "hyperparams", ReadOnlyDict(self.hyperparams, "hyperparams"))


def _names_differ(arg: str, got: Mapping[str, Any], want: Mapping[str, Any], what: str) -> None:
    missing = [n for n in want if n not in got]
    extra = [n for n in got if n not in want]
    if missing or extra:
        raise ValueError(
            f"{arg} must have the same names as {what}: missing "
            f"{short_repr(list(itertools.islice(missing, 6)))}, unknown "
            f"{short_repr(list(itertools.islice(extra, 6)))}")


def _item(arg: str, name: object) -> str:
    return f"{arg}[{short_repr(name)}]"


def check_params(params: object, arg: str = "params") -> dict[str, torch.Tensor]:
    """``params`` as a dict, every name a non-empty str and every value a float tensor."""
    check_instance(params, Mapping, arg)
    out: dict[str, torch.Tensor] = {}
    for name, value in params.items():  # type: ignore[attr-defined]
        check_name(name, arg)
        out[name] = check_tensor(value, functools.partial(_item, arg, name))
    return out


def check_state(state: object) -> PrunerState:
    return check_instance(state, PrunerState, "state")  # type: ignore[no-any-return]


def _fits(arg: str, name: str, value: torch.Tensor, mask: torch.Tensor) -> None:
    if value.shape != mask.shape:
        raise ValueError(f"{arg}[{short_repr(name)}] has shape {tuple(value.shape)}, but its mask "
                         f"has shape {tuple(mask.shape)}")
    if value.device != mask.device:
        raise ValueError(f"{arg}[{short_repr(name)}] is on {value.device}, but its mask is on "
                         f"{mask.device}")


def check_params_fit(state: PrunerState, params: object, arg: str = "params") -> dict[
        str, torch.Tensor]:
    """``params`` checked against the state: the same names, shapes and devices as the masks."""
    out = check_params(params, arg)
    _names_differ(arg, out, state.masks, "the state's masks")
    for name, mask in state.masks.items():
        _fits(arg, name, out[name], mask)
    return {name: out[name] for name in state.masks}


def check_grads(grads: object, params: Mapping[str, torch.Tensor], who: str,
                required: bool) -> dict[str, torch.Tensor] | None:
    """``grads`` checked against ``params``; ``ValueError`` when ``required`` and missing."""
    if grads is None:
        if required:
            raise ValueError(f"grads is required by {who}: pass update(state, params, grads=...)")
        return None
    out = check_params(grads, "grads")
    _names_differ("grads", out, params, "params")
    for name, p in params.items():
        g = out[name]
        if g.shape != p.shape:
            raise ValueError(f"grads[{short_repr(name)}] has shape {tuple(g.shape)}, but "
                             f"params[{short_repr(name)}] has shape {tuple(p.shape)}")
    return {name: out[name] for name in params}
