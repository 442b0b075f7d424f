"""The recipe manager: a thin stateful wrapper over the pure recipe functions.

State is the step count, one :class:`fsparse.pruners.PrunerState` per pruning
modifier (:mod:`fsparse.create.pruning`), which one-off events have run
(:func:`fsparse.create.schedules.one_off_events`) and the self-teacher. The
wrappers in :mod:`fsparse.create.optimizer_wrapper` call ``before_step`` and
``after_step`` around every optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from fsparse import pruners as fp
from fsparse._src.checks import check_int, check_real, short_repr
from fsparse.create import checkpoint, masks, sharding
from fsparse.create import distillation as kd
from fsparse.create import quantization as qat
from fsparse.create.checkpoint import STATE_KEYS, STATE_VERSION
from fsparse.create.masks import apply_masks, keep_factors, prunable_parameters
from fsparse.create.modifiers import (
    MAX_EPOCH,
    PRUNING_TYPES,
    ConstantPruning,
    Distillation,
    LearningRateFunction,
    Modifier,
    Quantization,
)
from fsparse.create.pruning import (
    Plan,
    due,
    init_state,
    loop_grads,
    make_plan,
    model_masks,
    step_state,
    target_levels,
)
from fsparse.create.recipe import Recipe
from fsparse.create.schedules import first_step, learning_rate, one_off_events, phase, qat_flags
from fsparse.create.sharding import agree, check_layouts, local

__all__ = ["MAX_STEPS_PER_EPOCH", "STATE_KEYS", "STATE_VERSION", "RecipeManager"]

# With epochs capped at modifiers.MAX_EPOCH, steps stay far inside float precision.
MAX_STEPS_PER_EPOCH = 2**31


class RecipeManager:
    """Runs ``recipe`` on ``model`` at ``steps_per_epoch`` optimizer steps per epoch.

    ``teacher`` is the distillation teacher; ``None`` means a frozen copy of the
    model taken at the distillation start (self-distillation).
    """

    def __init__(
        self,
        recipe: Recipe,
        model: nn.Module,
        steps_per_epoch: int,
        teacher: nn.Module | None = None,
    ) -> None:
        if not isinstance(recipe, Recipe):
            raise TypeError(f"recipe must be a Recipe, got {type(recipe).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int):
            raise TypeError(f"steps_per_epoch must be an int, got {short_repr(steps_per_epoch)}")
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
        check_int(steps_per_epoch, "steps_per_epoch", low=1, high=MAX_STEPS_PER_EPOCH)
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise TypeError(f"distillation_teacher must be an nn.Module, got {type(teacher)}")
        self.recipe = recipe
        self.model = model
        self.steps_per_epoch = steps_per_epoch
        self.step = 0
        self.finalized = False
        self._given_teacher = teacher
        self._self_teacher: nn.Module | None = None
        self._bn_hooks: list[RemovableHandle] = []
        self._done: set[str] = set()
        self._weights_checked = False
        prunable = prunable_parameters(model)
        # FSDP2: DTensor weights (Shard(0)/Replicate on one 1-D mesh), checked before anything
        self._group = check_layouts(prunable)
        sharding.check_fsdp_support(self._group, recipe, teacher)
        self._weights = prunable
        pruning: list[tuple[Plan, fp.PrunerState]] = []
        skipped: list[str] = []
        for modifier in self.pruning_modifiers:
            plan, left_out = make_plan(modifier, prunable, steps_per_epoch)
            sharding.check_row_views(plan.matrix, prunable,
                                     f"mask_type {getattr(modifier, 'mask_type', '')!r}")
            pruning.append((plan, init_state(plan, self._detached(plan))))
            skipped.extend(left_out)
        self._pruning = pruning
        self._masks = [model_masks(plan, state) for plan, state in pruning]
        self._keep = [keep_factors(prunable, m) for m in self._masks]
        self.skipped: tuple[str, ...] = tuple(skipped)
        self._event_steps = one_off_events(recipe, steps_per_epoch, self_teacher=teacher is None)
        self._run_events(0)

    # ----- the recipe, read-only -----
    @property
    def max_epochs(self) -> float:
        """The epoch at which the recipe ends."""
        return self.recipe.max_epochs

    @property
    def min_epochs(self) -> float:
        """The epoch at which the recipe's first modifier starts."""
        return self.recipe.min_epochs

    @property
    def pruning_modifiers(self) -> tuple[Modifier, ...]:
        return self.recipe.of_type(*PRUNING_TYPES)

    @property
    def pruners(self) -> tuple[fp.Pruner, ...]:
        """The ``fsparse.pruners`` pruner each pruning modifier runs, in recipe order."""
        return tuple(plan.pruner for plan, _ in self._pruning)

    @property
    def needs_grads(self) -> bool:
        """Whether some pruner takes the training loop's gradients."""
        return not self.finalized and any(plan.needs_grads for plan, _ in self._pruning)

    def _detached(self, plan: Plan) -> dict[str, torch.Tensor]:
        return {n: self._weights[n].detach() for n in plan.names}

    @property
    def quantization_modifiers(self) -> tuple[Modifier, ...]:
        return self.recipe.of_type(Quantization)

    @property
    def distillation_modifiers(self) -> tuple[Modifier, ...]:
        return self.recipe.of_type(Distillation)

    @property
    def learning_rate_modifiers(self) -> tuple[Modifier, ...]:
        return self.recipe.of_type(LearningRateFunction)

    # ----- pure views at an epoch (default: now) -----
    @property
    def epoch(self) -> float:
        """The epoch of the next optimizer step: ``step / steps_per_epoch``."""
        return self.step / self.steps_per_epoch

    def _at(self, epoch: float | None) -> float:
        if epoch is None:
            return self.epoch
        return check_real(epoch, "epoch", low=-MAX_EPOCH, high=MAX_EPOCH)

    def qat_active(self, epoch: float | None = None) -> bool:
        """Whether QAT is on at ``epoch``."""
        modifiers = self.quantization_modifiers
        return bool(modifiers) and qat_flags(modifiers[0], self._at(epoch)).active  # type: ignore[arg-type]

    def phase(self, epoch: float | None = None) -> str:
        """``"pruning"``, ``"fine-tuning"``, ``"qat"`` or ``"finished"`` at ``epoch``."""
        return phase(self.recipe, self._at(epoch))

    def learning_rate(self, epoch: float | None = None) -> float | None:
        """The recipe's LR at ``epoch``; ``None`` without a LearningRateFunction."""
        modifiers = self.learning_rate_modifiers
        return learning_rate(modifiers[0], self._at(epoch)) if modifiers else None  # type: ignore[arg-type]

    def target_sparsity(self, epoch: float | None = None) -> dict[str, float]:
        """Per weight, the element sparsity its pruning modifier targets at ``epoch``.

        Layer by layer, every weight gets its level on the modifier's schedule
        (AC/DC: the target in sparse phases, 0 in dense ones; RigL/SET: the
        distribution's level). With global magnitude pruning each weight gets its
        own level: the share of the overall target that the global ranking of the
        current weights gives it (what a mask update would use now); after pruning
        ends these are the levels of the held masks. Global OBS/M-FAC report the
        levels of the masks held now. ConstantPruning weights are not listed.
        """
        t = first_step(self._at(epoch), self.steps_per_epoch)
        out = {}
        for plan, state in self._pruning:
            if isinstance(plan.modifier, ConstantPruning):
                continue
            out.update(target_levels(plan, state, self._detached(plan), t, self.steps_per_epoch))
        return out

    # ----- state -----
    @property
    def pruning_states(self) -> tuple[fp.PrunerState, ...]:
        """The pruner state of each pruning modifier, in recipe order (pruner layout)."""
        return tuple(state for _, state in self._pruning)

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """``parameter name -> bool mask`` (``False`` = pruned), in the weights' layout."""
        return {n: m for group in self._masks for n, m in group.items()}

    def sparsity(self) -> dict[str, float]:
        """``parameter name -> fraction of masked-out elements`` of each whole weight.

        With DTensor (FSDP2) weights each rank counts its shard and one
        ``all_reduce`` sums the counts: call it on every rank.
        """
        return masks.pruned_fractions(self.masks)

    @property
    def teacher(self) -> nn.Module | None:
        """The distillation teacher (given, or the self-teacher once taken)."""
        return self._given_teacher if self._given_teacher is not None else self._self_teacher

    # ----- one-off events -----
    def _events(self) -> list[tuple[int, str, Callable[[], None]]]:
        actions = {"teacher": self._take_teacher, "qat": lambda: qat.prepare_qat(self.model),
                   "observers": lambda: qat.disable_observers(self.model),
                   "bn": lambda: self._bn_hooks.extend(qat.freeze_bn(self.model))}
        return [(at, name, actions[name]) for at, name in self._event_steps]

    def _run_events(self, step: int) -> None:
        for at, name, action in self._events():
            if at <= step and name not in self._done:
                action()
                self._done.add(name)

    def _take_teacher(self) -> None:
        self._self_teacher = kd.frozen_copy(self.model)

    # ----- driven by the wrapped optimizer -----
    def before_step(self, optimizer: Any, grad_scale: float | None = None) -> None:
        """Run the pruners due at this step and set every group's LR.

        Each pruner that needs gradients gets the weights' ``.grad`` (divided by
        ``grad_scale``, the AMP scaler's scale, when given). Weights a pruner
        changes (regrown weights at 0, OBS's compensation) are written into the
        model, the masks applied, and the optimizer state of the entries the
        pruner names restarted (``fp.reset_optimizer_state``).
        """
        if self.finalized:
            return
        if not self._weights_checked:
            masks.check_still_parameters(self.model, self._weights)
            self._weights_checked = True
        t, spe = self.step, self.steps_per_epoch
        results: list[tuple[Plan, fp.PrunerState, Any, Any]] = []
        for plan, state in self._pruning:  # compute everything first
            if not due(plan, state, t, spe):
                results.append((plan, state, None, None))
                continue
            grads = loop_grads(self._weights, plan.names, grad_scale) if plan.needs_grads else None
            results.append((plan, *step_state(plan, state, self._detached(plan), grads, t, spe)))
        for i, (plan, state, changed, resets) in enumerate(results):  # then commit
            self._pruning[i] = (plan, state)
            if changed is None:
                continue
            with torch.no_grad():
                for n, value in changed.items():
                    self._weights[n].copy_(value)
            self._masks[i] = model_masks(plan, state)
            self._keep[i] = keep_factors(self._weights, self._masks[i], reuse=self._keep[i])
            apply_masks(self._weights, self._keep[i])
            if resets and isinstance(optimizer, torch.optim.Optimizer):
                fp.reset_optimizer_state(optimizer, self._weights, resets)
        lr = self.learning_rate()
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def after_step(self) -> None:
        """Re-apply the masks (momentum cannot revive pruned weights) and advance one step."""
        if self.finalized:
            return
        for keep in self._keep:
            apply_masks(self._weights, keep)
        self.step += 1
        self._run_events(self.step)

    def loss_update(
        self, loss: torch.Tensor, student_outputs: torch.Tensor | None = None,
        student_inputs: Any = None,
    ) -> torch.Tensor:
        """``(1 - h) * loss + h * KD`` while distillation is active, else ``loss``."""
        modifiers = self.distillation_modifiers
        if self.finalized or not modifiers:
            return loss
        return kd.recipe_loss(modifiers[0], self.epoch, loss, student_outputs, student_inputs,
                              self.teacher)

    def finalize(self) -> None:
        """Apply the masks for good, remove the BN hooks and stop driving the run."""
        for keep in self._keep:
            apply_masks(self._weights, keep)
        for handle in self._bn_hooks:
            handle.remove()
        self._bn_hooks = []
        self.finalized = True

    # ----- checkpoints -----
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: keys :data:`STATE_KEYS`, masks by parameter name."""
        return checkpoint.manager_state(self.recipe, self.steps_per_epoch, self.step,
                                        self.finalized, self.masks, self.pruning_states,
                                        self._self_teacher)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`. Load it into a manager made like the saved one,
        before loading the model's and the optimizer's state: it replays QAT so that
        the model's structure matches the checkpoint.

        Everything (version, recipe, step, masks, self-teacher) is checked before the
        model is touched: a bad ``state_dict`` raises ``ValueError``/``TypeError`` and
        changes nothing. With DTensor (FSDP2) weights each rank loads its own
        ``state_dict`` (masks as DTensors placed like this run's); when any rank
        refuses its own, every rank raises.
        """
        error: Exception | None = None
        try:
            checked = checkpoint.checked_manager_state(
                state_dict, recipe=self.recipe, steps_per_epoch=self.steps_per_epoch,
                events=self._events(), done=self._done, pruning=self._pruning,
                self_teacher=self._self_teacher, model=self.model)
        except (TypeError, ValueError) as err:
            error = err
        device = next((local(w).device for w in self._weights.values()), None)
        agree(error, self._group, device)
        step, finalized, teacher_state, restored = checked
        # everything checked on every rank: commit
        self._run_events(step)
        if self._self_teacher is not None:
            self._self_teacher.load_state_dict(teacher_state)
        self._pruning = restored
        self._masks = [model_masks(plan, state) for plan, state in restored]
        self._keep = [keep_factors(self._weights, m) for m in self._masks]
        self.step = step
        if finalized:
            self.finalize()

    def __str__(self) -> str:
        return str(self.recipe)

    def __repr__(self) -> str:
        return (
            f"RecipeManager(step={self.step}, epoch={self.epoch:g}, phase={self.phase()!r}, "
            f"max_epochs={self.max_epochs:g}, modifiers={len(self.recipe.modifiers)})"
        )
