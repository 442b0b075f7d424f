"""Knowledge distillation: the KD loss, and running a teacher without gradients."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fsparse.create.modifiers import Distillation, Modifier
from fsparse.create.schedules import distillation_active

__all__ = ["distillation_loss", "frozen_copy", "kd_loss", "recipe_loss", "teacher_outputs"]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(teacher / T) || softmax(student / T)) * T**2``, averaged over the batch.

    The class dimension is the last one; leading dims are flattened into the batch.

    >>> x = torch.tensor([[1.0, 2.0]])
    >>> float(kd_loss(x, x, 2.0))
    0.0
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"student outputs {tuple(student.shape)} and teacher outputs "
            f"{tuple(teacher.shape)} must have the same shape"
        )
    classes = student.shape[-1] if student.dim() else 1
    log_p_student = F.log_softmax(student.reshape(-1, classes) / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.reshape(-1, classes).detach() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def distillation_loss(
    loss: torch.Tensor,
    student: torch.Tensor,
    teacher: torch.Tensor,
    hardness: float,
    temperature: float,
) -> torch.Tensor:
    """``(1 - hardness) * loss + hardness * kd_loss(student, teacher, temperature)``.

    >>> x = torch.tensor([[1.0, 2.0]])
    >>> float(distillation_loss(torch.tensor(4.0), x, x, hardness=0.25, temperature=1.0))
    3.0
    """
    return (1.0 - hardness) * loss + hardness * kd_loss(student, teacher, temperature)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with gradients off (the self-teacher)."""
    teacher = copy.deepcopy(model)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def teacher_outputs(teacher: nn.Module, inputs: Any) -> torch.Tensor:
    """Run ``teacher`` in eval mode without gradients on ``inputs``.

    A tuple or list is passed as positional arguments, a dict as keyword
    arguments, anything else as the single argument.
    """
    teacher.eval()
    with torch.no_grad():
        if isinstance(inputs, (tuple, list)):
            out = teacher(*inputs)
        elif isinstance(inputs, dict):
            out = teacher(**inputs)
        else:
            out = teacher(inputs)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the teacher must return a tensor of logits, got {type(out).__name__}")
    return out


def recipe_loss(modifier: Modifier, epoch: float, loss: torch.Tensor,
                student_outputs: torch.Tensor | None, student_inputs: Any,
                teacher: nn.Module | None) -> torch.Tensor:
    """The loss at ``epoch`` under the Distillation ``modifier``: :func:`distillation_loss`
    against ``teacher``'s outputs on ``student_inputs`` while it is active, else ``loss``.

    >>> m = Distillation(start_epoch=0, end_epoch=1, hardness=0.5, temperature=1.0)
    >>> x = torch.tensor([[1.0, 2.0]])
    >>> float(recipe_loss(m, 0.5, torch.tensor(4.0), x, x, nn.Identity()))
    2.0
    """
    assert isinstance(modifier, Distillation)
    if not distillation_active(modifier, epoch):
        return loss
    if student_outputs is None or student_inputs is None:
        raise ValueError(
            "loss_update needs student_outputs and student_inputs during distillation"
        )
    assert teacher is not None  # taken by the "teacher" event at the distillation start
    return distillation_loss(loss, student_outputs, teacher_outputs(teacher, student_inputs),
                             modifier.hardness, modifier.temperature)
