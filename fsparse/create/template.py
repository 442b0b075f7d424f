"""The default recipe, written from :class:`RecipeVariables`."""

from __future__ import annotations

from fsparse._src.checks import short_repr
from fsparse.create.modifiers import (
    LR_FUNCTIONS,
    ConstantPruning,
    Distillation,
    EpochRange,
    GradualPruning,
    LearningRateFunction,
    Modifier,
    Quantization,
)
from fsparse.create.recipe import Recipe
from fsparse.create.recipe_variables import RecipeVariables

__all__ = ["CONSTANT_PRUNING", "LATER_PRUNING", "PRUNING_OPTIONS", "create_recipe"]

CONSTANT_PRUNING = ("constant", "transfer", "sparse-transfer")
LATER_PRUNING = ("acdc", "movement", "obs", "mfac")
PRUNING_OPTIONS = (True, False, *CONSTANT_PRUNING, *LATER_PRUNING)
MASK_UPDATES = 20


def qat_epochs(num_epochs: float, quantization: bool) -> float:
    """``5`` if ``num_epochs >= 15`` else ``2``; ``0`` without quantization.

    >>> qat_epochs(20.0, True), qat_epochs(10.0, True), qat_epochs(10.0, False)
    (5.0, 2.0, 0.0)
    """
    if not quantization:
        return 0.0
    return 5.0 if num_epochs >= 15 else 2.0


def _check_options(pruning: object, quantization: object, lr: object, distillation: object) -> None:
    if pruning is None or not any(
        pruning is option or (isinstance(option, str) and pruning == option)
        for option in PRUNING_OPTIONS
    ):
        raise ValueError(f"pruning must be one of {PRUNING_OPTIONS}, got {short_repr(pruning)}")
    if pruning in LATER_PRUNING:
        raise NotImplementedError(
            f"pruning={pruning!r} is not built yet (a later issue adds acdc, movement, obs and "
            "mfac); use True, False, 'constant', 'transfer' or 'sparse-transfer'"
        )
    if not isinstance(quantization, bool):
        raise ValueError(f"quantization must be True or False, got {short_repr(quantization)}")
    if lr not in LR_FUNCTIONS:
        raise ValueError(f"lr must be one of {LR_FUNCTIONS}, got {short_repr(lr)}")
    if not isinstance(distillation, bool):
        raise ValueError(f"distillation must be True or False, got {short_repr(distillation)}")


def create_recipe(
    variables: RecipeVariables | None = None,
    *,
    pruning: bool | str = True,
    quantization: bool = True,
    lr: str = "linear",
    distillation: bool = False,
) -> Recipe:
    """The default recipe for ``E = variables.num_epochs`` epochs.

    Rules (every number comes from ``variables``):

    * ``qat = 5 if E >= 15 else 2`` (``0`` without quantization); ``E`` must exceed it.
    * ``pruning=True``: :class:`GradualPruning` from ``min(0.05, sparsity)`` to
      ``sparsity`` over epochs ``0 .. (E - qat) / 2`` on the cubic schedule, with
      ``update_frequency = ((E - qat) / 2) / 20`` (about 20 mask updates), using
      ``mask_type`` and ``global_sparsity``. Masks are then held to the end
      (fine-tuning until ``E - qat``, then QAT).
    * ``"constant"``, ``"transfer"``, ``"sparse-transfer"``, and ``False`` with
      quantization: :class:`ConstantPruning` over ``0 .. E`` (existing zeros stay zero).
    * quantization: :class:`Quantization` from ``E - qat``; observers disabled and
      BN statistics frozen at ``E - qat / 2``.
    * :class:`LearningRateFunction` ``lr`` from ``init_lr`` to ``final_lr`` over ``0 .. E``.
    * distillation: :class:`Distillation` over ``0 .. E`` with ``hardness``, ``temperature``.
    * :class:`EpochRange` ``0 .. E``.

    >>> r = create_recipe(RecipeVariables(num_epochs=20))
    >>> [type(m).__name__ for m in r.modifiers]
    ['EpochRange', 'LearningRateFunction', 'GradualPruning', 'Quantization']
    >>> r.modifiers[2].end_epoch, r.modifiers[3].start_epoch, r.modifiers[3].freeze_bn_stats_epoch
    (7.5, 15.0, 17.5)
    """
    variables = variables if variables is not None else RecipeVariables()
    _check_options(pruning, quantization, lr, distillation)
    epochs = variables.num_epochs
    qat = qat_epochs(epochs, quantization)
    if epochs <= qat:
        raise ValueError(
            f"num_epochs must be > {qat:g} (the QAT epochs) with quantization, got {epochs!r}"
        )
    assert variables.sparsity is not None and variables.mask_type is not None
    modifiers: list[Modifier] = [
        EpochRange(0.0, epochs),
        LearningRateFunction(0.0, epochs, variables.init_lr, variables.final_lr, lr),
    ]
    if pruning is True:
        prune_end = (epochs - qat) / 2
        modifiers.append(
            GradualPruning(
                start_epoch=0.0,
                end_epoch=prune_end,
                update_frequency=prune_end / MASK_UPDATES,
                init_sparsity=min(0.05, variables.sparsity),
                final_sparsity=variables.sparsity,
                mask_type=variables.mask_type,
                global_sparsity=variables.global_sparsity,
            )
        )
    elif pruning in CONSTANT_PRUNING or (pruning is False and quantization):
        modifiers.append(ConstantPruning(0.0, epochs))
    if quantization:
        freeze = epochs - qat / 2
        modifiers.append(Quantization(epochs - qat, freeze, freeze))
    if distillation:
        modifiers.append(
            Distillation(0.0, epochs, variables.hardness, variables.temperature)
        )
    return Recipe(tuple(modifiers))
