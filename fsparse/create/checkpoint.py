"""Checking a recipe manager's checkpoint against the state this run would hold.

:func:`checked_manager_state` checks a whole ``RecipeManager.state_dict()``
(keys, version, recipe, step, masks, pruner states, self-teacher) and returns
what ``load_state_dict`` commits; nothing is changed before every check passed.
A checkpoint is untrusted: :func:`check_pruner_state` reads each pruner state with
``pruners.load_state_dict`` (types), then requires the fresh state's structure:
the same mask names, shapes and devices, the same statistics (names, kinds,
shapes, dtypes), the same targets, and the step the run would be at. Under
FSDP2 the fresh state's tensors are DTensors: the checkpoint's must be
DTensors on the same mesh with the same placements and local shapes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from fsparse import pruners
from fsparse._src.checks import check_tensor, short_repr
from fsparse._src.untrusted import load_mask
from fsparse.create import distillation as kd
from fsparse.create import quantization as qat
from fsparse.create.pruning import Plan, model_masks
from fsparse.create.recipe import Recipe
from fsparse.create.sharding import is_dtensor, local, same_placement

__all__ = ["STATE_KEYS", "STATE_VERSION", "Checked", "check_pruner_state",
           "checked_manager_state", "manager_state"]

STATE_KEYS = ("version", "recipe", "steps_per_epoch", "step", "finalized", "masks", "pruners",
              "teacher")
STATE_VERSION = 2
_MAX_STEP = 2**62
Events = Sequence[tuple[int, str, Any]]  # (step, name, action) of the manager's one-off events


class Checked(NamedTuple):
    """A checked manager checkpoint: what ``RecipeManager.load_state_dict`` commits."""

    step: int
    finalized: bool
    teacher_state: Any
    pruning: list[tuple[Plan, pruners.PrunerState]]


def manager_state(recipe: Recipe, steps_per_epoch: int, step: int, finalized: bool,
                  masks: Mapping[str, torch.Tensor], states: Sequence[pruners.PrunerState],
                  self_teacher: nn.Module | None) -> dict[str, Any]:
    """A ``RecipeManager.state_dict()`` (keys :data:`STATE_KEYS`): copies, never views."""
    return {
        "version": STATE_VERSION,
        "recipe": recipe.to_yaml(),
        "steps_per_epoch": steps_per_epoch,
        "step": step,
        "finalized": finalized,
        "masks": {n: m.clone() for n, m in masks.items()},
        "pruners": [copy.deepcopy(pruners.state_dict(s)) for s in states],
        "teacher": self_teacher.state_dict() if self_teacher is not None else None,
    }


def _like(value: torch.Tensor, fresh: torch.Tensor, arg: str) -> torch.Tensor:
    if value.shape != fresh.shape or value.dtype != fresh.dtype:
        raise ValueError(f"{arg} must have shape {tuple(fresh.shape)} and dtype {fresh.dtype}, "
                         f"got {tuple(value.shape)} {value.dtype}")
    if value.layout != torch.strided:
        raise TypeError(f"{arg} must be a dense tensor, got layout {value.layout}")
    if not same_placement(value, fresh):
        kind = "a DTensor placed like" if is_dtensor(fresh) else "a plain tensor, as"
        raise ValueError(f"{arg} must be {kind} this run's weight, got a "
                         f"{type(value).__name__}")
    return value.to(fresh.device)


def check_pruner_state(sd: object, fresh: pruners.PrunerState, arg: str,
                       step: int | None) -> pruners.PrunerState:
    """The checked :class:`PrunerState` of ``sd``, on ``fresh``'s devices; raises on any misfit."""
    if not isinstance(sd, Mapping):
        raise ValueError(f"{arg} must be a pruner state dict, got {short_repr(sd)}")
    try:
        loaded = pruners.load_state_dict(sd)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{arg}: {err}") from None
    if list(loaded.masks) != list(fresh.masks):
        raise ValueError(f"{arg} masks must be for {short_repr(list(fresh.masks), 400)}")
    masks = {n: _like(m, fresh.masks[n], f"{arg} masks[{short_repr(n)}]")
             for n, m in loaded.masks.items()}
    if set(loaded.stats) != set(fresh.stats):
        raise ValueError(f"{arg} stats must have keys {sorted(fresh.stats)}, got "
                         f"{short_repr(sorted(loaded.stats))}")
    stats: dict[str, Any] = {}
    for key, want in fresh.stats.items():
        got, where = loaded.stats[key], f"{arg} stats[{short_repr(key)}]"
        if isinstance(want, Mapping):
            if not isinstance(got, Mapping) or list(got) != list(want):
                raise ValueError(f"{where} must map {short_repr(list(want), 200)} to tensors")
            stats[key] = {n: _like(got[n], want[n], f"{where}[{short_repr(n)}]") for n in want}
        else:
            if not isinstance(got, torch.Tensor):
                raise ValueError(f"{where} must be a tensor, got {short_repr(got)}")
            stats[key] = _like(got, want, where)
    if dict(loaded.targets) != dict(fresh.targets):
        raise ValueError(f"{arg} targets differ from this recipe's: "
                         f"{short_repr(dict(loaded.targets), 300)}")
    if step is not None and loaded.step != step:
        raise ValueError(f"{arg} step must be {step} at this checkpoint's step, got {loaded.step}")
    return pruners.PrunerState(masks, loaded.step, stats, fresh.targets)


