"""Optimizer and AMP-scaler wrappers: every ``step()`` advances the recipe.

A step runs, in order: the due mask updates and the LR of every param group
(:meth:`RecipeManager.before_step`), the wrapped step, then the masks are
re-applied and the step count advances (:meth:`RecipeManager.after_step`).
Every other attribute is read from and written to the wrapped object.
"""

from __future__ import annotations

from typing import Any

from fsparse.create.manager import RecipeManager

__all__ = ["RecipeOptimizer", "RecipeScaler"]


class _Forwarding:
    """Forwards attribute reads and writes, except its own slots, to ``_wrapped``."""

    _OWN: frozenset[str] = frozenset({"_wrapped", "_manager"})

    def __init__(self, wrapped: Any, manager: RecipeManager) -> None:
        object.__setattr__(self, "_wrapped", wrapped)
        object.__setattr__(self, "_manager", manager)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_wrapped"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._wrapped, name, value)

    @property
    def manager(self) -> RecipeManager:
        """The recipe manager this wrapper drives."""
        return self._manager  # type: ignore[no-any-return]

    @property
    def wrapped(self) -> Any:
        """The wrapped optimizer or scaler."""
        return self._wrapped


class RecipeOptimizer(_Forwarding):
    """An optimizer whose ``step`` also advances ``manager``.

    >>> import torch
    >>> from fsparse.create import RecipeManager, create_recipe, RecipeVariables
    >>> model = torch.nn.Linear(4, 2)
    >>> recipe = create_recipe(RecipeVariables(num_epochs=1), quantization=False)
    >>> sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> opt = RecipeOptimizer(sgd, RecipeManager(recipe, model, 2))
    >>> opt.step(); opt.manager.step, opt.param_groups[0]["lr"]
    (1, 0.001)
    """

    def step(self, closure: Any = None) -> Any:
        """Advance the recipe around one step of the wrapped optimizer."""
        self._manager.before_step(self._wrapped)
        result = self._wrapped.step() if closure is None else self._wrapped.step(closure)
        self._manager.after_step()
        return result

    def emulated_step(self) -> None:
        """Advance the recipe one step without stepping the optimizer.

        With gradient accumulation, call it on the micro-batches where the real
        ``step()`` is skipped, so that ``steps_per_epoch`` counts micro-batches.
        """
        self._manager.before_step(self._wrapped)
        self._manager.after_step()

    def __repr__(self) -> str:
        return f"RecipeOptimizer({self._wrapped!r})"


class RecipeScaler(_Forwarding):
    """An AMP scaler (anything with ``step(optimizer)``) whose ``step`` advances ``manager``."""

    def _scale(self, optimizer: Any) -> float | None:
        """The scaler's current scale, when a pruner needs the (unscaled) gradients.

        ``None`` when the gradients are already unscaled (``scaler.unscale_``
        ran on ``optimizer`` this step, as torch's ``GradScaler`` records).
        """
        get_scale = getattr(self._wrapped, "get_scale", None)
        if not self._manager.needs_grads or not callable(get_scale):
            return None
        states = getattr(self._wrapped, "_per_optimizer_states", None)
        stage = states.get(id(optimizer), {}).get("stage") if isinstance(states, dict) else None
        if getattr(stage, "name", None) == "UNSCALED":
            return None
        scale = float(get_scale())
        return scale if scale > 0 else None

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        """Advance the recipe around ``scaler.step(optimizer)``.

        Pruners that need gradients get ``grad / scaler.get_scale()`` (the unscaled
        gradients; non-finite entries of an overflowing step as 0), or the
        gradients as they are once ``scaler.unscale_(optimizer)`` has run.
        """
        self._manager.before_step(optimizer, self._scale(optimizer))
        result = self._wrapped.step(optimizer, *args, **kwargs)
        self._manager.after_step()
        return result

    def emulated_step(self, optimizer: Any) -> None:
        """Advance the recipe one step without stepping; see ``RecipeOptimizer.emulated_step``."""
        self._manager.before_step(optimizer, self._scale(optimizer))
        self._manager.after_step()

    def __repr__(self) -> str:
        return f"RecipeScaler({self._wrapped!r})"
