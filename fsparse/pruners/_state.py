"""The pruner state: an immutable pytree of masks, the step count and statistics.

Leaves: every mask, the step count (an ``int``) and every statistic tensor.
Static metadata: the per-tensor target sparsities the pruner solved at ``init``.
``stats`` maps a statistic's name to either one tensor (state-wide, e.g. a
counter) or a ``name -> tensor`` mapping (per tensor: movement scores, a buffer
of recent gradients, ...). :func:`state_dict` gives plain containers that
``torch.load(weights_only=True)`` reads back; :func:`load_state_dict` checks them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import optree
import optree.dataclasses
import torch
import torch.utils._pytree as torch_pytree

from fsparse._src.checks import check_instance, check_int, check_real, check_tensor, short_repr
from fsparse.pruners._mapping import ReadOnlyDict, check_name

__all__ = ["PrunerState", "load_state_dict", "state_dict"]

Stat = torch.Tensor | Mapping[str, torch.Tensor]


def _freeze_stats(stats: Mapping[str, Any]) -> ReadOnlyDict[Any]:
    if type(stats) is ReadOnlyDict and all(
        not isinstance(v, Mapping) or type(v) is ReadOnlyDict for v in stats.values()
    ):
        return stats
    return ReadOnlyDict(
        {k: ReadOnlyDict(v, f"stats[{short_repr(k)}]") if isinstance(v, Mapping) else v
         for k, v in check_instance(stats, Mapping, "stats").items()},
        "stats",
    )


@optree.dataclasses.dataclass(namespace="", frozen=True)  # type: ignore[call-overload]
class PrunerState:
    """What a pruner carries between updates (see the module docstring).

    >>> state = PrunerState({"w": torch.ones(2, dtype=torch.bool)}, 0)
    >>> state.step, state.masks["w"].tolist(), dict(state.targets)
    (0, [True, True], {})
    """

    masks: Mapping[str, torch.Tensor]
    step: int = 0
    stats: Mapping[str, Stat] = optree.dataclasses.field(  # type: ignore[call-overload]
        default_factory=dict
    )
    targets: Mapping[str, float] = optree.dataclasses.field(  # type: ignore[call-overload]
        default_factory=dict, pytree_node=False
    )

    def __post_init__(self) -> None:
        if type(self.masks) is not ReadOnlyDict:
            object.__setattr__(self, "masks", ReadOnlyDict(self.masks, "masks"))
        object.__setattr__(self, "stats", _freeze_stats(self.stats))
        if type(self.targets) is not ReadOnlyDict:
            targets = check_instance(self.targets, Mapping, "targets")
            object.__setattr__(self, "targets", ReadOnlyDict(
                {k: v if type(v) is float and 0.0 <= v <= 1.0  # the label only for errors
                 else check_real(v, f"targets[{short_repr(k)}]", low=0.0, high=1.0)
                 for k, v in targets.items()}, "targets"))

    def replace(self, **changes: Any) -> PrunerState:
        """A copy with some fields replaced (the original is unchanged)."""
        fields: dict[str, Any] = {"masks": self.masks, "step": self.step, "stats": self.stats,
                                  "targets": self.targets}
        fields.update(changes)
        return PrunerState(**fields)

    def __reduce__(self) -> tuple[Any, ...]:
        plain = state_dict(self)
        return (PrunerState, (plain["masks"], plain["step"], plain["stats"], plain["targets"]))


def _state_unflatten(children: Iterable[Any], targets: Mapping[str, float]) -> PrunerState:
    masks, step, stats = children
    return PrunerState(masks, step, stats, targets)


torch_pytree.register_pytree_node(
    PrunerState,
    lambda s: ([s.masks, s.step, s.stats], s.targets),
    _state_unflatten,
    serialized_type_name="fsparse.pruners.PrunerState",
)


def state_dict(state: PrunerState) -> dict[str, Any]:
    """Plain dicts, tensors, ints and floats: ``torch.save`` it, read it with ``weights_only``.

    >>> sd = state_dict(PrunerState({"w": torch.ones(2, dtype=torch.bool)}, 3))
    >>> sorted(sd), sd["step"]
    (['masks', 'stats', 'step', 'targets'], 3)
    """
    check_instance(state, PrunerState, "state")
    return {
        "masks": dict(state.masks),
        "step": state.step,
        "stats": {k: dict(v) if isinstance(v, Mapping) else v for k, v in state.stats.items()},
        "targets": dict(state.targets),
    }


def _stat(value: object, arg: str) -> Stat:
    if isinstance(value, Mapping):
        return {check_name(n, arg): check_tensor(t, f"{arg}[{short_repr(n)}]", floating=False)
                for n, t in value.items()}
    return check_tensor(value, arg, floating=False)


def load_state_dict(sd: Mapping[str, Any]) -> PrunerState:
    """The :class:`PrunerState` of a :func:`state_dict` (from a file: every part is checked).

    Masks must be bool tensors; the step an int >= 0; targets floats in [0, 1]
    named like the masks; stats tensors or name -> tensor mappings.

    >>> state = PrunerState({"w": torch.ones(2, dtype=torch.bool)}, 3, targets={"w": 0.5})
    >>> load_state_dict(state_dict(state)) == state
    True
    """
    check_instance(sd, Mapping, "state_dict")
    extra = set(sd) - {"masks", "step", "stats", "targets"}
    missing = {"masks", "step"} - set(sd)
    if extra or missing:
        unknown = short_repr(sorted(extra, key=str))
        raise ValueError(f"state_dict must have keys masks, step (and stats, targets); missing "
                         f"{short_repr(sorted(missing))}, unknown {unknown}")
    masks_in = check_instance(sd["masks"], Mapping, "state_dict['masks']")
    masks = {check_name(n, "state_dict['masks']"): check_tensor(
        m, f"state_dict['masks'][{short_repr(n)}]", dtypes=(torch.bool,))
        for n, m in masks_in.items()}
    step = check_int(sd["step"], "state_dict['step']", low=0)
    stats_in = check_instance(sd.get("stats", {}), Mapping, "state_dict['stats']")
    stats = {check_name(k, "state_dict['stats']"): _stat(v, f"state_dict['stats'][{short_repr(k)}]")
             for k, v in stats_in.items()}
    targets = check_instance(sd.get("targets", {}), Mapping, "state_dict['targets']")
    orphans = sorted(set(targets) - set(masks), key=str)
    if orphans:
        raise ValueError(f"state_dict['targets'] names {short_repr(orphans)} that have no mask")
    return PrunerState(masks, step, stats, targets)


def _equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    return a == b


def _state_eq(self: PrunerState, other: object) -> bool:
    if not isinstance(other, PrunerState):
        return NotImplemented
    return all(_equal(getattr(self, f), getattr(other, f))
               for f in ("masks", "step", "stats", "targets"))


PrunerState.__eq__ = _state_eq  # type: ignore[method-assign, assignment]
PrunerState.__hash__ = None  # type: ignore[assignment]
