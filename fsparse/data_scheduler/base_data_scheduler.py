"""torch.ao-compatible ``BaseDataScheduler``: varies one config key of a data sparsifier."""

from __future__ import annotations

import abc
import math
import warnings
import weakref
from functools import wraps
from typing import Any

from fsparse._src.checks import check_int, short_repr
from fsparse.data_sparsifier.base_data_sparsifier import BaseDataSparsifier

__all__ = ["BaseDataScheduler"]


def _with_counter(method: Any) -> Any:
    """Wrap a bound ``step`` so that each call bumps its instance's ``_step_count``."""
    if getattr(method, "_with_counter", False):
        return method
    instance_ref = weakref.ref(method.__self__)  # no cycle sparsifier -> wrapper -> sparsifier
    func = method.__func__

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        instance = instance_ref()
        instance._step_count += 1  # type: ignore[union-attr]
        return func(instance, *args, **kwargs)

    wrapper._with_counter = True  # type: ignore[attr-defined]
    return wrapper


class _WithinStep:
    def __init__(self, scheduler: BaseDataScheduler) -> None:
        self.scheduler = scheduler

    def __enter__(self) -> None:
        self.scheduler._get_sp_called_within_step = True

    def __exit__(self, *exc: object) -> None:
        self.scheduler._get_sp_called_within_step = False


class BaseDataScheduler:
    r"""Schedules ``data_sparsifier.data_groups[name][schedule_param]`` over epochs.

    Subclasses implement :meth:`get_schedule_param`, returning ``{name: value}`` for
    the epoch ``self.last_epoch``. The constructor calls :meth:`step` once (epoch 0).
    Call ``data_sparsifier.step()`` before each ``scheduler.step()``.

    >>> import torch
    >>> from fsparse.data_sparsifier import DataNormSparsifier
    >>> class Halve(BaseDataScheduler):
    ...     def get_schedule_param(self):
    ...         return {n: self.base_param[n] / 2**self.last_epoch for n in self.base_param}
    >>> sp = DataNormSparsifier([("w", torch.randn(4, 4))], sparsity_level=0.8)
    >>> sched = Halve(sp, "sparsity_level")
    >>> sp.step(); sched.step()
    >>> sched.get_last_param()
    {'w': 0.4}
    """

    def __init__(
        self,
        data_sparsifier: BaseDataSparsifier,
        schedule_param: str,
        last_epoch: int = -1,
        verbose: bool = False,
    ):
        if not isinstance(data_sparsifier, BaseDataSparsifier):
            raise TypeError(
                f"{type(data_sparsifier).__name__} is not an instance of "
                "fsparse.data_sparsifier.BaseDataSparsifier"
            )
        if not isinstance(schedule_param, str):
            raise TypeError(
                f"schedule_param must be a str, got {type(schedule_param).__name__} "
                f"{short_repr(schedule_param)}"
            )
        check_int(last_epoch, "last_epoch", low=-1)
        self.data_sparsifier = data_sparsifier
        self.schedule_param = schedule_param
        self.base_param = {
            name: config.get(schedule_param, None)
            for name, config in data_sparsifier.data_groups.items()
        }
        self.last_epoch = last_epoch
        self._step_count = 0
        self.verbose = verbose
        self._get_sp_called_within_step = False
        self.step()  # the first values; raises before the sparsifier is touched
        data_sparsifier.step = _with_counter(data_sparsifier.step)  # type: ignore[method-assign]
        data_sparsifier._step_count = 0  # type: ignore[attr-defined]

    @abc.abstractmethod
    def get_schedule_param(self) -> dict[str, Any]:
        """``{name: value}`` of ``schedule_param`` for the epoch ``self.last_epoch``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__} (\nData Sparsifier {self.data_sparsifier}\n"
            f"    {self.schedule_param}: {self.base_param}\n)"
        )

    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the sparsifier (save the sparsifier's state separately)."""
        return {k: v for k, v in self.__dict__.items() if k != "data_sparsifier"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the attributes from :meth:`state_dict`."""
        self.__dict__.update(state_dict)

    def get_last_param(self) -> dict[str, Any]:
        """``{name: value}`` of ``schedule_param`` after the last :meth:`step`."""
        return self._last_param

    def step(self) -> None:
        """Advance one epoch and write the new values into the sparsifier's ``data_groups``."""
        if self._step_count == 1:
            if not hasattr(self.data_sparsifier.step, "_with_counter"):
                warnings.warn(
                    "Seems like `data_sparsifier.step()` has been overridden after sparsity "
                    "scheduler initialization. Please, make sure to call "
                    "`data_sparsifier.step()` before `scheduler.step()`.",
                    UserWarning,
                    stacklevel=2,
                )
            elif self.data_sparsifier._step_count < 1:  # type: ignore[attr-defined]
                warnings.warn(
                    "Detected call of `scheduler.step()` before `data_sparsifier.step()`. "
                    "You have to make sure you run the data_sparsifier.step() BEFORE any "
                    "calls to the scheduler.step().",
                    UserWarning,
                    stacklevel=2,
                )
        updated = self._next_values()
        self._step_count += 1
        groups = self.data_sparsifier.data_groups
        for name, value in updated.items():
            groups[name][self.schedule_param] = value
            if self.verbose:
                print(f"Adjusting {self.schedule_param} for group {name} to {value}")
        self._last_param = {
            name: config.get(self.schedule_param, None) for name, config in groups.items()
        }
        self.data_sparsifier.enable_mask_update = True

    def _next_values(self) -> dict[str, Any]:
        """The next epoch's values, checked; on failure ``last_epoch`` is left as it was."""
        self.last_epoch += 1
        try:
            with _WithinStep(self):
                updated = self.get_schedule_param()
            if not isinstance(updated, dict):
                raise TypeError(
                    f"get_schedule_param must return a dict, got {type(updated).__name__}"
                )
            for name, value in updated.items():
                if isinstance(value, float) and math.isnan(value):
                    raise ValueError(
                        f"the schedule gives NaN for {short_repr(name)}'s "
                        f"{self.schedule_param!r} at epoch {self.last_epoch}"
                    )
        except OverflowError as err:
            self.last_epoch -= 1
            raise ValueError(
                f"the schedule overflows at epoch {short_repr(self.last_epoch + 1)}: {err}"
            ) from None
        except BaseException:
            self.last_epoch -= 1
            raise
        return updated
