"""fsparse.create: auto-generated sparsification recipes that drive a training loop.

>>> import torch
>>> from fsparse import create
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> manager, optimizer = create.initialize(model, torch.optim.SGD(model.parameters(), lr=0.1), 4)
>>> manager.max_epochs
20.0
"""

from fsparse.create.api import initialize
from fsparse.create.manager import RecipeManager
from fsparse.create.modifiers import (
    ALL_PRUNABLE,
    ACDCPruning,
    ConstantPruning,
    Distillation,
    EpochRange,
    GradualPruning,
    LearningRateFunction,
    MFACPruning,
    MovementPruning,
    OBSPruning,
    Quantization,
    RigLPruning,
    SETPruning,
)
from fsparse.create.optimizer_wrapper import RecipeOptimizer, RecipeScaler
from fsparse.create.recipe import Recipe, load_recipe
from fsparse.create.recipe_variables import RecipeVariables
from fsparse.create.template import create_recipe

__all__ = [
    "ALL_PRUNABLE",
    "ACDCPruning",
    "ConstantPruning",
    "Distillation",
    "EpochRange",
    "GradualPruning",
    "LearningRateFunction",
    "MFACPruning",
    "MovementPruning",
    "OBSPruning",
    "Quantization",
    "Recipe",
    "RecipeManager",
    "RecipeOptimizer",
    "RecipeScaler",
    "RecipeVariables",
    "RigLPruning",
    "SETPruning",
    "create_recipe",
    "initialize",
    "load_recipe",
]
