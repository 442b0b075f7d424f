"""The recipe manager: a thin stateful wrapper over the pure recipe functions.

State is the step count, one core :class:`fsparse.SparsifierState` per pruning
modifier (masks), which one-off events have run (QAT, observer and BN
freezes, the self-teacher copy) and the self-teacher. The wrappers in
:mod:`fsparse.create.optimizer_wrapper` call :meth:`RecipeManager.before_step`
and :meth:`RecipeManager.after_step` around every optimizer step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from fsparse._src.checks import check_int, check_real, check_tensor, short_repr
from fsparse._src.engine.mask_types import global_levels
from fsparse._src.state import SparsifierState, add, sparsity
from fsparse._src.untrusted import load_mask
from fsparse.create import distillation as kd
from fsparse.create import quantization as qat
from fsparse.create.masks import (
    apply_masks,
    init_pruning,
    prunable_parameters,
    state_name,
    update_masks,
)
from fsparse.create.modifiers import (
    MAX_EPOCH,
    ConstantPruning,
    Distillation,
    GradualPruning,
    LearningRateFunction,
    Modifier,
    Quantization,
)
from fsparse.create.recipe import Recipe
from fsparse.create.recipe_variables import parse_mask_type
from fsparse.create.schedules import (
    distillation_active,
    first_step,
    learning_rate,
    mask_update_due,
    phase,
    pruning_level,
    qat_flags,
)

__all__ = ["MAX_STEPS_PER_EPOCH", "STATE_KEYS", "STATE_VERSION", "RecipeManager"]

STATE_KEYS = ("version", "recipe", "steps_per_epoch", "step", "finalized", "masks", "teacher")
STATE_VERSION = 1
# With epochs capped at modifiers.MAX_EPOCH, steps stay far inside float precision.
MAX_STEPS_PER_EPOCH = 2**31
_MAX_STEP = 2**62


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
        prunable = prunable_parameters(model)
        self._names = {state_name(n): n for n in prunable}
        pruning: list[tuple[GradualPruning | ConstantPruning, SparsifierState]] = []
        skipped: list[str] = []
        for modifier in self.pruning_modifiers:
            state, left_out = init_pruning(modifier, prunable)  # type: ignore[arg-type]
            pruning.append((modifier, state))  # type: ignore[arg-type]
            skipped.extend(left_out)
        self._pruning = pruning
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
        return self.recipe.of_type(GradualPruning, ConstantPruning)

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
        """Per weight, the element sparsity its gradual pruning modifier targets at ``epoch``.

        Layer by layer, every weight gets the modifier's level. With global sparsity
        each weight gets its own level: the share of the overall target that the
        global ranking of the current weights gives it (what a mask update would
        use now); after pruning ends these are the levels of the held masks.
        """
        t = first_step(self._at(epoch), self.steps_per_epoch)
        out = {}
        for modifier, state in self._pruning:
            if not isinstance(modifier, GradualPruning):
                continue
            level = pruning_level(modifier, t, self.steps_per_epoch)
            if modifier.global_sparsity:
                width, zeros, _ = parse_mask_type(modifier.mask_type)
                data = {n: e.data.detach() for n, e in state.entries.items()}
                configs = {n: e.config for n, e in state.entries.items()}
                blocks = global_levels(data, configs, level * width / zeros)
                out.update({self._names[n]: b * zeros / width for n, b in blocks.items()})
            else:
                out.update({self._names[n]: level for n in state.names})
        return out

    # ----- state -----
    @property
    def pruning_states(self) -> tuple[SparsifierState, ...]:
        """The core state of each pruning modifier, in recipe order."""
        return tuple(state for _, state in self._pruning)

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """``parameter name -> bool mask`` (``False`` = pruned)."""
        return {self._names[n]: e.mask for s in self.pruning_states for n, e in s.entries.items()}

    def sparsity(self) -> dict[str, float]:
        """``parameter name -> fraction of masked-out elements``."""
        return {self._names[n]: v for s in self.pruning_states for n, v in sparsity(s).items()}

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
    def before_step(self, optimizer: Any) -> None:
        """Update the masks that are due at this step and set every group's LR."""
        if self.finalized:
            return
        updated = []
        for modifier, state in self._pruning:
            if mask_update_due(modifier, self.step, self.steps_per_epoch):
                state = update_masks(state, modifier, self.step, self.steps_per_epoch)
                apply_masks(state)
            updated.append((modifier, state))
        self._pruning = updated
        lr = self.learning_rate()
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def after_step(self) -> None:
        """Re-apply the masks (momentum cannot revive pruned weights) and advance one step."""
        if self.finalized:
            return
        for state in self.pruning_states:
            apply_masks(state)
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
        for state in self.pruning_states:
            apply_masks(state)
        for handle in self._bn_hooks:
            handle.remove()
        self._bn_hooks = []
        self.finalized = True

    # ----- checkpoints -----
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: keys :data:`STATE_KEYS`, masks by parameter name."""
        teacher = self._self_teacher.state_dict() if self._self_teacher is not None else None
        return {
            "version": 1,
            "recipe": self.recipe.to_yaml(),
            "steps_per_epoch": self.steps_per_epoch,
            "step": self.step,
            "finalized": self.finalized,
            "masks": {n: m.clone() for n, m in self.masks.items()},
            "teacher": teacher,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`. Load it into a manager made like the saved one,
        before loading the model's and the optimizer's state: it replays QAT so that
        the model's structure matches the checkpoint.

        Everything (version, recipe, step, masks, self-teacher) is checked before the
        model is touched: a bad ``state_dict`` raises ``ValueError``/``TypeError`` and
        changes nothing.
        """
        if not isinstance(state_dict, Mapping) or set(state_dict) != set(STATE_KEYS):
            got = (
                short_repr(list(state_dict), 200)
                if isinstance(state_dict, Mapping)
                else type(state_dict).__name__
            )
            raise ValueError(f"state_dict must have keys {sorted(STATE_KEYS)}, got {got}")
        version = state_dict["version"]
        if type(version) is not int or version != STATE_VERSION:
            raise ValueError(
                f"state_dict version must be {STATE_VERSION}, got {short_repr(version)}; "
                "it was saved by an unknown version of fsparse.create"
            )
        if Recipe.from_yaml(state_dict["recipe"]) != self.recipe:
            raise ValueError("state_dict was saved with a different recipe")
        saved_steps = state_dict["steps_per_epoch"]
        if type(saved_steps) is not int or saved_steps != self.steps_per_epoch:
            raise ValueError(
                f"state_dict has steps_per_epoch {short_repr(state_dict['steps_per_epoch'])}, "
                f"this manager {self.steps_per_epoch}"
            )
        step = state_dict["step"]
        if type(step) is not int or not 0 <= step <= _MAX_STEP:
            raise ValueError(
                f"state_dict step must be a non-negative int, got {short_repr(step)}"
            )
        finalized = state_dict["finalized"]
        if not isinstance(finalized, bool):
            raise ValueError(f"state_dict finalized must be a bool, got {short_repr(finalized)}")
        events = self._events()
        if any(at > step and name in self._done for at, name, _ in events):
            raise ValueError(
                f"this manager has already run past step {step}; load into a fresh one"
            )
        expects_teacher = any(name == "teacher" and at <= step for at, name, _ in events)
        teacher_state = state_dict["teacher"]
        if (teacher_state is not None) != expects_teacher:
            has = "has" if teacher_state is not None else "lacks"
            wants = "has" if expects_teacher else "has no"
            raise ValueError(
                f"state_dict {has} a self-teacher, but at step {step} this recipe {wants} one"
            )
        restored = self._restored_pruning(state_dict["masks"])
        if expects_teacher:
            self._check_teacher(teacher_state, step, events)
        # everything checked: commit
        self._run_events(step)
        if self._self_teacher is not None:
            self._self_teacher.load_state_dict(teacher_state)
        self._pruning = restored
        self.step = step
        if finalized:
            self.finalize()

    def _restored_pruning(
        self, masks: object
    ) -> list[tuple[GradualPruning | ConstantPruning, SparsifierState]]:
        """The pruning states with the checkpoint's masks, validated (nothing is committed)."""
        current = self.masks
        if not isinstance(masks, Mapping) or set(masks) != set(current):
            raise ValueError(f"state_dict masks must be for {short_repr(sorted(current), 400)}")
        restored = []
        for modifier, state in self._pruning:
            for name, entry in state.entries.items():
                param = self._names[name]
                arg = f"state_dict masks[{short_repr(param)}]"
                mask = load_mask(masks[param], tuple(entry.data.shape), arg)
                state = add(state, name, entry.data, mask=mask.to(entry.data.device))
            restored.append((modifier, state))
        return restored

    def _check_teacher(
        self, teacher_state: object, step: int, events: list[tuple[int, str, Any]]
    ) -> None:
        """Load ``teacher_state`` into a scratch teacher made as the run would make it."""
        if not isinstance(teacher_state, Mapping):
            raise TypeError(
                f"state_dict teacher must be a state dict, got {type(teacher_state).__name__}"
            )
        for key, value in teacher_state.items():
            check_tensor(value, f"state_dict teacher[{short_repr(key)}]", floating=False)
        teacher = copy.deepcopy(self._self_teacher)
        if teacher is None:  # replay the structural events on a scratch copy of the model
            scratch = copy.deepcopy(self.model)
            for at, name, _ in events:
                if at > step or name in self._done:
                    continue
                if name == "teacher":
                    teacher = kd.frozen_copy(scratch)
                elif name == "qat":
                    qat.prepare_qat(scratch)
        assert teacher is not None  # expects_teacher: the teacher event is due
        try:
            teacher.load_state_dict(teacher_state)
        except (RuntimeError, KeyError) as err:
            raise ValueError(
                f"state_dict teacher does not fit the model: {str(err)[:300]}"
            ) from None

    def __str__(self) -> str:
        return str(self.recipe)

    def __repr__(self) -> str:
        return (
            f"RecipeManager(step={self.step}, epoch={self.epoch:g}, phase={self.phase()!r}, "
            f"max_epochs={self.max_epochs:g}, modifiers={len(self.recipe.modifiers)})"
        )
