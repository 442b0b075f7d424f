"""The recipe manager: a thin stateful wrapper over the pure recipe functions.

State is the step count, one :class:`fsparse.fp.PrunerState` per pruning
modifier (masks, scores, gradient buffers: see :mod:`fsparse.create.pruning`),
which one-off events have run (QAT, observer and BN freezes, the self-teacher
copy) and the self-teacher. The wrappers in
:mod:`fsparse.create.optimizer_wrapper` call :meth:`RecipeManager.before_step`
and :meth:`RecipeManager.after_step` around every optimizer step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from fsparse import pruners as fp
from fsparse._src.checks import check_int, check_real, short_repr
from fsparse.create import distillation as kd
from fsparse.create import quantization as qat
from fsparse.create.checkpoint import STATE_KEYS, STATE_VERSION, checked_manager_state
from fsparse.create.masks import apply_masks, keep_factors, prunable_parameters, pruned_fractions
from fsparse.create.modifiers import (
    MAX_EPOCH,
    PRUNING_TYPES,
    ConstantPruning,
    Distillation,
    LearningRateFunction,
    Modifier,
    OBSPruning,
    Quantization,
)
from fsparse.create.pruning import (
    Plan,
    due,
    init_state,
    make_plan,
    model_masks,
    step_state,
    target_levels,
)
from fsparse.create.recipe import Recipe
from fsparse.create.schedules import (
    distillation_active,
    first_step,
    learning_rate,
    phase,
    qat_flags,
)
from fsparse.create.sharding import (
    agree,
    check_layouts,
    check_row_views,
    local,
)

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
        if self._group is not None and recipe.of_type(Quantization):
            raise ValueError("quantization: QAT is not supported on a model with DTensor "
                             "(FSDP2) weights; pass quantization=False or a recipe without "
                             "Quantization")
        if self._group is not None and teacher is None and recipe.of_type(Distillation):
            raise ValueError("distillation: self-distillation deep-copies the model, which "
                             "FSDP2 does not support; pass distillation_teacher (a model of "
                             "its own) or distillation=False")
        self._weights = prunable
        pruning: list[tuple[Plan, fp.PrunerState]] = []
        skipped: list[str] = []
        for modifier in self.pruning_modifiers:
            if self._group is not None and isinstance(modifier, OBSPruning):
                raise ValueError(f"pruning: mode {modifier.MODE!r} (second-order, block Fisher "
                                 "inverses) is not supported on DTensor (FSDP2) weights; use "
                                 "True, 'movement', 'acdc', 'rigl' or 'set'")
            plan, left_out = make_plan(modifier, prunable, steps_per_epoch)
            check_row_views(plan.matrix, prunable,
                            f"mask_type {getattr(modifier, 'mask_type', '')!r}")
            pruning.append((plan, init_state(plan, self._detached(plan))))
            skipped.extend(left_out)
        self._pruning = pruning
        self._masks = [model_masks(plan, state) for plan, state in pruning]
        self._keep = [keep_factors(prunable, m) for m in self._masks]
        self.skipped: tuple[str, ...] = tuple(skipped)
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

    def _grads(self, plan: Plan, scale: float | None) -> dict[str, torch.Tensor]:
        """The weights' gradients, unscaled (``scale``: the AMP scaler's), non-finite as 0."""
        out = {}
        for n in plan.names:
            g = self._weights[n].grad
            if g is None:
                out[n] = torch.zeros_like(self._weights[n].detach())
            elif scale is None:
                out[n] = g.detach()
            else:
                out[n] = torch.div(g.detach(), scale).nan_to_num_(nan=0.0, posinf=0.0,
                                                                   neginf=0.0)
        return out

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
        return {n: m for masks in self._masks for n, m in masks.items()}

    def sparsity(self) -> dict[str, float]:
        """``parameter name -> fraction of masked-out elements`` of each whole weight.

        With DTensor (FSDP2) weights each rank counts its shard and one
        ``all_reduce`` sums the counts: call it on every rank.
        """
        return pruned_fractions(self.masks)

    @property
    def teacher(self) -> nn.Module | None:
        """The distillation teacher (given, or the self-teacher once taken)."""
        return self._given_teacher if self._given_teacher is not None else self._self_teacher

    # ----- one-off events -----
    def _events(self) -> list[tuple[int, str, Callable[[], None]]]:
        spe, events = self.steps_per_epoch, []
        for d in self.distillation_modifiers:
            if self._given_teacher is None:
                events.append((first_step(d.start_epoch, spe), "teacher", self._take_teacher))
        for q in self.quantization_modifiers:
            assert isinstance(q, Quantization)
            events.append((first_step(q.start_epoch, spe), "qat", self._start_qat))
            events.append(
                (first_step(q.disable_observer_epoch, spe), "observers", self._stop_observers)
            )
            events.append((first_step(q.freeze_bn_stats_epoch, spe), "bn", self._freeze_bn))
        return sorted(events, key=lambda e: e[0])  # stable: teacher before qat at a tie

    def _run_events(self, step: int) -> None:
        for at, name, action in self._events():
            if at <= step and name not in self._done:
                action()
                self._done.add(name)

    def _take_teacher(self) -> None:
        self._self_teacher = kd.frozen_copy(self.model)

    def _start_qat(self) -> None:
        qat.prepare_qat(self.model)

    def _stop_observers(self) -> None:
        qat.disable_observers(self.model)

    def _freeze_bn(self) -> None:
        self._bn_hooks.extend(qat.freeze_bn(self.model))

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
            self._check_weights()
        t, spe = self.step, self.steps_per_epoch
        results: list[tuple[Plan, fp.PrunerState, Any, Any]] = []
        for plan, state in self._pruning:  # compute everything first
            if not due(plan, state, t, spe):
                results.append((plan, state, None, None))
                continue
            grads = self._grads(plan, grad_scale) if plan.needs_grads else None
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

    def _check_weights(self) -> None:
        """``ValueError`` (at the first step) if the model's weights were replaced since
        ``__init__``, e.g. by ``fully_shard`` applied after ``initialize``: masks written
        into the old objects would silently do nothing."""
        now = prunable_parameters(self.model)
        stale = [n for n, w in self._weights.items() if now.get(n) is not w]
        if stale:
            raise ValueError(
                f"model: its weights {short_repr(stale, 200)} are no longer the parameters "
                "fsparse.create.initialize saw (was fully_shard or another wrapper applied "
                "after initialize?); wrap the model first, then call initialize")
        self._weights_checked = True

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
        modifier = modifiers[0]
        assert isinstance(modifier, Distillation)
        if not distillation_active(modifier, self.epoch):
            return loss
        if student_outputs is None or student_inputs is None:
            raise ValueError(
                "loss_update needs student_outputs and student_inputs during distillation"
            )
        teacher = self.teacher
        assert teacher is not None  # taken by the "teacher" event at the distillation start
        teacher_out = kd.teacher_outputs(teacher, student_inputs)
        return kd.distillation_loss(
            loss, student_outputs, teacher_out, modifier.hardness, modifier.temperature
        )

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
        teacher = self._self_teacher.state_dict() if self._self_teacher is not None else None
        return {
            "version": STATE_VERSION,
            "recipe": self.recipe.to_yaml(),
            "steps_per_epoch": self.steps_per_epoch,
            "step": self.step,
            "finalized": self.finalized,
            "masks": {n: m.clone() for n, m in self.masks.items()},
            "pruners": [copy.deepcopy(fp.state_dict(s)) for s in self.pruning_states],
            "teacher": teacher,
        }

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
            checked = checked_manager_state(
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
