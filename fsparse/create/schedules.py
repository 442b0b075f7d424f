"""Pure functions of ``(modifier or recipe, epoch or step)``: what the recipe wants when.

An optimizer step ``t`` (counted from 0) runs at epoch ``t / steps_per_epoch``.
A modifier starting at epoch ``e`` acts from step :func:`first_step` ``(e)``,
the first step whose epoch is at least ``e``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from fsparse._src.schedules import cubic
from fsparse.create.modifiers import (
    PRUNING_TYPES,
    ConstantPruning,
    Distillation,
    GradualPruning,
    LearningRateFunction,
    Quantization,
)
from fsparse.create.recipe import Recipe

__all__ = [
    "PHASES",
    "PruningSteps",
    "QatFlags",
    "distillation_active",
    "first_step",
    "learning_rate",
    "mask_update_due",
    "one_off_events",
    "phase",
    "pruning_level",
    "pruning_steps",
    "qat_flags",
]

PHASES = ("pruning", "fine-tuning", "qat", "finished")


def first_step(epoch: float, steps_per_epoch: int) -> int:
    """The first step ``t`` with ``t / steps_per_epoch >= epoch``.

    >>> first_step(7.5, 4), first_step(0.375, 4)
    (30, 2)
    """
    return max(0, math.ceil(epoch * steps_per_epoch - 1e-9))


def learning_rate(modifier: LearningRateFunction, epoch: float) -> float:
    """The LR at ``epoch``: ``init_lr`` before the span, ``final_lr`` after it.

    >>> lr = LearningRateFunction(0, 10, init_lr=1.0, final_lr=0.0)
    >>> learning_rate(lr, 2.5)
    0.75
    """
    span = modifier.end_epoch - modifier.start_epoch
    elapsed = min(max(epoch - modifier.start_epoch, 0.0), span)
    if modifier.lr_func == "cyclic_linear" and elapsed < span:
        frac = (elapsed % modifier.cycle_epochs) / modifier.cycle_epochs
    else:
        frac = elapsed / span
    if modifier.lr_func == "cosine":
        frac = 0.5 * (1.0 - math.cos(math.pi * frac))
    return modifier.init_lr + (modifier.final_lr - modifier.init_lr) * frac


class PruningSteps(NamedTuple):
    """Mask updates at steps ``start + i * every`` for ``i = 0 .. num_updates``."""

    start: int
    every: int
    num_updates: int


def pruning_steps(modifier: GradualPruning | ConstantPruning, steps_per_epoch: int) -> PruningSteps:
    """The update steps of a pruning modifier (a constant one updates once, at its start).

    >>> pruning_steps(GradualPruning(0, 7.5, 0.375, 0.05, 0.8), 4)
    PruningSteps(start=0, every=2, num_updates=15)
    """
    start = first_step(modifier.start_epoch, steps_per_epoch)
    if isinstance(modifier, ConstantPruning):
        return PruningSteps(start, 1, 0)
    span = max(first_step(modifier.end_epoch, steps_per_epoch) - start, 1)
    every = min(max(round(modifier.update_frequency * steps_per_epoch), 1), span)
    return PruningSteps(start, every, max(span // every, 1))


def mask_update_due(
    modifier: GradualPruning | ConstantPruning, step: int, steps_per_epoch: int
) -> bool:
    """Whether the masks of ``modifier`` are recomputed at ``step``."""
    start, every, count = pruning_steps(modifier, steps_per_epoch)
    offset = step - start
    return 0 <= offset <= count * every and offset % every == 0


def pruning_level(modifier: GradualPruning, step: int, steps_per_epoch: int) -> float:
    """Target sparsity at ``step``: the core's :func:`fsparse.cubic` over the update steps.

    >>> m = GradualPruning(0, 2, 0.5, 0.0, 0.8)
    >>> [round(pruning_level(m, t, 2), 3) for t in range(6)]
    [0.0, 0.463, 0.7, 0.788, 0.8, 0.8]
    """
    start, every, count = pruning_steps(modifier, steps_per_epoch)
    schedule = cubic(
        modifier.init_sparsity,
        modifier.final_sparsity,
        begin_step=start,
        num_updates=count,
        update_every=every,
    )
    return schedule(step)


class QatFlags(NamedTuple):
    """QAT phase flags at one epoch."""

    active: bool
    observers_disabled: bool
    bn_frozen: bool


def qat_flags(modifier: Quantization | None, epoch: float) -> QatFlags:
    """Whether QAT is on, observers are off and BN statistics are frozen at ``epoch``.

    >>> qat_flags(Quantization(15, 17.5, 17.5), 16.0)
    QatFlags(active=True, observers_disabled=False, bn_frozen=False)
    """
    if modifier is None:
        return QatFlags(False, False, False)
    return QatFlags(
        epoch >= modifier.start_epoch,
        epoch >= modifier.disable_observer_epoch,
        epoch >= modifier.freeze_bn_stats_epoch,
    )


def distillation_active(modifier: Distillation | None, epoch: float) -> bool:
    """Whether the distillation loss applies at ``epoch`` (``start <= epoch < end``)."""
    return modifier is not None and modifier.start_epoch <= epoch < modifier.end_epoch


def phase(recipe: Recipe, epoch: float) -> str:
    """``"finished"`` from ``max_epochs`` on, else ``"qat"`` once QAT is on, else
    ``"pruning"`` inside a pruning modifier's span (all but ConstantPruning),
    else ``"fine-tuning"``.

    >>> from fsparse.create.template import create_recipe
    >>> [phase(create_recipe(), e) for e in (0, 10, 16, 20)]
    ['pruning', 'fine-tuning', 'qat', 'finished']
    """
    if epoch >= recipe.max_epochs:
        return "finished"
    quantization = recipe.of_type(Quantization)
    if quantization and qat_flags(quantization[0], epoch).active:  # type: ignore[arg-type]
        return "qat"
    for modifier in recipe.of_type(*PRUNING_TYPES):
        if isinstance(modifier, ConstantPruning):
            continue
        if modifier.start_epoch <= epoch < modifier.end_epoch:
            return "pruning"
    return "fine-tuning"


def one_off_events(recipe: Recipe, steps_per_epoch: int, *, self_teacher: bool
                   ) -> list[tuple[int, str]]:
    """``(step, name)`` of each one-off event, by step (a tie keeps this order): the
    self-teacher copy (``"teacher"``, only with ``self_teacher``) at each distillation
    start, then QAT's start (``"qat"``), observer freeze (``"observers"``) and BN
    freeze (``"bn"``).

    >>> from fsparse.create.template import create_recipe
    >>> one_off_events(create_recipe(), 4, self_teacher=False)
    [(60, 'qat'), (70, 'observers'), (70, 'bn')]
    """
    events = []
    if self_teacher:
        events += [(first_step(d.start_epoch, steps_per_epoch), "teacher")
                   for d in recipe.of_type(Distillation)]
    for q in recipe.of_type(Quantization):
        assert isinstance(q, Quantization)
        events += [(first_step(q.start_epoch, steps_per_epoch), "qat"),
                   (first_step(q.disable_observer_epoch, steps_per_epoch), "observers"),
                   (first_step(q.freeze_bn_stats_epoch, steps_per_epoch), "bn")]
    return sorted(events, key=lambda e: e[0])
