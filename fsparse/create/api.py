"""``initialize``: add a sparsification recipe to a training script in a few lines."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fsparse.create.manager import RecipeManager
from fsparse.create.modifiers import LearningRateFunction
from fsparse.create.optimizer_wrapper import RecipeOptimizer, RecipeScaler
from fsparse.create.recipe import Recipe, load_recipe
from fsparse.create.recipe_variables import RecipeVariables, to_variables
from fsparse.create.template import create_recipe

__all__ = ["initialize"]

logger: logging.Logger = logging.getLogger("fsparse.create")


def _log_lr_override(recipe: Recipe, optimizer: torch.optim.Optimizer) -> None:
    """Say once that the recipe's LR schedule replaces the optimizer's LR.

    ``logging.WARNING`` when an optimizer group's LR differs from the schedule's
    start, else ``logging.INFO``.
    """
    schedules = recipe.of_type(LearningRateFunction)
    if not schedules:
        return
    lr = schedules[0]
    assert isinstance(lr, LearningRateFunction)
    given = sorted({float(g["lr"]) for g in optimizer.param_groups if "lr" in g})
    differs = any(value != lr.init_lr for value in given)
    logger.log(
        logging.WARNING if differs else logging.INFO,
        "the recipe's LearningRateFunction sets the LR of every param group at every step "
        "(%s, %g -> %g over epochs %g..%g); the optimizer's lr=%s is not used. Change the LR "
        "with recipe_variables init_lr/final_lr or the recipe.",
        lr.lr_func, lr.init_lr, lr.final_lr, lr.start_epoch, lr.end_epoch,
        ", ".join(f"{value:g}" for value in given[:4]) or "unset",
    )


def initialize(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    pruning: bool | str = True,
    quantization: bool = True,
    lr: str = "linear",
    distillation: bool = False,
    distillation_teacher: nn.Module | None = None,
    scaler: Any = None,
    recipe_variables: RecipeVariables | Mapping[str, Any] | None = None,
    recipe: Recipe | str | os.PathLike[str] | None = None,
) -> tuple[RecipeManager, Any]:
    """Write a recipe for ``model`` and wrap ``optimizer`` (or ``scaler``) to run it.

    ``recipe`` (a :class:`Recipe`, YAML text or a YAML file path) replaces the
    generated one; ``pruning``, ``quantization``, ``lr``, ``distillation`` and
    ``recipe_variables`` are then only validated. Returns ``(manager,
    wrapped)`` where ``wrapped`` is a :class:`RecipeScaler` when ``scaler`` is
    given (call ``wrapped.step(optimizer)``), else a :class:`RecipeOptimizer`.
    Run ``manager.max_epochs`` epochs of ``steps_per_epoch`` steps each.

    The recipe's LearningRateFunction overrides the optimizer's LR at every step
    (by default ``1e-3 -> 1e-7``, from :class:`RecipeVariables`); ``initialize``
    logs this once on the ``fsparse.create`` logger, as a warning when the
    optimizer's LR differs from the schedule's start.

    >>> model = nn.Linear(8, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> manager, opt = initialize(model, opt, steps_per_epoch=4, quantization=False)
    >>> manager.max_epochs, manager.phase()
    (20.0, 'pruning')
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if scaler is not None and not callable(getattr(scaler, "step", None)):
        raise TypeError(f"scaler must have a step(optimizer) method, got {type(scaler).__name__}")
    variables = to_variables(recipe_variables)
    generated = create_recipe(
        variables, pruning=pruning, quantization=quantization, lr=lr, distillation=distillation
    )
    chosen = load_recipe(recipe) if recipe is not None else generated
    manager = RecipeManager(chosen, model, steps_per_epoch, teacher=distillation_teacher)
    _log_lr_override(chosen, optimizer)
    if scaler is not None:
        return manager, RecipeScaler(scaler, manager)
    return manager, RecipeOptimizer(optimizer, manager)
