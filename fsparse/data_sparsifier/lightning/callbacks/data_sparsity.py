"""Lightning callbacks for data sparsity, with torch.ao's API.

``PostTrainingDataSparsity`` sparsifies a copy of ``pl_module.model`` when ``fit``
ends; ``TrainingAwareDataSparsity`` re-sparsifies a copy after every training epoch
while a data scheduler moves the sparsity level. Neither touches ``pl_module.model``.
Beyond torch.ao: models with biases work, the training-aware state goes into
Lightning checkpoints (checked before use), sparsity goes to the trainer's loggers,
and DDP ranks agree. Hooks called by hand with a stand-in trainer that has no
``loggers`` or ``world_size`` (as torch.ao's own tests do) skip logging and syncing.

This module imports without Lightning; constructing a callback then raises
``ImportError``. Both ``lightning`` and ``pytorch_lightning`` are supported.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from fsparse._src.checks import short_repr
from fsparse.data_scheduler.base_data_scheduler import BaseDataScheduler
from fsparse.data_sparsifier.base_data_sparsifier import BaseDataSparsifier
from fsparse.data_sparsifier.lightning.callbacks._checkpoint import check_state
from fsparse.data_sparsifier.lightning.callbacks._data_sparstity_utils import (
    _attach_model_to_data_sparsifier,
    _log_sparsified_level,
    _sparsity_by_layer,
)

__all__ = ["PostTrainingDataSparsity", "TrainingAwareDataSparsity"]

INSTALL_HINT = (
    "the fsparse Lightning callbacks need Lightning: pip install fsparse[lightning] "
    "(or install pytorch_lightning)"
)


class _MissingLightning:
    """Stands in for ``Callback`` when no Lightning is installed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ImportError(INSTALL_HINT)


def _callback_base() -> type:
    """``Callback`` of every installed Lightning (so either ``Trainer`` accepts ours)."""
    bases: list[type] = []
    for module_name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if module.Callback not in bases:
            bases.append(module.Callback)
    if not bases:
        return _MissingLightning
    if len(bases) == 1:
        return bases[0]
    return type("_LightningCallback", tuple(bases), {})


if TYPE_CHECKING:
    import lightning.pytorch as pl
    from lightning.pytorch import Callback as _CallbackBase
else:
    _CallbackBase = _callback_base()


def _check_class(value: object, base: type, argument: str) -> None:
    if not (isinstance(value, type) and issubclass(value, base)):
        raise TypeError(
            f"{argument} must be a subclass of {base.__module__}.{base.__qualname__} "
            f"(the class, not an instance), got {short_repr(value)}"
        )


def _check_args(value: object, argument: str, reserved: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{argument} must be a dict of keyword arguments, got {short_repr(value)}"
        )
    if reserved in value:
        raise ValueError(f"{argument} must not hold {reserved!r}: the callback passes it")
    return dict(value)


def _checked_sparsifier(
    data_sparsifier_class: type[BaseDataSparsifier], data_sparsifier_args: object
) -> tuple[dict[str, Any], BaseDataSparsifier]:
    """Checked args and a throwaway sparsifier: bad ones fail now, not after training."""
    _check_class(data_sparsifier_class, BaseDataSparsifier, "data_sparsifier_class")
    args = _check_args(data_sparsifier_args, "data_sparsifier_args", "data_list")
    return args, data_sparsifier_class(**args)


def _check_prefix(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"log_prefix must be a non-empty str, got {short_repr(value)}")
    return value


def _model_of(pl_module: Any) -> nn.Module:
    model = getattr(pl_module, "model", None)
    if not isinstance(model, nn.Module):
        raise TypeError(
            "pl_module must have a `model` attribute holding the nn.Module to sparsify, "
            f"got {type(model).__name__}"
        )
    return model


def _prefixed(prefix: str, levels: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}/{name}": level for name, level in levels.items()}


