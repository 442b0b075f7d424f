"""Each pruning modifier as one ``fsparse.pruners`` pruner: a plan made once, pure steps.

:func:`make_plan` turns a modifier into a :class:`Plan` (the pruner, its weights,
its steps); :func:`step_state` is pure: ``(state, weights, grads, t) -> (state,
new weights, optimizer entries to restart)``. No mask is computed here: every
mask comes from the pruner (and through it from the engine). The manager writes
the results into the model and the optimizer.

* ``GradualPruning``: at each due step, one one-shot update of
  ``pruners.magnitude`` (``global_magnitude`` with ``global_sparsity``) at the
  recipe's cubic level (the level is passed as the state's target).
* ``ConstantPruning``: a small pruner whose mask at its start step is the
  engine's ``existing_zeros_mask``.
* the others: their pruner's own ``update`` at every step up to the modifier's
  end, with the training loop's gradients when the pruner needs them.

Block-4 and N:M masks run along input channels: a conv weight ``(O, I, *k)``
is passed to the pruner as its channels-last matrix ``(O * prod(k), I)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fsparse import pruners
from fsparse._src.checks import short_repr
from fsparse._src.engine.mask_types import existing_zeros_mask
from fsparse.create.masks import pruned_fractions
from fsparse.create.modifiers import (
    ALL_PRUNABLE,
    ACDCPruning,
    ConstantPruning,
    GradualPruning,
    MovementPruning,
    OBSPruning,
    RigLPruning,
    SETPruning,
)
from fsparse.create.recipe_variables import parse_mask_type
from fsparse.create.schedules import first_step, mask_update_due, pruning_level, pruning_steps
from fsparse.create.sharding import is_dtensor
from fsparse.pruners._protocol import activated
from fsparse.pruners._ranked import any_revives, revives
from fsparse.pruners._schedules import Steps

__all__ = ["Plan", "loop_grads", "make_plan", "model_masks", "step_state", "target_levels"]

Tensors = dict[str, torch.Tensor]
OBS_MAX_GRADS = 16


@dataclass(frozen=True)
class Plan:
    """One modifier's pruner, weights (parameter names) and steps (``last``: its last update)."""

    modifier: Any
    pruner: pruners.Pruner
    names: tuple[str, ...]
    shapes: Mapping[str, torch.Size]
    matrix: frozenset[str]  # weights passed as channels-last matrices
    kind: str  # "inject" | "native"
    last: int
    steps: Steps | None = None

    @property
    def needs_grads(self) -> bool:
        return self.pruner.needs_grads


def _to_matrix(t: torch.Tensor) -> torch.Tensor:
    return t.movedim(1, -1).reshape(-1, t.shape[1])


