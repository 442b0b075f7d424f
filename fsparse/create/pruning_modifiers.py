"""The modifiers of the training-aware pruning modes; each runs one ``fsparse.pruners`` pruner.

| modifier | pruner | mode |
|---|---|---|
| :class:`MovementPruning` | ``pruners.movement`` | ``"movement"`` |
| :class:`OBSPruning` | ``pruners.obs`` | ``"obs"`` |
| :class:`MFACPruning` | ``pruners.mfac`` | ``"mfac"`` |
| :class:`ACDCPruning` | ``pruners.acdc`` | ``"acdc"`` |
| :class:`RigLPruning` | ``pruners.rigl`` | ``"rigl"`` |
| :class:`SETPruning` | ``pruners.set`` | ``"set"`` |

A combination a pruner cannot honour (``global_sparsity`` where it ranks each
layer alone, N:M for drop-and-grow) raises ``ValueError`` naming the field and
the mode when the modifier is made.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from fsparse._src.checks import short_repr
from fsparse.create.modifier_fields import ALL_PRUNABLE, Base, check_params, in_range
from fsparse.create.recipe_variables import max_sparsity, parse_mask_type

__all__ = ["PRUNER_MODIFIERS", "ACDCPruning", "MFACPruning", "MovementPruning", "OBSPruning",
           "RigLPruning", "SETPruning"]

DISTRIBUTIONS = ("uniform", "erk")
MAX_GRADS = 2**16


def _int(owner: str, field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{owner}.{field} must be an int in [{low}, {high}], "
                         f"got {short_repr(value)}")
    return value


class _Pruning(Base):
    """Checks shared by the pruner modifiers: span, sparsity, mask_type, global, params."""

    MODE: ClassVar[str] = ""
    LEVEL: ClassVar[str] = "final_sparsity"
    GLOBAL: ClassVar[bool] = False  # whether the pruner has a global form
    NM: ClassVar[bool] = True  # whether the pruner takes N:M masks
    # set by each dataclass subclass (this base is not a dataclass: no fields here)
    mask_type: str
    global_sparsity: bool
    params: str | tuple[str, ...]

    def _check_pruning(self) -> None:
        owner, mode = type(self).__name__, self.MODE
        self._coerce()
        self._check_span()
        mask_type = self.mask_type
        _, _, kept = parse_mask_type(mask_type, f"{owner}.mask_type")
        level = getattr(self, self.LEVEL)
        in_range(owner, self.LEVEL, level, 0.0, max_sparsity(mask_type))
        if level >= 1.0:
            raise ValueError(f"{owner}.{self.LEVEL} must be < 1, got 1.0")
        if kept and not self.NM:
            raise ValueError(
                f"mask_type {mask_type!r} is not supported by pruning mode {mode!r} "
                f"({owner}.mask_type): N:M fixes the count in every group, so there is nothing "
                "to drop and grow; use 'unstructured' or 'block4'")
        glob = self.global_sparsity
        if not isinstance(glob, bool):
            raise ValueError(f"{owner}.global_sparsity must be a bool, got {short_repr(glob)}")
        if glob and not self.GLOBAL:
            raise ValueError(
                f"global_sparsity=True is not supported by pruning mode {mode!r} "
                f"({owner}.global_sparsity): its pruner sets each layer's level by itself; "
                "use global_sparsity=False")
        object.__setattr__(self, "params", check_params(owner, self.params))

    def _check_frequency(self) -> None:
        frequency = float(getattr(self, "update_frequency"))  # noqa: B009 (not on every subclass)
        if frequency <= 0:
            raise ValueError(f"{type(self).__name__}.update_frequency must be > 0, got "
                             f"{frequency!r}")


@dataclasses.dataclass(frozen=True)
class MovementPruning(_Pruning):
    """Hard movement pruning (Sanh et al. 2020) to ``final_sparsity`` on the pruner's cubic ramp.

    Masks change every ``update_frequency`` epochs in ``start_epoch .. end_epoch``,
    scores ``S += -g * w`` accumulate from the training loop's gradients at every
    step of that span; masks are held afterwards.
    """

    MODE: ClassVar[str] = "movement"
    FLOATS: ClassVar[tuple[str, ...]] = ("start_epoch", "end_epoch", "update_frequency",
                                         "final_sparsity")
    start_epoch: float
    end_epoch: float
    update_frequency: float
    final_sparsity: float
    mask_type: str = "unstructured"
    global_sparsity: bool = False
    params: str | tuple[str, ...] = ALL_PRUNABLE

    def __post_init__(self) -> None:
        self._check_pruning()
        self._check_frequency()


@dataclasses.dataclass(frozen=True)
class OBSPruning(_Pruning):
    """Gradual oBERT (OBS with block Fisher inverses, Kurtic et al. 2022) on the cubic ramp.

    Each pruning step uses the ``num_grads`` gradients of the training steps that
    end with it (``None``: as many as fit between pruning steps, at most 16) and
    moves the surviving weights by the OBS compensation.
    """

    MODE: ClassVar[str] = "obs"
    GLOBAL: ClassVar[bool] = True
    FLOATS: ClassVar[tuple[str, ...]] = ("start_epoch", "end_epoch", "update_frequency",
                                         "final_sparsity", "damp")
    start_epoch: float
    end_epoch: float
    update_frequency: float
    final_sparsity: float
    num_grads: int | None = None
    damp: float = 1e-5
    block_size: int = 50
    mask_type: str = "unstructured"
    global_sparsity: bool = True
    params: str | tuple[str, ...] = ALL_PRUNABLE

    def __post_init__(self) -> None:
        owner = type(self).__name__
        self._check_pruning()
        self._check_frequency()
        if self.num_grads is not None:
            _int(owner, "num_grads", self.num_grads, 1, MAX_GRADS)
        _int(owner, "block_size", self.block_size, 1, 2**20)
        if not 0 < self.damp <= 1e6:
            raise ValueError(f"{owner}.damp must be in (0, 1e6], got {self.damp!r}")


@dataclasses.dataclass(frozen=True)
class MFACPruning(OBSPruning):
    """Gradual M-FAC pruning (Frantar et al. 2021): :class:`OBSPruning` with M-FAC's inverse."""

    MODE: ClassVar[str] = "mfac"
    block_size: int = 2048


