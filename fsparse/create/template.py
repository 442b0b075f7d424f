"""The default recipe, written from :class:`RecipeVariables`."""

from __future__ import annotations

from fsparse._src.checks import short_repr
from fsparse.create.modifiers import (
    LR_FUNCTIONS,
    ACDCPruning,
    ConstantPruning,
    Distillation,
    EpochRange,
    GradualPruning,
    LearningRateFunction,
    MFACPruning,
    Modifier,
    MovementPruning,
    OBSPruning,
    Quantization,
    RigLPruning,
    SETPruning,
)
from fsparse.create.recipe import Recipe
from fsparse.create.recipe_variables import RecipeVariables

__all__ = ["CONSTANT_PRUNING", "PRUNER_MODES", "PRUNING_OPTIONS", "create_recipe"]

CONSTANT_PRUNING = ("constant", "transfer", "sparse-transfer")
PRUNER_MODES = ("acdc", "movement", "obs", "mfac", "rigl", "set")
PRUNING_OPTIONS = (True, False, *CONSTANT_PRUNING, *PRUNER_MODES)
GLOBAL_BY_DEFAULT = (True, "obs", "mfac")
MASK_UPDATES = 20
ACDC_PHASES = 20  # AC/DC phase length: (E - qat) / 20 (5 epochs of 100, as the paper)


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

    Rules (every number comes from ``variables``; ``E' = E - qat``):

    * ``qat = 5 if E >= 15 else 2`` (``0`` without quantization); ``E`` must exceed it.
    * ``pruning=True``: :class:`GradualPruning` from ``min(0.05, sparsity)`` to
      ``sparsity`` over epochs ``0 .. E' / 2`` on the cubic schedule, with
      ``update_frequency = (E' / 2) / 20`` (about 20 mask updates), using
      ``mask_type`` and ``global_sparsity`` (default global). Masks are then held
      to the end (fine-tuning until ``E'``, then QAT).
    * ``"movement"``: :class:`MovementPruning` to ``sparsity`` over ``0 .. E' / 2``
      on the pruner's cubic ramp (from 0), ``update_frequency = (E' / 2) / 20``,
      layer by layer.
    * ``"obs"`` / ``"mfac"``: :class:`OBSPruning` / :class:`MFACPruning` likewise,
      global by default, each pruning step from the gradients of the training
      steps just before it (``num_grads``: as many as fit, at most 16).
    * ``"acdc"``: :class:`ACDCPruning` with phases of ``p = E' / 20`` epochs:
      dense until ``2p``, then sparse/dense phases of ``p`` each, sparse from
      ``E' - 2p`` to the end; ``sparsity`` spread uniformly; momentum reset at
      every phase change.
    * ``"rigl"`` / ``"set"``: :class:`RigLPruning` / :class:`SETPruning` at
      ``sparsity`` (ERK) from the first step, drop-and-grow every
      ``(3 E' / 4) / 20`` epochs with the cosine drop fraction from 0.3 to 0 at
      ``3 E' / 4``; masks held afterwards.
    * ``"constant"``, ``"transfer"``, ``"sparse-transfer"``, and ``False`` with
      quantization: :class:`ConstantPruning` over ``0 .. E`` (existing zeros stay zero).
    * quantization: :class:`Quantization` from ``E - qat``; observers disabled and
      BN statistics frozen at ``E - qat / 2``.
    * :class:`LearningRateFunction` ``lr`` from ``init_lr`` to ``final_lr`` over ``0 .. E``.
    * distillation: :class:`Distillation` over ``0 .. E`` with ``hardness``, ``temperature``.
    * :class:`EpochRange` ``0 .. E``.

    ``mask_type`` and an explicit ``global_sparsity`` apply to every mode; a mode
    that cannot honour them (global for movement, AC/DC, RigL and SET; N:M for
    RigL and SET) raises ``ValueError`` naming the variable and the mode.

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
    if pruning is True or pruning in PRUNER_MODES:
        modifiers.append(_pruning_modifier(pruning, variables, epochs - qat))
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


def _pruning_modifier(pruning: bool | str, variables: RecipeVariables, train: float) -> Modifier:
    """The pruning modifier of mode ``pruning`` over ``train = E - qat`` epochs."""
    sparsity, mask_type = variables.sparsity, variables.mask_type
    assert sparsity is not None and mask_type is not None
    glob = variables.global_sparsity
    if glob is None:
        glob = any(pruning is m or (isinstance(m, str) and pruning == m)
                   for m in GLOBAL_BY_DEFAULT)
    end = train / 2
    try:
        if pruning is True:
            return GradualPruning(0.0, end, end / MASK_UPDATES, min(0.05, sparsity), sparsity,
                                  mask_type=mask_type, global_sparsity=glob)
        if pruning == "movement":
            return MovementPruning(0.0, end, end / MASK_UPDATES, sparsity, mask_type=mask_type,
                                   global_sparsity=glob)
        if pruning in ("obs", "mfac"):
            obs = OBSPruning if pruning == "obs" else MFACPruning
            return obs(0.0, end, end / MASK_UPDATES, sparsity, mask_type=mask_type,
                       global_sparsity=glob)
        if pruning == "acdc":
            phase = train / ACDC_PHASES
            return ACDCPruning(2 * phase, train - 2 * phase, phase, sparsity, mask_type=mask_type,
                               global_sparsity=glob)
        cls = RigLPruning if pruning == "rigl" else SETPruning
        stop = 0.75 * train
        return cls(0.0, stop, stop / MASK_UPDATES, sparsity, mask_type=mask_type,
                   global_sparsity=glob)
    except ValueError as err:
        hint = f" (target {variables.target!r} needs it)" if variables.target else ""
        raise ValueError(f"recipe_variables for pruning={pruning!r}: {err}{hint}") from None