class PostTrainingDataSparsity(_CallbackBase):
    """Sparsify a copy of ``pl_module.model`` once ``fit`` ends.

    At ``on_fit_end`` the model is deep-copied (``.eval()``), every parameter is
    attached to ``data_sparsifier_class(**data_sparsifier_args)`` (``.`` in names
    becomes ``_``), then the sparsifier steps and squashes: ``.sparsified`` holds the
    sparse copy and ``.data_sparsifier`` the sparsifier. ``.sparsity`` maps each
    parameter name (and ``"overall"``) to its fraction of zeros; the same values go
    to every trainer logger as ``{log_prefix}/{name}`` (``pl_module.log`` is not
    allowed in ``on_fit_end``). The arguments are checked at construction by
    building a throwaway sparsifier.

    >>> from fsparse.data_sparsifier import DataNormSparsifier
    >>> cb = PostTrainingDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5})
    >>> cb.sparsified is None and cb.data_sparsifier is None
    True
    """

    def __init__(
        self,
        data_sparsifier_class: type[BaseDataSparsifier],
        data_sparsifier_args: Mapping[str, Any],
        *,
        log_prefix: str = "post_training_sparsity",
    ) -> None:
        super().__init__()
        args, _ = _checked_sparsifier(data_sparsifier_class, data_sparsifier_args)
        self.data_sparsifier_class = data_sparsifier_class
        self.data_sparsifier_args = args
        self.log_prefix = _check_prefix(log_prefix)
        self.data_sparsifier: BaseDataSparsifier | None = None
        self.sparsified: nn.Module | None = None
        self.sparsity: dict[str, float] = {}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sparsified = copy.deepcopy(_model_of(pl_module)).eval()
        data_sparsifier = self.data_sparsifier_class(**self.data_sparsifier_args)
        _attach_model_to_data_sparsifier(sparsified, data_sparsifier)
        data_sparsifier.step()
        data_sparsifier.squash_mask()
        self.sparsified, self.data_sparsifier = sparsified, data_sparsifier
        self.sparsity = _sparsity_by_layer(sparsified, data_sparsifier)
        _log_sparsified_level(sparsified, data_sparsifier)
        step = getattr(trainer, "global_step", 0)
        for logger in getattr(trainer, "loggers", ()):  # finalized after on_fit_end
            logger.log_metrics(_prefixed(self.log_prefix, self.sparsity), step=step)


