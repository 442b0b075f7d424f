"""Ready-made data schedulers, each a thin wrapper over a pure schedule of the core.

``StepSLScheduler`` and ``LambdaSLScheduler`` scale each entry's base value (its
value when the scheduler first saw it); ``CubicSLScheduler`` sets absolute values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fsparse._src.schedules import cubic, lambda_sl, step_sl
from fsparse.data_scheduler.base_data_scheduler import BaseDataScheduler
from fsparse.data_sparsifier.base_data_sparsifier import BaseDataSparsifier

__all__ = ["CubicSLScheduler", "LambdaSLScheduler", "StepSLScheduler"]


class _RelativeScheduler(BaseDataScheduler):
    def _base(self, name: str, config: Mapping[str, Any]) -> Any:
        """The base value of ``name``; entries added later start from their current value."""
        base = self.base_param.get(name)
        if base is None:
            base = config.get(self.schedule_param)
            if base is None:
                raise ValueError(f"data group {name!r} has no {self.schedule_param!r} to schedule")
            self.base_param[name] = base
        return base


class StepSLScheduler(_RelativeScheduler):
    """``value = base * gamma ** (epoch // step_size)``, unclamped (torch's ``StepLR``).

    >>> import torch
    >>> from fsparse.data_sparsifier import DataNormSparsifier
    >>> sp = DataNormSparsifier([("w", torch.randn(8, 8))], sparsity_level=0.1)
    >>> sched = StepSLScheduler(sp, step_size=2, gamma=2)
    >>> for _ in range(4):
    ...     sp.step(); sched.step()
    >>> sp.data_groups["w"]["sparsity_level"]
    0.4
    """

    def __init__(
        self,
        data_sparsifier: BaseDataSparsifier,
        schedule_param: str = "sparsity_level",
        step_size: int = 1,
        gamma: float = 2,
        last_epoch: int = -1,
        verbose: bool = False,
    ):
        step_sl(gamma, step_size)  # validates
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(data_sparsifier, schedule_param, last_epoch, verbose)

    def get_schedule_param(self) -> dict[str, Any]:
        factor = step_sl(self.gamma, self.step_size)(self.last_epoch)
        groups = self.data_sparsifier.data_groups
        return {name: self._base(name, config) * factor for name, config in groups.items()}


class CubicSLScheduler(BaseDataScheduler):
    """Zhu & Gupta's cubic ramp from ``initial_sparsity`` to ``final_sparsity``.

    The value moves every ``update_every`` epochs from epoch ``begin_step`` and
    reaches its final value after ``num_updates`` moves. ``final_sparsity=None``
    ramps each entry to its own configured value.

    >>> import torch
    >>> from fsparse.data_sparsifier import DataNormSparsifier
    >>> sp = DataNormSparsifier([("w", torch.randn(8, 8))], sparsity_level=0.8)
    >>> sched = CubicSLScheduler(sp, num_updates=2)
    >>> levels = [sched.get_last_param()["w"]]
    >>> for _ in range(3):
    ...     sp.step(); sched.step(); levels.append(round(sched.get_last_param()["w"], 4))
    >>> levels
    [0.0, 0.7, 0.8, 0.8]
    """

    def __init__(
        self,
        data_sparsifier: BaseDataSparsifier,
        schedule_param: str = "sparsity_level",
        initial_sparsity: float = 0.0,
        final_sparsity: float | None = None,
        begin_step: int = 0,
        num_updates: int = 10,
        update_every: int = 1,
        last_epoch: int = -1,
        verbose: bool = False,
    ):
        cubic(initial_sparsity, final_sparsity or 0.0, begin_step, num_updates, update_every)
        self.initial_sparsity = initial_sparsity
        self.final_sparsity = final_sparsity
        self.begin_step = begin_step
        self.num_updates = num_updates
        self.update_every = update_every
        super().__init__(data_sparsifier, schedule_param, last_epoch, verbose)

    def get_schedule_param(self) -> dict[str, Any]:
        out = {}
        for name, config in self.data_sparsifier.data_groups.items():
            final = self.final_sparsity
            if final is None:
                final = self.base_param.setdefault(name, config.get(self.schedule_param))
                if final is None:
                    raise ValueError(f"data group {name!r} has no {self.schedule_param!r}")
            ramp = cubic(
                self.initial_sparsity, final, self.begin_step, self.num_updates, self.update_every
            )
            out[name] = ramp(self.last_epoch)
        return out


class LambdaSLScheduler(_RelativeScheduler):
    """``value = base * sl_lambda(epoch)`` (torch's ``LambdaLR``).

    ``sl_lambda`` is one function for every entry or a dict ``{name: function}``;
    entries missing from the dict keep their value. Like ``LambdaLR``, the functions
    are left out of :meth:`state_dict`.

    >>> import torch
    >>> from fsparse.data_sparsifier import DataNormSparsifier
    >>> sp = DataNormSparsifier([("w", torch.randn(8, 8))], sparsity_level=0.5)
    >>> sched = LambdaSLScheduler(sp, lambda epoch: 1 + epoch)
    >>> sp.step(); sched.step()
    >>> sp.data_groups["w"]["sparsity_level"]
    1.0
    """

    def __init__(
        self,
        data_sparsifier: BaseDataSparsifier,
        sl_lambda: Callable[[int], float] | Mapping[str, Callable[[int], float]],
        schedule_param: str = "sparsity_level",
        last_epoch: int = -1,
        verbose: bool = False,
    ):
        fns = sl_lambda if isinstance(sl_lambda, Mapping) else None
        for fn in fns.values() if fns is not None else [sl_lambda]:
            lambda_sl(fn)  # type: ignore[arg-type]  # validates
        self.sl_lambda = sl_lambda
        super().__init__(data_sparsifier, schedule_param, last_epoch, verbose)

    def get_schedule_param(self) -> dict[str, Any]:
        out = {}
        for name, config in self.data_sparsifier.data_groups.items():
            fn = self.sl_lambda.get(name) if isinstance(self.sl_lambda, Mapping) else self.sl_lambda
            if fn is not None:
                out[name] = self._base(name, config) * lambda_sl(fn)(self.last_epoch)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().state_dict().items() if k != "sl_lambda"}