def checked_manager_state(
    state_dict: Any, *, recipe: Recipe, steps_per_epoch: int, events: Events,
    done: set[str], pruning: Sequence[tuple[Plan, pruners.PrunerState]],
    self_teacher: nn.Module | None, model: nn.Module,
) -> Checked:
    """The checked contents of a manager's ``state_dict``, for a manager with this recipe,
    its one-off ``events`` (those in ``done`` have run), its current ``pruning`` plans and
    states, and its ``self_teacher`` (if taken). Local to this rank (no collective), so
    that every rank can then agree. Raises ``ValueError``/``TypeError``; changes nothing.
    """
    if not isinstance(state_dict, Mapping) or set(state_dict) != set(STATE_KEYS):
        got = (
            short_repr(list(state_dict), 200)
            if isinstance(state_dict, Mapping)
            else type(state_dict).__name__
        )
        raise ValueError(f"state_dict must have keys {sorted(STATE_KEYS)}, got {got}")
    version = state_dict["version"]
    if type(version) is not int or version != STATE_VERSION:
        raise ValueError(
            f"state_dict version must be {STATE_VERSION}, got {short_repr(version)}; "
            "it was saved by an unknown version of fsparse.create"
        )
    if Recipe.from_yaml(state_dict["recipe"]) != recipe:
        raise ValueError("state_dict was saved with a different recipe")
    saved_steps = state_dict["steps_per_epoch"]
    if type(saved_steps) is not int or saved_steps != steps_per_epoch:
        raise ValueError(
            f"state_dict has steps_per_epoch {short_repr(state_dict['steps_per_epoch'])}, "
            f"this manager {steps_per_epoch}"
        )
    step = state_dict["step"]
    if type(step) is not int or not 0 <= step <= _MAX_STEP:
        raise ValueError(f"state_dict step must be a non-negative int, got {short_repr(step)}")
    finalized = state_dict["finalized"]
    if not isinstance(finalized, bool):
        raise ValueError(f"state_dict finalized must be a bool, got {short_repr(finalized)}")
    if any(at > step and name in done for at, name, _ in events):
        raise ValueError(f"this manager has already run past step {step}; load into a fresh one")
    expects_teacher = any(name == "teacher" and at <= step for at, name, _ in events)
    teacher_state = state_dict["teacher"]
    if (teacher_state is not None) != expects_teacher:
        has = "has" if teacher_state is not None else "lacks"
        wants = "has" if expects_teacher else "has no"
        raise ValueError(
            f"state_dict {has} a self-teacher, but at step {step} this recipe {wants} one"
        )
    restored = _restored_pruning(pruning, state_dict["masks"], state_dict["pruners"], step)
    if expects_teacher:
        _check_teacher(teacher_state, step, events, done, self_teacher, model)
    return Checked(step, finalized, teacher_state, restored)


def _restored_pruning(
    pruning: Sequence[tuple[Plan, pruners.PrunerState]], masks: object, saved: object,
    step: int,
) -> list[tuple[Plan, pruners.PrunerState]]:
    """The pruner states of the checkpoint, validated (nothing is committed)."""
    current = {n: m for plan, state in pruning for n, m in model_masks(plan, state).items()}
    if not isinstance(masks, Mapping) or set(masks) != set(current):
        raise ValueError(f"state_dict masks must be for {short_repr(sorted(current), 400)}")
    if not isinstance(saved, (list, tuple)) or len(saved) != len(pruning):
        raise ValueError(f"state_dict pruners must be a list of {len(pruning)} pruner "
                         f"state dicts, got {short_repr(saved)}")
    restored = []
    for i, ((plan, fresh), sd) in enumerate(zip(pruning, saved)):
        want = step if plan.kind == "inject" else min(step, plan.last + 1)
        state = check_pruner_state(sd, fresh, f"state_dict pruners[{i}]",
                                   None if plan.kind == "inject" else want)
        restored.append((plan, state))
        for name, mask in model_masks(plan, state).items():
            arg = f"state_dict masks[{short_repr(name)}]"
            if not same_placement(masks[name], mask):
                kind = "a DTensor placed like" if is_dtensor(mask) else "a plain tensor, as"
                raise ValueError(f"{arg} must be {kind} this run's weight")
            mine = local(mask)  # DTensors: compare this rank's shards, no collective
            loaded = load_mask(local(masks[name]), tuple(mine.shape), arg)
            if not torch.equal(loaded.to(mine.device), mine):
                raise ValueError(f"{arg} disagrees with the mask in state_dict pruners[{i}]")
    return restored


def _check_teacher(
    teacher_state: object, step: int, events: Events, done: set[str],
    self_teacher: nn.Module | None, model: nn.Module,
) -> None:
    """Load ``teacher_state`` into a scratch teacher made as the run would make it."""
    if not isinstance(teacher_state, Mapping):
        raise TypeError(
            f"state_dict teacher must be a state dict, got {type(teacher_state).__name__}"
        )
    for key, value in teacher_state.items():
        check_tensor(value, f"state_dict teacher[{short_repr(key)}]", floating=False)
    teacher = copy.deepcopy(self_teacher)
    if teacher is None:  # replay the structural events on a scratch copy of the model
        scratch = copy.deepcopy(model)
        for at, name, _ in events:
            if at > step or name in done:
                continue
            if name == "teacher":
                teacher = kd.frozen_copy(scratch)
            elif name == "qat":
                qat.prepare_qat(scratch)
    assert teacher is not None  # expects_teacher: the teacher event is due
    try:
        teacher.load_state_dict(teacher_state)
    except (RuntimeError, KeyError) as err:
        raise ValueError(
            f"state_dict teacher does not fit the model: {str(err)[:300]}"
        ) from None