def _from_matrix(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    moved = (shape[0], *shape[2:], shape[1])
    return t.reshape(moved).movedim(-1, 1)


def pruner_view(plan: Plan, tensors: Mapping[str, torch.Tensor]) -> Tensors:
    """``tensors`` (model layout, detached) as the pruner sees them."""
    return {n: _to_matrix(tensors[n]) if n in plan.matrix else tensors[n] for n in plan.names}


def model_view(plan: Plan, tensors: Mapping[str, torch.Tensor]) -> Tensors:
    """Pruner-layout tensors back in the weights' layout."""
    return {n: _from_matrix(t, plan.shapes[n]) if n in plan.matrix else t
            for n, t in tensors.items()}


def model_masks(plan: Plan, state: pruners.PrunerState) -> Tensors:
    return model_view(plan, dict(state.masks))


def _pattern(mask_type: str) -> str:
    width, _, kept = parse_mask_type(mask_type)
    if width == 1:
        return "unstructured"
    return f"{kept}:{width}" if kept else f"1x{width}"


def _constant(start: int) -> pruners.Pruner:
    """Hold the existing zeros from step ``start`` on (the engine's ``existing_zeros_mask``)."""

    def init(params: Mapping[str, torch.Tensor]) -> pruners.PrunerState:
        return pruners.PrunerState({n: torch.ones_like(p, dtype=torch.bool,  # DTensors: alike
                                                       memory_format=torch.contiguous_format)
                                    for n, p in params.items()})

    def update(state: pruners.PrunerState, params: Mapping[str, torch.Tensor], *,
               grads: Any = None) -> tuple[pruners.PrunerState, Tensors]:
        masks = dict(state.masks)
        if state.step == start:
            masks = {n: existing_zeros_mask(p, None) for n, p in params.items()}
        return state.replace(masks=masks, step=state.step + 1), dict(params)

    return pruners.Pruner("existing_zeros", init, update, {"start_step": start})


def _span(modifier: Any, spe: int) -> tuple[int, int, int]:
    """``(start, end, every)`` steps of a modifier with ``update_frequency``."""
    start, end = first_step(modifier.start_epoch, spe), first_step(modifier.end_epoch, spe)
    end = max(end, start + 1)
    every = min(max(round(modifier.update_frequency * spe), 1), end - start)
    return start, end, every


def _obs_grads(modifier: OBSPruning, start: int, end: int, every: int) -> int:
    """``num_grads`` (``None``: what fits, at most 16), checked against the steps available."""
    mode, owner = modifier.MODE, type(modifier).__name__
    first = min(start + every, end)  # the ramp's first update with a level above 0
    gap = every if end - start > every else end - start
    rest = (end - start) % every
    if end - start > every and rest:
        gap = min(gap, rest)
    avail = max(1, min(first + 1, gap))
    n = modifier.num_grads if modifier.num_grads is not None else min(OBS_MAX_GRADS, avail)
    if n > avail:
        raise ValueError(
            f"{owner}.num_grads={n} is larger than the {avail} training steps available before "
            f"the first pruning step (step {first}) or between pruning steps of pruning mode "
            f"{mode!r}; lower num_grads or raise update_frequency")
    return n


def _pruner(modifier: Any, spe: int) -> tuple[pruners.Pruner, str, int, Steps | None]:
    pattern = _pattern(getattr(modifier, "mask_type", "unstructured"))
    if isinstance(modifier, ConstantPruning):
        start = first_step(modifier.start_epoch, spe)
        return _constant(start), "native", start, None
    if isinstance(modifier, GradualPruning):
        make = pruners.global_magnitude if modifier.global_sparsity else pruners.magnitude
        start, every, count = pruning_steps(modifier, spe)
        return make(modifier.final_sparsity, sparsity_type=pattern), "inject", \
            start + every * count, None
    if isinstance(modifier, ACDCPruning):
        first = first_step(modifier.start_epoch, spe)
        final = max(first_step(modifier.end_epoch, spe), first)
        phase = max(1, round(modifier.phase_epochs * spe))
        return pruners.acdc(modifier.sparsity, first, final, phase, phase,
                            distribution=modifier.distribution, sparsity_type=pattern,
                            reset_optimizer=modifier.reset_momentum), "native", final, None
    start, end, every = _span(modifier, spe)
    steps = Steps(start, end, every)
    common: dict[str, Any] = {"sparsity_type": pattern, "start_step": start, "end_step": end,
                              "update_every": every}
    if isinstance(modifier, MovementPruning):
        return pruners.movement(modifier.final_sparsity, **common), "native", end, steps
    if isinstance(modifier, OBSPruning):
        make = pruners.mfac if modifier.MODE == "mfac" else pruners.obs
        n = _obs_grads(modifier, start, end, every)
        return make(modifier.final_sparsity, num_grads=n, damp=modifier.damp,
                    block_size=modifier.block_size,
                    distribution="global" if modifier.global_sparsity else "uniform",
                    **common), "native", end, steps
    assert isinstance(modifier, (RigLPruning, SETPruning))
    make = pruners.set if isinstance(modifier, SETPruning) else pruners.rigl
    fraction = pruners.cosine_drop_fraction(modifier.drop_fraction, max(end, 1))
    return make(modifier.sparsity, drop_fraction=fraction, seed=modifier.seed,
                distribution=modifier.distribution, **common), "native", end, steps


def make_plan(modifier: Any, prunable: Mapping[str, torch.nn.Parameter], spe: int
              ) -> tuple[Plan, tuple[str, ...]]:
    """The plan for ``modifier``'s weights, and the weights left out (block/N:M misfits).

    Named params that are not prunable, or that cannot hold the mask type, raise.
    """
    owner = type(modifier).__name__
    if modifier.params == ALL_PRUNABLE:
        chosen = dict(prunable)
    else:
        unknown = [n for n in modifier.params if n not in prunable]
        if unknown:
            raise ValueError(
                f"{owner}.params names {short_repr(unknown, 200)}, which are not prunable "
                f"weights of the model; prunable: {short_repr(sorted(prunable), 400)}")
        chosen = {n: prunable[n] for n in modifier.params}
    mask_type = getattr(modifier, "mask_type", "unstructured")
    width = parse_mask_type(mask_type)[0]
    skipped = tuple(n for n, w in chosen.items()
                    if width > 1 and (w.dim() < 2 or w.shape[1] % width))
    if skipped and modifier.params != ALL_PRUNABLE:
        raise ValueError(
            f"{owner}.params {list(skipped)} have input channels that are not a multiple of "
            f"{width}, as mask_type {mask_type!r} needs")
    names = tuple(n for n in chosen if n not in skipped)
    if not names:
        raise ValueError(f"{owner} has no prunable weights to act on in this model")
    pruner, kind, last, steps = _pruner(modifier, spe)
    matrix = frozenset(n for n in names if width > 1 and chosen[n].dim() > 2)
    shapes = {n: chosen[n].shape for n in names}
    return Plan(modifier, pruner, names, shapes, matrix, kind, last, steps), skipped


def init_state(plan: Plan, weights: Mapping[str, torch.Tensor]) -> pruners.PrunerState:
    return plan.pruner.init(pruner_view(plan, weights))


def due(plan: Plan, state: pruners.PrunerState, t: int, spe: int) -> bool:
    """Whether the plan updates at step ``t``."""
    if plan.kind == "inject":
        return mask_update_due(plan.modifier, t, spe)
    return state.step == t and t <= plan.last


def loop_grads(weights: Mapping[str, torch.Tensor], names: tuple[str, ...],
               scale: float | None) -> Tensors:
    """The ``.grad`` of each named weight as the training loop left it: detached, divided
    by ``scale`` (the AMP scaler's) with non-finite entries as 0, or zeros where missing.

    >>> w = torch.nn.Parameter(torch.ones(2)); w.grad = torch.tensor([4.0, float("inf")])
    >>> loop_grads({"w": w}, ("w",), 2.0)["w"].tolist()
    [2.0, 0.0]
    """
    out = {}
    for n in names:
        g = weights[n].grad
        if g is None:
            out[n] = torch.zeros_like(weights[n].detach())
        elif scale is None:
            out[n] = g.detach()
        else:
            out[n] = torch.div(g.detach(), scale).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    return out


def step_state(plan: Plan, state: pruners.PrunerState, weights: Mapping[str, torch.Tensor],
               grads: Mapping[str, torch.Tensor] | None, t: int, spe: int
               ) -> tuple[pruners.PrunerState, Tensors, Tensors]:
    """The state after step ``t``, the weights the pruner changed, optimizer entries to restart.

    Pure: ``weights`` and ``grads`` (model layout) are read, never written.
    """
    view = pruner_view(plan, weights)
    grad_view = pruner_view(plan, grads) if grads is not None and plan.needs_grads else None
    if plan.kind == "inject":
        level = pruning_level(plan.modifier, t, spe)
        shot = state.replace(step=0, targets=dict.fromkeys(state.masks, level))
        new, out = plan.pruner.update(shot, view)
        new = new.replace(step=t + 1, targets=state.targets)
    else:
        new, out = plan.pruner.update(state, view, grads=grad_view)
    changed = model_view(plan, {n: v for n, v in out.items() if v is not view[n]})
    if plan.pruner.resets is activated:  # most updates revive nothing: check that cheaply
        pairs = [(state.masks[n], m) for n, m in new.masks.items() if n in state.masks]
        some = any(is_dtensor(m) for _, m in pairs) or any_revives(pairs)  # one search for all
        revived = {n: new.masks[n] & ~state.masks[n] for n in new.masks
                   if n in state.masks and _revives(state.masks[n], new.masks[n])} if some else {}
    else:
        revived = plan.pruner.resets(state, new)
    resets = {n: m for n, m in model_view(plan, revived).items()
              if is_dtensor(m) or bool(m.any())}  # DTensors: every rank alike
    return new, changed, resets


def _revives(old: torch.Tensor, new: torch.Tensor) -> bool:
    """Whether ``new`` is on somewhere ``old`` is off (:func:`fsparse.pruners._ranked.revives`);
    always for DTensors (a local ``any()`` differs by rank)."""
    return is_dtensor(new) or revives(old, new)


def target_levels(plan: Plan, state: pruners.PrunerState, weights: Mapping[str, torch.Tensor],
                  t: int, spe: int) -> dict[str, float]:
    """Each weight's element sparsity target at step ``t`` (``RecipeManager.target_sparsity``)."""
    modifier = plan.modifier
    if plan.kind == "inject":
        level = pruning_level(modifier, t, spe)
        if not modifier.global_sparsity:
            return dict.fromkeys(plan.names, level)
        shot = state.replace(step=0, targets=dict.fromkeys(state.masks, level))
        masks = plan.pruner.update(shot, pruner_view(plan, weights))[0].masks
        return pruned_fractions(masks)  # whole tensors (DTensors: all shards counted)
    if isinstance(modifier, ConstantPruning) or getattr(modifier, "global_sparsity", False):
        return pruned_fractions(state.masks)
    if isinstance(modifier, ACDCPruning):
        sparse = plan.pruner.hyperparams["phase"](t) == "sparse"
        return {n: state.targets[n] * sparse for n in plan.names}
    if isinstance(modifier, (RigLPruning, SETPruning)):  # sparse from init
        return {n: state.targets[n] for n in plan.names}
    assert plan.steps is not None
    ramp = plan.steps.ramp(t)
    return {n: state.targets[n] * ramp for n in plan.names}