class TrainingAwareDataSparsity(_CallbackBase):
    """Sparsify a copy of ``pl_module.model`` after every training epoch, on a schedule.

    ``on_train_start`` builds ``data_sparsifier_class(**data_sparsifier_args)``,
    attaches a copy of the model, and builds
    ``data_scheduler_class(data_sparsifier=..., **data_scheduler_args)``.
    ``on_train_epoch_start`` reloads ``.data_sparsifier_state_dict`` (None until the
    first epoch ends). ``on_train_epoch_end`` attaches a fresh copy (each layer keeps
    its config and mask), steps the sparsifier then the scheduler, saves the state
    dict, and logs ``{log_prefix}/{name}`` and ``{log_prefix}/overall`` with
    ``pl_module.log_dict``. ``on_train_end`` squashes, so ``.sparsified`` holds the
    sparse copy.

    After epoch ``e`` (0-based) the masks use the level scheduled for epoch ``e`` and
    ``data_groups`` holds the level for epoch ``e + 1``. ``.epoch`` counts the epochs
    done; it, the sparsifier state dict and the scheduler state go into Lightning
    checkpoints, so ``trainer.fit(ckpt_path=...)`` resumes the schedule. A checkpoint
    saved in the first epoch resumes from the start of the schedule; one saved at the
    end of training restores ``.sparsified``, ``.data_sparsifier``, ``.data_scheduler``
    and ``.sparsity`` at ``on_fit_end`` (Lightning runs no train hook then).

    >>> from fsparse.data_scheduler import StepSLScheduler
    >>> from fsparse.data_sparsifier import DataNormSparsifier
    >>> cb = TrainingAwareDataSparsity(
    ...     DataNormSparsifier, {"sparsity_level": 0.1}, StepSLScheduler, {"gamma": 2}
    ... )
    >>> cb.data_sparsifier_state_dict is None, cb.epoch
    (True, 0)
    """

    def __init__(
        self,
        data_sparsifier_class: type[BaseDataSparsifier],
        data_sparsifier_args: Mapping[str, Any],
        data_scheduler_class: type[BaseDataScheduler],
        data_scheduler_args: Mapping[str, Any],
        *,
        log_prefix: str = "sparsity",
    ) -> None:
        super().__init__()
        sparsifier_args, probe = _checked_sparsifier(data_sparsifier_class, data_sparsifier_args)
        _check_class(data_scheduler_class, BaseDataScheduler, "data_scheduler_class")
        scheduler_args = _check_args(
            data_scheduler_args, "data_scheduler_args", "data_sparsifier"
        )
        try:
            data_scheduler_class(data_sparsifier=probe, **copy.deepcopy(scheduler_args))
        except RecursionError:  # deepcopy of a deeply nested argument
            raise ValueError("data_scheduler_args nests too deeply to copy") from None
        self.data_sparsifier_class = data_sparsifier_class
        self.data_sparsifier_args = sparsifier_args
        self.data_scheduler_class = data_scheduler_class
        self.data_scheduler_args = scheduler_args
        self.log_prefix = _check_prefix(log_prefix)
        self.data_sparsifier: BaseDataSparsifier | None = None
        self.data_scheduler: BaseDataScheduler | None = None
        self.sparsified: nn.Module | None = None
        self.data_sparsifier_state_dict: dict[str, Any] | None = None
        self.sparsity: dict[str, float] = {}
        self.epoch = 0
        self._restored: dict[str, Any] | None = None

    # -- hooks -------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sparsifier = self.data_sparsifier_class(**self.data_sparsifier_args)
        self.sparsified = copy.deepcopy(_model_of(pl_module))
        _attach_model_to_data_sparsifier(self.sparsified, sparsifier)  # populates base levels
        scheduler_args = copy.deepcopy(self.data_scheduler_args)
        scheduler = self.data_scheduler_class(data_sparsifier=sparsifier, **scheduler_args)
        self.data_sparsifier, self.data_scheduler = sparsifier, scheduler
        restored, self._restored = self._restored, None
        if restored is None or restored["data_sparsifier_state_dict"] is None:
            self.data_sparsifier_state_dict, self.epoch = None, 0
            return
        # resuming from a checkpoint: the scheduler's constructor stepped the levels
        # back to epoch 0, so load the scheduler first, then the sparsifier.
        scheduler.load_state_dict(copy.deepcopy(restored["data_scheduler_state_dict"]))
        sparsifier.load_state_dict(restored["data_sparsifier_state_dict"])
        self.data_sparsifier_state_dict = restored["data_sparsifier_state_dict"]
        self.epoch = restored["epoch"]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.data_sparsifier is None or self.data_sparsifier_state_dict is None:
            return  # first epoch
        self.data_sparsifier.load_state_dict(self.data_sparsifier_state_dict)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sparsifier, scheduler = self.data_sparsifier, self.data_scheduler
        if sparsifier is None or scheduler is None:
            raise RuntimeError("on_train_epoch_end ran before on_train_start")
        self.sparsified = copy.deepcopy(_model_of(pl_module))
        # replacing a name keeps its config and mask, so no per-layer config is passed
        _attach_model_to_data_sparsifier(self.sparsified, sparsifier)
        sparsifier.step()
        scheduler.step()
        self.data_sparsifier_state_dict = sparsifier.state_dict()
        self.epoch += 1
        self.sparsity = _sparsity_by_layer(self.sparsified, sparsifier)
        _log_sparsified_level(self.sparsified, sparsifier)
        if hasattr(trainer, "loggers"):  # a hand-made stand-in trainer has no loggers
            pl_module.log_dict(
                _prefixed(self.log_prefix, self.sparsity),
                on_step=False,
                on_epoch=True,
                # equal on every rank: the mean is exact
                sync_dist=getattr(trainer, "world_size", 1) > 1,
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.data_sparsifier is None:
            return
        saved = self.data_sparsifier_state_dict
        if saved is not None:  # its tensors share storage with the data squashing writes to
            tensors = {key: value.clone() for key, value in saved["_container"].items()}
            self.data_sparsifier_state_dict = {**saved, "_container": tensors}
        self.data_sparsifier.squash_mask()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        restored = self._restored
        if restored is None or restored["data_sparsifier_state_dict"] is None:
            return
        # resumed from a checkpoint of a finished fit: Lightning ran no train hook, so
        # rebuild what on_train_start and the last on_train_end leave behind.
        self.on_train_start(trainer, pl_module)
        sparsifier, sparsified = self.data_sparsifier, self.sparsified
        assert sparsifier is not None and sparsified is not None
        _attach_model_to_data_sparsifier(sparsified, sparsifier)  # keeps masks and configs
        self.sparsity = _sparsity_by_layer(sparsified, sparsifier)
        self.on_train_end(trainer, pl_module)

    # -- checkpointing -----------------------------------------------------------------
    @property
    def state_key(self) -> str:
        """Checkpoint key; callbacks with different ``log_prefix`` can share a Trainer."""
        return self._generate_state_key(log_prefix=self.log_prefix)

    def state_dict(self) -> dict[str, Any]:
        """Epochs done, the sparsifier state dict and the scheduler state (Lightning
        saves it in checkpoints; it loads with ``torch.load(weights_only=True)``).

        Until the first epoch ends there is no sparsifier state, and the scheduler is
        still at its start: both are ``None``, and a resume starts afresh.
        """
        scheduler, sparsifier_state = self.data_scheduler, self.data_sparsifier_state_dict
        return {
            "epoch": self.epoch,
            "data_sparsifier_state_dict": sparsifier_state,
            "data_scheduler_state_dict": (
                None
                if scheduler is None or sparsifier_state is None
                else copy.deepcopy(scheduler.state_dict())
            ),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Check a :meth:`state_dict` and keep it for ``on_train_start`` to rebuild from.

        Everything is checked now (masks safe to densify, the sparsifier state loads,
        the scheduler state has this scheduler's attributes and runs a trial epoch), so
        a bad checkpoint raises ``ValueError``/``TypeError`` here and changes nothing.
        """
        checked = check_state(
            state_dict,
            self.data_sparsifier_class,
            self.data_sparsifier_args,
            self.data_scheduler_class,
            self.data_scheduler_args,
        )
        self._restored = checked
        self.epoch, self.data_sparsifier_state_dict = (
            checked["epoch"], checked["data_sparsifier_state_dict"]
        )