@dataclasses.dataclass(frozen=True)
class ACDCPruning(_Pruning):
    """AC/DC (Peste et al. 2021): dense until ``start_epoch``, then sparse and dense phases of
    ``phase_epochs`` each, sparse from ``end_epoch`` to the end of the run.

    Sparse phases prune ``sparsity`` by magnitude (``distribution`` spreads it);
    with ``reset_momentum`` the optimizer state restarts at every phase change.
    """

    MODE: ClassVar[str] = "acdc"
    LEVEL: ClassVar[str] = "sparsity"
    FLOATS: ClassVar[tuple[str, ...]] = ("start_epoch", "end_epoch", "phase_epochs", "sparsity")
    start_epoch: float
    end_epoch: float
    phase_epochs: float
    sparsity: float
    mask_type: str = "unstructured"
    global_sparsity: bool = False
    distribution: str = "uniform"
    reset_momentum: bool = True
    params: str | tuple[str, ...] = ALL_PRUNABLE

    def __post_init__(self) -> None:
        owner = type(self).__name__
        self._check_pruning()
        if self.phase_epochs <= 0:
            raise ValueError(f"{owner}.phase_epochs must be > 0, got {self.phase_epochs!r}")
        _distribution(owner, self.distribution)
        if not isinstance(self.reset_momentum, bool):
            raise ValueError(f"{owner}.reset_momentum must be a bool, got "
                             f"{short_repr(self.reset_momentum)}")


def _distribution(owner: str, value: object) -> None:
    if not isinstance(value, str) or value not in DISTRIBUTIONS:
        raise ValueError(f"{owner}.distribution must be one of {DISTRIBUTIONS}, got "
                         f"{short_repr(value)}")


@dataclasses.dataclass(frozen=True)
class RigLPruning(_Pruning):
    """RigL (Evci et al. 2020): sparse at ``sparsity`` from ``start_epoch`` (ERK by default);
    drop-and-grow every ``update_frequency`` epochs with the cosine drop fraction
    from ``drop_fraction`` to 0 at ``end_epoch``; masks held afterwards."""

    MODE: ClassVar[str] = "rigl"
    LEVEL: ClassVar[str] = "sparsity"
    NM: ClassVar[bool] = False
    FLOATS: ClassVar[tuple[str, ...]] = ("start_epoch", "end_epoch", "update_frequency",
                                         "sparsity", "drop_fraction")
    start_epoch: float
    end_epoch: float
    update_frequency: float
    sparsity: float
    drop_fraction: float = 0.3
    distribution: str = "erk"
    mask_type: str = "unstructured"
    global_sparsity: bool = False
    seed: int = 0
    params: str | tuple[str, ...] = ALL_PRUNABLE

    def __post_init__(self) -> None:
        owner = type(self).__name__
        self._check_pruning()
        self._check_frequency()
        in_range(owner, "drop_fraction", self.drop_fraction, 0.0, 1.0)
        _distribution(owner, self.distribution)
        _int(owner, "seed", self.seed, 0, 2**63 - 1)


@dataclasses.dataclass(frozen=True)
class SETPruning(RigLPruning):
    """SET (Mocanu et al. 2018): :class:`RigLPruning` growing at random instead of by ``|g|``."""

    MODE: ClassVar[str] = "set"


PRUNER_MODIFIERS: tuple[type, ...] = (
    MovementPruning, OBSPruning, MFACPruning, ACDCPruning, RigLPruning, SETPruning,
)
